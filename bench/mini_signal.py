"""Does the mini benchmark carry signal? linear vs vpt_deep vs provpt on every mini task.

    python bench/mini_signal.py [--epochs 30] [--seeds 0,1] [--workers 2]

The VTAB-1k protocol in small: per (task, method) a learning-rate grid is trained on train800
and scored on val200 (seed 0); the best (ties: the smaller lr) is retrained on train800val200
for every seed and scored once on test. The bundled pretrained tiny ViT is the backbone; prompt
methods use 2 prompts per block and a fixed head lr (the prompt lr is searched). Trials run in
parallel worker processes with one thread each. Prints the test accuracy table (mean and the
per-seed values), prompt tuning minus the linear probe, and PRO-VPT's final prompt
distribution per task.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GRIDS = {"linear": (0.03, 0.1, 0.3), "vpt_deep": (0.1, 0.3, 1.0), "provpt": (0.1, 0.3, 1.0)}
PROMPTS_PER_BLOCK = 2
HEAD_LR = 0.1


def trial(method: str, task: str, lr: float, seed: int, phase: str, epochs: int) -> dict:
    import torch

    from provpt_core import TrialConfig, fit

    torch.set_num_threads(1)
    spec = {"name": method} if method == "linear" else {"name": method, "num_prompts": PROMPTS_PER_BLOCK}
    train = {"epochs": epochs, "lr": lr, "batch_size": 64, "seed": seed, "threads": 1, "device": "cpu"}
    if method != "linear":
        train["head_lr"] = HEAD_LR
    config = TrialConfig.from_dict(
        {
            "backbone": {"name": "provpt_tiny_patch8_32"},
            "method": spec,
            "train": train,
            "data": {"task": task, "phase": phase},
        }
    )
    result = fit(config)
    return {
        "method": method,
        "task": task,
        "lr": lr,
        "seed": seed,
        "phase": phase,
        "val_acc": result.final_val_acc,
        "test_acc": result.test_acc,
        "distribution": result.distribution,
        "seconds": result.wall_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--tasks", default="mini")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write every trial's record as JSON")
    args = parser.parse_args()

    from provpt_core.data import DataConfig, resolve_tasks
    from provpt_core.data.loading import benchmark_root

    tasks = [spec.name for spec in resolve_tasks(args.tasks.split(","))]
    benchmark_root(DataConfig(task=tasks[0]))  # build the mini benchmark once, before the workers
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    records = []
    with ProcessPoolExecutor(args.workers) as pool:
        search = {
            (m, t, lr): pool.submit(trial, m, t, lr, seeds[0], "search", args.epochs)
            for t in tasks
            for m, grid in GRIDS.items()
            for lr in grid
        }
        chosen = {}
        records += [future.result() for future in search.values()]
        for t in tasks:
            for m in GRIDS:
                scored = [r for r in records if r["task"] == t and r["method"] == m]
                best = max(scored, key=lambda r: (r["val_acc"], -r["lr"]))  # ties go to the smaller lr
                chosen[(m, t)] = best["lr"]
        final = [pool.submit(trial, m, t, chosen[(m, t)], s, "final", args.epochs) for (m, t) in chosen for s in seeds]
        records += [f.result() for f in final]
    minutes = (time.perf_counter() - start) / 60

    def tests(method: str, task: str) -> list[float]:
        return [r["test_acc"] for r in records if r["phase"] == "final" and r["method"] == method and r["task"] == task]

    print(f"test top-1 (%) after val-selected lr, {args.epochs} epochs, seeds {seeds}; {minutes:.1f} min in all")
    header = f"{'task':13s}" + "".join(f"{m:>24s}" for m in GRIDS) + f"{'vpt_deep-linear':>17s}{'provpt-linear':>15s}"
    print(header)
    for t in tasks:
        cells = []
        for m in GRIDS:
            values = tests(m, t)
            per_seed = "/".join(f"{100 * v:.1f}" for v in values)
            cells.append(f"{100 * statistics.mean(values):6.1f} ({per_seed}) lr {chosen[(m, t)]:g}")
        gaps = [100 * (statistics.mean(tests(m, t)) - statistics.mean(tests("linear", t))) for m in ("vpt_deep", "provpt")]
        print(f"{t:13s}" + "".join(f"{c:>24s}" for c in cells) + f"{gaps[0]:+17.1f}{gaps[1]:+15.1f}")
    print("PRO-VPT prompt distribution over the 12 blocks at the end (final phase):")
    for t in tasks:
        for r in records:
            if r["phase"] == "final" and r["method"] == "provpt" and r["task"] == t:
                print(f"  {t:13s} seed {r['seed']}: {r['distribution']}")
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
