"""Per-epoch time and peak memory of every method (PRO-VPT in both idleness modes) relative
to vpt_deep, on the same backbone, data and seed, in one run.

    python bench/core_step.py                       # tiny 12-block ViT on the CPU
    python bench/core_step.py --gpu                 # ViT-B/16, 224 px, batch 64, bf16 on a GPU

An epoch's time runs from one epoch end to the next, so it includes what PRO-VPT does at the
start of an epoch (the reference pass, the relocation). Each method runs in its own process,
so the peak memory of one does not hide in another's. Ends with a table of each method's time
and memory relative to vpt_deep, then `ratio provpt/vpt_deep: X.XX`. `--methods a,b` runs some.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = {
    "vpt_deep": {"name": "vpt_deep"},
    "provpt": {"name": "provpt"},
    "provpt_reference": {"name": "provpt", "relocation": {"idleness": "reference"}},
    "linear": {"name": "linear"},
    "vpt_shallow": {"name": "vpt_shallow"},
    "vapt": {"name": "vapt"},
    "davpt": {"name": "davpt"},
    "davpt_plus": {"name": "davpt_plus"},
    "full": {"name": "full"},
    "lora": {"name": "lora"},
    "adapter": {"name": "adapter"},
}
UNPROMPTED = ("linear", "full", "lora", "adapter")


def run_one(args: argparse.Namespace, label: str) -> dict:
    import torch

    from provpt_core import Callback, Trainer, TrialConfig
    from provpt_core.data import DataSplits
    from provpt_core.data.synthetic import synthetic_image_set

    generator = torch.Generator().manual_seed(0)
    data = DataSplits(train=synthetic_image_set(args.train_size, 10, args.img_size, generator), num_classes=10)
    config = TrialConfig.from_dict(
        {
            "backbone": {"name": args.backbone, "weights": "random", "img_size": args.img_size},
            "method": {**METHODS[label], **({} if label in UNPROMPTED else {"num_prompts": args.num_prompts})},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": 0.05,
                "device": args.device,
                "precision": args.precision,
                "threads": args.threads,
                "seed": 0,
            },
            "eval": {"test_at_end": False},
        }
    )

    class EpochClock(Callback):
        def __init__(self) -> None:
            self.ends = []

        def on_fit_start(self, trainer):
            self.ends.append(time.perf_counter())

        def on_epoch_end(self, trainer, metrics):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    clock = EpochClock()
    trainer = Trainer(config, data, [clock])
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    durations = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    steady = durations[2:] or durations  # epoch 0 warms up; relocation starts at epoch 1
    epoch_seconds = statistics.median(steady)
    if trainer.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": label,
        "epoch_seconds": epoch_seconds,
        "images_per_second": args.train_size / epoch_seconds,
        "peak_mb": peak_mb,
        "device": str(trainer.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="ViT-B/16 at 224 px, batch 64, bf16, on cuda")
    parser.add_argument("--backbone", default="provpt_tiny_patch8_32")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--num-prompts", type=int, default=10, help="per block")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (vpt_deep is always run)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gpu:
        args.backbone, args.img_size, args.device, args.precision = "vit_base_patch16_224", 224, "cuda", "bf16"
        args.train_size = max(args.train_size, 3200)
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return

    forwarded = sys.argv[1:]
    print(
        f"backbone {args.backbone} @ {args.img_size}px, {args.num_prompts} prompts/block, batch "
        f"{args.batch_size}, {args.train_size} images/epoch, {args.epochs} epochs, device {args.device}, "
        f"threads {args.threads}"
    )
    results = {}
    chosen = ["vpt_deep", *(m for m in args.methods.split(",") if m != "vpt_deep")]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        sys.exit(f"--methods: unknown {', '.join(unknown)}; expected some of {', '.join(METHODS)}")
    for label in chosen:
        out = subprocess.run([sys.executable, __file__, *forwarded, "--one", label], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{label} failed:\n{out.stderr}")
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[label]
        print(
            f"{label:18s} epoch {r['epoch_seconds']:7.3f} s  {r['images_per_second']:9.1f} img/s  "
            f"peak {r['peak_mb']:8.1f} MB ({r['device']})"
        )
    base = results["vpt_deep"]
    print("\nrelative to vpt_deep:   time  memory")
    for label, r in results.items():
        print(f"  {label:18s} {r['epoch_seconds'] / base['epoch_seconds']:6.2f}  {r['peak_mb'] / base['peak_mb']:6.2f}")
    if "provpt" in results:
        print(f"ratio provpt/vpt_deep: {results['provpt']['epoch_seconds'] / base['epoch_seconds']:.2f}")


if __name__ == "__main__":
    main()
