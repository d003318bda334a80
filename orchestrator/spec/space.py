"""Search spaces: a method's searched values as an Optuna define-by-run function.

A searched value is named by its dotted path into the trial config (``train.lr``,
``method.relocation.ppo.buffer_size``); `provpt_core.overrides.apply` writes sampled values
into a trial config dict. A value with ``when`` is sampled only if the trial's other values (sampled
earlier, or fixed in the trial config) match, so spaces are conditional and method-specific.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import optuna

    from provpt_core import TrialConfig


def _not_bool(kind: str):
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {kind}, got {str(value).lower()}")
        return value

    return BeforeValidator(check)


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


# Study fields refuse what pydantic would convert: YAML's `true` is no number, "yes" no boolean.
Int = Annotated[int, _not_bool("an integer"), Field(strict=True)]
Number = Annotated[float, _not_bool("a number")]
Bool = Annotated[bool, BeforeValidator(_bool)]


class Param(BaseModel):
    """One searched value: a float or int range (low, high, log, step) or a list of choices.
    `when` samples it only when other values of the trial equal the given ones."""

    model_config = ConfigDict(extra="forbid")

    low: Number | None = None
    high: Number | None = None
    log: Bool = False
    step: Number | None = None
    type: Literal["float", "int"] | None = None  # default: int when low and high are integers
    choices: list[Any] | None = None
    when: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: expected at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected low and high (a range) or choices")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} > high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: a log range needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("step: a log range has no step (Optuna samples it continuously); drop step or log")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step: expected a number > 0, got {self.step:g}")
        return self

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        if self.type:
            return self.type
        bounds = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return "int" if all(float(b).is_integer() for b in bounds) else "float"


class SearchSpace:
    """The define-by-run function of one pipeline (a class, so Ray can pickle the searcher)."""

    def __init__(self, params: dict[str, Param], base: TrialConfig) -> None:
        self.params = {name: p.model_dump() for name, p in params.items()}
        self.kinds = {name: p.kind for name, p in params.items()}
        # every field with its default, so `when` can test values the study leaves implicit
        self.base_trial = base.to_dict()

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
    from provpt_core import lookup

    for path, expected in when.items():
        actual = values[path] if path in values else lookup(base_trial, path)
        allowed = expected if isinstance(expected, list) else [expected]
        if actual not in allowed:
            return False
    return True

