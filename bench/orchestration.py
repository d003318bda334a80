"""Orchestration efficiency: how much of the machine a study keeps busy with training.

    python bench/orchestration.py [--trials 12] [--epochs 12] [--cpus 2]

Runs a study of 2 mini tasks x vpt_deep (search trials + 2 final seeds per task) on a local Ray
with one slot per CPU, trials of about 10 s, then reads every trial's training time (the
engine's fit time, from MLflow) and prints:
- efficiency = training slot-time / (slots x study wall time), with and without Ray's start;
- overhead per trial = (slots x wall - training slot-time) / trials.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="search trials per pipeline")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provpt-bench-orch-"))
    study = {
        "name": "orchestration_bench",
        "tasks": ["mini_count", "mini_loc"],
        "backbone": {"name": "provpt_tiny_patch8_32"},
        "trial": {"train": {"epochs": args.epochs, "head_lr": 0.1}},
        "methods": [
            {"name": "vpt_deep", "config": {"num_prompts": 2}, "search": {"train.lr": {"low": 0.05, "high": 1.0, "log": True}}}
        ],
        "resources": {"cpu": 1},
        "search": {"trials": args.trials, "concurrency": args.cpus},
        "final": {"seeds": [0, 1]},
    }
    study_file = work / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    output = work / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROVPT_RAY_TMP": str(Path(tempfile.mkdtemp(prefix="pvb", dir="/tmp")))}
    command = [sys.executable, "-m", "orchestrator.run", str(study_file), "--output", str(output), "--num-cpus", str(args.cpus)]
    # build the mini benchmark's cache outside the timing
    subprocess.run([sys.executable, "-c", "from provpt_core.data.loading import *; benchmark_root(DataConfig())"], check=True, env=env)
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study["name"])
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=5000)
        if r.data.tags.get("provpt.kind") == "trial"
    ]
    training = sum(r.data.metrics["wall_seconds"] for r in trials)
    first_start = min(r.info.start_time for r in trials) / 1000
    ray_start = first_start - start
    slots = args.cpus
    print(f"{len(trials)} trials of {args.epochs} epochs on {slots} slots; mean training time "
          f"{training / len(trials):.1f} s per trial")
    print(f"study wall time {wall:.1f} s, of which {ray_start:.1f} s before the first trial (Ray start, MLflow, planning)")
    print(f"efficiency (training slot-time / slots x wall): {training / (slots * wall):.2f}")
    print(f"efficiency after the first trial started: {training / (slots * (wall - ray_start)):.2f}")
    print(f"overhead per trial: {(slots * wall - training) / len(trials):.2f} s "
          f"({(slots * (wall - ray_start) - training) / len(trials):.2f} s after Ray's start)")


if __name__ == "__main__":
    main()
