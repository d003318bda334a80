"""The orchestrator at scale: driver memory and per-trial overhead over ~1,000 trivial trials.

    python bench/big_study.py [--pipelines 20] [--search 40] [--seeds 10] [--num-cpus 2] [--slot-cpu 0.5]

Writes a study of `pipelines` pipelines (the 4 mini tasks x labelled linear probes) whose
trials are trivial (one epoch of a linear head on cached features: a fraction of a second of
training), runs it with a local Ray like any study, samples once a second the resident memory
of the driver and of everything it started (Ray's processes, pipelines, trial workers), and
prints: trials, wall time, trials per minute, the summed training time of the trials, the
per-trial overhead ((slots x wall - summed trial time) / trials), and the peak memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

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


class MemorySampler(threading.Thread):
    """Peak RSS of the driver alone and of the driver with all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_driver = self.peak_total = 0
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
                    total += rss_bytes(child)
                except OSError:
                    pass
            self.peak_driver, self.peak_total = max(self.peak_driver, driver), max(self.peak_total, total)
            time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--search", type=int, default=40, help="search trials per pipeline")
    parser.add_argument("--seeds", type=int, default=10, help="final trials per pipeline")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--slot-cpu", type=float, default=0.5, help="CPUs per trial (fractional: more slots)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bigstudy"))
    path = work / "big_study.yaml"
    path.write_text(yaml.safe_dump(study(args)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "PROVPT_RAY_TMP": tempfile.mkdtemp(prefix="bsray", dir="/tmp")}
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
    slots = args.num_cpus / args.slot_cpu
    busy = float(trials["wall_seconds"].astype(float).sum())
    print(f"{len(trials)} trials in {args.pipelines} pipelines, {slots:g} slots on {args.num_cpus} CPUs: {wall / 60:.1f} min wall")
    print(f"trials per minute: {len(trials) / wall * 60:.1f}")
    print(f"summed trial time: {busy:.0f} s ({busy / len(trials):.2f} s per trial)")
    print(f"per-trial overhead: {(slots * wall - busy) / len(trials):.2f} slot-seconds")
    print(f"peak RSS: driver {sampler.peak_driver / 2**20:.0f} MB, driver + Ray + workers {sampler.peak_total / 2**20:.0f} MB")
    print(f"output: {work / 'out'}")


if __name__ == "__main__":
    main()
