"""Choosing a pipeline's final config from its search trials.

VPT's rule, reused by PRO-VPT: the best val200 score; ties go to the smaller learning rate
(then to the earlier trial). Failed trials (diverged, errored) never win. The reason is
returned as a sentence; the pipeline records the selection (`store.schema.SelectionRecord`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.store.schema import run_name

LR = "train.lr"


@dataclass(frozen=True)
class SearchRecord:
    number: int  # the trial's Optuna number (its order in the search)
    trial: str  # the trial's key
    values: dict[str, Any]  # the searched values
    val_acc: float | None  # None or NaN: failed
    lr: float  # the trial's train.lr (searched or fixed)


@dataclass(frozen=True)
class Selection:
    trial: str
    values: dict[str, Any]
    number: int
    val_acc: float
    reason: str


def select_best(records: list[SearchRecord]) -> Selection:
    ok = [r for r in records if r.val_acc is not None and not math.isnan(r.val_acc)]
    if not ok:
        raise ValueError(f"no search trial finished ({len(records)} failed); nothing to select")
    best = max(r.val_acc for r in ok)
    tied = sorted((r for r in ok if r.val_acc == best), key=lambda r: (r.lr, r.number))
    chosen = tied[0]
    reason = f"best val_acc {best:.4f} of {len(ok)} finished trials (Optuna trial {chosen.number}, MLflow run {run_name(chosen.trial)})"
    if len(tied) > 1:
        others = ", ".join(f"Optuna trial {r.number} (lr {r.lr:g})" for r in tied[1:])
        reason += f"; tied with {others}: smaller lr {chosen.lr:g} wins"
    failed = len(records) - len(ok)
    if failed:
        reason += f"; {failed} failed trials ignored"
    return Selection(chosen.trial, chosen.values, chosen.number, best, reason)
