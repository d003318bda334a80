"""A study's results as three typed parquet tables, read from MLflow or from the output folder.

``trials.parquet``, one row per trial:
    trial (string): the trial's key, ``study/task/method/phase/seedN``, ``.../trialN`` (Optuna number) or a branch id
    study, task, group, method, phase (string); seed (int64)
    status (string): FINISHED, FAILED (e.g. diverged), KILLED (stopped early or errored past
        its retries) or RUNNING; failure_reason (string, null)
    best_val_acc, final_val_acc, test_acc (float64, fractions; null where not scored)
    best_late_test_acc (float64): the "as published" readout of eval.late_test_from, the best
        test accuracy of the late epochs; null unless asked for. Never used for selection.
    trainable_params (int64), wall_seconds (float64, null unless finished), epochs (int64:
        epochs recorded), gpu_fraction, cpus (float64: the trial's Ray resources)
    mlflow_run_id, ray_trial_id, ray_node_id (the node it last started on), config_hash,
        code_version (string)
    searched (string: JSON of the searched values), optuna_trial_number (int64, null)
    config.<field> for every field of the trial config (``config.train.lr``,
        ``config.method.relocation.allocator``...), typed bool / int64 / float64 / string;
        lists as JSON strings; null where a method has no such field
``epochs.parquet``: trial (string), epoch (int64), one float64 column per metric logged per
    epoch (train_loss, train_acc, lr, epoch_seconds, val_acc, val_loss, ...; null where not
    measured that epoch)
``distributions.parquet``: trial (string), epoch, block, count (int64): the prompts per block
    at the start (epoch 0) and after every relocation (PRO-VPT trials only)
``fidelity.parquet``: trial (string), epoch, prompt, block (int64), taylor, method_score,
    loss_change_dropped, loss_change_zeroed (float64): the idleness-fidelity analysis, every
    prompt's score beside the measured loss change when it is removed (provpt_core's
    `fidelity` event; method_score null where relocation had no score that epoch)
``selections.parquet``, one row per pipeline that reached its final phase: study, task, method
    (string); trial (string: the selected search trial's key, null if nothing was searched);
    values (string: JSON of the selected values); val_acc (float64, null if nothing was
    searched); reason (string: why, in a sentence)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.store.records import RecordedTrial, read_records, read_selections
from orchestrator.store.schema import (
    ANALYSIS_ARTIFACT,
    CONFIG_ARTIFACT,
    DISTRIBUTIONS_ARTIFACT,
    FAILURE_REASON,
    IDENTITY,
    KEY,
    KIND,
    OPTUNA_TRIAL_NUMBER,
    PIPELINE,
    SELECTION_REASON,
    SUMMARY_METRICS,
    TRIAL,
    TRIAL_TAGS,
    SelectionRecord,
)
from provpt_core import flatten

SCHEMA_VERSION = "provpt.results/2"
TABLES = ("trials", "epochs", "distributions", "selections", "fidelity")
FIDELITY_COLUMNS: dict[str, pa.DataType] = {
    "trial": pa.string(),
    "epoch": pa.int64(),
    "prompt": pa.int64(),
    "block": pa.int64(),
    "taylor": pa.float64(),
    "method_score": pa.float64(),
    "loss_change_dropped": pa.float64(),
    "loss_change_zeroed": pa.float64(),
}
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "trial": pa.string(),
    **{name: pa.string() for name in IDENTITY},
    "seed": pa.int64(),
    "status": pa.string(),
    "failure_reason": pa.string(),
    "best_val_acc": pa.float64(),
    "final_val_acc": pa.float64(),
    "test_acc": pa.float64(),
    "best_late_test_acc": pa.float64(),
    "trainable_params": pa.int64(),
    "wall_seconds": pa.float64(),
    "epochs": pa.int64(),
    "gpu_fraction": pa.float64(),
    "cpus": pa.float64(),
    "mlflow_run_id": pa.string(),
    "ray_trial_id": pa.string(),
    "ray_node_id": pa.string(),
    "config_hash": pa.string(),
    "code_version": pa.string(),
    "searched": pa.string(),
    "optuna_trial_number": pa.int64(),
}
SELECTION_COLUMNS: dict[str, pa.DataType] = {
    "study": pa.string(),
    "task": pa.string(),
    "method": pa.string(),
    "trial": pa.string(),
    "values": pa.string(),
    "val_acc": pa.float64(),
    "reason": pa.string(),
}


class ResultsError(RuntimeError):
    """The results cannot be read (no such experiment, a broken record file)."""


@dataclass
class Results:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    distributions: pd.DataFrame
    selections: pd.DataFrame
    fidelity: pd.DataFrame


class Recorded(NamedTuple):
    """What one store holds of a study: `to_frames(*recorded)` makes its tables."""

    trials: list[RecordedTrial]
    selections: list[SelectionRecord]


def from_output(output: str | Path) -> Recorded:
    """The trials and selections recorded in a study's output folder."""
    try:
        return Recorded(read_records(output), read_selections(output))
    except (ValueError, KeyError, TypeError) as err:
        raise ResultsError(str(err)) from None


