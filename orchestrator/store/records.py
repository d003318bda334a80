"""Trial records in the study's output folder, beside MLflow.

Every trial appends JSON lines to ``<output>/records/<task>/<method>/<phase>/<trial>.jsonl``
as it runs: a ``start`` line (MLflow run id, tags, the whole config), one ``epoch`` line per
epoch, ``tags`` lines the driver adds later, a ``resume`` line when a retry restores a
checkpoint (its epoch), and an ``end`` line (status, summary metrics,
failure reason, the prompt distribution after every relocation, the analyses' events). The results tables can be
built from these files alone (`orchestrator.report`), and must equal those built from MLflow.

A trial retried from a checkpoint appends again and logs the epochs it runs again: the last
value of an epoch's metric counts, as in MLflow (whose readers take a step's latest point),
and so does the last ``end``. Either store may have been cut between the two writes of one
epoch; the re-run epoch then supersedes in both. A line cut short by a killed process is
ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.store.schema import FAILURE_REASON, RECORDS, SELECTION_FILE, SelectionRecord, selection_file

RUNNING = "RUNNING"


@dataclass
class RecordedTrial:
    """One trial as recorded, whichever store it was read from."""

    key: str  # study/task/method/phase/(seedN | trialN | branch id)
    run_id: str  # the MLflow run
    status: str  # RUNNING, FINISHED, FAILED or KILLED
    tags: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)
    distributions: list[tuple[int, int, int]] = field(default_factory=list)  # (epoch, block, count)
    failure_reason: str | None = None
    resumed_from: list[int] = field(default_factory=list)  # the checkpoint epoch of each restart
    analysis: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # schema.ANALYSIS_EVENTS


def present(values: dict[str, Any]) -> dict[str, float]:
    """The metrics that are logged: None values are left out (in MLflow and in records)."""
    return {k: float(v) for k, v in values.items() if v is not None}


class RecordFile:
    """Appends one trial's events to its file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def start(self, key: str, run_id: str, tags: dict[str, Any], config: dict[str, Any]) -> None:
        self._append({"event": "start", "key": key, "run_id": run_id, "tags": _strings(tags), "config": config})

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._append({"event": "epoch", "epoch": epoch, "metrics": present(metrics)})

    def tags(self, tags: dict[str, Any]) -> None:
        self._append({"event": "tags", "tags": _strings(tags)})

    def resumed(self, epoch: int) -> None:
        self._append({"event": "resume", "epoch": epoch})

    def end(
        self,
        status: str,
        summary: dict[str, Any] | None = None,
        failure_reason: str | None = None,
        distributions: list[dict[str, int]] | None = None,
        analysis: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        rows = [[r["epoch"], r["block"], r["count"]] for r in distributions or []]
        self._append(
            {
                "event": "end",
                "status": status,
                "summary": present(summary or {}),
                "failure_reason": failure_reason,
                "distributions": rows,
                "analysis": analysis or {},
            }
        )


def _strings(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items()}


def read_record(path: Path) -> RecordedTrial:
    lines = path.read_text(encoding="utf-8").splitlines()
    result: RecordedTrial | None = None
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line of a killed writer
                break
            raise ValueError(f"{path}:{number}: not a JSON record line") from None
        kind = event.get("event")
        if kind == "start":
            if result is None:  # a retried trial's tags stay those of its first start, as in MLflow
                result = RecordedTrial(event["key"], event["run_id"], RUNNING, dict(event["tags"]), event["config"])
            else:  # a retry after a failure runs again
                result.status, result.failure_reason = RUNNING, None
        elif result is None:
            raise ValueError(f"{path}:{number}: expected a 'start' line first, got {kind!r}")
        elif kind == "epoch":
            result.epochs.setdefault(int(event["epoch"]), {}).update(event["metrics"])
        elif kind == "tags":
            result.tags.update(event["tags"])
        elif kind == "resume":
            result.resumed_from.append(int(event["epoch"]))
        elif kind == "end":
            result.status = event["status"]
            result.summary = event["summary"]
            result.failure_reason = event["failure_reason"]
            result.distributions = [tuple(row) for row in event["distributions"]]
            result.analysis = event.get("analysis", {})
        else:
            raise ValueError(f"{path}:{number}: unknown event {kind!r}")
    if result is None:
        raise ValueError(f"{path}: no 'start' line")
    if result.failure_reason is not None:
        result.tags[FAILURE_REASON] = result.failure_reason
    return result


def record_files(folder: Path) -> Iterator[Path]:
    return iter(sorted(folder.rglob("*.jsonl"))) if folder.is_dir() else iter(())


def read_records(output: str | Path) -> list[RecordedTrial]:
    """Every trial recorded under a study's output folder."""
    return [read_record(path) for path in record_files(Path(output) / RECORDS)]


def close_stray(folder: Path, reason: str) -> None:
    """Records of one phase left RUNNING (stopped early, or errored past their retries)."""
    for path in record_files(folder):
        if read_record(path).status == RUNNING:
            RecordFile(path).end("KILLED", failure_reason=reason)


def write_selection(output: str | Path, selection: SelectionRecord) -> None:
    path = selection_file(output, selection.task, selection.method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(selection.to_json(), encoding="utf-8")


def read_selections(output: str | Path) -> list[SelectionRecord]:
    """Every pipeline's selection recorded under a study's output folder."""
    folder = Path(output) / RECORDS
    paths = sorted(folder.glob(f"*/*/{SELECTION_FILE}")) if folder.is_dir() else []
    return [SelectionRecord.from_json(path.read_text(encoding="utf-8")) for path in paths]
