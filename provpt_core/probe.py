"""Where does a backbone keep an object's position: in its CLS feature or in its patch tokens?

A VTAB backbone names *what* is in an image: its CLS feature is largely invariant to where the
object is, while its patch tokens still carry it, and prompts learn to read it out. The probe
renders scenes of one random sprite (shape, colour, size, angle) at a random position on a
random background, fits a ridge regression of the sprite's centre (x, y) on the final CLS
feature, on the mean final patch token and on all final patch tokens side by side, and scores
each on held-out scenes (R^2).
"""

from __future__ import annotations

import numpy as np
import torch

from provpt_core.data.mini.render import BACKGROUNDS, SHAPES, Canvas, Sprite, background, hue_colour

SIZE = 32
RIDGE = 1e-2
FEATURES = ("cls", "mean_patch", "patch_tokens")


def position_scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
def token_features(backbone, images: np.ndarray) -> dict[str, np.ndarray]:
    """The final CLS feature, the mean final patch token and all final patch tokens of each image."""
    config = backbone.pretrained_cfg
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    batch = (batch - torch.tensor(config["mean"]).view(1, 3, 1, 1)) / torch.tensor(config["std"]).view(1, 3, 1, 1)
    was_training = backbone.training
    backbone.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURES}
    for start in range(0, len(batch), 256):
        tokens = backbone.forward_features(batch[start : start + 256])
        patches = tokens[:, backbone.num_prefix_tokens :]
        parts["cls"].append(tokens[:, 0])
        parts["mean_patch"].append(patches.mean(dim=1))
        parts["patch_tokens"].append(patches.flatten(1))
    backbone.train(was_training)
    return {name: torch.cat(values).numpy() for name, values in parts.items()}


def held_out_r2(inputs: np.ndarray, targets: np.ndarray, fit: int) -> float:
    """R^2 on rows [fit:] of a ridge regression fitted on rows [:fit] (standardised inputs)."""
    mu, sigma = inputs[:fit].mean(0), inputs[:fit].std(0) + 1e-6
    x = np.hstack([(inputs - mu) / sigma, np.ones((len(inputs), 1))])
    a, b = x[:fit], targets[:fit]
    weights = np.linalg.solve(a.T @ a + RIDGE * len(a) * np.eye(a.shape[1]), a.T @ b)
    residual = targets[fit:] - x[fit:] @ weights
    return float(1.0 - (residual**2).sum() / ((targets[fit:] - targets[fit:].mean(0)) ** 2).sum())


def position_r2(backbone, images: int = 3000, seed: int = 1234) -> dict[str, float]:
    """Held-out R^2 of a sprite's centre from each of FEATURES (ridge fitted on two thirds)."""
    pixels, centres = position_scenes(images, seed)
    features = token_features(backbone, pixels)
    fit = 2 * images // 3
    return {name: held_out_r2(values, centres, fit) for name, values in features.items()}
