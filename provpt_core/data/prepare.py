"""Convert images into a benchmark root in the VTAB-1k format, losslessly.

An image folder (one sub-folder per class, any format PIL reads) becomes
``<root>/<task folder>/images/<class>/<name>.png`` with the split files of the task
(``train800``, ``val200``, their union ``train800val200`` and ``test``): every image decoded
once and written as PNG, so the pixels a loader decodes are bit-exact those of the source. The
splits are stratified by class and drawn with a seed, the counts those of the task's spec.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from provpt_core.data.tasks import TaskSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")  # what PNG stores as is


class PrepareError(ValueError):
    """The source cannot become the task's root; the message names the folder or file."""


def class_images(source: Path) -> dict[str, list[Path]]:
    """The source's classes (sub-folder names, sorted) and their image files (sorted)."""
    if not source.is_dir():
        raise PrepareError(f"{source}: not a folder; expected one sub-folder of images per class")
    classes = {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(p for p in source.iterdir() if p.is_dir())
    }
    empty = [name for name, images in classes.items() if not images]
    if not classes or empty:
        raise PrepareError(f"{source}: {'class folders without images: ' + ', '.join(empty) if empty else 'no class folders'}")
    return classes


def stratified_splits(labels: list[int], spec: TaskSpec, seed: int) -> dict[str, list[int]]:
    """Indices per split: train800 and val200 stratified by class, test from the rest."""
    sizes = spec.split_sizes
    fit, val, test = sizes["train800"] + sizes["val200"], sizes["val200"], sizes["test"]
    if len(labels) < fit + test:
        raise PrepareError(f"{spec.name} needs {fit + test} images ({fit} to train and validate, {test} to test), the source has {len(labels)}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    for indices in by_class.values():
        rng.shuffle(indices)
    chosen = _proportional(by_class, fit)
    trainval = {c: by_class[c][:n] for c, n in chosen.items()}
    rest = [i for c, indices in by_class.items() for i in indices[chosen[c]:]]
    held = _proportional(trainval, val)
    splits = {
        "val200": [i for c, indices in trainval.items() for i in indices[: held[c]]],
        "train800": [i for c, indices in trainval.items() for i in indices[held[c]:]],
        "test": sorted(rng.sample(rest, test)),
    }
    splits["train800val200"] = splits["train800"] + splits["val200"]
    return {name: sorted(indices) for name, indices in splits.items()}


def _proportional(by_class: dict[int, list[int]], total: int) -> dict[int, int]:
    """How many of each class to take for `total`: proportional to its size, the remainders
    to the largest fractions (so a class is never over-drawn)."""
    size = sum(len(v) for v in by_class.values())
    exact = {c: total * len(v) / size for c, v in by_class.items()}
    counts = {c: int(x) for c, x in exact.items()}
    for c in sorted(exact, key=lambda c: (counts[c] - exact[c], c))[: total - sum(counts.values())]:
        counts[c] += 1
    return counts


def prepare_image_folder(source: Path, spec: TaskSpec, root: Path, seed: int = 0) -> Path:
    """`source` (class sub-folders) as `spec`'s task under `root`; the task folder."""
    classes = class_images(Path(source))
    if spec.split_format != "vtab_list":
        raise PrepareError(f"{spec.name}: only VTAB-format tasks can be prepared (split files of 'path label' lines)")
    if len(classes) != spec.num_classes:
        raise PrepareError(f"{source}: {len(classes)} class folders, task {spec.name} has {spec.num_classes} classes")
    folder = Path(root) / (spec.folder or spec.name)
    if folder.exists() and any(folder.iterdir()):
        raise PrepareError(f"{folder}: exists and is not empty; prepare into a new root (nothing is overwritten)")
    entries = [(label, name, path) for label, (name, paths) in enumerate(classes.items()) for path in paths]
    names: dict[str, Path] = {}
    for _, name, path in entries:
        target = f"images/{name}/{path.stem}.png"
        if target in names:
            raise PrepareError(f"{path} and {names[target]} would both become {target}")
        names[target] = path
    splits = stratified_splits([label for label, _, _ in entries], spec, seed)
    used = sorted({i for indices in splits.values() for i in indices})
    lines = {}
    for index in used:
        label, name, path = entries[index]
        relative = f"images/{name}/{path.stem}.png"
        _write_png(path, folder / relative)
        lines[index] = f"{relative} {label}"
    for split, indices in splits.items():
        (folder / f"{split}.txt").write_text("".join(lines[i] + "\n" for i in indices))
    return folder


def _write_png(source: Path, target: Path) -> None:
    try:
        with Image.open(source) as image:
            image.load()
            pixels = image if image.mode in PNG_MODES else image.convert("RGB")
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels.save(target, format="PNG")
    except OSError as err:
        raise PrepareError(f"{source}: cannot be read as an image ({err})") from None
