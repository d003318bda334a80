"""A pipeline phase as one Ray Tune experiment: Optuna's sampler (search) or a grid of seeds
(final), ASHA when asked, resumable from ``<output>/tune/<experiment>`` after any kill."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from orchestrator.execution.progress import ProgressCallback
from orchestrator.execution.trainable import PhaseContext, run_trial
from orchestrator.spec.plan import Pipeline, planned_trials
from orchestrator.spec.space import SearchSpace
from orchestrator.spec.study import Study
from orchestrator.store.schema import MLFLOW_RUN_ID, MLFLOW_RUN_NAME, pipeline_key, run_name
from provpt_core import TrialConfig


@dataclass(frozen=True)
class PipelineJob:
    pipeline: Pipeline
    study: Study
    output: str
    tracking_uri: str
    study_run_id: str
    optuna_storage: str


def optuna_name(job: PipelineJob) -> str:
    return f"{job.study.name}/{job.pipeline.key}"


def run_phase(
    job: PipelineJob,
    phase: str,
    parent_run_id: str,
    base: TrialConfig,
    progress_actor: str,
    samples: int | None = None,
    suffix: str = "",
):
    """The phase's Tune experiment, restored if it exists; its results (one per trial)."""
    pipeline, study = job.pipeline, job.study
    name = pipeline.experiment(phase) + (f"__{suffix}" if suffix else "")
    asha = study.search.asha if phase == "search" else None
    context = PhaseContext(
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
        val_every=1 if asha else 0,
        cpus=study.resources.cpu,
        gpu_fraction=study.resources.gpu,
        **_branching(pipeline, phase),
    )
    trainable = tune.with_resources(
        tune.with_parameters(_named_trainable(name), context=context),
        {"cpu": study.resources.cpu, "gpu": study.resources.gpu},
    )
    storage = Path(job.output) / "tune"
    path = storage / name
    grid = None
    if phase != "search":
        grid = {"seed": tune.grid_search(list(study.final.seeds))}
    if phase == "branch":
        points = [{"epoch": epoch, "target": target} for epoch, target in pipeline.branch_points()]
        grid["branch"] = tune.grid_search(points)
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
        callbacks=[ProgressCallback(progress_actor, pipeline.key, phase, planned_trials(study, pipeline.method, phase))],
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
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=max(len(study.final.seeds), study.search.concurrency),
                reuse_actors=True,
            ),
            run_config=run_config,
        )
    return tuner.fit()


def _branching(pipeline: Pipeline, phase: str) -> dict[str, Any]:
    """What a branched method's final trials keep (checkpoints at the branch epochs) and what
    its branch trials move."""
    branches = pipeline.method.branches
    if branches is None or phase == "search":
        return {}
    if phase == "final":
        return {"snapshot_epochs": tuple(branches.branch_epochs(pipeline.base.train.epochs))}
    return {"branch": {"source": branches.source, "count": branches.count, "rescale": branches.rescale}}


def _named_trainable(name: str):
    """run_trial under a name of its own: Tune registers trainables (and their parameters)
    cluster-wide by name, so concurrent pipelines must not share one."""
    name = re.sub(r"\W", "_", name)

    def trial(values: dict[str, Any], context: PhaseContext) -> None:
        run_trial(values, context)

    trial.__name__ = trial.__qualname__ = name
    return trial


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch on a persistent study that may be ahead of Tune's saved experiment: a
    trial Optuna already closed (the driver died before Tune saved that) resumes from its
    checkpoint, and its repeated intermediate results are not reported to Optuna again. An
    epoch without a val score reports nothing. Each Optuna trial gets its MLflow run's id and
    name as user attributes (from the trial's first result), so every tool names it the same."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._link(trial_id, result)
        if self.metric not in result:  # an epoch without evaluation: nothing to tell Optuna
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._link(trial_id, result or {})
        super().on_trial_complete(trial_id, result, error)

    def __init__(self, *args, run_prefix: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.run_prefix = run_prefix  # a search trial's key is <run_prefix>/<Tune trial id>

    def _link(self, trial_id: str, result: dict) -> None:
        trial, run_id = self._ot_trials.get(trial_id), result.get(MLFLOW_RUN_ID)
        linked = self.__dict__.setdefault("_linked", set())
        if trial is None or run_id is None or trial_id in linked:
            return
        linked.add(trial_id)
        try:
            trial.set_user_attr(MLFLOW_RUN_ID, run_id)
            trial.set_user_attr(MLFLOW_RUN_NAME, run_name(f"{self.run_prefix}/{trial_id}"))
        except optuna.exceptions.UpdateFinishedTrialError:  # closed by a driver before this one
            pass


def _searcher(job: PipelineJob):
    pipeline, study = job.pipeline, job.study
    seed = zlib.crc32(f"{study.search.seed}/{pipeline.key}".encode())  # one sampler stream per pipeline
    sampler = optuna.samplers.TPESampler(seed=seed) if study.search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    return ResumableOptunaSearch(
        space=SearchSpace(pipeline.method.search, pipeline.base),
        metric="val_acc",
        mode="max",
        sampler=sampler,
        study_name=optuna_name(job),
        storage=optuna.storages.RDBStorage(job.optuna_storage),
        run_prefix=pipeline_key(study.name, pipeline.task.name, pipeline.method.key, "search"),
    )


def _scheduler(study: Study, pipeline: Pipeline):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=pipeline.base.train.epochs,
        grace_period=study.search.asha.grace_period,
        reduction_factor=study.search.asha.reduction_factor,
        stop_last_trials=False,  # a trial at its last epoch ends itself, after logging its summary
    )
