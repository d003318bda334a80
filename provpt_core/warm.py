"""Warm workers: what a process that runs trial after trial keeps between them.

Every trial of a task builds the same frozen backbone (a timm model and its weight file:
seconds for ViT-B/16) and opens the same decoded splits. A worker that runs many trials (Tune's
reused actors) keeps both here. Nothing a trial does reaches the next: each trial gets its own
deep copy of the backbone (full fine-tuning, LoRA and DA-VPT+ change its weights in place),
and the splits are read-only memory maps whose tensors no trial writes. A backbone is keyed by
its config and, for a weight file, the file's size and modification time, so a changed config
or a rewritten file is loaded afresh.
"""

from __future__ import annotations

import copy
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

from timm.models.vision_transformer import VisionTransformer

from provpt_core.backbone import BackboneConfig, load_backbone, weight_file
from provpt_core.config import as_dict
from provpt_core.data.loading import DataConfig, load_data
from provpt_core.data.splits import DataSplits

T = TypeVar("T")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    load_seconds: float = 0.0  # spent loading on misses
    copy_seconds: float = 0.0  # spent copying backbones out of the cache


@dataclass
class WarmCache:
    """Backbones and splits kept in this process, the least recently used dropped first."""

    max_backbones: int = 2
    max_datasets: int = 16
    backbones: CacheStats = field(default_factory=CacheStats)
    datasets: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self._backbones: OrderedDict[Hashable, VisionTransformer] = OrderedDict()
        self._datasets: OrderedDict[Hashable, DataSplits] = OrderedDict()

    def backbone(self, config: BackboneConfig) -> VisionTransformer:
        """A trial's own copy of the frozen backbone of `config`."""
        master = _cached(self._backbones, _backbone_key(config), lambda: load_backbone(config), self.max_backbones, self.backbones)
        start = time.perf_counter()
        mine = copy.deepcopy(master)
        self.backbones.copy_seconds += time.perf_counter() - start
        return mine

    def data(self, config: DataConfig, resolution: int) -> DataSplits:
        """The splits of `config` at `resolution` (shared, read-only)."""
        key = (json.dumps(as_dict(config), sort_keys=True), resolution)
        return _cached(self._datasets, key, lambda: load_data(config, resolution), self.max_datasets, self.datasets)

    def clear(self) -> None:
        self._backbones.clear()
        self._datasets.clear()


def _backbone_key(config: BackboneConfig) -> Hashable:
    path = weight_file(config)
    stamp: Any = None
    if path is not None:
        status = Path(path).stat()
        stamp = (str(Path(path).resolve()), status.st_size, status.st_mtime_ns)
    return json.dumps(as_dict(config), sort_keys=True), stamp


def _cached(store: OrderedDict, key: Hashable, load: Callable[[], T], limit: int, stats: CacheStats) -> T:
    if key in store:
        stats.hits += 1
        store.move_to_end(key)
        return store[key]
    stats.misses += 1
    start = time.perf_counter()
    value = load()
    stats.load_seconds += time.perf_counter() - start
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)
    return value
