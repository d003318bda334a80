"""One Ray Tune experiment runs every trial of a study, so its trial workers stay warm.

The pipelines (threads of the study task, `execution.study_task`) submit trial requests to the
`Exchange`; the experiment's searcher (`RequestSearcher`) turns them into Tune trials, the
earliest pipeline's first; its callback (`ExchangeCallback`) hands every trial's end back to
the pipeline that asked. All trials share one trainable and one resource shape, so Tune reuses
its actors across pipelines and phases: a worker process, with the backbones and splits it
loaded (`provpt_core.WarmCache`), runs trials from the study's start to its end instead of
starting (seconds of imports) for every phase. `PipelineScheduler` keeps ASHA's rungs per
pipeline. A new experiment starts with every driver run: what a resumed study keeps lives in
the trials' records, MLflow runs, checkpoints and Optuna studies, not in Tune's state.
"""

from __future__ import annotations

import heapq
import logging
import itertools
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from orchestrator.execution.progress import error_cause

logger = logging.getLogger(__name__)
_EXCHANGES: dict[str, Exchange] = {}  # Tune pickles its searcher and callbacks: they look the exchange up


class StudyAborted(Exception):
    """The study task is stopping (its experiment ended early or failed)."""


@dataclass(frozen=True)
class TrialRequest:
    key: str  # the trial's key (store.schema.trial_key): its MLflow run, record and checkpoint
    pipeline: str
    phase: str
    values: dict[str, Any]  # what the trainable gets besides its context: searched values, seed, branch
    context: Any  # the phase's execution.context.PhaseContext
    order: int  # the pipeline's place in the plan: earlier pipelines' trials start first
    asha: dict[str, Any] | None = None  # ASHAScheduler's arguments, for a search with ASHA


@dataclass(frozen=True)
class TrialOutcome:
    key: str
    values: dict[str, Any]
    metrics: dict[str, Any]  # the trial's last result (a stopped trial: its last epoch's)
    error: str | None = None  # the error trace of a trial that failed past its retries
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> val score, as it was reported


@dataclass
class PhaseCounts:
    total: int
    ended: int = 0
    failed: int = 0
    running: set[str] = field(default_factory=set)
    best_val: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ended": self.ended, "running": len(self.running), "failed": self.failed,
                "total": max(self.total, self.ended + len(self.running)), "best_val": self.best_val}


class Exchange:
    """Trial requests in, trial outcomes out, and where every pipeline stands (the progress board's
    state). Thread-safe: pipelines call `submit` and `phase`, Tune's loop calls the rest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, TrialRequest]] = []
        self._count = itertools.count()
        self._asked: dict[str, tuple[TrialRequest, Future]] = {}
        self._curves: dict[str, dict[int, float]] = {}
        self._closed = False
        self.aborted: str | None = None
        self.phases: dict[str, dict[str, PhaseCounts]] = {}
        self.current: dict[str, str] = {}
        self.errors: dict[str, dict[str, int]] = {}
        _EXCHANGES[name] = self

    # ------------------------------------------------------------ the pipelines' side
    def phase(self, pipeline: str, phase: str, total: int, ended: int = 0, failed: int = 0, best: float | None = None) -> None:
        """`pipeline` enters `phase`: `total` trials, of which `ended` (and `failed`) ended in an earlier run."""
        with self._lock:
            self.current[pipeline] = phase
            self.phases.setdefault(pipeline, {})[phase] = PhaseCounts(total, ended, failed, set(), best)

    def submit(self, request: TrialRequest) -> Future:
        """The request's outcome, once its trial ended."""
        future: Future = Future()
        with self._lock:
            if self.aborted:
                future.set_exception(StudyAborted(self.aborted))
                return future
            self._asked[request.key] = (request, future)
            heapq.heappush(self._waiting, (request.order, next(self._count), request))
        return future

    def close(self) -> None:
        """No pipeline will submit more: the experiment ends once its trials have."""
        with self._lock:
            self._closed = True

    def abort(self, reason: str) -> None:
        """Fail every outcome not yet given (the experiment cannot give them)."""
        with self._lock:
            self.aborted, self._closed = reason, True
            pending = [future for _, future in self._asked.values()]
            self._asked.clear()
            self._waiting.clear()
        for future in pending:
            if not future.done():
                future.set_exception(StudyAborted(reason))

    # ------------------------------------------------------------ Tune's side
    def next_request(self) -> TrialRequest | str | None:
        with self._lock:
            if self._waiting:
                return heapq.heappop(self._waiting)[2]
            return Searcher.FINISHED if self._closed else None

    def started(self, key: str) -> None:
        with self._lock:
            entry = self._asked.get(key)
            if entry is not None:
                self._counts(entry[0]).running.add(key)

    def result(self, key: str, metrics: dict[str, Any]) -> None:
        score = metrics.get("val_acc")
        if not isinstance(score, (int, float)) or math.isnan(score):
            return
        with self._lock:
            entry = self._asked.get(key)
            if entry is not None:
                counts = self._counts(entry[0])
                counts.best_val = score if counts.best_val is None else max(counts.best_val, score)
                step = int(metrics.get("epoch", metrics.get("training_iteration", 0)))
                self._curves.setdefault(key, {}).setdefault(step, float(score))

    def ended(self, key: str, metrics: dict[str, Any], error: str | None = None) -> None:
        self.result(key, metrics)
        with self._lock:
            entry = self._asked.pop(key, None)
            if entry is None:
                return
            curve = self._curves.pop(key, {})
            request, future = entry
            counts = self._counts(request)
            counts.running.discard(key)
            counts.ended += 1
            if error is not None or metrics.get("failed") == 1:
                counts.failed += 1
            if error is not None:
                cause = error_cause(error)
                causes = self.errors.setdefault(request.pipeline, {})
                causes[cause] = causes.get(cause, 0) + 1
        future.set_result(TrialOutcome(key, request.values, dict(metrics), error, curve))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The progress board's state (`progress.ProgressPrinter.update`)."""
        with self._lock:
            state: dict[str, dict[str, Any]] = {}
            for pipeline, phases in self.phases.items():
                state[pipeline] = {"phase": self.current[pipeline], "phases": {p: c.as_dict() for p, c in phases.items()}}
            for pipeline, causes in self.errors.items():
                state.setdefault(pipeline, {})["errors"] = dict(causes)
            return state

    def _counts(self, request: TrialRequest) -> PhaseCounts:
        return self.phases.setdefault(request.pipeline, {}).setdefault(request.phase, PhaseCounts(0))


