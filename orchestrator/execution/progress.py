"""The progress board: where every pipeline stands, fed by Tune callbacks, printed by the driver."""

from __future__ import annotations

import math
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

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.state


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
        self._send(trials)

    def _send(self, trials: list) -> None:
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
            ray.get_actor(self.actor_name).update.remote(self.pipeline, fields)
        except ValueError:  # no driver board (e.g. a bare restore): nothing to tell
            pass
