"""The published numbers our tables are set beside (``reference/published_results.csv``).

One row per sourced number: method, benchmark, task, value (top-1 %, or millions of trained
parameters without the head for ``params``), grade (how directly it was sourced: primary,
primary-rebuilt, derived (computed from sourced numbers, e.g. a mean of 19 tasks from group
means), secondary, secondary-consistent, secondary-unverified) and source. ``task`` is a task
name or alias, ``group:<name>``, ``mean_of_groups``, ``mean_of_19`` (VTAB-1k), ``mean``
(FGVC) or ``params``. A method written ``<method>_as_rerun_by_<paper>``
is that paper's re-run of ``<method>``, a second reference for the same row. Nothing here was
filled from memory: a number that could not be sourced is absent, and the tables say so.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from provpt_core import get_task

MEAN_GROUPS = "mean:groups"
MEAN_TASKS = "mean:tasks"
PARAMS = "params"
RERUN = "_as_rerun_by_"
FIELDS = ("method", "benchmark", "task", "value", "grade", "source")


@dataclass(frozen=True)
class PublishedNumber:
    method: str  # as written in the file (e.g. vpt_deep_as_rerun_by_provpt)
    benchmark: str
    column: str  # our column: a task name, group:<Group>, mean:groups or mean:tasks
    value: float
    grade: str
    source: str

    @property
    def row(self) -> str:
        """Our method this number is a reference for."""
        return self.method.split(RERUN)[0]

    @property
    def reference(self) -> str:
        """Which reference of that method: "published", or "published (as re-run by X)"."""
        _, _, paper = self.method.partition(RERUN)
        return f"published (as re-run by {paper})" if paper else "published"


def default_path() -> Path:
    return Path(str(resources.files("orchestrator.report") / "reference" / "published_results.csv"))


def load_published(path: Path | None = None) -> list[PublishedNumber]:
    path = path or default_path()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path}:1: expected the columns {','.join(FIELDS)}, got {reader.fieldnames}")
        numbers = []
        for line, row in enumerate(reader, 2):
            try:
                numbers.append(
                    PublishedNumber(
                        row["method"], row["benchmark"], _column(row["task"]), float(row["value"]), row["grade"], row["source"]
                    )
                )
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}:{line}: {err.args[0]}") from None
    return numbers


def _column(task: str) -> str:
    if task.startswith("group:"):
        return f"group:{task.split(':', 1)[1].capitalize()}"
    if task == "mean_of_groups":
        return MEAN_GROUPS
    if task in ("mean", "mean_of_19"):
        return MEAN_TASKS
    if task == PARAMS:
        return PARAMS
    return get_task(task).name