def from_mlflow(uri: str, study: str) -> Recorded:
    """The trials and selections of a study's MLflow experiment (named after the study)."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per artifact buries the report
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise ResultsError(f"{uri}: no MLflow experiment named '{study}'")
    trials = [_from_run(client, run) for run in _runs(client, experiment.experiment_id, TRIAL)]
    selections = [
        SelectionRecord.from_tags(study, run.data.tags["task"], run.data.tags["method"], run.data.tags)
        for run in _runs(client, experiment.experiment_id, PIPELINE)
        if SELECTION_REASON in run.data.tags
    ]
    return Recorded(trials, selections)


def _runs(client, experiment_id: str, kind: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{KIND}` = '{kind}'", max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _from_run(client, run) -> RecordedTrial:
    run_id = run.info.run_id
    metrics = run.data.metrics
    epochs: dict[int, dict[str, float]] = {}
    for name in sorted(set(metrics) - set(SUMMARY_METRICS)):
        for point in sorted(client.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp)):
            epochs.setdefault(point.step, {})[name] = point.value  # a re-run epoch's last value
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    config, distributions, analysis = {}, [], {}
    where = f"MLflow run {run_id} ({run.data.tags.get(KEY, run.info.run_name)})"
    with tempfile.TemporaryDirectory() as folder:

        def artifact(name: str, read):
            try:
                return read(Path(client.download_artifacts(run_id, name, folder)))
            except Exception as err:  # a broken artifact names its run and file, not a temp path
                raise ResultsError(f"{where}: artifact {name} cannot be read: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None

        if CONFIG_ARTIFACT in artifacts:
            config = artifact(CONFIG_ARTIFACT, lambda path: json.loads(path.read_text()))
        if ANALYSIS_ARTIFACT in artifacts:
            analysis = artifact(ANALYSIS_ARTIFACT, lambda path: json.loads(path.read_text()))
        if DISTRIBUTIONS_ARTIFACT in artifacts:
            frame = artifact(DISTRIBUTIONS_ARTIFACT, pd.read_parquet)
            distributions = [tuple(int(v) for v in row) for row in frame[["epoch", "block", "count"]].itertuples(index=False)]
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "provpt."))}
    return RecordedTrial(
        key=run.data.tags[KEY],
        run_id=run_id,
        status=run.info.status,
        tags=tags,
        config=config,
        summary={k: metrics[k] for k in SUMMARY_METRICS if k in metrics},
        epochs=dict(sorted(epochs.items())),
        distributions=distributions,
        failure_reason=tags.get(FAILURE_REASON),
        analysis=analysis,
    )


def to_frames(results: list[RecordedTrial], selections: list[SelectionRecord] = ()) -> Results:
    """The four tables, sorted by trial key (then epoch, block; selections by task and method),
    so equal inputs give equal bytes."""
    results = sorted(results, key=lambda r: r.key)
    trial_rows, config_rows, epoch_rows, distribution_rows, fidelity_rows = [], [], [], [], []
    for result in results:
        tags = result.tags
        trial_rows.append(
            {
                "trial": result.key,
                **{name: _cast(tags.get(name), TRIAL_COLUMNS[name]) for name in (*TRIAL_TAGS, OPTUNA_TRIAL_NUMBER)},
                "status": result.status,
                "failure_reason": result.failure_reason,
                **{name: _cast(result.summary.get(name), TRIAL_COLUMNS[name]) for name in SUMMARY_METRICS},
                "epochs": len(result.epochs),
                "mlflow_run_id": result.run_id,
            }
        )
        config_rows.append({f"config.{k}": v for k, v in flatten(result.config).items()})
        epoch_rows += [{"trial": result.key, "epoch": e, **m} for e, m in sorted(result.epochs.items())]
        distribution_rows += [
            {"trial": result.key, "epoch": e, "block": b, "count": c} for e, b, c in sorted(result.distributions)
        ]
        fidelity_rows += _fidelity_rows(result)
    trials = _typed_frame(trial_rows, TRIAL_COLUMNS)
    config_names = sorted({name for row in config_rows for name in row})
    for name in config_names:
        trials[name] = _typed_series([row.get(name) for row in config_rows])
    metric_names = sorted({k for row in epoch_rows for k in row} - {"trial", "epoch"})
    epochs = _typed_frame(
        epoch_rows, {"trial": pa.string(), "epoch": pa.int64(), **{name: pa.float64() for name in metric_names}}
    )
    distributions = _typed_frame(
        distribution_rows, {"trial": pa.string(), "epoch": pa.int64(), "block": pa.int64(), "count": pa.int64()}
    )
    chosen = [
        {**vars(s), "values": json.dumps(s.values, sort_keys=True)} for s in sorted(selections, key=lambda s: (s.task, s.method))
    ]
    fidelity = _typed_frame(fidelity_rows, FIDELITY_COLUMNS)
    return Results(trials, epochs, distributions, _typed_frame(chosen, SELECTION_COLUMNS), fidelity)


def finished_finals(trials: pd.DataFrame) -> pd.DataFrame:
    """The final-phase trials that finished: the ones the tables report."""
    return trials[(trials["phase"] == "final") & (trials["status"] == "FINISHED")]


def _fidelity_rows(result: RecordedTrial) -> list[dict[str, Any]]:
    """One row per prompt and measured epoch, from the trial's `fidelity` events."""
    rows = []
    for event in result.analysis.get("fidelity", []):
        scores = event.get("method_score") or [None] * len(event["prompt"])
        for i, prompt in enumerate(event["prompt"]):
            rows.append(
                {
                    "trial": result.key,
                    "epoch": event["epoch"],
                    "prompt": prompt,
                    "block": event["block"][i],
                    "taylor": event["taylor"][i],
                    "method_score": scores[i],
                    "loss_change_dropped": event["loss_change_dropped"][i],
                    "loss_change_zeroed": event["loss_change_zeroed"][i],
                }
            )
    return rows


