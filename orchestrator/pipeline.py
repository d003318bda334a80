"""One pipeline (task x method): the search phase, the selection, the final phase.

Runs inside a Ray task that holds no CPU, so pipelines of different tasks run side by side
and their trials fill the cluster's slots. Each phase is one Tune experiment with a
deterministic name under ``<output>/tune``: a re-run restores it (finished trials are not
run again, interrupted ones continue from their checkpoint).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from orchestrator.plan import Pipeline
from orchestrator.records import TrialRecord, close_stray, phase_folder, read_record, record_files
from orchestrator.selection import LR, SearchRecord, Selection, select_best
from orchestrator.space import SearchSpace
from orchestrator.study import Study
from orchestrator.tracking import Tracker
from orchestrator.trainable import TrialContext, run_trial
from provpt_core.overrides import apply
from provpt_core.trial import TrialConfig

PROGRESS_ACTOR = "provpt-progress"


@dataclass(frozen=True)
class PipelineJob:
    pipeline: Pipeline
    study: Study
    output: str
    tracking_uri: str
    study_run_id: str
    optuna_storage: str


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
        scores = [t.last_result.get("val_acc") for t in trials if t.last_result]
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


@ray.remote(num_cpus=0)
def run_pipeline(job: PipelineJob, progress_actor: str) -> dict[str, Any]:
    pipeline, study = job.pipeline, job.study
    tracker = Tracker(job.tracking_uri, study.name)
    tags = {"study": study.name, "task": pipeline.task.name, "group": pipeline.task.group, "method": pipeline.method.key}
    chosen: dict[str, Any] = {}
    reason = "nothing searched: the method's config as given"
    if pipeline.searches:
        run = _phase_run(tracker, job, "search", tags)
        results = list(_tune(job, "search", run.info.run_id, {}, progress_actor))
        missing = study.search.trials - len(results)
        if missing > 0:  # a driver killed between a suggestion and Tune's save loses that trial
            results += _tune(job, "search", run.info.run_id, {}, progress_actor, samples=missing, suffix="topup")
        _close_stray_trials(tracker, run.info.run_id, job, "search")
        _settle_optuna_trials(tracker, run.info.run_id, job)
        records = search_records(pipeline, results)
        try:
            selection = select_best(records)
        except ValueError as err:
            tracker.finish(run.info.run_id, failed_reason=str(err))
            return {"pipeline": pipeline.key, "failed": str(err)}
        chosen, reason = selection.values, selection.reason
        _log_selection(tracker, run.info.run_id, selection)
        tracker.finish(run.info.run_id)
    run = _phase_run(tracker, job, "final", tags)
    tracker.log(run.info.run_id, params={f"selected.{k}": v for k, v in chosen.items()}, tags={"selection_reason": reason})
    results = _tune(job, "final", run.info.run_id, chosen, progress_actor)
    _close_stray_trials(tracker, run.info.run_id, job, "final")
    tests = [r.metrics.get("test_acc") for r in results if r.error is None and r.metrics.get("test_acc") is not None]
    summary = {"pipeline": pipeline.key, "selected": chosen, "reason": reason, "test_acc": tests}
    if tests:
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        tracker.log(run.info.run_id, {"test_acc_mean": statistics.mean(tests), "test_acc_std": spread})
        tracker.finish(run.info.run_id)
    else:
        summary["failed"] = "no final trial finished"
        tracker.finish(run.info.run_id, failed_reason=summary["failed"])
    return summary


def _phase_run(tracker: Tracker, job: PipelineJob, phase: str, tags: dict[str, Any]):
    key = f"{job.study.name}/{job.pipeline.key}/{phase}"
    return tracker.run(key, f"{job.pipeline.key}/{phase}", "pipeline", parent=job.study_run_id, tags={**tags, "phase": phase})


def search_records(pipeline: Pipeline, results) -> list[SearchRecord]:
    default_lr = TrialConfig.from_dict(pipeline.base_trial).train.lr
    records = []
    for number, result in enumerate(results):
        values = dict(result.config)
        failed = result.error is not None or (result.metrics or {}).get("failed") == 1
        val = None if failed else (result.metrics or {}).get("val_acc")
        records.append(SearchRecord(number, values, val, values.get(LR, default_lr)))
    return records


def _log_selection(tracker: Tracker, run_id: str, selection: Selection) -> None:
    tracker.log(
        run_id,
        {"best_val_acc": selection.val_acc},
        params={f"selected.{k}": v for k, v in selection.values.items()},
        tags={"selection_reason": selection.reason, "selected": json.dumps(selection.values, sort_keys=True)},
    )


def _close_stray_trials(tracker: Tracker, parent_id: str, job: PipelineJob, phase: str) -> None:
    """Trials left RUNNING once their phase is over: stopped early by the scheduler, or
    errored past their retries. Closed as KILLED in MLflow and in their records."""
    reason = "stopped: early stopping or repeated errors"
    close_stray(_records(job, phase), reason)
    for run in tracker.children(parent_id):
        if run.info.status == "RUNNING":
            tracker.client.set_tag(run.info.run_id, "failure_reason", reason)
            tracker.client.set_terminated(run.info.run_id, status="KILLED")


def _records(job: PipelineJob, phase: str) -> Path:
    return phase_folder(job.output, job.pipeline.task.name, job.pipeline.method.key, phase)


def _settle_optuna_trials(tracker: Tracker, parent_id: str, job: PipelineJob) -> None:
    """Tag each search trial run with its Optuna trial number (matched by the sampled values);
    Optuna trials left RUNNING by a killed driver are marked failed."""
    study = optuna.load_study(study_name=_optuna_name(job), storage=job.optuna_storage)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    numbers = {json.dumps(t.params, sort_keys=True): t.number for t in study.trials}
    for path in record_files(_records(job, "search")):
        number = numbers.get(read_record(path).tags.get("searched", ""))
        if number is not None:
            TrialRecord(path).tags({"optuna_trial_number": number})
    for run in tracker.children(parent_id):
        number = numbers.get(run.data.tags.get("searched", ""))
        if number is not None:
            tracker.client.set_tag(run.info.run_id, "optuna_trial_number", number)


def _optuna_name(job: PipelineJob) -> str:
    return f"{job.study.name}/{job.pipeline.key}"


def _tune(
    job: PipelineJob,
    phase: str,
    parent_run_id: str,
    chosen: dict[str, Any],
    progress_actor: str,
    samples: int | None = None,
    suffix: str = "",
):
    pipeline, study = job.pipeline, job.study
    name = pipeline.experiment(phase) + (f"__{suffix}" if suffix else "")
    asha = study.search.asha if phase == "search" else None
    context = TrialContext(
        study=study.name,
        task=pipeline.task.name,
        group=pipeline.task.group,
        method=pipeline.method.key,
        phase=phase,
        base_trial=apply(pipeline.base_trial, chosen),
        tracking_uri=job.tracking_uri,
        output=job.output,
        parent_run_id=parent_run_id,
        search_seed=study.search.seed,
        checkpoint_every=study.checkpoint_every,
        threads=max(1, int(study.resources.cpu)),
        val_every=1 if asha else 0,
        cpus=study.resources.cpu,
        gpu_fraction=study.resources.gpu,
    )
    trainable = tune.with_resources(
        tune.with_parameters(_named_trainable(name), context=context),
        {"cpu": study.resources.cpu, "gpu": study.resources.gpu},
    )
    storage = Path(job.output) / "tune"
    path = storage / name
    grid = {"seed": tune.grid_search(list(study.final.seeds))} if phase == "final" else None
    # Tune writes tuner.pkl before its first experiment state: a driver killed in between
    # leaves a folder that "can restore" into an empty experiment. Start those afresh.
    if tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json")):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=grid, resume_errored=True)
        return tuner.fit()
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(storage),
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[ProgressCallback(progress_actor, pipeline.key, phase, _phase_trials(study, phase))],
        verbose=0,
    )
    if phase == "search":
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(job),
                scheduler=_scheduler(study, pipeline) if asha else None,
                metric="val_acc",
                mode="max",
                num_samples=samples or study.search.trials,
                max_concurrent_trials=study.search.concurrency,
                reuse_actors=True,
            ),
            run_config=run_config,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=grid,
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=len(study.final.seeds), reuse_actors=True),
            run_config=run_config,
        )
    return tuner.fit()


def _named_trainable(name: str):
    """run_trial under a name of its own: Tune registers trainables (and their parameters)
    cluster-wide by name, so concurrent pipelines must not share one."""
    name = re.sub(r"\W", "_", name)

    def trial(values: dict[str, Any], context: TrialContext) -> None:
        run_trial(values, context)

    trial.__name__ = trial.__qualname__ = name
    return trial


def _phase_trials(study: Study, phase: str) -> int:
    return study.search.trials if phase == "search" else len(study.final.seeds)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch on a persistent study that may be ahead of Tune's saved experiment: a
    trial Optuna already closed (the driver died before Tune saved that) resumes from its
    checkpoint, and its repeated intermediate results are not reported to Optuna again."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def _searcher(job: PipelineJob):
    pipeline, study = job.pipeline, job.study
    seed = zlib.crc32(f"{study.search.seed}/{pipeline.key}".encode())  # one sampler stream per pipeline
    sampler = optuna.samplers.TPESampler(seed=seed) if study.search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    return ResumableOptunaSearch(
        space=SearchSpace(pipeline.method.search, pipeline.base_trial),
        metric="val_acc",
        mode="max",
        sampler=sampler,
        study_name=_optuna_name(job),
        storage=optuna.storages.RDBStorage(job.optuna_storage),
    )


def _scheduler(study: Study, pipeline: Pipeline):
    from ray.tune.schedulers import ASHAScheduler

    epochs = TrialConfig.from_dict(pipeline.base_trial).train.epochs  # the core's default if unset
    return ASHAScheduler(
        time_attr="epoch",
        max_t=epochs,
        grace_period=study.search.asha.grace_period,
        reduction_factor=study.search.asha.reduction_factor,
        stop_last_trials=False,  # a trial at its last epoch ends itself, after logging its summary
    )
