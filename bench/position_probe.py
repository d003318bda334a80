"""Where does the backbone keep a sprite's position: in the CLS feature or in the patch tokens?

    python bench/position_probe.py [--images 3000] [--backbone provpt_tiny_patch8_32] [--weights FILE]

A VTAB backbone names *what* is in an image: its CLS feature is largely invariant to where the
object is, while its patch tokens still carry it (which prompts learn to read out). This
renders held-out scenes of one random sprite (shape, colour, size, angle) at a random position
on a random background, takes the backbone's final CLS feature, the mean of its final patch
tokens and all of its final patch tokens side by side, fits a ridge regression of the sprite's
centre (x, y) on each (two thirds of the images), and prints the held-out R^2 of each. A
backbone that behaves like a VTAB one has R^2(CLS) well below R^2(patch tokens); the bundled
one was pretrained with a position head on its CLS feature.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from provpt_core.backbone import BackboneConfig, load_backbone  # noqa: E402
from provpt_core.data.mini.render import BACKGROUNDS, SHAPES, Canvas, Sprite, background, hue_colour  # noqa: E402

SIZE = 32
RIDGE = 1e-2


def scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images [N, 32, 32, 3] uint8 of one sprite each, and its centres [N, 2] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images, centres = [], []
    shapes = sorted(SHAPES)
    for _ in range(count):
        canvas = Canvas(SIZE, background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], SIZE, rng))
        x, y = (float(v) for v in rng.uniform(-0.7, 0.7, size=2))
        canvas.draw(
            Sprite(
                shapes[int(rng.integers(len(shapes)))],
                x,
                y,
                float(rng.uniform(0.18, 0.3)),
                float(rng.uniform(0, 2 * np.pi)),
                hue_colour(float(rng.uniform()), value=1.0),
            )
        )
        images.append(canvas.image())
        centres.append((x, y))
    return np.stack(images), np.asarray(centres)


@torch.no_grad()
def features(backbone, images: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The final CLS feature, the mean final patch token and all final patch tokens of each image."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    batch = (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    cls, patches, grids = [], [], []
    for start in range(0, len(batch), 256):
        tokens = backbone.forward_features(batch[start : start + 256])
        cls.append(tokens[:, 0])
        patches.append(tokens[:, backbone.num_prefix_tokens :].mean(dim=1))
        grids.append(tokens[:, backbone.num_prefix_tokens :].flatten(1))
    return torch.cat(cls).numpy(), torch.cat(patches).numpy(), torch.cat(grids).numpy()


def held_out_r2(inputs: np.ndarray, targets: np.ndarray, fit: int) -> float:
    """R^2 on images [fit:] of a ridge regression fitted on images [:fit] (standardised inputs)."""
    mu, sigma = inputs[:fit].mean(0), inputs[:fit].std(0) + 1e-6
    x = np.hstack([(inputs - mu) / sigma, np.ones((len(inputs), 1))])
    a, b = x[:fit], targets[:fit]
    weights = np.linalg.solve(a.T @ a + RIDGE * len(a) * np.eye(a.shape[1]), a.T @ b)
    residual = targets[fit:] - x[fit:] @ weights
    return float(1.0 - (residual**2).sum() / ((targets[fit:] - targets[fit:].mean(0)) ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--backbone", default="provpt_tiny_patch8_32")
    parser.add_argument("--weights", default="pretrained", help="pretrained, random, or a weight file")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    backbone = load_backbone(BackboneConfig(args.backbone, args.weights))
    config = backbone.pretrained_cfg
    images, centres = scenes(args.images, args.seed)
    cls, patches, grids = features(backbone, images, config["mean"], config["std"])
    fit = 2 * args.images // 3
    print(f"backbone {args.backbone} ({args.weights}); {args.images} scenes, ridge fitted on {fit}, scored on the rest")
    print(f"position R^2 from the CLS feature:        {held_out_r2(cls, centres, fit):.3f}")
    print(f"position R^2 from the mean patch token:   {held_out_r2(patches, centres, fit):.3f}")
    print(f"position R^2 from all patch tokens:       {held_out_r2(grids, centres, fit):.3f}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
