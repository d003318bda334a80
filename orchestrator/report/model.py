"""The table model every report is written in: cells (a number, or why there is none), columns, rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from provpt_core import TaskSpec

FLAG = "†"  # marks a method that differs from the baseline across tasks


@dataclass
class Cell:
    """One number of a table (top-1 %), or why there is none."""

    value: float | None = None
    std: float | None = None
    seeds: int = 0
    planned: int = 0
    state: str = "ok"  # ok, partial (fewer seeds than planned), failed, running, missing, incomplete, n/s, n/a
    note: str = ""  # e.g. "3/7 tasks" for an incomplete mean
    grade: str = ""
    digits: int = 1

    def text(self) -> str:
        if self.value is None:
            return f"{self.state} ({self.note})" if self.note else self.state
        out = f"{self.value:.{self.digits}f}"
        if self.std is not None:
            out += f" ± {self.std:.{self.digits}f}"
        if self.state == "partial":
            out += f" ({self.seeds}/{self.planned} seeds)"
        return out


@dataclass
class Column:
    id: str
    title: str
    tasks: tuple[str, ...] = ()  # the tasks a mean covers


@dataclass
class Row:
    label: str
    kind: str  # ours, published, delta
    method: str
    cells: dict[str, Cell]


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cell(self, label: str, column: str) -> Cell:
        return next(r for r in self.rows if r.label == label).cells[column]


def task_columns(specs: list[TaskSpec]) -> list[Column]:
    return [Column(s.name, s.name) for s in specs]