def exchange_named(name: str) -> Exchange:
    return _EXCHANGES[name]


class RequestSearcher(Searcher):
    """Tune's searcher of the study's experiment: the next trial request, or none yet."""

    def __init__(self, exchange: str) -> None:
        super().__init__()
        self.exchange = exchange

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        request = exchange_named(self.exchange).next_request()
        if request is None or request == Searcher.FINISHED:
            return request
        return {"key": request.key, "context": request.context, "values": request.values, "asha": request.asha}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the callback hands outcomes back: it sees the trial's config and error

    def save(self, checkpoint_path: str) -> None:
        pass  # nothing to keep: a driver run starts a new experiment

    def restore(self, checkpoint_path: str) -> None:
        pass


class ExchangeCallback(tune.Callback):
    """Hands every trial's start, scores and end to the exchange; sends the board to the driver."""

    def __init__(self, exchange: str, board_actor: str, every: float = 1.0) -> None:
        self.exchange, self.board_actor, self.every = exchange, board_actor, every
        self.sent = 0.0

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        exchange_named(self.exchange).started(trial.config["key"])

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        exchange_named(self.exchange).result(trial.config["key"], result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        exchange_named(self.exchange).ended(trial.config["key"], trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        exchange_named(self.exchange).ended(trial.config["key"], trial.last_result or {}, _error_text(trial))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.sent >= self.every:
            self.send()

    def on_experiment_end(self, trials: list, **info) -> None:
        self.send()

    def send(self) -> None:
        self.sent = time.monotonic()
        try:
            ray.get_actor(self.board_actor).set.remote(exchange_named(self.exchange).snapshot())
        except ValueError:  # no driver board: nothing to tell
            pass


def _error_text(trial) -> str:
    """The trial's error trace: Tune's error file, written on the controller's node before this
    callback (its copy in the experiment's storage may come later)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8", errors="replace")
    return str(trial.get_error() or "unknown error")


class PipelineScheduler(FIFOScheduler):
    """ASHA on each pipeline's search trials apart (its own rungs); every other trial runs to its
    end. It also keeps `warm_actors` trial actors alive between trials: Tune keeps a finished
    trial's actor only while another trial is staged (or one actor, speculatively), but a
    pipeline asks for its next trial only after the last one ended, so without this floor the
    workers die at every gap and each new one costs a process start (seconds of imports, longer
    than a short trial: Tune then hands its trial to the surviving actor and kills it)."""

    def __init__(self, warm_actors: int = 0) -> None:
        super().__init__()
        self.asha: dict[str, ASHAScheduler] = {}
        self.warm_actors = warm_actors
        self._floor_set = False

    def _asha(self, trial) -> ASHAScheduler | None:
        arguments = trial.config.get("asha")
        if arguments is None:
            return None
        group = trial.config["key"].rsplit("/", 1)[0]
        if group not in self.asha:
            self.asha[group] = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", **arguments)
        return self.asha[group]

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._floor_set:
            self._floor_set = True
            _keep_actors(tune_controller, trial.placement_group_factory, self.warm_actors)
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        asha = self._asha(trial)
        return TrialScheduler.CONTINUE if asha is None else asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_remove(tune_controller, trial)


def _keep_actors(wrapped_controller, resources, count: int) -> None:
    """Raise the floor of Tune's actor cache for `resources` by `count` (Ray 2.x internals: the
    controller's `_actor_cache`, an `_ObjectCache`; the experiment's end still empties it)."""
    controller = getattr(wrapped_controller, "_tune_controller", wrapped_controller)
    cache = getattr(controller, "_actor_cache", None)
    if count <= 0:
        return
    if cache is None or not hasattr(cache, "increase_max"):
        logger.warning("this Ray Tune has no actor cache to keep %d trial workers warm: workers may restart between trials", count)
        return
    cache.increase_max(resources, by=count)
