"""python -m orchestrator.tables STUDY.yaml | OUTPUT_FOLDER [--from-mlflow URI]

Turns a study's trials into tables for a paper, under ``<output>/results``:
``trials/epochs/distributions.parquet`` (schema in `orchestrator.results`); in ``tables/``
one table per benchmark (VTAB-1k with its group means and both averages, FGVC, the mini
benchmark) with the published numbers and our difference to them, the ablation table of an
ablation study, the comparison with a baseline (Wilcoxon signed-rank across tasks), the
coverage (what is done, running, failed or missing) and the cost, each in Markdown, LaTeX
and CSV; and the figures in ``figures/`` (PNG and PDF). Read from the output folder's trial
records by default, or from an MLflow tracking server: both give the same tables.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.published import MEAN_GROUPS, MEAN_TASKS, PARAMS, PublishedNumber, load_published
from orchestrator.results import (
    Results,
    ResultsError,
    from_mlflow,
    from_output,
    replace_atomically,
    to_frames,
    write_parquet,
)
from orchestrator.study import Study, StudyError, load_study, redact
from provpt_core.data.tasks import TASKS, TaskSpec

SIGNIFICANCE = 0.05
FLAG = "†"
BENCHMARK_TITLES = {"vtab1k": "VTAB-1k", "fgvc": "FGVC", "mini": "Mini benchmark"}
STATES = ("done", "stopped", "running", "failed", "missing")
STATUS_STATE = {"FINISHED": "done", "KILLED": "stopped", "RUNNING": "running", "FAILED": "failed"}


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


# ---------------------------------------------------------------- what the trials say


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
            if row.phase == "final" and row.status == "FINISHED" and not _missing(score):
                self.by_cell[(row.method, row.task)][int(row.seed)] = 100 * float(score)
                if not _missing(row.trainable_params):
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
        return Cell(millions, digits=max(2, 2 - math.floor(math.log10(millions))) if millions > 0 else 2)  # 3 figures


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------- the tables


def task_columns(specs: list[TaskSpec]) -> list[Column]:
    return [Column(s.name, s.name) for s in specs]


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
    from provpt_core.overrides import lookup

    specs = study.task_specs
    every = tuple(s.name for s in specs)
    columns = task_columns(specs)
    columns += [Column(MEAN_TASKS, f"Mean of {len(every)} tasks", every), Column(PARAMS, "Params (M)", every)]
    ablation = study.ablation
    table = Table("ablation", f"Ablation: {ablation.factor} (top-1 test %, mean ± std over {scores.planned} seeds)", columns)
    for entry in study.methods:
        label = entry.key
        if ablation.field:
            value = lookup(study.base_trial(entry, specs[0]), ablation.field)
            label = f"{ablation.factor}={value}" if value is not None else label
        table.rows.append(Row(label, "ours", entry.key, our_cells(scores, entry.key, columns, {s.name: s for s in specs})))
    return table


# ---------------------------------------------------------------- comparison with a baseline


def compare(study: Study, scores: Scores, baseline: str, benchmark: str | None = None) -> tuple[Table, dict[str, float | None]]:
    """Per task, the mean over shared seeds of (method - baseline); across tasks, a Wilcoxon
    signed-rank test of those differences. Returns the table and each method's p-value."""
    from scipy.stats import wilcoxon

    specs = [s for s in study.task_specs if benchmark is None or s.benchmark == benchmark]
    columns = task_columns(specs)
    columns += [Column("wins", "wins/ties/losses"), Column("p", "Wilcoxon p")]
    name = f"compare_{benchmark}" if benchmark else "compare"
    table = Table(name, f"Against {baseline}: test accuracy difference (% points) over shared seeds", columns)
    flags: dict[str, float | None] = {}
    for entry in study.methods:
        method = entry.key
        if method == baseline:
            continue
        cells, diffs = {}, []
        for spec in specs:
            ours, theirs = scores.by_cell.get((method, spec.name), {}), scores.by_cell.get((baseline, spec.name), {})
            shared = sorted(set(ours) & set(theirs))
            if not shared:
                cells[spec.name] = Cell(state="missing")
                continue
            diff = statistics.mean(ours[s] - theirs[s] for s in shared)
            diffs.append(diff)
            cells[spec.name] = Cell(diff, seeds=len(shared), digits=2)
        wins = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs)
        cells["wins"] = Cell(state="/".join(map(str, wins)))
        p = None
        if sum(d != 0 for d in diffs) >= 2:
            p = float(wilcoxon(diffs).pvalue)
        cells["p"] = Cell(p, digits=3) if p is not None else Cell(state="n/a", note="fewer than 2 tasks differ")
        flags[method] = p
        table.rows.append(Row(method, "ours", method, cells))
    table.notes.append(
        f"Each task: the mean over the seeds both methods finished of the paired difference. p: two-sided "
        f"Wilcoxon signed-rank test over tasks (needs 6 or more tasks to reach p < {SIGNIFICANCE})."
    )
    return table, flags


