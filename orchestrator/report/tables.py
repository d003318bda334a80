"""The paper tables: one per benchmark (tasks, group means, both averages, parameters, with the
published numbers and our difference to them), the ablation table, and the selections."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from orchestrator.report.frames import finished_finals
from orchestrator.report.model import FLAG, Cell, Column, Row, Table, task_columns
from orchestrator.report.published import MEAN_GROUPS, MEAN_TASKS, PARAMS, PublishedNumber
from orchestrator.report.scores import Scores, missing
from orchestrator.report.statistics import SIGNIFICANCE
from orchestrator.spec.study import Study
from provpt_core import TASKS, TaskSpec, lookup

BENCHMARK_TITLES = {"vtab1k": "VTAB-1k", "fgvc": "FGVC", "mini": "Mini benchmark"}


def benchmark_columns(specs: list[TaskSpec]) -> list[Column]:
    """The tasks, then (with more than one group) each group's mean and the mean of the group
    means, then the mean over all tasks, then the trainable parameters."""
    columns = task_columns(specs)
    groups: dict[str, list[str]] = {}
    for spec in specs:
        groups.setdefault(spec.group, []).append(spec.name)
    if len(groups) > 1:
        columns += [Column(f"group:{g}", f"{g} ({len(ts)})", tuple(ts)) for g, ts in groups.items()]
        columns.append(Column(MEAN_GROUPS, f"Mean of {len(groups)} groups", tuple(t for ts in groups.values() for t in ts)))
    every = tuple(s.name for s in specs)
    columns.append(Column(MEAN_TASKS, f"Mean of {len(every)} tasks", every))
    columns.append(Column(PARAMS, "Params (M)", every))
    return columns


def _groups_of(column: Column, specs: dict[str, TaskSpec]) -> list[tuple[str, ...]]:
    if column.id != MEAN_GROUPS:
        return [column.tasks]
    groups: dict[str, list[str]] = {}
    for task in column.tasks:
        groups.setdefault(specs[task].group, []).append(task)
    return [tuple(ts) for ts in groups.values()]


def our_cells(scores: Scores, method: str, columns: list[Column], specs: dict[str, TaskSpec]) -> dict[str, Cell]:
    cells = {}
    for column in columns:
        if column.id == PARAMS:
            cells[column.id] = scores.params_cell(method, column.tasks)
        elif column.tasks:
            cells[column.id] = scores.mean_cell(method, _groups_of(column, specs))
        else:
            cells[column.id] = scores.task_cell(method, column.id)
    return cells


def _benchmark_members(benchmark: str, column: Column) -> set[str]:
    """The tasks the paper's number for this column covers: the whole group or benchmark."""
    members = [s for s in TASKS if s.benchmark == benchmark]
    if column.id.startswith("group:"):
        group = column.id.split(":", 1)[1]
        return {s.name for s in members if s.group == group}
    return {s.name for s in members}


def published_rows(
    method: str, benchmark: str, columns: list[Column], ours: dict[str, Cell], published: list[PublishedNumber]
) -> list[Row]:
    """Each reference of `method` (its paper's number, other papers' re-runs) and our difference."""
    numbers = [p for p in published if p.row == method and p.benchmark == benchmark]
    references = list(dict.fromkeys(p.reference for p in numbers)) or ["published"]
    rows = []
    for reference in references:
        found = {p.column: p for p in numbers if p.reference == reference}
        cells, deltas = {}, {}
        for column in columns:
            number = found.get(column.id)
            if number is None:
                cells[column.id] = deltas[column.id] = Cell(state="n/s")
                continue
            if column.id == PARAMS:  # published counts leave the head out, ours include it
                cells[column.id] = Cell(number.value, digits=2, grade=number.grade)
                deltas[column.id] = Cell(state="n/a", note="ours counts the head")
                continue
            if column.tasks and set(column.tasks) != _benchmark_members(benchmark, column):
                cells[column.id] = deltas[column.id] = Cell(state="n/a", note="not the paper's task set")
                continue
            cells[column.id] = Cell(number.value, digits=2, grade=number.grade)
            mine = ours[column.id]
            deltas[column.id] = (
                Cell(mine.value - number.value, digits=2) if mine.value is not None else Cell(state=mine.state)
            )
        grades = sorted({c.grade for c in cells.values() if c.grade})
        label = f"{method}: {reference} [{', '.join(grades) or 'none sourced'}]"
        rows.append(Row(label, "published", method, cells))
        rows.append(Row(f"{method}: ours − {reference}", "delta", method, deltas))
    return rows


