"""The benchmarks' on-disk formats: split files and images.

VTAB-1k (the preprocessed "vtab-1k" release): ``<task>/<split>.txt``, one
``<path relative to the task folder> <integer label>`` per line. CRLF line endings and blank
lines are tolerated; the label is the last field, so a path may contain spaces.

FGVC: ``<dataset>/<split>.json``, a JSON object mapping an image path (relative to the
dataset's image folder) to a class id. Class ids are remapped to 0..C-1 by sorting the ids
that occur in any split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from provpt_core.data.tasks import TaskSpec


class DataFormatError(ValueError):
    """A split file or image is not as the format says; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute image path
    label: int
    line: int  # line of the split file (1-based; the entry's position for JSON)


def task_folder(spec: TaskSpec, root: Path) -> Path | None:
    """The task's folder under `root`: its folder name, its name or an alias, first found."""
    for name in spec.folders:
        if (root / name).is_dir():
            return root / name
    return None


def split_file(spec: TaskSpec, folder: Path, split: str) -> Path:
    return folder / (f"{split}.json" if spec.split_format == "fgvc_json" else f"{split}.txt")


def read_split(spec: TaskSpec, folder: Path, split: str) -> list[Sample]:
    """The samples of `split`, labels as the model sees them (FGVC ids remapped)."""
    if spec.split_format == "fgvc_json":
        return _read_fgvc(spec, folder, split)
    return _read_vtab(split_file(spec, folder, split), folder)


def _read_vtab(path: Path, folder: Path) -> list[Sample]:
    samples = []
    text = path.read_bytes().decode("utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        image, _, label = line.rpartition(" ")
        image = image.strip()
        if not image or not _is_int(label):
            raise DataFormatError(f"{path}:{number}: expected '<image path> <integer label>', got {line!r}")
        samples.append(Sample(_inside(folder, image, f"{path}:{number}"), int(label), number))
    return samples


def _inside(folder: Path, image: str, where: str) -> Path:
    """`folder / image`, refused when the split file's path would leave the task's folder."""
    relative = Path(image)
    if relative.is_absolute() or ".." in relative.parts:
        raise DataFormatError(f"{where}: image path {image!r} leaves the task folder {folder}; expected a path inside it")
    return folder / relative


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _read_fgvc(spec: TaskSpec, folder: Path, split: str) -> list[Sample]:
    ids = sorted({class_id for s in spec.split_sizes for class_id in _fgvc_entries(folder, s, missing_ok=True).values()})
    remap = {class_id: index for index, class_id in enumerate(ids)}
    images = folder / spec.image_folder if spec.image_folder else folder
    entries = _fgvc_entries(folder, split)
    where = folder / f"{split}.json"
    return [
        Sample(_inside(images, path, f"{where}: entry {n}"), remap[class_id], n)
        for n, (path, class_id) in enumerate(entries.items(), start=1)
    ]


def _fgvc_entries(folder: Path, split: str, missing_ok: bool = False) -> dict[str, int]:
    path = folder / f"{split}.json"
    if missing_ok and not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(entries, dict):
        raise DataFormatError(f"{path}: expected a JSON object mapping image path to class id")
    for n, (image, class_id) in enumerate(entries.items(), start=1):
        if isinstance(class_id, bool) or not isinstance(class_id, int):
            raise DataFormatError(f"{path}: entry {n} ({image!r}): class id {class_id!r} is not an integer")
    return entries


def decode(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 RGB [size, size, 3]: any mode becomes RGB, then a bilinear resize."""
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, not later
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.array(rgb, dtype=np.uint8)
