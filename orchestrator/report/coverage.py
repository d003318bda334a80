"""What is done, running, failed or missing of a study's planned trials; what its cells cost."""

from __future__ import annotations

import pandas as pd

from orchestrator.report.model import Cell, Column, Row, Table, task_columns
from orchestrator.report.published import PARAMS
from orchestrator.report.scores import missing
from orchestrator.spec.plan import branch_points, planned_trials
from orchestrator.store.schema import branch_trial_id
from orchestrator.spec.study import Study

STATES = ("done", "stopped", "running", "failed", "missing")
STATUS_STATE = {"FINISHED": "done", "KILLED": "stopped", "RUNNING": "running", "FAILED": "failed"}


def coverage(study: Study, trials: pd.DataFrame) -> tuple[Table, pd.DataFrame]:
    """Every planned trial (search trials by number, final trials by seed, branch trials by
    seed, epoch and target block) and its state."""
    rows = []
    for entry in study.methods:
        for spec in study.task_specs:
            mine = trials[(trials["method"] == entry.key) & (trials["task"] == spec.name)]
            if entry.search:
                search = mine[mine["phase"] == "search"].sort_values("trial")
                states = [STATUS_STATE.get(s, s) for s in search["status"]]
                states += ["missing"] * max(0, planned_trials(study, entry, "search") - len(states))
                rows += [(entry.key, spec.name, "search", f"trial {i}", s) for i, s in enumerate(states)]
            final = mine[mine["phase"] == "final"]
            by_seed = {int(seed): STATUS_STATE.get(status, status) for seed, status in zip(final["seed"], final["status"])}
            for seed in dict.fromkeys([*study.final.seeds, *by_seed]):
                rows.append((entry.key, spec.name, "final", f"seed {seed}", by_seed.get(seed, "missing")))
            if entry.branches is not None:
                branch = mine[mine["phase"] == "branch"]
                by_point = {t.rsplit("/", 1)[1]: STATUS_STATE.get(s, s) for t, s in zip(branch["trial"], branch["status"])}
                points = [
                    branch_trial_id(seed, epoch, target)
                    for seed in study.final.seeds
                    for epoch, target in branch_points(entry, study.trial_config(entry, spec))
                ]
                for point in dict.fromkeys([*points, *by_point]):
                    rows.append((entry.key, spec.name, "branch", point, by_point.get(point, "missing")))
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
    reasons = trials.loc[trials["status"] == "FAILED", "failure_reason"].fillna("no reason recorded").value_counts()
    for reason, count in reasons.items():
        table.notes.append(f"failed: {reason} ({count} trial{'s' if count > 1 else ''})")
    return table, frame


def _coverage_groups(frame: pd.DataFrame):
    """Rows of the matrix: each method's search (all its trials in one cell), then each seed."""
    for method in dict.fromkeys(frame["method"]):
        mine = frame[frame["method"] == method]
        for phase in ("search", "branch"):
            part = mine[mine["phase"] == phase]
            if len(part):
                yield (method, phase, phase), part
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
        float(wall) if not missing(wall) else float(per_epoch.get(trial, 0.0))
        for trial, wall in zip(trials["trial"], trials["wall_seconds"])
    ]
    hours = pd.Series(seconds, index=trials.index) / 3600
    gpu = trials["gpu_fraction"].astype(float).fillna(0.0)
    return pd.DataFrame({"method": trials["method"], "task": trials["task"], "trial_h": hours, "gpu_h": hours * gpu})


def cost_table(study: Study, hours: pd.DataFrame) -> Table:
    specs = study.task_specs
    columns = task_columns(specs) + [Column("total", "Total")]
    table = Table("cost", "Cost: trial-hours (GPU-hours), every phase together", columns)
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
