"""A pipeline's phases as trial requests to the study's experiment (`execution.exchange`).

The search asks Optuna (one persistent study per pipeline, ask-and-tell) for at most
`search.concurrency` trials at a time and tells it each score; the final phase asks for one
trial per seed, the branch phase for one per (seed, branch point). Every trial has a
deterministic key (Optuna trial number, seed, branch point), so a re-run finds what an earlier
run did: an Optuna trial already told is not run again, one left running (a killed driver) is
asked again under its key and continues from its checkpoint, and a final or branch trial
whose record finished is not run again.
"""

from __future__ import annotations

import math
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Iterable

import optuna

from orchestrator.execution.exchange import Exchange, TrialOutcome, TrialRequest
from orchestrator.execution.selection import LR, SearchRecord
from orchestrator.execution.context import PhaseContext
from orchestrator.spec.plan import Pipeline, planned_trials
from orchestrator.spec.space import SearchSpace
from orchestrator.spec.study import Study
from orchestrator.store.records import read_record
from orchestrator.store.schema import (
    MLFLOW_RUN_ID,
    MLFLOW_RUN_NAME,
    SUMMARY_METRICS,
    branch_trial_id,
    phase_folder,
    run_name,
    search_trial_id,
    trial_key,
)
from provpt_core import TrialConfig

FINISHED, FAILED = "FINISHED", "FAILED"


@dataclass(frozen=True)
class PipelineJob:
    pipeline: Pipeline
    study: Study
    output: str
    tracking_uri: str
    study_run_id: str
    optuna_storage: str
    order: int = 0  # the pipeline's place in the plan


def optuna_name(job: PipelineJob) -> str:
    return f"{job.study.name}/{job.pipeline.key}"


def phase_context(job: PipelineJob, phase: str, parent_run_id: str, base: TrialConfig) -> PhaseContext:
    study, pipeline = job.study, job.pipeline
    return PhaseContext(
        study=study.name,
        task=pipeline.task.name,
        group=pipeline.task.group,
        method=pipeline.method.key,
        phase=phase,
        base=base,
        tracking_uri=job.tracking_uri,
        output=job.output,
        parent_run_id=parent_run_id,
        search_seed=study.search.seed,
        checkpoint_every=study.checkpoint_every,
        threads=max(1, int(study.resources.cpu)),
        val_every=1 if phase == "search" and study.search.asha else 0,
        cpus=study.resources.cpu,
        gpu_fraction=study.resources.gpu,
        **_branching(job.pipeline, phase),
    )


def run_search(job: PipelineJob, exchange: Exchange, parent_run_id: str) -> list[SearchRecord]:
    """The search: every Optuna trial of the pipeline's budget, told its score."""
    pipeline, study = job.pipeline, job.study
    optuna_study = optuna.create_study(
        study_name=optuna_name(job),
        storage=optuna.storages.RDBStorage(job.optuna_storage),
        sampler=_sampler(job),
        direction="maximize",
        load_if_exists=True,
    )
    context = phase_context(job, "search", parent_run_id, pipeline.base)
    asha = None
    if study.search.asha:
        asha = {"max_t": pipeline.base.train.epochs, "grace_period": study.search.asha.grace_period,
                "reduction_factor": study.search.asha.reduction_factor, "stop_last_trials": False}
    space = SearchSpace(pipeline.method.search, pipeline.base)
    told = [t for t in optuna_study.trials if t.state.is_finished()]
    rerun = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.RUNNING]
    budget = planned_trials(study, pipeline.method, "search")
    failed = sum(t.state != optuna.trial.TrialState.COMPLETE for t in told)
    scores = [t.value for t in told if t.state == optuna.trial.TrialState.COMPLETE]
    exchange.phase(pipeline.key, "search", budget, len(told), failed, max(scores, default=None))
    records = [_record(job, t.number, t.params, t.value if t.state == optuna.trial.TrialState.COMPLETE else None) for t in told]
    running: dict[Future, optuna.Trial] = {}

    def ask(trial: optuna.Trial, values: dict[str, Any]) -> None:
        key = _key(job, "search", search_trial_id(trial.number))
        request = TrialRequest(key, pipeline.key, "search", {**values, "optuna_trial": trial.number}, context, job.order, asha)
        running[exchange.submit(request)] = trial

    while True:
        while len(running) < study.search.concurrency and (rerun or len(records) + len(running) < budget):
            if rerun:  # asked by an earlier run that did not see it end: the same trial again
                frozen = rerun.pop(0)
                ask(optuna.trial.Trial(optuna_study, frozen._trial_id), frozen.params)
            else:
                trial = optuna_study.ask()
                space(trial)
                ask(trial, trial.params)
        if not running:
            break
        for future in _first_done(running):
            trial = running.pop(future)
            outcome = future.result()
            score = _score(outcome)
            _tell(optuna_study, trial, score, outcome)
            records.append(_record(job, trial.number, _searched(outcome.values), score))
    return sorted(records, key=lambda r: r.number)


