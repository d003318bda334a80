"""Paired statistics against a baseline: per-task differences over shared seeds, and a Wilcoxon
signed-rank test across tasks."""

from __future__ import annotations

import statistics

from orchestrator.report.model import Cell, Column, Row, Table, task_columns
from orchestrator.report.scores import Scores
from orchestrator.spec.study import Study

SIGNIFICANCE = 0.05


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
