"""A data manifest: what a benchmark root holds, per task and split, so two studies can tell
whether they ran on the same data.

Per split: the number of images, the class histogram, image formats, colour modes and sizes,
the bytes read, and a content hash (SHA-256 over the sorted (image digest, label) pairs: the
same images with the same labels hash the same whatever their file names or line order). A
task whose source images are lossless (its `TaskSpec.lossless_source`) but whose files are
JPEG is warned about: re-encoding is the most common reason VTAB-1k numbers do not reproduce.

`compare_manifests` names every difference between two manifests: counts, missing classes,
formats, content, and a split holding another split's content (swapped splits).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from provpt_core.data.config import DataConfig
from provpt_core.data.formats import DataFormatError, read_split, split_file, task_folder
from provpt_core.data.tasks import TaskSpec

MANIFEST_VERSION = 1
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")


def _image_facts(path: Path) -> tuple[str, int, str, str, int, int]:
    """(digest, bytes, format, mode, width, height) of one image file; its header only is parsed."""
    data = path.read_bytes()
    with Image.open(path) as image:
        return hashlib.sha256(data).hexdigest(), len(data), image.format or "?", image.mode, image.width, image.height


def split_manifest(spec: TaskSpec, folder: Path, split: str, workers: int = 8) -> dict[str, Any]:
    samples = read_split(spec, folder, split)
    with ThreadPoolExecutor(workers) as pool:
        facts = list(pool.map(lambda s: _image_facts(s.path), samples))
    pairs = sorted(f"{digest} {sample.label}" for (digest, *_), sample in zip(facts, samples))
    widths, heights = [f[4] for f in facts], [f[5] for f in facts]
    histogram = Counter(s.label for s in samples)
    return {
        "count": len(samples),
        "classes": {str(c): histogram[c] for c in sorted(histogram)},
        "absent_classes": [c for c in range(spec.num_classes) if c not in histogram],
        "formats": dict(sorted(Counter(f[2] for f in facts).items())),
        "modes": dict(sorted(Counter(f[3] for f in facts).items())),
        "width": _spread(widths),
        "height": _spread(heights),
        "bytes": sum(f[1] for f in facts),
        "sha256": hashlib.sha256("\n".join(pairs).encode()).hexdigest(),
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 2)}


def task_manifest(spec: TaskSpec, root: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """The manifest of one task under `root`; a split that cannot be read is listed with why.
    With `cache_dir`, kept there under a fingerprint of the split files and every image's path,
    size and modification time, so an unchanged root is hashed once."""
    folder = task_folder(spec, Path(root))
    cached = None
    if cache_dir is not None and folder is not None:
        cached = Path(cache_dir) / "manifests" / f"{spec.name}-{_fingerprint(spec, folder)}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
    entry = _task_manifest(spec, Path(root), folder)
    if cached is not None and not entry["problems"]:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(".part")
        temporary.write_text(json.dumps(entry, sort_keys=True))
        temporary.replace(cached)
    return entry


def _fingerprint(spec: TaskSpec, folder: Path) -> str:
    digest = hashlib.sha256(f"{MANIFEST_VERSION} {folder.resolve()}".encode())
    for split in spec.split_sizes:
        try:
            digest.update(split_file(spec, folder, split).read_bytes())
            for sample in read_split(spec, folder, split):
                stat = sample.path.stat()
                digest.update(f"{sample.path} {stat.st_size} {stat.st_mtime_ns}".encode())
        except (OSError, DataFormatError):
            digest.update(f"{split} unreadable".encode())
    return digest.hexdigest()[:24]


def _task_manifest(spec: TaskSpec, root: Path, folder: Path | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"task": spec.name, "benchmark": spec.benchmark, "lossless_source": spec.lossless_source,
                             "folder": str(folder), "splits": {}, "problems": [], "warnings": []}
    if folder is None:
        entry["problems"].append(f"no folder for task {spec.name} under {root}")
        return entry
    for split in spec.split_sizes:
        try:
            entry["splits"][split] = split_manifest(spec, folder, split)
        except (OSError, DataFormatError) as err:
            entry["problems"].append(f"{split}: {split_file(spec, folder, split)} cannot be read ({err})")
    if spec.lossless_source:
        for split, facts in entry["splits"].items():
            lossy = sum(n for fmt, n in facts["formats"].items() if fmt in LOSSY_FORMATS)
            if lossy:
                entry["warnings"].append(
                    f"{split}: {lossy} of {facts['count']} images are lossy ({', '.join(facts['formats'])}) but the "
                    f"task's source is lossless: re-encoded images change the pixels and the scores"
                )
    entry["sha256"] = hashlib.sha256(json.dumps({s: f["sha256"] for s, f in entry["splits"].items()}, sort_keys=True).encode()).hexdigest()
    return entry


def build_manifest(specs: Iterable[TaskSpec], roots: dict[str, Path | None], cache_dir: Path | None = None) -> dict[str, Any]:
    """The manifest of every task (roots by benchmark; a missing root is listed, not read)."""
    tasks = {}
    for spec in specs:
        root = roots.get(spec.benchmark)
        if root is None:
            tasks[spec.name] = {"task": spec.name, "benchmark": spec.benchmark, "splits": {}, "problems": [f"no {spec.benchmark} root given"], "warnings": []}
        else:
            tasks[spec.name] = task_manifest(spec, Path(root), cache_dir)
    return _manifest(tasks)


def study_manifest(configs: Iterable[DataConfig]) -> dict[str, Any]:
    """The manifest of the tasks these trial data configs read, each from its root, kept in its
    cache folder (an unchanged root is hashed once)."""
    from provpt_core.data.loading import benchmark_root, cache_dir

    tasks = {}
    for config in configs:
        if config.spec.name not in tasks:
            tasks[config.spec.name] = task_manifest(config.spec, benchmark_root(config), cache_dir(config))
    return _manifest(tasks)


def _manifest(tasks: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps({n: t.get("sha256") for n, t in tasks.items()}, sort_keys=True).encode()).hexdigest()
    return {"version": MANIFEST_VERSION, "sha256": digest, "tasks": tasks}


def compare_manifests(ours: dict[str, Any], theirs: dict[str, Any], names: tuple[str, str] = ("here", "there")) -> list[str]:
    """Every difference between two manifests, one sentence each (nothing: the same data)."""
    here, there = names
    found = []
    for task in sorted(set(ours["tasks"]) & set(theirs["tasks"])):
        mine, other = ours["tasks"][task]["splits"], theirs["tasks"][task]["splits"]
        by_hash = {facts["sha256"]: split for split, facts in other.items()}
        for split in [s for s in mine if s in other]:
            a, b = mine[split], other[split]
            if a["sha256"] == b["sha256"]:
                continue
            moved = by_hash.get(a["sha256"])
            if moved is not None:
                found.append(f"{task} {split}: {here} holds what {there} calls {moved} (swapped splits)")
                continue
            if a["count"] != b["count"]:
                found.append(f"{task} {split}: {a['count']} images {here}, {b['count']} {there}")
            gone = sorted(set(b["classes"]) - set(a["classes"]), key=int)
            extra = sorted(set(a["classes"]) - set(b["classes"]), key=int)
            if gone:
                found.append(f"{task} {split}: class {', '.join(gone)} missing {here} (present {there})")
            if extra:
                found.append(f"{task} {split}: class {', '.join(extra)} missing {there} (present {here})")
            recoded = set(a["formats"]) != set(b["formats"])
            if recoded:
                found.append(f"{task} {split}: image formats {_formats(a)} {here}, {_formats(b)} {there} (re-encoded?)")
            if a["count"] == b["count"] and not gone and not extra and not recoded:
                found.append(f"{task} {split}: same counts and formats, other images or labels (content hash differs)")
    for task in sorted(set(ours["tasks"]) ^ set(theirs["tasks"])):
        found.append(f"{task}: only {here if task in ours['tasks'] else there}")
    return found


def _formats(facts: dict[str, Any]) -> str:
    return ", ".join(f"{n} {fmt}" for fmt, n in facts["formats"].items())
