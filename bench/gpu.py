"""The GPU figures in one prepared run: per-method throughput and memory, fractional packing, projections.

    python bench/gpu.py            # on a GPU machine: ViT-B/16 at 224 px, batch 64, bf16, random weights
    python bench/gpu.py --smoke    # anywhere: the tiny ViT at 32 px on the CPU, the same steps end to end

Needs no network (random weights, generated data) and prints its figures as tables:
1. per method (linear on cached features aside): training images/s, evaluation images/s and
   peak memory, from a trial of a few epochs on in-memory data (the first epoch is a warm-up);
2. packing: a real study through `orchestrator.run` on a generated VTAB-format task (KITTI's
   split sizes: 800 + 200 train, 711 test), `--pack` VPT-deep trials sharing one GPU
   (`resources.gpu` = 1 / pack) against one trial alone (another such study; with --smoke the
   trial of step 1, to keep the smoke run short), as aggregate training images/s, with the GPU
   utilisation seen (nvidia-smi, sampled once a second);
3. projections from the measured per-trial rates: `studies/vtab_full.yaml`'s GPU-hours (its plan
   with the measured rate in place of the throughput table), and PRO-VPT's final phase alone
   (19 tasks x 3 seeds x 100 epochs).
Without a GPU (and without --smoke) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from provpt_core import METHODS, Trainer, TrialConfig, get_task  # noqa: E402
from provpt_core.data.splits import DataSplits, ImageSet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHED = {
    "vpt_shallow": {"num_prompts": 10},
    "vpt_deep": {"num_prompts": 10},
    "provpt": {"num_prompts": 10},
    "vapt": {"num_prompts": 10},
    "davpt": {"num_prompts": 10},
    "lora": {},
    "adapter": {},
    "full": {},
}
PACKED_TASK = "kitti"  # the smallest VTAB-1k test split (711)


def settings(smoke: bool) -> dict:
    if smoke:
        return {"backbone": "provpt_tiny_patch8_32", "size": 32, "batch": 16, "images": 64, "epochs": 2, "device": "cpu", "precision": "fp32"}
    return {"backbone": "vit_base_patch16_224", "size": 224, "batch": 64, "images": 1024, "epochs": 3, "device": "cuda", "precision": "bf16"}


def trial(method: str, s: dict, **train) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "backbone": {"name": s["backbone"], "weights": "random"},
            "method": {"name": method, **BENCHED[method]},
            "train": {"epochs": s["epochs"], "batch_size": s["batch"], "lr": 0.01, "device": s["device"], "precision": s["precision"], **train},
            "eval": {"test_at_end": False, "batch_size": 2 * s["batch"]},
        }
    )


def synthetic(s: dict, classes: int = 10) -> DataSplits:
    generator = torch.Generator().manual_seed(0)
    def split(n: int) -> ImageSet:
        images = torch.randint(0, 256, (n, 3, s["size"], s["size"]), dtype=torch.uint8, generator=generator)
        return ImageSet(images, torch.arange(n) % classes)
    return DataSplits(train=split(s["images"]), val=split(s["images"]), num_classes=classes)


def method_figures(s: dict) -> list[tuple[str, float, float, float | None]]:
    """(method, train img/s, eval img/s, peak GB) for every method."""
    data = synthetic(s)
    rows = []
    for method in BENCHED:
        if s["device"] == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(trial(method, s), data)
        result = trainer.fit()
        train_rate = len(data.train) / result.history[-1]["epoch_seconds"]  # after the warm-up epoch
        start = time.perf_counter()
        trainer.evaluate("val")
        if s["device"] == "cuda":
            torch.cuda.synchronize()
        eval_rate = len(data.val) / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if s["device"] == "cuda" else None
        rows.append((method, train_rate, eval_rate, peak))
        print(f"  {method:12s} train {train_rate:9.0f} img/s   eval {eval_rate:9.0f} img/s   peak {'-' if peak is None else f'{peak:.2f} GB'}", flush=True)
        del trainer
    return rows


def write_task(root: Path, task: str) -> None:
    """A VTAB-format task folder at its real split sizes; small PNGs (the loader resizes them)."""
    spec = get_task(task)
    folder = root / spec.name
    rng = np.random.default_rng(0)
    distinct = 50
    for split, count in spec.split_sizes.items():
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in range(distinct):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "images" / split / f"{i:06d}.png")
        lines = [f"images/{split}/{i % distinct:06d}.png {i % spec.num_classes}" for i in range(count)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


class Utilisation(threading.Thread):
    """GPU utilisation (%) from nvidia-smi once a second; nothing where there is none."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.running = shutil.which("nvidia-smi") is not None

    def run(self) -> None:
        while self.running:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            time.sleep(1.0)