def _cast(value: Any, kind: pa.DataType) -> Any:
    """A stored value (tags are strings) as its column's type; "" and None are null."""
    if value is None or value == "":
        return None
    if pa.types.is_integer(kind):
        return int(float(value))
    if pa.types.is_floating(kind):
        return float(value)
    return str(value)


def _typed_frame(rows: list[dict[str, Any]], columns: dict[str, pa.DataType]) -> pd.DataFrame:
    schema = pa.schema([(name, kind) for name, kind in columns.items()])
    table = pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows], schema=schema)
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _typed_series(values: list[Any]) -> pd.Series:
    """A config column: bool, int64, float64 or string by its values; anything mixed as JSON."""
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {bool}:
        kind = pa.bool_()
    elif kinds and kinds <= {int}:
        kind = pa.int64()
    elif kinds and kinds <= {int, float}:
        kind = pa.float64()
    elif kinds <= {str}:
        kind = pa.string()
    else:
        kind, values = pa.string(), [None if v is None else json.dumps(v) for v in values]
    return pd.Series(pa.array(values, type=kind), dtype=pd.ArrowDtype(kind))


def write_parquet(results: Results, folder: Path) -> dict[str, Path]:
    """trials / epochs / distributions / selections .parquet under `folder`, each replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in TABLES:
        frame: pd.DataFrame = getattr(results, name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({"provpt.schema": SCHEMA_VERSION, "provpt.table": name})
        path = folder / f"{name}.parquet"
        replace_atomically(path, lambda temporary, table=table: pq.write_table(table, temporary))
        written[name] = path
    return written


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """`write(temporary)` a file beside `path`, then rename it over `path`: a reader never sees
    a partial file, and a failed write leaves the previous one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_parquet(folder: Path) -> Results:
    """The tables written by `write_parquet`; a results folder from before the fidelity table
    reads as having none."""
    frames = {}
    for name in TABLES:
        path = folder / f"{name}.parquet"
        if name == "fidelity" and not path.exists():
            frames[name] = _typed_frame([], FIDELITY_COLUMNS)
            continue
        try:
            frames[name] = pd.read_parquet(path, dtype_backend="pyarrow")
        except FileNotFoundError:
            raise ResultsError(f"{path}: missing; run provpt tables on the study's output to write it") from None
        except Exception as err:  # pyarrow's errors do not say which file
            raise ResultsError(f"{path}: not a readable parquet file ({type(err).__name__}: {err}); run provpt tables to rewrite it") from None
    return Results(**frames)
