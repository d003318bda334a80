"""What the trials say: final test accuracies (%) per (method, task, seed), and each cell's state."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

import pandas as pd

from orchestrator.report.model import Cell
from orchestrator.spec.study import Study


class Scores:
    """Final test accuracies (%) per (method, task, seed), and the state of every cell.
    `metric` "best_late_test_acc" reads the "as published" readout instead."""

    def __init__(self, trials: pd.DataFrame, study: Study, metric: str = "test_acc") -> None:
        self.planned = len(study.final.seeds)
        self.by_cell: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        self.statuses: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self.params: dict[tuple[str, str], list[int]] = defaultdict(list)
        for row in trials.itertuples(index=False):
            self.statuses[(row.method, row.task, row.phase)].append(row.status)
            score = getattr(row, metric)
            if row.phase == "final" and row.status == "FINISHED" and not missing(score):
                self.by_cell[(row.method, row.task)][int(row.seed)] = 100 * float(score)
                if not missing(row.trainable_params):
                    self.params[(row.method, row.task)].append(int(row.trainable_params))

    def task_cell(self, method: str, task: str) -> Cell:
        values = self.by_cell.get((method, task), {})
        if values:
            std = statistics.stdev(values.values()) if len(values) > 1 else None
            state = "partial" if len(values) < self.planned else "ok"
            return Cell(statistics.mean(values.values()), std, len(values), self.planned, state)
        return Cell(state=self.empty_state(method, task), planned=self.planned)

    def empty_state(self, method: str, task: str) -> str:
        searched = self.statuses.get((method, task, "search"), [])
        final = self.statuses.get((method, task, "final"), [])
        if "RUNNING" in searched + final:
            return "running"
        if final or (searched and "FINISHED" not in searched):
            return "failed"
        return "missing"

    def mean_cell(self, method: str, groups: list[tuple[str, ...]]) -> Cell:
        """The mean over groups of the mean over their tasks of the per-task means; its
        spread is the std over seeds of the same mean taken per seed (seeds all tasks share)."""
        tasks = [t for g in groups for t in g]
        done = [t for t in tasks if self.by_cell.get((method, t))]
        if len(done) < len(tasks):
            return Cell(state="incomplete", note=f"{len(done)}/{len(tasks)} tasks", digits=2)
        task_means = {t: statistics.mean(self.by_cell[(method, t)].values()) for t in tasks}
        value = statistics.mean(statistics.mean(task_means[t] for t in g) for g in groups)
        shared = set.intersection(*(set(self.by_cell[(method, t)]) for t in tasks))
        per_seed = [statistics.mean(statistics.mean(self.by_cell[(method, t)][s] for t in g) for g in groups) for s in shared]
        std = statistics.stdev(per_seed) if len(per_seed) > 1 else None
        return Cell(value, std, len(shared), self.planned, digits=2)

    def params_cell(self, method: str, tasks: tuple[str, ...]) -> Cell:
        counts = [c for t in tasks for c in self.params.get((method, t), [])]
        if not counts:
            return Cell(state="missing")
        millions = statistics.mean(counts) / 1e6
        return Cell(millions, digits=three_figures(millions))


def three_figures(value: float) -> int:
    """Decimals that show at least three significant figures of `value`, and at least two."""
    return max(2, 2 - math.floor(math.log10(abs(value)))) if value else 2


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