def packed_study(s: dict, seeds: int, gpu: float, work: Path, label: str) -> tuple[float, float, list[float]]:
    """Run `seeds` final VPT-deep trials at `gpu` each; (wall s, aggregate train img/s, utilisation)."""
    root = work / "vtab"
    if not root.exists():
        write_task(root, PACKED_TASK)
    study = {
        "name": f"gpu_{label}",
        "tasks": [PACKED_TASK],
        "backbone": {"name": s["backbone"], "weights": "random"},
        "data": {"roots": {"vtab1k": str(root)}, "cache_dir": str(work / "cache")},
        "trial": {"train": {"epochs": s["epochs"], "batch_size": s["batch"], "lr": 0.01, "precision": s["precision"]}},
        "methods": [{"name": "vpt_deep", "config": BENCHED["vpt_deep"]}],
        "resources": {"cpu": 1, "gpu": gpu},
        "final": {"seeds": list(range(seeds))},
        "checkpoint_every": 1000,
    }
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(study))
    output = work / label
    ray_temp = tempfile.mkdtemp(prefix="gpuray", dir="/tmp")
    env = {**os.environ, "RAY_ADDRESS": "", "PROVPT_RAY_TMP": ray_temp}
    cpus = max(2, seeds) if s["device"] == "cuda" else 2
    command = [sys.executable, "-m", "orchestrator.run", str(path), "--output", str(output), "--num-cpus", str(cpus)]
    meter = Utilisation()
    meter.start()
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    meter.running = False
    shutil.rmtree(ray_temp, ignore_errors=True)
    if done.returncode != 0:
        sys.exit(f"the packed study failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    import pandas as pd

    epochs = pd.read_parquet(output / "results" / "epochs.parquet")
    train_images = get_task(PACKED_TASK).split_sizes["train800val200"]
    later = epochs[epochs["epoch"] > 1]  # the first epoch of each trial is its warm-up
    # trials ran side by side: aggregate = images of the overlapping epochs / their mean duration
    per_trial = train_images / later.groupby("trial")["epoch_seconds"].mean()
    return wall, float(per_trial.sum()) if seeds > 1 else float(per_trial.iloc[0]), meter.samples


def projections(rate: float, gpu: float) -> tuple[float, float]:
    """vtab_full.yaml's GPU-hours and PRO-VPT's final phase alone, at `rate` img/s per trial."""
    from orchestrator.spec import plan
    from orchestrator.spec.study import load_study

    os.environ.setdefault("VTAB_ROOT", "/data/vtab-1k")
    os.environ.setdefault("FGVC_ROOT", "/data/fgvc")
    study = load_study(REPO / "studies" / "vtab_full.yaml")
    pipelines = plan.make_plan(study)
    plan.THROUGHPUT[(study.backbone["name"], "gpu")] = rate
    seconds = sum(plan.planned_trials(study, p.method, phase) * plan.trial_seconds(study, p, phase) for p in pipelines for phase in plan.PHASES)
    full = seconds / 3600 * study.resources.gpu
    provpt = next(p for p in pipelines if p.method.name == "provpt")
    images = 19 * 3 * 100 * 1000 * METHODS["provpt"].epoch_cost(provpt.base.method)
    return full, images / rate / 3600 * gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: the whole run in a minute or two")
    parser.add_argument("--pack", type=int, default=8, help="trials sharing one GPU in the packing run")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no GPU on this machine: nothing measured (bench/gpu.py --smoke runs the same steps on the CPU)")
        return
    s = settings(args.smoke)
    device = torch.cuda.get_device_name() if s["device"] == "cuda" else "CPU (smoke)"
    print(f"{device}: {s['backbone']} at {s['size']} px, batch {s['batch']}, {s['precision']}, random weights", flush=True)
    print("1. methods", flush=True)
    rows = method_figures(s)
    work = Path(tempfile.mkdtemp(prefix="gpubench"))
    pack = 2 if args.smoke else args.pack
    share = f"{1 / pack:g} GPU" if s["device"] == "cuda" else "1 CPU (smoke)"
    print(f"2. packing: {pack} VPT-deep trials at {share} each against one alone", flush=True)
    if args.smoke:
        alone_wall, alone_rate = float("nan"), next(rate for method, rate, _, _ in rows if method == "vpt_deep")
    else:
        alone_wall, alone_rate, _ = packed_study(s, 1, 1.0, work, "alone")
    packed_wall, packed_rate, utilisation = packed_study(s, pack, 1 / pack if s["device"] == "cuda" else 0.0, work, "packed")
    busy = f"{np.mean(utilisation):.0f} % mean, {np.max(utilisation):.0f} % max" if utilisation else "not measured (no nvidia-smi)"
    print(f"  one trial alone: {alone_rate:.0f} img/s ({alone_wall:.0f} s with start-up)")
    print(f"  {pack} packed: {packed_rate:.0f} img/s together ({packed_wall:.0f} s); x{packed_rate / alone_rate:.2f}; GPU utilisation {busy}")
    full, provpt = projections(packed_rate / pack, 1 / pack)
    print("3. projections from the packed per-trial rate")
    print(f"  studies/vtab_full.yaml: {full:.1f} GPU-hours; PRO-VPT final phase alone (19 x 3 x 100 epochs): {provpt:.1f} GPU-hours")
    print(json.dumps({"device": device, "methods": rows, "alone": alone_rate, "packed": packed_rate, "pack": pack, "vtab_full_gpu_hours": full, "provpt_final_gpu_hours": provpt}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
