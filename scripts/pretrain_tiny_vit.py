"""Pretrain the bundled tiny ViT (provpt_tiny_patch8_32) to name *what* is in an image.

    python scripts/pretrain_tiny_vit.py [--epochs 14] [--images 48000] [--threads 2]

Source task, in the spirit of ImageNet pretraining (and disjoint from the mini benchmark's
labels): 45 object classes, each a shape family (circle, square, triangle, plus, diamond, star,
cross, hexagon, crescent) drawn with a fill pattern (solid, stripes, checks, dots, outline).
One classification head reads the CLS feature. Everything a VTAB backbone's CLS feature is
largely invariant to is randomised and never a target: the position, size and angle of each
object, the number of copies of it (1-3), its hue and the background. So the CLS feature learns
*what*, while the patch tokens keep *where*, *how many* and *which way*, which is what prompts
read out on VTAB-1k's Structured tasks. The script measures that (provpt_core.probe: held-out
R^2 of an object's centre from the CLS feature and from the patch tokens) and records it.

After training, the mean and std of the CLS feature over held-out source images are folded
into the final LayerNorm's affine weights, so the shipped backbone's features come out
standardised (a head on raw features is unstable on this small model).

Writes provpt_core/weights/provpt_tiny_patch8_32.safetensors and a .json with the recipe
and the held-out figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from provpt_core.backbone import BackboneConfig, load_backbone  # noqa: E402
from provpt_core.data.mini.render import BACKGROUNDS, PATTERNS, Canvas, Sprite, background, hue_colour  # noqa: E402
from provpt_core.probe import position_r2  # noqa: E402
from provpt_core.tiny_vit import TINY_VIT_NAME, TINY_VIT_WEIGHTS  # noqa: E402

SOURCE_SHAPES = ("circle", "square", "triangle", "plus", "diamond", "star", "cross", "hexagon", "crescent")
SOURCE_CLASSES = [(shape, pattern) for shape in SOURCE_SHAPES for pattern in PATTERNS]
MAX_COPIES = 3


def source_scene(rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, int]:
    """One image of 1-3 copies of a random class's object, and the class."""
    label = int(rng.integers(len(SOURCE_CLASSES)))
    shape, pattern = SOURCE_CLASSES[label]
    canvas = Canvas(size, background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], size, rng))
    copies = int(rng.integers(1, MAX_COPIES + 1))
    for _ in range(copies):
        scale = float(rng.uniform(0.35, 0.6) if copies == 1 else rng.uniform(0.25, 0.42))
        x, y = (float(v) for v in rng.uniform(-1.0 + scale, 1.0 - scale, size=2))
        colour = hue_colour(float(rng.uniform()), value=float(rng.uniform(0.75, 1.0)))
        canvas.draw(Sprite(shape, x, y, scale, float(rng.uniform(0, 2 * np.pi)), colour, pattern=pattern))
    return canvas.image(), label


def make_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images, labels = zip(*(source_scene(rng) for _ in range(n)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def features(vit, images_u8: torch.Tensor) -> torch.Tensor:
    x = (images_u8.float() / 255.0 - 0.5) / 0.5
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


@torch.no_grad()
def cls_features(vit, images_u8: torch.Tensor) -> torch.Tensor:
    vit.eval()
    return torch.cat([features(vit, images_u8[i : i + 500]) for i in range(0, len(images_u8), 500)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48000)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=TINY_VIT_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    x, y = make_set(args.images, seed=args.seed)
    val_x, val_y = make_set(4000, seed=args.seed + 1)
    render_seconds = time.perf_counter() - start
    print(f"rendered {args.images} + 4000 images of {len(SOURCE_CLASSES)} classes in {render_seconds:.0f} s", flush=True)

    vit = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    vit.requires_grad_(True)
    head = torch.nn.Linear(vit.embed_dim, len(SOURCE_CLASSES))
    params = list(vit.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = args.images // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(args.seed)
    train_start = time.perf_counter()
    for epoch in range(args.epochs):
        vit.train()
        order = torch.randperm(args.images, generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            rows = order[step * args.batch_size : (step + 1) * args.batch_size]
            loss = F.cross_entropy(head(features(vit, x[rows])), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item()
        with torch.no_grad():
            accuracy = float((head(cls_features(vit, val_x)).argmax(1) == val_y).float().mean())
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {total / steps_per_epoch:.3f} | held-out accuracy {accuracy:.3f}"
            f" | {time.perf_counter() - train_start:.0f} s",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_start

    # Fold the standardisation of the CLS feature into the final LayerNorm.
    with torch.no_grad():
        f = cls_features(vit, val_x)
        mean, std = f.mean(0), f.std(0).clamp_min(1e-3)
        vit.norm.weight.div_(std)
        vit.norm.bias.sub_(mean).div_(std)
        check = cls_features(vit, val_x)
    print(f"standardised CLS feature: |mean| max {check.mean(0).abs().max():.3f}, std mean {check.std(0).mean():.3f}")
    probe = position_r2(vit)
    print("position R^2 (held out): " + ", ".join(f"{k} {v:.3f}" for k, v in probe.items()))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, args.out)
    recipe = {
        "model": TINY_VIT_NAME,
        "parameters": sum(p.numel() for p in vit.parameters()),
        "source_task": "scripts/pretrain_tiny_vit.py (see its docstring): "
        f"{len(SOURCE_CLASSES)} classes, shape x fill pattern; position, size, angle, copies, hue, background random",
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW lr {args.lr} (one-cycle), weight decay {args.weight_decay}, clip 1.0",
        "seed": args.seed,
        "threads": args.threads,
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "held_out_figures": {
            "class_accuracy": round(accuracy, 4),
            **{f"position_r2_{k}": round(v, 4) for k, v in probe.items()},
        },
        "feature_standardisation": "folded into norm.weight / norm.bias",
    }
    args.out.with_suffix(".json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
