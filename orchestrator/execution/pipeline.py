"""One pipeline (task x method): the search phase, the selection, the final phase, and for a
method with `branches` the branch phase (the final trials' branches, from their checkpoints).

Runs inside a Ray task that holds no CPU, so pipelines of different tasks run side by side
and their trials fill the cluster's slots. Each phase is one Tune experiment
(`execution.tuning`) with a deterministic name: a re-run restores it (finished trials are not
run again, interrupted ones continue from their checkpoint). The selection is written once,
into the pipeline's records and its final-phase MLflow run (`store.schema.SelectionRecord`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import ray

from orchestrator.execution.progress import error_cause
from orchestrator.execution.selection import LR, SearchRecord, Selection, select_best
from orchestrator.execution.trainable import searched_values
from orchestrator.execution.tuning import PipelineJob, optuna_name, run_phase
from orchestrator.spec.plan import planned_trials
from orchestrator.store.records import RecordFile, close_stray, read_record, record_files, write_selection
from orchestrator.store.schema import (
    FAILURE_REASON,
    KEY,
    OPTUNA_TRIAL_NUMBER,
    PIPELINE,
    SELECTION_TABLE,
    SelectionRecord,
    phase_folder,
    pipeline_key,
    run_name,
    trial_key,
)
from orchestrator.store.tracking import Tracker
from provpt_core import TrialConfig

NOTHING_SEARCHED = "nothing searched: the method's config as given"


@ray.remote(num_cpus=0)
def run_pipeline(job: PipelineJob, progress_actor: str) -> dict[str, Any]:
    """The pipeline's outcome: its selection and final test scores, or why it failed."""
    pipeline, study = job.pipeline, job.study
    tracker = Tracker(job.tracking_uri, study.name)
    tags = {"study": study.name, "task": pipeline.task.name, "group": pipeline.task.group, "method": pipeline.method.key}
    selection = SelectionRecord(study.name, pipeline.task.name, pipeline.method.key, None, {}, None, NOTHING_SEARCHED)
    if pipeline.method.search:
        run = _phase_run(tracker, job, "search", tags)
        results = list(run_phase(job, "search", run.info.run_id, pipeline.base, progress_actor))
        missing = planned_trials(study, pipeline.method, "search") - len(results)
        if missing > 0:  # a driver killed between a suggestion and Tune's save loses that trial
            results += run_phase(job, "search", run.info.run_id, pipeline.base, progress_actor, samples=missing, suffix="topup")
        _close_stray_trials(tracker, run.info.run_id, job, "search")
        records = search_records(job, results)
        numbers = _settle_optuna_trials(tracker, run.info.run_id, job, records)
        records = [replace(r, number=numbers.get(json.dumps(r.values, sort_keys=True), r.number)) for r in records]
        search_run_ids = {r.data.tags.get(KEY): r.info.run_id for r in tracker.children(run.info.run_id)}
        try:
            best = select_best(records)
        except ValueError as err:
            tracker.finish(run.info.run_id, failed_reason=str(err))
            return {"pipeline": pipeline.key, "failed": str(err)}
        selection = SelectionRecord(
            study.name, pipeline.task.name, pipeline.method.key, best.trial, best.values, best.val_acc, best.reason
        )
        tracker.log(run.info.run_id, {"best_val_acc": best.val_acc})
        tracker.finish(run.info.run_id)
    write_selection(job.output, selection)
    run = _phase_run(tracker, job, "final", tags)
    tracker.log(run.info.run_id, params={f"selected.{k}": v for k, v in selection.values.items()}, tags=selection.tags())
    if pipeline.method.search:
        _log_search_trials(tracker, run.info.run_id, records, best, search_run_ids)
    final_base = pipeline.base.override(selection.values)
    results = run_phase(job, "final", run.info.run_id, final_base, progress_actor)
    _close_stray_trials(tracker, run.info.run_id, job, "final")
    tests = [r.metrics.get("test_acc") for r in results if r.error is None and r.metrics.get("test_acc") is not None]
    outcome = {"pipeline": pipeline.key, "selected": selection.values, "reason": selection.reason, "test_acc": tests}
    if tests:
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        tracker.log(run.info.run_id, {"test_acc_mean": statistics.mean(tests), "test_acc_std": spread})
        tracker.finish(run.info.run_id)
    else:
        causes = sorted({error_cause(str(r.error)) for r in results if r.error is not None})
        outcome["failed"] = "no final trial finished" + (f" ({'; '.join(causes)})" if causes else "")
        tracker.finish(run.info.run_id, failed_reason=outcome["failed"])
    if tests and pipeline.method.branches is not None:
        outcome["branches"] = _run_branches(tracker, job, final_base, tags, progress_actor)
    return outcome


