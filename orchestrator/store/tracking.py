"""MLflow runs of a study: study run > pipeline run (task, method, phase) > trial run.

The orchestrator creates every run itself (Ray's MLflow callback duplicates runs after a
restore and cannot nest). Each run carries a deterministic key (`schema.KEY`);
asking for a run by key re-attaches to it, so a resumed study adds nothing twice.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.store.schema import FAILURE_REASON, KEY, KIND, PARENT, TRIAL

MAX_BATCH = 900  # MLflow accepts at most 1000 entries per log_batch
MAX_REASON = 4000  # characters of a failure reason kept


class Tracker:
    """Runs of one study's experiment. The driver creates the experiment, with
    `artifact_location` when the store is a local file (else MLflow writes ./mlruns)."""

    def __init__(self, uri: str, study: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(study, artifact_location=artifact_location)
            except Exception:  # created concurrently by another process
                self.experiment_id = self.client.get_experiment_by_name(study).experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def run(self, key: str, name: str, kind: str, parent: str | None = None, tags: dict[str, Any] | None = None):
        """The run with this key (re-attached, reopened if it had stopped), or a new one."""
        found = self.find(key)
        if found is not None:
            if kind != TRIAL:
                self.reopen(found)
            return found
        all_tags = {KEY: key, KIND: kind, **{k: str(v) for k, v in (tags or {}).items()}}
        if parent:
            all_tags[PARENT] = parent
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)

    def find(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY}` = '{key}'", max_results=2
        )
        return runs[0] if runs else None

    def finish(self, run_id: str, failed_reason: str | None = None) -> None:
        if failed_reason is not None:
            self.client.set_tag(run_id, FAILURE_REASON, failed_reason[:MAX_REASON])
        self.client.set_terminated(run_id, status="FAILED" if failed_reason is not None else "FINISHED")

    def log(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        import time

        now = int(time.time() * 1000)
        entries_m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        entries_p = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        entries_t = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        for start in range(0, max(len(entries_m), len(entries_p), len(entries_t), 1), MAX_BATCH):
            self.client.log_batch(
                run_id,
                metrics=entries_m[start : start + MAX_BATCH],
                params=entries_p[start : start + MAX_BATCH],
                tags=entries_t[start : start + MAX_BATCH],
            )

    def reopen(self, run) -> None:
        """A stopped run running again (a resumed study, a retried trial): RUNNING, without the
        reason it stopped."""
        if run.info.status == "RUNNING":
            return
        self.client.update_run(run.info.run_id, status="RUNNING")
        if FAILURE_REASON in run.data.tags:
            self.client.delete_tag(run.info.run_id, FAILURE_REASON)

    def close_running(self, reason: str) -> int:
        """Every run of the study still RUNNING, closed as KILLED with `reason` (an interrupted
        driver); a re-run re-attaches to them. How many were closed."""
        runs = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10_000)
        for run in runs:
            self.client.set_tag(run.info.run_id, FAILURE_REASON, reason)
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(runs)

    def children(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent_id}'")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("provpt")
    except PackageNotFoundError:
        release = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{release}+{commit}" if commit else release
