"""The study's control plane: one Ray task, on the driver's node, that runs every pipeline in a
thread (`pipeline.run_pipeline`, at most `limit` at once, in plan order) and every trial in one
Tune experiment (`exchange`), whose trial workers live from the study's first trial to its last.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator.execution.exchange import Exchange, ExchangeCallback, PipelineScheduler, RequestSearcher
from orchestrator.execution.pipeline import run_pipeline
from orchestrator.execution.tuning import PipelineJob
from orchestrator.spec.study import Study
from orchestrator.store.schema import run_name


@ray.remote(num_cpus=0)
def run_study_trials(jobs: list[PipelineJob], limit: int, slots: int, board_actor: str) -> list[dict[str, Any]]:
    """Each pipeline's outcome (`pipeline.run_pipeline`), in the order of `jobs`."""
    study, output = jobs[0].study, jobs[0].output
    exchange = Exchange(f"{study.name}-{os.getpid()}-{time.time_ns()}")
    pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="pipeline")
    futures = [pool.submit(_pipeline, job, exchange) for job in jobs]

    def close_when_done() -> None:
        wait(futures)
        exchange.close()

    threading.Thread(target=close_when_done, name="pipelines-done", daemon=True).start()
    try:
        experiment(study, output, exchange.name, board_actor, slots).fit()
    finally:  # an experiment that stopped early gives no more outcomes: the pipelines fail, naming why
        exchange.abort("the study's Tune experiment ended before this pipeline's trials did")
        pool.shutdown(wait=True)
    return [future.result() for future in futures]


def provpt_trial(config: dict[str, Any]) -> None:
    """Tune's trainable: the trial's code (torch, timm) is imported in the trial workers only."""
    from orchestrator.execution.trainable import run_trial

    run_trial(config)


def _pipeline(job: PipelineJob, exchange: Exchange) -> dict[str, Any]:
    try:
        return run_pipeline(job, exchange)
    except Exception as err:  # a pipeline's crash is reported, the others go on
        return {"pipeline": job.pipeline.key, "failed": f"{type(err).__name__}: {err}"}


def experiment(study: Study, output: str, exchange: str, board_actor: str, slots: int) -> tune.Tuner:
    """The study's Tune experiment: one trainable and resource shape for every trial, so Tune
    reuses its actors, `slots` of them kept between trials; a new experiment folder under
    <output>/tune for every driver run."""
    trainable = tune.with_resources(provpt_trial, {"cpu": study.resources.cpu, "gpu": study.resources.gpu})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=RequestSearcher(exchange),
            scheduler=PipelineScheduler(warm_actors=slots),
            num_samples=-1,  # until the searcher says FINISHED: every pipeline ended
            reuse_actors=True,
            trial_name_creator=lambda trial: run_name(trial.config["key"]),
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=f"trials-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(output) / "tune"),
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            callbacks=[ExchangeCallback(exchange, board_actor)],
            verbose=0,
        ),
    )
