"""Which task a trial fits and scores on, where it lives, and which protocol phase: a config
only (no torch, no image decoding), so a study file is checked without the data code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provpt_core.config import check
from provpt_core.data.tasks import TaskSpec, get_task


@dataclass
class DataConfig:
    """Which task, where it lives, and which protocol phase.

    search: fit on train800, score val200 (FGVC: train, val). final: fit on train800val200,
    score test (FGVC: train, test).
    """

    task: str = "mini_digits"
    root: str | None = None  # the benchmark's root folder; None: the mini benchmark's cache
    phase: Literal["search", "final"] = "search"
    resolution: int | None = None  # None: the backbone's input size
    mean: list[float] | None = None  # None: the task's normalisation
    std: list[float] | None = None
    cache_dir: str | None = None  # None: $PROVPT_CACHE, else ~/.cache/provpt
    decode_workers: int = 4

    def __post_init__(self) -> None:
        try:
            get_task(self.task)
        except KeyError as err:
            check(False, "task", f"a known task ({err.args[0]})", self.task)
        for name in ("mean", "std"):
            value = getattr(self, name)
            check(value is None or len(value) == 3, name, "null or 3 numbers (R, G, B)", value)
        check(self.std is None or min(self.std) > 0, "std", "3 numbers > 0", self.std)
        check(self.resolution is None or self.resolution >= 8, "resolution", "null or an integer >= 8", self.resolution)

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)
