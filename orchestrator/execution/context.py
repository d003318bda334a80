"""What a trial of one pipeline phase is given: the phase's shared context (in every trial's Tune
config, beside the trial's own values) and the full trial config made from both. Light: the
study task imports it without the trial's code (torch, timm)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provpt_core import TrialConfig


@dataclass(frozen=True)
class PhaseContext:
    """What every trial of one pipeline phase shares (passed with tune.with_parameters)."""

    study: str
    task: str
    group: str
    method: str
    phase: str  # search, final or branch
    base: TrialConfig  # the pipeline's config with the selected values (final phase)
    tracking_uri: str
    output: str  # the study's output folder: trial records go under <output>/records
    parent_run_id: str
    search_seed: int
    checkpoint_every: int
    threads: int
    val_every: int = 0  # search trials score val this often (ASHA needs it every epoch)
    cpus: float = 1.0  # the trial's Ray resources
    gpu_fraction: float = 0.0
    snapshot_epochs: tuple[int, ...] = ()  # final phase: keep full checkpoints here, for branches
    branch: dict[str, Any] | None = None  # branch phase: the move's source, count and rescale


def trial_config(context: PhaseContext, values: dict[str, Any]) -> TrialConfig:
    """The full trial config: the pipeline's base, the sampled values, the phase and seed."""
    fixed = {
        "train.seed": values.get("seed", context.search_seed),
        "data.phase": "final" if context.phase == "branch" else context.phase,
        **({} if context.base.train.threads is not None else {"train.threads": context.threads}),
        **({"eval.val_every": context.val_every} if context.val_every else {}),
    }
    if "branch" in values:  # a branch: the final trial's config and one scripted move
        fixed["method.moves"] = [{**context.branch, **values["branch"]}]
    return context.base.override({**searched_values(values), **fixed})


def searched_values(values: dict[str, Any]) -> dict[str, Any]:
    """The searched values of a trial's values (a final trial's are only its seed, a branch's
    its seed and branch point, a search trial's carry its Optuna number)."""
    return {k: v for k, v in values.items() if k not in ("seed", "branch", "optuna_trial")}