def run_trials(job: PipelineJob, exchange: Exchange, phase: str, parent_run_id: str, base: TrialConfig) -> list[TrialOutcome]:
    """The final phase (a trial per seed) or the branch phase (a trial per seed and branch
    point); trials whose record finished in an earlier run are not run again."""
    pipeline, study = job.pipeline, job.study
    context = phase_context(job, phase, parent_run_id, base)
    if phase == "final":
        trials = [(f"seed{seed}", {"seed": seed}) for seed in study.final.seeds]
    else:
        trials = [
            (branch_trial_id(seed, epoch, target), {"seed": seed, "branch": {"epoch": epoch, "target": target}})
            for seed in study.final.seeds
            for epoch, target in pipeline.branch_points()
        ]
    outcomes, asked = [], []
    for trial_id, values in trials:
        key = _key(job, phase, trial_id)
        recorded = _recorded(job, phase, key, values)
        if recorded is not None:
            outcomes.append(recorded)
        else:
            asked.append(TrialRequest(key, pipeline.key, phase, values, context, job.order))
    exchange.phase(pipeline.key, phase, len(trials), len(outcomes), sum(o.metrics.get("failed") == 1 for o in outcomes))
    futures = [exchange.submit(request) for request in asked]
    return outcomes + [future.result() for future in futures]


def _first_done(running: dict[Future, optuna.Trial]) -> Iterable[Future]:
    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
    return done


def _key(job: PipelineJob, phase: str, trial_id: str) -> str:
    pipeline = job.pipeline
    return trial_key(job.study.name, pipeline.task.name, pipeline.method.key, phase, None, trial_id)


def _searched(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "optuna_trial"}


def _score(outcome: TrialOutcome) -> float | None:
    """The val score Optuna is told: None for a trial that failed (errored or diverged)."""
    score = outcome.metrics.get("val_acc")
    if outcome.error is not None or outcome.metrics.get("failed") == 1 or not isinstance(score, (int, float)) or math.isnan(score):
        return None
    return float(score)


def _tell(study: optuna.Study, trial: optuna.Trial, score: float | None, outcome: TrialOutcome) -> None:
    """Tell Optuna the score, after the val scores of its epochs (a step an earlier run reported
    Optuna keeps), with the trial's MLflow run as user attributes (every tool names it the same)."""
    for step, value in sorted(outcome.curve.items()):
        trial.report(value, step)
    run_id = outcome.metrics.get(MLFLOW_RUN_ID)
    if run_id is not None:
        trial.set_user_attr(MLFLOW_RUN_ID, run_id)
        trial.set_user_attr(MLFLOW_RUN_NAME, run_name(outcome.key))
    if score is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, score)


def _record(job: PipelineJob, number: int, values: dict[str, Any], score: float | None) -> SearchRecord:
    key = _key(job, "search", search_trial_id(number))
    return SearchRecord(number, key, dict(values), score, values.get(LR, job.pipeline.base.train.lr))


def _recorded(job: PipelineJob, phase: str, key: str, values: dict[str, Any]) -> TrialOutcome | None:
    """The outcome an earlier run recorded for this trial, if it finished (or diverged)."""
    pipeline = job.pipeline
    path = phase_folder(job.output, pipeline.task.name, pipeline.method.key, phase) / f"{key.rsplit('/', 1)[1]}.jsonl"
    if not path.is_file():
        return None
    record = read_record(path)
    if record.status == FINISHED:
        metrics = {name: record.summary.get(name) for name in SUMMARY_METRICS}
        return TrialOutcome(key, values, {**metrics, "val_acc": metrics["final_val_acc"], "from_record": 1})
    if record.status == FAILED and (record.failure_reason or "").startswith("diverged"):
        return TrialOutcome(key, values, {"val_acc": math.nan, "failed": 1, "from_record": 1})
    return None


def _branching(pipeline: Pipeline, phase: str) -> dict[str, Any]:
    """What a branched method's final trials keep (checkpoints at the branch epochs) and what
    its branch trials move."""
    branches = pipeline.method.branches
    if branches is None or phase == "search":
        return {}
    if phase == "final":
        return {"snapshot_epochs": tuple(branches.branch_epochs(pipeline.base.train.epochs))}
    return {"branch": {"source": branches.source, "count": branches.count, "rescale": branches.rescale}}


def _sampler(job: PipelineJob) -> optuna.samplers.BaseSampler:
    pipeline, study = job.pipeline, job.study
    seed = zlib.crc32(f"{study.search.seed}/{pipeline.key}".encode())  # one sampler stream per pipeline
    if study.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)
