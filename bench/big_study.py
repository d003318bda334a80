"""The orchestrator at scale: per-trial overhead, where it goes, and driver memory, at several sizes.

    python bench/big_study.py [--sizes 250,1000,4000] [--search 40] [--seeds 10] [--num-cpus 2] [--slot-cpu 0.5]

For each size, writes a study of size / (search + seeds) pipelines (the 4 mini tasks x
labelled linear probes) whose trials are trivial (one epoch of a linear head on cached
features: a fraction of a second of training), runs it with a local Ray like any study with
$PROVPT_TRIAL_TIMINGS set (orchestrator/execution/timing.py), samples once a second the
resident memory of the driver, of the control plane (the study task, where Tune's controller
keeps every trial) and of everything the driver started, and prints: trials, wall time,
trials per minute, the per-trial overhead ((slots x wall - summed fit time) / trials), where
a trial's slot-seconds go (worker start, scheduling, tracking, backbone, data, checkpoint,
training, the rest), and a table of the peak memory per size, so growth can be seen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from orchestrator.execution.timing import TIMINGS_ENV

REPO = Path(__file__).resolve().parents[1]
MINI_TASKS = ["mini_digits", "mini_count", "mini_loc", "mini_ori"]


def study(args: argparse.Namespace) -> dict:
    labels = -(-args.pipelines // len(MINI_TASKS))
    return {
        "name": "big_study",
        "tasks": MINI_TASKS,
        "backbone": {"name": "provpt_tiny_patch8_32"},
        "trial": {"train": {"epochs": 1, "batch_size": 200}},
        "methods": [
            {"name": "linear", "label": f"linear{i}", "search": {"train.lr": {"low": 0.01, "high": 1.0, "log": True}}}
            for i in range(labels)
        ],
        "resources": {"cpu": args.slot_cpu},
        "search": {"trials": args.search, "concurrency": 4, "sampler": "random"},
        "final": {"seeds": list(range(args.seeds))},
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(root: int) -> list[int]:
    """Every process below `root` (read from /proc: each process's parent)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def is_control_plane(pid: int) -> bool:
    """The study task (`orchestrator/execution/study_task.py`): Ray titles it after its function."""
    return b"run_study_trials" in Path(f"/proc/{pid}/cmdline").read_bytes()


class MemorySampler(threading.Thread):
    """Peak RSS of the driver alone, of the control plane (the study task: pipelines and Tune's
    controller, which holds every trial), and of the driver with all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_driver = self.peak_control = self.peak_total = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                driver = rss_bytes(self.pid)
            except OSError:
                return
            total = driver
            for child in descendants(self.pid):
                try:
                    rss = rss_bytes(child)
                    total += rss
                    if is_control_plane(child):
                        self.peak_control = max(self.peak_control, rss)
                except OSError:
                    pass
            self.peak_driver, self.peak_total = max(self.peak_driver, driver), max(self.peak_total, total)
            time.sleep(1.0)


PARTS = ("tracking", "backbone", "data", "checkpoint", "training")


def run_size(args: argparse.Namespace, pipelines: int) -> dict:
    """Run a study of `pipelines` pipelines; its wall time, trials, timings and peak memory."""
    args = argparse.Namespace(**{**vars(args), "pipelines": pipelines})
    work = Path(tempfile.mkdtemp(prefix="bigstudy"))
    path = work / "big_study.yaml"
    path.write_text(yaml.safe_dump(study(args)))
    timings = work / "timings.jsonl"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_ADDRESS": "",
        "PROVPT_RAY_TMP": tempfile.mkdtemp(prefix="bsray", dir="/tmp"),
        TIMINGS_ENV: str(timings),
    }
    command = [sys.executable, "-m", "orchestrator.run", str(path), "--output", str(work / "out"), "--num-cpus", str(args.num_cpus)]
    start = time.monotonic()
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(driver.pid)
    sampler.start()
    log = driver.communicate()[0]
    wall = time.monotonic() - start
    sampler.running = False
    if driver.returncode != 0:
        sys.exit(f"the study failed ({driver.returncode}):\n{log[-3000:]}")

    import pandas as pd

    trials = pd.read_parquet(work / "out" / "results" / "trials.parquet")
    lines = [json.loads(line) for line in timings.read_text().splitlines()]
    return {"work": work, "wall": wall, "trials": trials, "timings": lines, "sampler": sampler}


def breakdown(run: dict, slots: float) -> dict[str, float]:
    """Slot-seconds per trial: outside the trial functions (worker start, scheduling) and
    inside them by part; they add up to slots x wall / trials."""
    n = len(run["trials"])
    lines = run["timings"]
    inside = sum(line["seconds"] for line in lines)
    start = sum(line["process_age"] or 0.0 for line in lines if line["first_in_process"])
    out = {"worker start": start / n, "scheduling": (slots * run["wall"] - inside - start) / n}
    for part in PARTS:
        out[part] = sum(line["parts"].get(part, 0.0) for line in lines) / n
    out["rest of the trial (features, evaluation, Tune)"] = (inside - sum(sum(line["parts"].values()) for line in lines)) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250,1000", help="total trials of each run (rounded up to whole labels x 4 tasks)")
    parser.add_argument("--search", type=int, default=40, help="search trials per pipeline")
    parser.add_argument("--seeds", type=int, default=10, help="final trials per pipeline")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--slot-cpu", type=float, default=0.5, help="CPUs per trial (fractional: more slots)")
    args = parser.parse_args()
    slots = args.num_cpus / args.slot_cpu
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        run = run_size(args, max(1, round(size / (args.search + args.seeds))))
        trials, wall = run["trials"], run["wall"]
        useful = float(trials["wall_seconds"].astype(float).sum())
        n = len(trials)
        pipelines = trials.groupby(["task", "method"]).ngroups
        print(f"\n{n} trials in {pipelines} pipelines, {slots:g} slots on {args.num_cpus} CPUs: {wall / 60:.1f} min wall")
        print(f"  trials per minute: {n / wall * 60:.1f}; summed fit time {useful:.0f} s ({useful / n:.2f} s per trial)")
        print(f"  per-trial overhead: {(slots * wall - useful) / n:.2f} slot-seconds (slots x wall - fit time, per trial)")
        print("  where a trial's slot-seconds go:")
        for part, seconds in breakdown(run, slots).items():
            print(f"    {part:48s} {seconds:6.2f}")
        workers = len({line["pid"] for line in run["timings"]})
        print(f"  worker processes: {workers}; output {run['work'] / 'out'}")
        sampler = run["sampler"]
        rows.append((n, wall, (slots * wall - useful) / n, sampler.peak_driver, sampler.peak_control, sampler.peak_total))
    print("\ntrials   wall (min)   overhead (slot-s/trial)   peak RSS (MB): driver   control plane   driver + Ray + workers")
    for n, wall, overhead, driver, control, total in rows:
        print(f"{n:6d}   {wall / 60:10.1f}   {overhead:23.2f}   {driver / 2**20:21.0f}   {control / 2**20:13.0f}   {total / 2**20:22.0f}")


if __name__ == "__main__":
    main()
