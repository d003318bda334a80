"""The PRO-VPT paper's analyses as tables, from the trials' analysis data (figures: `figures.py`).

- ``timing``: the adjustment-timing analysis (a method with `branches`): each branch's test
  accuracy minus that of the final trial it branched from (same task, method and seed), per
  (branch epoch, target block), and the best target at each epoch;
- ``fidelity``: the idleness-fidelity analysis (`fidelity.epochs`): how well the score ranks the
  prompts by the measured loss change when each is removed (Spearman, Pearson), and the rank,
  under the score, of the prompt whose removal lowers the loss most;
- ``rewards``: the relocation reward per epoch (action space): its mean over the first and
  the second half of the relocations.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from orchestrator.report.frames import finished_finals
from orchestrator.report.model import Cell, Column, Row, Table
from orchestrator.spec.study import Study
from orchestrator.store.schema import RELOCATION_REWARD

PUBLISHED_TIMING = "the paper's Finding 2: the most effective adjustment changes as prompts are tuned"
PUBLISHED_FIDELITY = "the paper: Taylor scores are highly correlated with the true values"


def branch_gains(results) -> pd.DataFrame:
    """task, method, seed, epoch, target, gain (test points over the unbranched final trial)."""
    trials = results.trials
    done = trials[trials["status"] == "FINISHED"]
    branches = done[done["phase"] == "branch"]
    if branches.empty or "config.method.moves" not in branches:
        return pd.DataFrame(columns=["task", "method", "seed", "epoch", "target", "gain"])
    finals = done[done["phase"] == "final"].set_index(["task", "method", "seed"])["test_acc"]
    rows = []
    for row in branches.to_dict("records"):
        (move,) = json.loads(row["config.method.moves"])
        parent = finals.get((row["task"], row["method"], row["seed"]))
        if parent is None or pd.isna(parent) or pd.isna(row["test_acc"]):
            continue
        rows.append(
            {
                "task": row["task"],
                "method": row["method"],
                "seed": int(row["seed"]),
                "epoch": move["epoch"],
                "target": move["target"],
                "gain": 100 * (float(row["test_acc"]) - float(parent)),
            }
        )
    return pd.DataFrame(rows, columns=["task", "method", "seed", "epoch", "target", "gain"])


def timing_tables(study: Study, results) -> dict[str, Table]:
    gains = branch_gains(results)
    tables = {}
    for method, mine in gains.groupby("method", sort=False):
        source = next(e.branches.source for e in study.methods if e.key == method)
        targets = sorted(mine["target"].unique())
        columns = [Column(f"block{t}", f"→ {t}") for t in targets] + [Column("best", "Best target")]
        table = Table(
            f"timing_{method}",
            f"Adjustment timing ({method}): test gain (points) of moving prompts from block {source} to each block "
            "at each epoch, over the unmoved run",
            columns,
        )
        for epoch, part in mine.groupby("epoch"):
            means = part.groupby("target")["gain"].agg(["mean", "std", "count"])
            cells = {
                f"block{t}": Cell(float(means.loc[t, "mean"]), _std(means.loc[t, "std"]), int(means.loc[t, "count"]), digits=2)
                for t in targets
                if t in means.index
            }
            cells["best"] = Cell(state=f"block {int(means['mean'].idxmax())}")
            table.rows.append(Row(f"epoch {epoch}", "ours", method, cells))
        best = [r.cells["best"].state for r in table.rows]
        changes = "changes" if len(set(best)) > 1 else "does not change"
        table.notes.append(
            f"Mean over tasks and seeds ± std; each branch starts from its final trial's checkpoint at that epoch. "
            f"The best target {changes} with the epoch ({', '.join(best)}). Published: {PUBLISHED_TIMING}."
        )
        tables[table.name] = table
    return tables


def fidelity_frame(results) -> pd.DataFrame:
    """The fidelity rows of finished final trials, with their task and method."""
    return results.fidelity.merge(finished_finals(results.trials)[["trial", "task", "method", "seed"]], on="trial")


def relocation_rewards(results) -> pd.DataFrame:
    """trial, epoch, reward, method: the reward credited at each relocation of the finished
    final trials (empty when no method relocates)."""
    epochs = results.epochs
    if RELOCATION_REWARD not in epochs:
        return pd.DataFrame(columns=["trial", "epoch", "reward", "method"])
    rewards = epochs[["trial", "epoch", RELOCATION_REWARD]].dropna().rename(columns={RELOCATION_REWARD: "reward"})
    return rewards.merge(finished_finals(results.trials)[["trial", "method"]], on="trial")


def fidelity_statistics(part: pd.DataFrame) -> dict[str, float]:
    """One measurement (a trial's prompts at one epoch): the score against the loss drop of
    removing each prompt (a positive score predicts that removal lowers the loss)."""
    out = {"prompts": float(len(part))}
    for score in ("taylor", "method_score"):
        values = part[score].astype(float)
        if values.isna().any():
            continue
        for removal in ("dropped", "zeroed"):
            drop = -part[f"loss_change_{removal}"].astype(float)
            out[f"spearman_{score}_{removal}"] = _correlation(values.rank(), drop.rank())
            out[f"pearson_{score}_{removal}"] = _correlation(values, drop)
        truly_idle = int(np.argmin(part["loss_change_dropped"].astype(float).to_numpy()))
        out[f"rank_{score}"] = float(values.rank(ascending=False, method="min").to_numpy()[truly_idle])
    return out


FIDELITY_COLUMNS = {
    "spearman_taylor_dropped": "Spearman, Taylor vs drop",
    "pearson_taylor_dropped": "Pearson, Taylor vs drop",
    "spearman_taylor_zeroed": "Spearman, Taylor vs zeroing",
    "spearman_method_score_dropped": "Spearman, method's score vs drop",
    "rank_method_score": "Rank of the truly most idle (method's score)",
    "rank_taylor": "Rank of the truly most idle (Taylor)",
    "prompts": "Prompts",
}


def fidelity_table(results) -> Table | None:
    frame = fidelity_frame(results)
    if frame.empty:
        return None
    table = Table(
        "fidelity",
        "Idleness fidelity: the score against the measured loss drop when a prompt is removed (mean over seeds)",
        [Column(k, v) for k, v in FIDELITY_COLUMNS.items()],
    )
    for (method, task, epoch), part in frame.groupby(["method", "task", "epoch"], sort=False):
        measured = pd.DataFrame([fidelity_statistics(p) for _, p in part.groupby("trial")])
        cells = {}
        for column in FIDELITY_COLUMNS:
            if column == "prompts":
                cells[column] = Cell(float(measured[column].mean()), digits=0)
            elif column in measured and measured[column].notna().any():
                values = measured[column].dropna()
                cells[column] = Cell(float(values.mean()), _std(values.std()) if len(values) > 1 else None, len(values), digits=2)
            else:
                cells[column] = Cell(state="n/a")
        table.rows.append(Row(f"{method} {task} epoch {epoch}", "ours", method, cells))
    table.notes.append(
        "Taylor: <dL/dp, p> on the fixed batches in eval mode; method's score: what relocation used that epoch "
        "(accumulated over the previous epoch's steps, or the reference pass). drop: the loss change when the "
        "prompt's token is removed (what pruning does); zeroing: when it is set to 0 (what the first-order score "
        f"extrapolates to). Rank 1 = the score picks the right prompt. Published: {PUBLISHED_FIDELITY}."
    )
    return table


def reward_table(study: Study, results) -> Table | None:
    rewards = relocation_rewards(results)
    if rewards.empty:
        return None
    columns = [Column("first", "Mean reward, first half"), Column("second", "Mean reward, second half"), Column("all", "Mean reward")]
    table = Table("rewards", "Relocation reward per relocation, final trials (action space)", columns)
    for entry in study.methods:
        mine = rewards[rewards["method"] == entry.key]
        if mine.empty:
            continue
        middle = mine["epoch"].median()
        cells = {
            "first": _mean_cell(mine[mine["epoch"] <= middle]["reward"]),
            "second": _mean_cell(mine[mine["epoch"] > middle]["reward"]),  # none with one relocation
            "all": _mean_cell(mine["reward"]),
        }
        table.rows.append(Row(entry.key, "ours", entry.key, cells))
    table.notes.append("reward = loss before - loss after - the largest idleness after (the allocator's signal); per epoch in the rewards figure.")
    return table


def _mean_cell(values: pd.Series) -> Cell:
    return Cell(float(values.mean()), digits=4) if len(values) else Cell(state="n/a")


def _correlation(a: pd.Series, b: pd.Series) -> float:
    a, b = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _std(value) -> float | None:
    return None if pd.isna(value) else float(value)