def benchmark_table(
    study: Study,
    scores: Scores,
    benchmark: str,
    published: list[PublishedNumber],
    flags: dict[str, float | None],
    readout: Scores | None = None,
) -> Table:
    specs = [s for s in study.task_specs if s.benchmark == benchmark]
    by_name = {s.name: s for s in specs}
    columns = benchmark_columns(specs)
    title = f"{BENCHMARK_TITLES[benchmark]}: top-1 test accuracy (%), mean ± std over {scores.planned} seeds"
    table = Table(benchmark, title, columns)
    has_published = any(p.benchmark == benchmark for p in published)
    for entry in study.methods:
        method = entry.key
        cells = our_cells(scores, method, columns, by_name)
        p = flags.get(method)
        label = method + (FLAG if p is not None and p < SIGNIFICANCE else "")
        table.rows.append(Row(label, "ours", method, cells))
        if readout is not None and any(m == method for m, _ in readout.by_cell):
            late = our_cells(readout, method, columns, by_name)
            table.rows.append(Row(f"{method}: ours, as published (best test of the late epochs)", "readout", method, late))
        if has_published:
            table.rows += published_rows(method, benchmark, columns, cells, published)
    if not has_published:
        table.notes.append(f"No published numbers exist for the {BENCHMARK_TITLES[benchmark]}.")
    else:
        table.notes.append(
            "n/s: no sourced published number (never filled from memory); n/a: the paper's mean covers "
            "other tasks than this study's. Grades say how directly a number was sourced."
        )
    if any(p is not None and p < SIGNIFICANCE for p in flags.values()):
        table.notes.append(f"{FLAG}: differs from the baseline across tasks (Wilcoxon signed-rank, p < {SIGNIFICANCE}).")
    table.notes.append(
        "Means: a group's mean is the mean of its tasks' means; their ± is the std over seeds of the same mean per seed."
    )
    return table


def ablation_table(study: Study, scores: Scores) -> Table:
    specs = study.task_specs
    every = tuple(s.name for s in specs)
    columns = task_columns(specs)
    columns += [Column(MEAN_TASKS, f"Mean of {len(every)} tasks", every), Column(PARAMS, "Params (M)", every)]
    ablation = study.ablation
    table = Table("ablation", f"Ablation: {ablation.factor} (top-1 test %, mean ± std over {scores.planned} seeds)", columns)
    for entry in study.methods:
        label = entry.key
        if ablation.field:
            value = lookup(study.trial_config(entry, specs[0]).to_dict(), ablation.field)
            label = f"{ablation.factor}={value}" if value is not None else label
        table.rows.append(Row(label, "ours", entry.key, our_cells(scores, entry.key, columns, {s.name: s for s in specs})))
    if ablation.claim:
        table.notes.append(f"Published: {ablation.claim}.")
    return table


def selection_table(study: Study, selections: pd.DataFrame) -> Table:
    """What each pipeline's search selected for its final seeds, with its val score."""
    specs = study.task_specs
    table = Table("selections", "Selected for the final seeds: searched values (val top-1 %)", task_columns(specs))
    chosen = {(row.method, row.task): row for row in selections.itertuples(index=False)}
    for entry in study.methods:
        cells = {}
        for spec in specs:
            row = chosen.get((entry.key, spec.name))
            if row is None:
                cells[spec.name] = Cell(state="missing")
            elif missing(row.val_acc):
                cells[spec.name] = Cell(state="as configured")
            else:
                values = ", ".join(f"{k}={_short(v)}" for k, v in json.loads(row.values).items())
                cells[spec.name] = Cell(state=f"{values} ({100 * float(row.val_acc):.1f})")
        table.rows.append(Row(entry.key, "ours", entry.key, cells))
    table.notes.append(
        "The search trial with the best val score (ties to the smaller lr); its trial and the reason are in "
        "selections.parquet. Never chosen on test."
    )
    return table


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def final_distributions(results, every_epoch: bool = False) -> pd.DataFrame:
    """Prompts per block of each finished final trial, after its last epoch (or after every epoch):
    trial, task, method, seed, epoch, block, count."""
    part = results.distributions.merge(finished_finals(results.trials)[["trial", "task", "method", "seed"]], on="trial")
    return part if every_epoch else part[part["epoch"] == part.groupby("trial")["epoch"].transform("max")]


def placement_table(study: Study, results) -> Table | None:
    """How far apart the learned prompt distributions are: between seeds of one task vs between tasks.

    The mean pairwise L1 distance (in prompts) of the final trials' prompts-per-block vectors; a
    method that learns task-specific placements has `across` well above `within`.
    """
    last = final_distributions(results)
    columns = [Column("within", "Within a task (between seeds)"), Column("across", "Across tasks"), Column("ratio", "Across / within")]
    table = Table("placement", "Learned prompt placement: mean pairwise L1 distance of the final distributions (prompts)", columns)
    for entry in study.methods:
        mine = last[last["method"] == entry.key]
        if mine.empty:
            continue
        vectors = mine.pivot_table(index=["task", "trial"], columns="block", values="count", aggfunc="first").fillna(0)
        tasks = vectors.index.get_level_values("task").to_numpy()
        matrix = vectors.to_numpy(dtype=float)
        distance = np.abs(matrix[:, None, :] - matrix[None, :, :]).sum(-1)
        upper = np.triu(np.ones_like(distance, dtype=bool), k=1)
        same = tasks[:, None] == tasks[None, :]
        within, across = distance[upper & same], distance[upper & ~same]
        if not across.size or not across.any():  # one task, or a fixed placement: nothing learned to compare
            continue
        cells = {
            "within": Cell(float(within.mean()) if within.size else None, state="ok" if within.size else "n/a", note=f"{within.size} pairs", digits=2),
            "across": Cell(float(across.mean()), note=f"{across.size} pairs", digits=2),
        }
        ratio = cells["across"].value / cells["within"].value if within.size and within.mean() > 0 else None
        cells["ratio"] = Cell(ratio, state="ok" if ratio is not None else "n/a", digits=2)
        table.rows.append(Row(entry.key, "ours", entry.key, cells))
    if not table.rows:
        return None
    table.notes.append("Final trials, prompts per block after the last epoch; pairs of trials of one task (seeds) vs of two tasks.")
    return table
