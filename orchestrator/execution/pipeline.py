"""One pipeline (task x method): the search phase, the selection, the final phase, and for a
method with `branches` the branch phase (the final trials' branches, from their checkpoints).

Runs in a thread of the study task (`execution.study_task`), beside the other pipelines; its
trials are requests to the study's one Tune experiment (`execution.tuning`, `.exchange`). The
selection is written once, into the pipeline's records and its final-phase MLflow run
(`store.schema.SelectionRecord`).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from orchestrator.execution.exchange import Exchange
from orchestrator.execution.progress import error_cause
from orchestrator.execution.selection import SearchRecord, Selection, select_best
from orchestrator.execution.tuning import PipelineJob, run_search, run_trials
from orchestrator.store.records import close_stray, write_selection
from orchestrator.store.schema import (
    CHECKPOINTS,
    FAILURE_REASON,
    KEY,
    PIPELINE,
    SELECTION_TABLE,
    SelectionRecord,
    phase_folder,
    pipeline_key,
    run_name,
)
from orchestrator.store.tracking import Tracker
from provpt_core import TrialConfig

NOTHING_SEARCHED = "nothing searched: the method's config as given"


def run_pipeline(job: PipelineJob, exchange: Exchange) -> dict[str, Any]:
    """The pipeline's outcome: its selection and final test scores, or why it failed."""
    pipeline, study = job.pipeline, job.study
    tracker = Tracker(job.tracking_uri, study.name)
    tags = {"study": study.name, "task": pipeline.task.name, "group": pipeline.task.group, "method": pipeline.method.key}
    selection = SelectionRecord(study.name, pipeline.task.name, pipeline.method.key, None, {}, None, NOTHING_SEARCHED)
    if pipeline.method.search:
        run = _phase_run(tracker, job, "search", tags)
        records = run_search(job, exchange, run.info.run_id)
        _close_stray_trials(tracker, run.info.run_id, job, "search")
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
    results = run_trials(job, exchange, "final", run.info.run_id, final_base)
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
        outcome["branches"] = _run_branches(tracker, job, exchange, final_base, tags)
    return outcome


def _run_branches(tracker: Tracker, job: PipelineJob, exchange: Exchange, base: TrialConfig, tags: dict[str, Any]) -> int:
    """The branch phase; the number of branches that finished."""
    run = _phase_run(tracker, job, "branch", tags)
    results = run_trials(job, exchange, "branch", run.info.run_id, base)
    _close_stray_trials(tracker, run.info.run_id, job, "branch")
    done = sum(1 for r in results if r.error is None and (r.metrics or {}).get("test_acc") is not None)
    tracker.finish(run.info.run_id, failed_reason=None if done else "no branch finished")
    return done


def _phase_run(tracker: Tracker, job: PipelineJob, phase: str, tags: dict[str, Any]):
    pipeline = job.pipeline
    key = pipeline_key(job.study.name, pipeline.task.name, pipeline.method.key, phase)
    return tracker.run(key, f"{pipeline.key}/{phase}", PIPELINE, parent=job.study_run_id, tags={**tags, "phase": phase})


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
    shutil.rmtree(Path(job.output) / CHECKPOINTS / job.pipeline.task.name / job.pipeline.method.key / phase, ignore_errors=True)
    for run in tracker.children(parent_id):
        if run.info.status == "RUNNING":
            tracker.client.set_tag(run.info.run_id, FAILURE_REASON, reason)
            tracker.client.set_terminated(run.info.run_id, status="KILLED")


def _records(job: PipelineJob, phase: str) -> Path:
    return phase_folder(job.output, job.pipeline.task.name, job.pipeline.method.key, phase)
