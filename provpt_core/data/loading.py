"""From a trial's data config to the decoded splits it fits and scores on."""

from __future__ import annotations

from pathlib import Path

from provpt_core.data.cache import cached_split, default_cache_dir
from provpt_core.data.config import DataConfig
from provpt_core.data.formats import DataFormatError, read_split, split_file, task_folder
from provpt_core.data.mini.build import mini_root
from provpt_core.data.splits import DataSplits, ImageSet
from provpt_core.data.tasks import TaskSpec


def benchmark_root(config: DataConfig) -> Path:
    spec = config.spec
    if config.root is not None:
        root = Path(config.root).expanduser()
        if not root.is_dir():
            state = "is a file" if root.exists() else "does not exist"
            raise DataFormatError(f"data.root: {root} {state}; expected the folder that holds the {spec.benchmark} tasks")
        return root
    if spec.benchmark == "mini":
        return mini_root(cache_dir(config))
    raise DataFormatError(f"data.root: task '{spec.name}' needs the folder of the {spec.benchmark} benchmark")


def cache_dir(config: DataConfig) -> Path:
    return Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()


def load_data(config: DataConfig, resolution: int) -> DataSplits:
    """The phase's (fit, score) splits, decoded once into the cache and memory-mapped."""
    spec = config.spec
    resolution = config.resolution or resolution
    root = benchmark_root(config)
    folder = task_folder(spec, root)
    if folder is None:
        raise DataFormatError(f"{spec.name}: no task folder under {root} (looked for {', '.join(spec.folders)})")
    stored = resolution if spec.resize == "squash" else round(resolution * 256 / 224)
    fit_split, score_split = spec.search_splits if config.phase == "search" else spec.final_splits
    sets = {split: _load_split(spec, folder, split, stored, config) for split in (fit_split, score_split)}
    scored = sets[score_split]
    return DataSplits(
        train=sets[fit_split],
        val=scored if config.phase == "search" else None,
        test=scored if config.phase == "final" else None,
        num_classes=spec.num_classes,
        mean=tuple(config.mean or spec.mean),
        std=tuple(config.std or spec.std),
        name=spec.name,
        crop=resolution if spec.resize == "squash_crop" else None,
    )


def _load_split(spec: TaskSpec, folder: Path, split: str, size: int, config: DataConfig) -> ImageSet:
    path = split_file(spec, folder, split)
    if not path.is_file():
        raise DataFormatError(f"{spec.name}: split file {path} does not exist")
    samples = read_split(spec, folder, split)
    expected = spec.split_sizes[split]
    if len(samples) != expected:
        raise DataFormatError(f"{path}: lists {len(samples)} images, expected {expected}")
    for sample in samples:
        if not 0 <= sample.label < spec.num_classes:
            raise DataFormatError(f"{path}:{sample.line}: label {sample.label} outside [0, {spec.num_classes})")
    return cached_split(spec.name, split, path, samples, size, cache_dir(config), config.decode_workers)
