"""Pretrain the bundled tiny ViT (provpt_tiny_patch8_32) on a generated source task.

    python scripts/pretrain_tiny_vit.py [--epochs 16] [--images 50000] [--threads 2]

Source task (disjoint from the mini benchmark's tasks): scenes of 1-5 flat shapes (circle,
square, triangle, plus, ring, diamond) on four kinds of background. From the CLS feature,
heads predict, for the topmost object: its shape, hue (8 bins), centre (x, y) and orientation
(cos/sin of k * angle, k its rotational symmetry); and for the scene: its background kind and
its number of objects. This asks the features for what the structured tasks need (position,
orientation, counts) without using any downstream label definition: the mini tasks count
shaded balls, bin a lone sprite's x position, and bin an arrow's orientation.

After training, the mean and std of the CLS feature over held-out source images are folded
into the final LayerNorm's affine weights, so the shipped backbone's features come out
standardised (a head on raw features is unstable on this small model).

Writes provpt_core/weights/provpt_tiny_patch8_32.safetensors and a .json with the recipe
and the figures.
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
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from provpt_core.backbone import BackboneConfig, load_backbone  # noqa: E402
from provpt_core.data.mini.render import BACKGROUNDS, SHAPES, Canvas, Sprite, background, hue_colour  # noqa: E402
from provpt_core.tiny_vit import TINY_VIT_NAME, TINY_VIT_WEIGHTS  # noqa: E402

SOURCE_SHAPES = ("circle", "square", "triangle", "plus", "ring", "diamond")
HUE_BINS = 8
MAX_OBJECTS = 5


def source_scene(rng: np.random.Generator, size: int = 32):
    kind = int(rng.integers(len(BACKGROUNDS)))
    canvas = Canvas(size, background(BACKGROUNDS[kind], size, rng))
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    for index in range(count):
        top = index == count - 1
        sprite = Sprite(
            shape=SOURCE_SHAPES[int(rng.integers(len(SOURCE_SHAPES)))],
            x=float(rng.uniform(-0.7, 0.7)),
            y=float(rng.uniform(-0.7, 0.7)),
            scale=float(rng.uniform(0.3, 0.45) if top else rng.uniform(0.12, 0.28)),
            angle=float(rng.uniform(0, 2 * np.pi)),
            colour=hue_colour(float(rng.uniform()), value=float(rng.uniform(0.75, 1.0))),
        )
        canvas.draw(sprite)
    hue = float(np.round(_hue(sprite.colour) * HUE_BINS)) % HUE_BINS
    symmetry = SHAPES[sprite.shape][1]
    targets = {
        "shape": SOURCE_SHAPES.index(sprite.shape),
        "hue": int(hue),
        "background": kind,
        "position": (sprite.x, sprite.y),
        "orientation": (np.cos(symmetry * sprite.angle), np.sin(symmetry * sprite.angle)),
        "has_orientation": float(symmetry > 0),
        "count": count,
    }
    return canvas.image(), targets


def _hue(rgb) -> float:
    import colorsys

    return colorsys.rgb_to_hsv(*rgb)[0]


def make_set(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        image, target = source_scene(rng)
        images.append(image)
        targets.append(target)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    t = {
        "shape": torch.tensor([t["shape"] for t in targets]),
        "hue": torch.tensor([t["hue"] for t in targets]),
        "background": torch.tensor([t["background"] for t in targets]),
        "position": torch.tensor([t["position"] for t in targets], dtype=torch.float32),
        "orientation": torch.tensor(np.array([t["orientation"] for t in targets]), dtype=torch.float32),
        "has_orientation": torch.tensor([t["has_orientation"] for t in targets]),
        "count": torch.tensor([t["count"] for t in targets], dtype=torch.float32),
    }
    return x, t


class Heads(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shape = nn.Linear(dim, len(SOURCE_SHAPES))
        self.hue = nn.Linear(dim, HUE_BINS)
        self.background = nn.Linear(dim, len(BACKGROUNDS))
        self.position = nn.Linear(dim, 2)
        self.orientation = nn.Linear(dim, 2)
        self.count = nn.Linear(dim, 1)

    def losses(self, f: torch.Tensor, t: dict) -> dict[str, torch.Tensor]:
        orient = (self.orientation(f) - t["orientation"]).pow(2).sum(1)
        return {
            "shape": F.cross_entropy(self.shape(f), t["shape"]),
            "hue": F.cross_entropy(self.hue(f), t["hue"]),
            "background": F.cross_entropy(self.background(f), t["background"]),
            "position": 4.0 * F.mse_loss(self.position(f), t["position"]),
            "orientation": (orient * t["has_orientation"]).sum() / t["has_orientation"].sum().clamp_min(1),
            "count": F.mse_loss(self.count(f).squeeze(1), t["count"]),
        }


def features(vit, images_u8: torch.Tensor) -> torch.Tensor:
    x = (images_u8.float() / 255.0 - 0.5) / 0.5
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


@torch.no_grad()
def evaluate(vit, heads, x, t) -> dict[str, float]:
    vit.eval()
    f = torch.cat([features(vit, x[i : i + 500]) for i in range(0, len(x), 500)])
    has = t["has_orientation"].bool()
    return {
        "shape_acc": float((heads.shape(f).argmax(1) == t["shape"]).float().mean()),
        "hue_acc": float((heads.hue(f).argmax(1) == t["hue"]).float().mean()),
        "background_acc": float((heads.background(f).argmax(1) == t["background"]).float().mean()),
        "position_rmse": float((heads.position(f) - t["position"]).pow(2).mean().sqrt()),
        "orientation_rmse": float((heads.orientation(f)[has] - t["orientation"][has]).pow(2).sum(1).mean().sqrt()),
        "count_acc": float((heads.count(f).squeeze(1).round() == t["count"]).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=16)
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
    x, t = make_set(args.images, seed=args.seed)
    val_x, val_t = make_set(4000, seed=args.seed + 1)
    render_seconds = time.perf_counter() - start
    print(f"rendered {args.images} + 4000 images in {render_seconds:.0f} s", flush=True)

    vit = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    vit.requires_grad_(True)
    heads = Heads(vit.embed_dim)
    params = list(vit.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * (args.images // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    train_start = time.perf_counter()
    for epoch in range(args.epochs):
        vit.train()
        order = torch.randperm(args.images, generator=generator)
        totals = {}
        for i in range(args.images // args.batch_size):
            rows = order[i * args.batch_size : (i + 1) * args.batch_size]
            batch_t = {k: v[rows] for k, v in t.items()}
            losses = heads.losses(features(vit, x[rows]), batch_t)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item()
        n = args.images // args.batch_size
        figures = evaluate(vit, heads, val_x, val_t)
        print(
            f"epoch {epoch + 1}/{args.epochs} "
            + " ".join(f"{k} {v / n:.3f}" for k, v in totals.items())
            + " | val "
            + " ".join(f"{k} {v:.3f}" for k, v in figures.items())
            + f" | {time.perf_counter() - train_start:.0f} s",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_start

    # Fold the standardisation of the CLS feature into the final LayerNorm.
    vit.eval()
    with torch.no_grad():
        f = torch.cat([features(vit, val_x[i : i + 500]) for i in range(0, len(val_x), 500)])
        mean, std = f.mean(0), f.std(0).clamp_min(1e-3)
        vit.norm.weight.div_(std)
        vit.norm.bias.sub_(mean).div_(std)
        check = torch.cat([features(vit, val_x[i : i + 500]) for i in range(0, len(val_x), 500)])
    print(f"standardised CLS feature: |mean| max {check.mean(0).abs().max():.3f}, std mean {check.std(0).mean():.3f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, args.out)
    recipe = {
        "model": TINY_VIT_NAME,
        "parameters": sum(p.numel() for p in vit.parameters()),
        "source_task": "scripts/pretrain_tiny_vit.py (see its docstring)",
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"AdamW lr {args.lr} (one-cycle), weight decay {args.weight_decay}, clip 1.0",
        "seed": args.seed,
        "threads": args.threads,
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "held_out_figures": {k: round(v, 4) for k, v in figures.items()},
        "feature_standardisation": "folded into norm.weight / norm.bias",
    }
    args.out.with_suffix(".json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