# ---------------------------------------------------------------- coverage and cost


def coverage(study: Study, trials: pd.DataFrame) -> tuple[Table, pd.DataFrame]:
    """Every planned trial (search trials by number, final trials by seed) and its state."""
    rows = []
    for entry in study.methods:
        for spec in study.task_specs:
            mine = trials[(trials["method"] == entry.key) & (trials["task"] == spec.name)]
            if entry.search:
                search = mine[mine["phase"] == "search"].sort_values("trial")
                states = [STATUS_STATE.get(s, s) for s in search["status"]]
                states += ["missing"] * max(0, study.search.trials - len(states))
                rows += [(entry.key, spec.name, "search", f"trial {i}", s) for i, s in enumerate(states)]
            final = mine[mine["phase"] == "final"]
            by_seed = {int(seed): STATUS_STATE.get(status, status) for seed, status in zip(final["seed"], final["status"])}
            for seed in dict.fromkeys([*study.final.seeds, *by_seed]):
                rows.append((entry.key, spec.name, "final", f"seed {seed}", by_seed.get(seed, "missing")))
    frame = pd.DataFrame(rows, columns=["method", "task", "phase", "slot", "state"])
    columns = task_columns(study.task_specs)
    table = Table("coverage", f"Coverage of study {study.name}: planned trials and their state", columns)
    for (method, phase, slot_group), part in _coverage_groups(frame):
        cells = {}
        for spec in study.task_specs:
            states = part[part["task"] == spec.name]["state"].tolist()
            cells[spec.name] = Cell(state=_summarise(states))
        table.rows.append(Row(f"{method} {slot_group}", "coverage", method, cells))
    counts = frame["state"].value_counts()
    table.notes.append(
        f"{len(frame)} planned trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
        + ". stopped: ended early by the scheduler (a search trial's normal fate under ASHA)."
    )
    return table, frame


def _coverage_groups(frame: pd.DataFrame):
    """Rows of the matrix: each method's search (all its trials in one cell), then each seed."""
    for method in dict.fromkeys(frame["method"]):
        mine = frame[frame["method"] == method]
        search = mine[mine["phase"] == "search"]
        if len(search):
            yield (method, "search", "search"), search
        final = mine[mine["phase"] == "final"]
        for slot in dict.fromkeys(final["slot"]):
            yield (method, "final", f"final {slot}"), final[final["slot"] == slot]


