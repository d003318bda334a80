"""Benchmark folders in the exact on-disk formats, made by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from provpt_core.data.tasks import get_task

DISTINCT_IMAGES = 12


def write_image(path: Path, seed: int, mode: str = "RGB", size: int = 12) -> np.ndarray:
    """A small image in `mode`; returns the RGB pixels a correct reader must produce."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgb, "RGB").convert(mode)
    image.save(path)
    return np.asarray(image.convert("RGB"))


def make_vtab_task(root: Path, task: str, sizes: dict[str, int] | None = None, line_end: str = "\n") -> Path:
    """A task folder with every split file at its expected count (or `sizes`), lines naming a
    few distinct PNG images in turn, labels cycling over the classes."""
    spec = get_task(task)
    folder = root / spec.name
    sizes = {**spec.split_sizes, **(sizes or {})}
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        for i in range(min(count, DISTINCT_IMAGES)):
            write_image(folder / "images" / split / f"{i:06d}.png", seed=i)
        lines = [f"images/{split}/{i % DISTINCT_IMAGES:06d}.png {i % spec.num_classes}" for i in range(count)]
        (folder / f"{split}.txt").write_text(line_end.join(lines) + (line_end if lines else ""), newline="")
    return folder


def make_fgvc_task(root: Path, task: str, sizes: dict[str, int], class_ids: list[int]) -> Path:
    spec = get_task(task)
    folder = root / spec.folder
    images = folder / spec.image_folder if spec.image_folder else folder
    for split, count in sizes.items():
        entries = {}
        for i in range(count):
            relative = f"{split}/{i:05d}.jpg"
            if i < DISTINCT_IMAGES:
                write_image(images / relative, seed=i, size=16)
            else:  # copies of the first few: cheap, and still one file per entry
                (images / relative).write_bytes((images / f"{split}/{i % DISTINCT_IMAGES:05d}.jpg").read_bytes())
            entries[relative] = class_ids[i % len(class_ids)]
        (folder / f"{split}.json").write_text(json.dumps(entries))
    return folder
