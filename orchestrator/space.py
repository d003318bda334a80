"""Search spaces: a method's searched values as an Optuna define-by-run function.

A searched value is named by its dotted path into the trial config (``train.lr``,
``method.relocation.ppo.buffer_size``); `provpt_core.overrides.apply` writes sampled values
into a trial config dict. A value with ``when`` is sampled only if the trial's other values (sampled
earlier, or fixed in the trial config) match, so spaces are conditional and method-specific.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provpt_core.overrides import lookup
from provpt_core.trial import TrialConfig

if TYPE_CHECKING:
    import optuna

    from orchestrator.study import Param


class SearchSpace:
    """The define-by-run function of one pipeline (a class, so Ray can pickle the searcher)."""

    def __init__(self, params: dict[str, Param], base_trial: dict[str, Any]) -> None:
        self.params = {name: p.model_dump() for name, p in params.items()}
        self.kinds = {name: p.kind for name, p in params.items()}
        # every field with its default, so `when` can test values the study leaves implicit
        self.base_trial = TrialConfig.from_dict(base_trial).to_dict()

    def __call__(self, trial: optuna.Trial) -> None:
        values: dict[str, Any] = {}
        for name, p in self.params.items():
            if not _conditions_hold(p["when"], values, self.base_trial):
                continue
            kind = self.kinds[name]
            if kind == "categorical":
                values[name] = trial.suggest_categorical(name, p["choices"])
            elif kind == "int":
                step = int(p["step"] or 1)
                values[name] = trial.suggest_int(name, int(p["low"]), int(p["high"]), step=step, log=p["log"])
            else:
                values[name] = trial.suggest_float(name, p["low"], p["high"], step=p["step"], log=p["log"])


def corner_values(params: dict[str, Param]) -> list[dict[str, Any]]:
    """Value sets that together touch every bound and choice once: enough to find a searched
    path or value the trial config refuses, without enumerating the whole space."""
    options = []
    for name, p in params.items():
        if p.choices is not None:
            options.append([(name, c) for c in p.choices])
        else:
            cast = int if p.kind == "int" else float
            options.append([(name, cast(p.low)), (name, cast(p.high))])
    if not options:
        return [{}]
    longest = max(len(o) for o in options)
    return [dict(o[i % len(o)] for o in options) for i in range(longest)]


def _conditions_hold(when: dict[str, Any], values: dict[str, Any], base_trial: dict[str, Any]) -> bool:
    for path, expected in when.items():
        actual = values[path] if path in values else lookup(base_trial, path)
        allowed = expected if isinstance(expected, list) else [expected]
        if actual not in allowed:
            return False
    return True

