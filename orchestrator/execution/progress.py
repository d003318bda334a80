"""The progress board: where every pipeline stands, fed by Tune callbacks, printed by the driver."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import ray
from ray import tune

PROGRESS_ACTOR = "provpt-progress"


@ray.remote(num_cpus=0)
class Progress:
    """Where every pipeline stands; the driver prints it."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}

    def update(self, pipeline: str, fields: dict[str, Any]) -> None:
        self.state.setdefault(pipeline, {}).update(fields)

    def error(self, pipeline: str, cause: str) -> None:
        """A trial failed past its retries: its cause, counted per pipeline."""
        errors = self.state.setdefault(pipeline, {}).setdefault("errors", {})
        errors[cause] = errors.get(cause, 0) + 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.state


def error_cause(trace: str) -> str:
    """The exception line of a trial's error trace (Tune's error.txt, or a TuneError's text),
    without module paths: e.g. "BackboneLoadError: backbone 'x': cannot read weight file ..."."""
    lines = [line.strip() for line in str(trace).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b[^ ]*:", line)]
    cause = causes[-1] if causes else (lines[-1] if lines else "unknown error")
    head, sep, rest = cause.partition(":")
    return f"{head.rsplit('.', 1)[-1]}{sep}{rest}"[:500]


class ProgressCallback(tune.Callback):
    """Counts the phase's trials for the progress board (found by name, so it survives restores)."""

    def __init__(self, actor_name: str, pipeline: str, phase: str, total: int) -> None:
        self.actor_name, self.pipeline, self.phase, self.total = actor_name, pipeline, phase, total
        self.last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last > 1.0:
            self._send(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._send(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._send(trials, error=error_cause(trial.get_error() or ""))

    def _send(self, trials: list, error: str | None = None) -> None:
        self.last = time.monotonic()
        # an epoch without evaluation repeats a placeholder val score (`val_evaluated` 0): not a score
        scores = [t.last_result.get("val_acc") for t in trials if t.last_result and t.last_result.get("val_evaluated", 1)]
        scores = [s for s in scores if isinstance(s, (int, float)) and not math.isnan(s)]
        fields = {
            "phase": self.phase,
            "done": sum(t.status == "TERMINATED" for t in trials),
            "running": sum(t.status == "RUNNING" for t in trials),
            "failed": sum(t.status == "ERROR" or t.last_result.get("failed") == 1 for t in trials),
            "total": max(self.total, len(trials)),
            "best_val": max(scores) if scores else None,
        }
        try:
            board = ray.get_actor(self.actor_name)
            board.update.remote(self.pipeline, fields)
            if error:
                board.error.remote(self.pipeline, error)
        except ValueError:  # no driver board (e.g. a bare restore): nothing to tell
            pass
