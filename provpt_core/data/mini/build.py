"""The mini benchmark: six VTAB-1k-style tasks, in all three groups, that a CPU trains on in seconds.

Built on first use, deterministically, into ``<cache>/mini-v<VERSION>/`` in exactly the VTAB-1k
folder format (train800 / val200 / train800val200 / test file lists and images), so the same
loaders, cache and checks run on it as on the real benchmark.

- mini_digits (Natural, 10 classes): scikit-learn's handwritten digits (real scans, shipped
  inside the package), 8 px upsampled to 32 px, stored as grayscale JPEG.
- mini_texture (Specialized, 8 classes): a full-frame texture (stripes, checks, dots, waves,
  bricks, zigzag, grid, blobs) at a random scale, angle and colours, DTD style.
- mini_count (Structured, 6 classes): 1-6 shaded balls on a floor, CLEVR-count style.
- mini_loc (Structured, 8 classes): one sprite (square, ellipse, heart) on black; the label is
  its x position in 8 bins, dSprites-location style.
- mini_ori (Structured, 4 classes): one arrow on a textured background; the label is its
  orientation in 4 bins of 90 degrees, dSprites-orientation style.
- mini_dist (Structured, 4 classes): one object on a ground plane seen in perspective; the label
  is its distance in 4 bins (nearer objects sit lower and look bigger), KITTI-distance style.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from provpt_core.data.mini.render import BACKGROUNDS, SUPERSAMPLE, TEXTURES, Canvas, Sprite, background, hue_colour, texture

VERSION = 2
SIZE = 32
TRAIN, VAL, TEST = 800, 200, 1000


def mini_root(cache_dir: Path) -> Path:
    """The mini benchmark's root under `cache_dir`, built if it is not there yet."""
    root = cache_dir / f"mini-v{VERSION}"
    if root.is_dir():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"mini-v{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not root.is_dir():
            partial = cache_dir / f".mini-v{VERSION}.{os.getpid()}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            for name, generate in GENERATORS.items():
                _write_task(partial / name, generate())
            os.replace(partial, root)
    return root


def _write_task(folder: Path, samples: Iterator[tuple[np.ndarray, int]]) -> None:
    samples = list(samples)
    splits = {"train800": samples[:TRAIN], "val200": samples[TRAIN : TRAIN + VAL], "test": samples[TRAIN + VAL :]}
    lines: dict[str, list[str]] = {}
    for split, items in splits.items():
        (folder / "images" / split).mkdir(parents=True)
        lines[split] = []
        for index, (image, label) in enumerate(items):
            relative = f"images/{split}/{index:06d}.jpg"
            mode = "L" if image.ndim == 2 else "RGB"
            Image.fromarray(image, mode).save(folder / relative, quality=95)
            lines[split].append(f"{relative} {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(entries) + "\n")


def _digits() -> Iterator[tuple[np.ndarray, int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    for index in order:
        small = Image.fromarray((digits.images[index] * (255.0 / 16.0)).astype(np.uint8), "L")
        yield np.asarray(small.resize((SIZE, SIZE), Image.BILINEAR)), int(digits.target[index])


def _rendered(draw: Callable[[np.random.Generator], tuple[np.ndarray, int]], seed: int) -> Iterator:
    rng = np.random.default_rng(seed)
    for _ in range(TRAIN + VAL + TEST):
        yield draw(rng)


def _count_scene(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    count = int(rng.integers(1, 7))
    floor = np.array([0.55, 0.53, 0.5]) * rng.uniform(0.8, 1.1)
    canvas = Canvas(SIZE, floor)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < count:
        radius = float(rng.uniform(0.13, 0.2))
        x, y = rng.uniform(-0.85 + radius, 0.85 - radius, size=2)
        if all((x - px) ** 2 + (y - py) ** 2 > (radius + pr + 0.04) ** 2 for px, py, pr in placed):
            placed.append((float(x), float(y), radius))
    for x, y, radius in sorted(placed, key=lambda p: -p[1]):  # far (top) first
        colour = hue_colour(float(rng.uniform()), saturation=0.7, value=0.9)
        canvas.draw(Sprite("circle", x, y, radius, 0.0, colour, shaded=True))
    return canvas.image(), count - 1


def _location_scene(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    canvas = Canvas(SIZE, np.zeros(3))
    x = float(rng.uniform(-0.75, 0.75))
    label = min(int((x + 0.75) / 1.5 * 8), 7)
    shape = ("square", "ellipse", "heart")[int(rng.integers(3))]
    scale = float(rng.uniform(0.18, 0.28))
    canvas.draw(Sprite(shape, x, float(rng.uniform(-0.7, 0.7)), scale, float(rng.uniform(0, 2 * np.pi)), (1.0, 1.0, 1.0)))
    return canvas.image(), label


def _orientation_scene(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    canvas = Canvas(SIZE, background(kind, SIZE, rng))
    angle = float(rng.uniform(0, 2 * np.pi))
    label = int(np.round(angle / (np.pi / 2))) % 4
    x, y = rng.uniform(-0.45, 0.45, size=2)
    colour = hue_colour(float(rng.uniform()), value=1.0)
    canvas.draw(Sprite("arrow", float(x), float(y), float(rng.uniform(0.35, 0.5)), angle, colour))
    return canvas.image(), label


def _texture_scene(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    label = int(rng.integers(len(TEXTURES)))
    return Canvas(SIZE, texture(TEXTURES[label], SIZE, rng)).image(), label


DISTANCE_BINS = 4
HORIZON = 0.35  # image y of the horizon, in [-1, 1]


def _distance_scene(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    fine = SIZE * SUPERSAMPLE
    rows = np.linspace(1.0, -1.0, fine, dtype=np.float32)[:, None, None]
    sky = np.asarray(hue_colour(float(rng.uniform(0.5, 0.7)), saturation=0.4, value=0.8), dtype=np.float32)
    ground = np.asarray(hue_colour(float(rng.uniform(0.05, 0.35)), saturation=0.5, value=0.5), dtype=np.float32)
    shade = np.clip(0.55 + 0.45 * (HORIZON - rows) / (1.0 + HORIZON), 0.0, 1.0)  # ground darkens towards the horizon
    canvas = Canvas(SIZE, np.where(rows > HORIZON, sky, ground * shade))
    # A pinhole camera over the ground: an object at depth z stands at y = HORIZON - 1.3 / z
    # and is 0.5 / z tall; bins of equal width in 1 / z give equal steps on the image.
    inverse = float(rng.uniform(0.25, 1.0))
    label = min(int((1.0 - inverse) / 0.75 * DISTANCE_BINS), DISTANCE_BINS - 1)
    scale = 0.5 * inverse * float(rng.uniform(0.85, 1.15))
    x = float(rng.uniform(-0.8, 0.8))
    shape = ("circle", "square", "hexagon")[int(rng.integers(3))]
    colour = hue_colour(float(rng.uniform()), saturation=0.8, value=0.95)
    canvas.draw(Sprite(shape, x, HORIZON - 1.3 * inverse + scale, scale, 0.0, colour, shaded=shape == "circle"))
    return canvas.image(), label


GENERATORS: dict[str, Callable[[], Iterator[tuple[np.ndarray, int]]]] = {
    "mini_digits": _digits,
    "mini_texture": lambda: _rendered(_texture_scene, seed=4),
    "mini_count": lambda: _rendered(_count_scene, seed=1),
    "mini_loc": lambda: _rendered(_location_scene, seed=2),
    "mini_ori": lambda: _rendered(_orientation_scene, seed=3),
    "mini_dist": lambda: _rendered(_distance_scene, seed=5),
}