def _summarise(states: list[str]) -> str:
    if len(states) == 1:
        return states[0]
    counts = {s: states.count(s) for s in STATES if s in states}
    if len(counts) == 1:
        return f"{len(states)}/{len(states)} {states[0]}"
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def trial_hours(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Trial-hours and GPU-hours per trial: its wall time, or the sum of its epochs' times
    when it did not finish (stopped early, failed, still running)."""
    per_epoch = epochs.groupby("trial")["epoch_seconds"].sum() if "epoch_seconds" in epochs else pd.Series(dtype=float)
    seconds = [
        float(wall) if not _missing(wall) else float(per_epoch.get(trial, 0.0))
        for trial, wall in zip(trials["trial"], trials["wall_seconds"])
    ]
    hours = pd.Series(seconds, index=trials.index) / 3600
    gpu = trials["gpu_fraction"].astype(float).fillna(0.0)
    return pd.DataFrame({"method": trials["method"], "task": trials["task"], "trial_h": hours, "gpu_h": hours * gpu})


def cost_table(study: Study, hours: pd.DataFrame) -> Table:
    specs = study.task_specs
    columns = task_columns(specs) + [Column("total", "Total")]
    table = Table("cost", "Cost: trial-hours (GPU-hours), search and final together", columns)
    for entry in study.methods:
        mine = hours[hours["method"] == entry.key]
        cells = {}
        for spec in specs:
            part = mine[mine["task"] == spec.name]
            cells[spec.name] = _hours_cell(part)
        cells["total"] = _hours_cell(mine)
        table.rows.append(Row(entry.key, "ours", entry.key, cells))
    table.rows.append(Row("all methods", "ours", "", {**{s.name: _hours_cell(hours[hours["task"] == s.name]) for s in specs}, "total": _hours_cell(hours)}))
    return table


def _hours_cell(part: pd.DataFrame) -> Cell:
    return Cell(state=f"{part['trial_h'].sum():.3g} ({part['gpu_h'].sum():.3g})") if len(part) else Cell(state="missing")


def cost_note(table: Table, hours: pd.DataFrame) -> None:
    """What a benchmark table's cells cost, as its last note."""
    tasks = {c.id for c in table.columns if not c.tasks and c.id != PARAMS}
    methods = {r.method for r in table.rows if r.kind == "ours"}
    mine = hours[hours["task"].isin(tasks) & hours["method"].isin(methods)]
    table.notes.append(
        f"Cost of this table: {mine['trial_h'].sum():.3g} trial-hours, {mine['gpu_h'].sum():.3g} GPU-hours "
        "(search and final; per cell in cost.md)."
    )


# ---------------------------------------------------------------- rendering


def to_markdown(table: Table) -> str:
    header = ["", *(c.title for c in table.columns)]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        label = f"*{row.label}*" if row.kind in ("published", "delta", "readout") else row.label
        lines.append("| " + " | ".join([label, *(row.cells[c.id].text() for c in table.columns)]) + " |")
    lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    def tex(text: str) -> str:
        for raw, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
            text = text.replace(raw, escaped)
        return text.replace("±", r"$\pm$").replace("−", "$-$").replace(FLAG, r"$^\dagger$")

    spec = "l" + "r" * len(table.columns)
    lines = [
        "% " + table.title,
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join(["", *(tex(c.title) for c in table.columns)]) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        label = tex(row.label) if row.kind not in ("published", "delta", "readout") else r"\quad\textit{" + tex(row.label) + "}"
        lines.append(" & ".join([label, *(tex(row.cells[c.id].text()) for c in table.columns)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *("% " + n for n in table.notes)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["table", "row", "kind", "method", "column", "title", "value", "std", "seeds", "state", "note", "grade", "text"]


def to_frame(table: Table) -> pd.DataFrame:
    """The table in long form, one row per cell, numbers as numbers."""
    records = [
        {
            "table": table.name,
            "row": row.label,
            "kind": row.kind,
            "method": row.method,
            "column": column.id,
            "title": column.title,
            "value": cell.value,
            "std": cell.std,
            "seeds": cell.seeds,
            "state": cell.state,
            "note": cell.note,
            "grade": cell.grade,
            "text": cell.text(),
        }
        for row in table.rows
        for column in table.columns
        for cell in [row.cells[column.id]]
    ]
    return pd.DataFrame(records, columns=CSV_COLUMNS)


def write_table(table: Table, folder: Path, latex: bool = True) -> list[Path]:
    paths = [folder / f"{table.name}.md", folder / f"{table.name}.csv"] + ([folder / f"{table.name}.tex"] if latex else [])
    _write_text(paths[0], to_markdown(table))
    _write_text(paths[1], to_frame(table).to_csv(index=False, float_format="%.10g"))
    if latex:
        _write_text(paths[2], to_latex(table))
    return paths


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------- the whole report


@dataclass
class Report:
    tables: dict[str, Table]
    coverage: pd.DataFrame
    files: list[Path]


def build_tables(study: Study, results: Results, baseline: str | None = None, published: list[PublishedNumber] | None = None) -> tuple[dict[str, Table], pd.DataFrame]:
    """Every table of a study's results (nothing written)."""
    published = load_published() if published is None else published
    scores = Scores(results.trials, study)
    readout = Scores(results.trials, study, "best_late_test_acc")
    methods = [m.key for m in study.methods]
    baseline = baseline or ("vpt_deep" if "vpt_deep" in methods else methods[0])
    if baseline not in methods:
        raise StudyError(f"--baseline: '{baseline}' is not a method of study {study.name} ({', '.join(methods)})")
    tables: dict[str, Table] = {}
    benchmarks = list(dict.fromkeys(s.benchmark for s in study.task_specs))
    for benchmark in benchmarks:
        comparison, flags = compare(study, scores, baseline, benchmark)
        tables[benchmark] = benchmark_table(study, scores, benchmark, published, flags, readout)
        if len(methods) > 1:
            tables[comparison.name] = comparison
    if study.ablation is not None:
        tables["ablation"] = ablation_table(study, scores)
    hours = trial_hours(results.trials, results.epochs)
    for benchmark in benchmarks:
        cost_note(tables[benchmark], hours)
    tables["coverage"], frame = coverage(study, results.trials)
    tables["cost"] = cost_table(study, hours)
    return tables, frame


def write_report(study: Study, results: Results, folder: Path, baseline: str | None = None, figures: bool = True) -> Report:
    """Parquet, tables and figures of a study's results under `folder`."""
    from orchestrator.figures import write_figures

    tables, frame = build_tables(study, results, baseline)
    files = list(write_parquet(results, folder).values())
    table_folder = folder / "tables"
    table_folder.mkdir(parents=True, exist_ok=True)
    for table in tables.values():
        files += write_table(table, table_folder, latex=table.name not in ("coverage", "cost"))
    coverage_csv = table_folder / "coverage_trials.csv"
    _write_text(coverage_csv, frame.to_csv(index=False))
    files.append(coverage_csv)
    if figures:
        files += write_figures(study, results, folder / "figures")
    return Report(tables, frame, files)


def load_target(target: Path) -> tuple[Study, Path]:
    """A study file (its output folder as configured) or an output folder (its study.json)."""
    if target.is_dir():
        record = target / "study.json"
        if not record.exists():
            raise StudyError(f"{target}: not a study's output folder (no study.json); give the study file instead")
        study = Study.model_validate(json.loads(record.read_text()))
        return study, target.resolve()
    study = load_study(target)
    return study, study.output_dir()


def main(argv: list[str] | None = None, prog: str = "python -m orchestrator.tables") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("target", type=Path, help="a study file, or a study's output folder")
    parser.add_argument("--from-mlflow", metavar="URI", help="read the trials from this MLflow tracking URI")
    parser.add_argument("--output", type=Path, help="the study's output folder, when a study file is given")
    parser.add_argument("--out", type=Path, help="where the results go (default: <output>/results)")
    parser.add_argument("--baseline", help="the method the others are tested against (default: vpt_deep if run)")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    try:
        study, output = load_target(args.target)
        if args.output:
            output = args.output.resolve()
        trials = from_mlflow(args.from_mlflow, study.name) if args.from_mlflow else from_output(output)
        report = write_report(study, to_frames(trials), args.out or output / "results", args.baseline, not args.no_figures)
    except (StudyError, ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = redact(args.from_mlflow) if args.from_mlflow else str(output / "records")
    print(report_summary(study, report, args.out or output / "results", source))
    return 0


def report_summary(study: Study, report: Report, folder: Path, source: str) -> str:
    counts = report.coverage["state"].value_counts()
    state = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    return (
        f"results of study {study.name} (from {source}): {len(report.coverage)} planned trials: {state}\n"
        f"tables, parquet and figures: {folder} ({len(report.files)} files; tables/{next(iter(report.tables))}.md first)"
    )


if __name__ == "__main__":
    sys.exit(main())