def _run_branches(tracker: Tracker, job: PipelineJob, base: TrialConfig, tags: dict[str, Any], progress_actor: str) -> int:
    """The branch phase; the number of branches that finished."""
    run = _phase_run(tracker, job, "branch", tags)
    results = run_phase(job, "branch", run.info.run_id, base, progress_actor)
    _close_stray_trials(tracker, run.info.run_id, job, "branch")
    done = sum(1 for r in results if r.error is None and (r.metrics or {}).get("test_acc") is not None)
    tracker.finish(run.info.run_id, failed_reason=None if done else "no branch finished")
    return done


def _phase_run(tracker: Tracker, job: PipelineJob, phase: str, tags: dict[str, Any]):
    pipeline = job.pipeline
    key = pipeline_key(job.study.name, pipeline.task.name, pipeline.method.key, phase)
    return tracker.run(key, f"{pipeline.key}/{phase}", PIPELINE, parent=job.study_run_id, tags={**tags, "phase": phase})


def search_records(job: PipelineJob, results) -> list[SearchRecord]:
    """The search trials as the selection sees them: failed ones (diverged, errored) carry no score."""
    pipeline = job.pipeline
    records = []
    for number, result in enumerate(results):
        values = searched_values(dict(result.config))
        metrics = result.metrics or {}
        failed = result.error is not None or metrics.get("failed") == 1
        key = trial_key(job.study.name, pipeline.task.name, pipeline.method.key, "search", None, metrics.get("trial_id", ""))
        lr = values.get(LR, pipeline.base.train.lr)
        records.append(SearchRecord(number, key, values, None if failed else metrics.get("val_acc"), lr))
    return records


def _log_search_trials(tracker: Tracker, run_id: str, records: list[SearchRecord], best: Selection, run_ids: dict[str, str]) -> None:
    """The search as a table on the final phase's run (`selection.md`, `.html`, `.csv`): every
    trial by its Optuna number and MLflow run, its values and val score, the selected one marked."""
    import pandas as pd

    from orchestrator.report.render import frame_html, frame_markdown

    rows = [
        {
            "selected": "yes" if r.trial == best.trial else "",
            "optuna_trial": r.number,
            **r.values,
            "val_acc": r.val_acc,
            "state": "failed" if r.val_acc is None or r.val_acc != r.val_acc else "finished",
            "mlflow_run": run_name(r.trial),
            "mlflow_run_id": run_ids.get(r.trial, ""),
        }
        for r in sorted(records, key=lambda r: r.number)
    ]
    frame = pd.DataFrame(rows)
    caption = f"Search trials; selected: {best.reason}"
    tracker.client.log_text(run_id, f"{caption}\n\n{frame_markdown(frame)}", SELECTION_TABLE + ".md")
    tracker.client.log_text(run_id, frame_html(frame.drop(columns="mlflow_run_id"), caption), SELECTION_TABLE + ".html")
    tracker.client.log_text(run_id, frame.to_csv(index=False), SELECTION_TABLE + ".csv")


def _close_stray_trials(tracker: Tracker, parent_id: str, job: PipelineJob, phase: str) -> None:
    """Trials left RUNNING once their phase is over: stopped early by the scheduler, or
    errored past their retries. Closed as KILLED in MLflow and in their records."""
    reason = "stopped: ended by the scheduler or the driver"
    close_stray(_records(job, phase), reason)
    for run in tracker.children(parent_id):
        if run.info.status == "RUNNING":
            tracker.client.set_tag(run.info.run_id, FAILURE_REASON, reason)
            tracker.client.set_terminated(run.info.run_id, status="KILLED")


def _records(job: PipelineJob, phase: str) -> Path:
    return phase_folder(job.output, job.pipeline.task.name, job.pipeline.method.key, phase)


def _settle_optuna_trials(tracker: Tracker, parent_id: str, job: PipelineJob, records: list[SearchRecord]) -> dict[str, int]:
    """Tag each search trial run with its Optuna trial number (matched by the sampled values),
    and return the numbers by the JSON of the sampled values.
    An Optuna trial left RUNNING by an interrupted or killed driver gets the score its Tune
    trial finished with after the resume (Tune's restored searcher may not know it), or is
    marked failed if that trial did not finish."""
    study = optuna.load_study(study_name=optuna_name(job), storage=job.optuna_storage)
    scores = {json.dumps(r.values, sort_keys=True): r.val_acc for r in records if r.val_acc is not None and r.val_acc == r.val_acc}
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            score = scores.get(json.dumps(trial.params, sort_keys=True))
            if score is None:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial.number, score)
    numbers = {json.dumps(t.params, sort_keys=True): t.number for t in study.trials}
    for path in record_files(_records(job, "search")):
        number = numbers.get(read_record(path).tags.get("searched", ""))
        if number is not None:
            RecordFile(path).tags({OPTUNA_TRIAL_NUMBER: number})
    for run in tracker.children(parent_id):
        number = numbers.get(run.data.tags.get("searched", ""))
        if number is not None:
            tracker.client.set_tag(run.info.run_id, OPTUNA_TRIAL_NUMBER, number)
    return numbers
