"""The Ray Tune function trainable: one trial of provpt_core, tracked in MLflow.

Every trial of a study runs in the same Tune experiment (`execution.exchange`), so Tune reuses
a worker process for trial after trial, of any pipeline and phase; it keeps the backbones and
splits it loaded (`WARM`, a `provpt_core.WarmCache`), each trial gets its own backbone copy.
A trial's Tune config is its key, its phase's `PhaseContext` and its values.

The trial knows its epoch, its prompt distribution and its prompts, so it logs them itself
into its own MLflow run (keyed, so a retried or resumed trial re-attaches) and into its record
in the study's output folder (`orchestrator.store.records`). A trial whose run
already finished (the driver was killed after the trial ended but before Tune saved that)
reports the recorded result instead of training again. A trial saves its checkpoint every few
epochs to `schema.checkpoint_file` (not Tune's: each driver run starts a new experiment), where
a retry or the same trial in a resumed study continues from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from orchestrator.execution.context import searched_values, trial_config
from orchestrator.execution.timing import TrialClock
from orchestrator.store.records import RecordFile
from orchestrator.store.schema import (
    ANALYSIS_ARTIFACT,
    ANALYSIS_EVENTS,
    CONFIG_ARTIFACT,
    DISTRIBUTION,
    DISTRIBUTION_HISTORY,
    DISTRIBUTIONS_ARTIFACT,
    MLFLOW_RUN_ID,
    OPTUNA_TRIAL_NUMBER,
    PROMPTS_ARTIFACT,
    RELOCATION_REWARD,
    SUMMARY_METRICS,
    TRIAL,
    TrialTags,
    checkpoint_file,
    phase_folder,
    run_name,
    snapshot_file,
)
from orchestrator.store.tracking import MAX_REASON, Tracker, code_version
from provpt_core import Callback, DivergedError, FitResult, Trainer, TrialConfig, WarmCache, fit, flatten

WARM = WarmCache()  # this worker process's backbones and splits


def config_hash(config: TrialConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class ResultWriter:
    """Where a trial's results go: its MLflow run and its record in the output folder, the
    record first. A retried trial logs every epoch it re-runs to both, and both readers keep
    an epoch's last value, so a kill between the two writes leaves them in agreement."""

    def __init__(self, tracker: Tracker, run_id: str, record: RecordFile) -> None:
        self.tracker, self.run_id, self.record = tracker, run_id, record
        self.key = ""

    def start(self, key: str, tags: dict[str, Any], config: TrialConfig) -> None:
        self.key = key
        plain = config.to_dict()
        self.record.start(key, self.run_id, tags, plain)
        self.tracker.log(self.run_id, params=flatten(plain))
        self.tracker.client.log_dict(self.run_id, plain, CONFIG_ARTIFACT)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        self.record.epoch(epoch, metrics)
        self.tracker.log(self.run_id, metrics, step=epoch)

    def failed(self, reason: str) -> None:
        reason = reason[:MAX_REASON]
        self.record.end("FAILED", failure_reason=reason)
        self.tracker.finish(self.run_id, failed_reason=reason)

    def finished(self, summary: dict[str, Any], epoch: int, result: FitResult) -> None:
        tags, rows = {}, None
        if result.distribution is not None:
            tags[DISTRIBUTION] = json.dumps(result.distribution)
            rows = distribution_rows(result)
            self.record.tags(tags)
        analysis = {kind: result.events[kind] for kind in ANALYSIS_EVENTS if kind in result.events}
        self.record.end("FINISHED", summary, distributions=rows, analysis=analysis)
        if analysis:
            self.tracker.client.log_dict(self.run_id, analysis, ANALYSIS_ARTIFACT)
        if rows is not None:
            _log_prompt_artifacts(self.tracker, self.run_id, run_name(self.key), result.artifacts, rows)
        self.tracker.log(self.run_id, summary, step=epoch, tags=tags)
        self.tracker.finish(self.run_id)


class TuneReporter(Callback):
    """Per-epoch metrics to the trial's stores and Tune, with a checkpoint every few epochs."""

    def __init__(self, log: ResultWriter, checkpoint: Path, checkpoint_every: int, clock: TrialClock) -> None:
        self.log = log
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.clock = clock
        self.reward: float | None = None  # credited at this epoch's relocation

    def on_relocation(self, trainer: Trainer, event: dict[str, Any]) -> None:
        self.reward = event.get("reward")

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch > 0:  # restored from a checkpoint
            self.log.record.resumed(trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        epoch = int(metrics["epoch"])
        if self.reward is not None:
            metrics = {**metrics, RELOCATION_REWARD: self.reward}
            self.reward = None
        self.clock.add("training", metrics["epoch_seconds"])
        with self.clock.part("tracking"):
            self.log.epoch(epoch, metrics)
        if epoch % self.checkpoint_every == 0 and epoch < trainer.config.train.epochs:
            with self.clock.part("checkpoint"):
                trainer.save_checkpoint(self.checkpoint)
        # an epoch without evaluation reports no val score (no placeholder reaches Tune, ASHA or
        # Optuna: the study task turns off Tune's check that every result has the metric)
        tune.report({**metrics, MLFLOW_RUN_ID: self.log.run_id})


def run_trial(config: dict[str, Any]) -> None:
    """The trainable: `config` holds the trial's key, its phase's context and its values (the
    sampled search values and Optuna number, or the final phase's seed and branch point)."""
    clock = TrialClock()
    key, context, values = config["key"], config["context"], config["values"]
    torch.set_num_threads(context.threads)
    trial = trial_config(context, values)
    with clock.part("tracking"):
        tracker = Tracker(context.tracking_uri, context.study)
    tags = TrialTags(
        study=context.study,
        task=context.task,
        group=context.group,
        method=context.method,
        phase=context.phase,
        seed=trial.train.seed,
        config_hash=config_hash(trial),
        code_version=code_version(),
        ray_trial_id=tune.get_context().get_trial_id(),
        ray_node_id=ray.get_runtime_context().get_node_id(),
        searched=json.dumps(searched_values(values), sort_keys=True),
        gpu_fraction=context.gpu_fraction,
        cpus=context.cpus,
    ).as_dict()
    if "optuna_trial" in values:
        tags[OPTUNA_TRIAL_NUMBER] = values["optuna_trial"]
    with clock.part("tracking"):
        run = tracker.run(key, run_name(key), TRIAL, parent=context.parent_run_id, tags=tags)
    run_id = run.info.run_id
    if run.info.status == "FINISHED":
        recorded = {k: run.data.metrics.get(k) for k in SUMMARY_METRICS}
        tune.report({**recorded, "val_acc": recorded["final_val_acc"], "from_record": 1, MLFLOW_RUN_ID: run_id})
        return
    tracker.reopen(run)
    folder = phase_folder(context.output, context.task, context.method, context.phase)
    log = ResultWriter(tracker, run_id, RecordFile(folder / f"{key.rsplit('/', 1)[1]}.jsonl"))
    with clock.part("tracking"):
        log.start(key, tags, trial)
    checkpoint = checkpoint_file(context.output, key)
    callbacks: list[Callback] = [TuneReporter(log, checkpoint, context.checkpoint_every, clock)]
    if context.snapshot_epochs:
        callbacks.append(Snapshots(snapshot_file(context.output, context.task, context.method, trial.train.seed, 0).parent, context.snapshot_epochs))
    point, branch_from = values.get("branch"), None
    if point is not None and not checkpoint.is_file():
        branch_from = snapshot_file(context.output, context.task, context.method, values["seed"], point["epoch"])
        if not branch_from.is_file():
            log.failed(f"branch: the final trial's checkpoint {branch_from} is missing (did seed {values['seed']} finish?)")
            tune.report({"val_acc": math.nan, "failed": 1, MLFLOW_RUN_ID: run_id})
            return
    try:
        loaded = _loading_seconds()
        resume_from = checkpoint if checkpoint.is_file() else None
        result = fit(trial, callbacks=callbacks, resume_from=resume_from, branch_from=branch_from, warm=WARM)
        backbone, data = (after - before for after, before in zip(_loading_seconds(), loaded))
        clock.add("backbone", backbone)
        clock.add("data", data)
    except DivergedError as err:
        log.failed(f"diverged: {err}")
        checkpoint.unlink(missing_ok=True)
        tune.report({"val_acc": math.nan, "failed": 1, MLFLOW_RUN_ID: run_id})
        return
    except Exception as err:  # the cause goes to the trial's run and record; Tune retries or reports it
        log.failed(f"{type(err).__name__}: {err}")
        raise
    summary = {name: getattr(result, name) for name in SUMMARY_METRICS}
    with clock.part("tracking"):
        log.finished(summary, result.epochs_completed, result)
    checkpoint.unlink(missing_ok=True)
    clock.write(key)
    tune.report({**summary, "val_acc": result.final_val_acc, "epoch": result.epochs_completed, MLFLOW_RUN_ID: run_id})


def _loading_seconds() -> tuple[float, float]:
    """Seconds this worker spent so far getting backbones and splits (loads and copies)."""
    return WARM.backbones.load_seconds + WARM.backbones.copy_seconds, WARM.datasets.load_seconds


class Snapshots(Callback):
    """Full checkpoints after chosen epochs (kept, unlike Tune's), for branch runs."""

    def __init__(self, folder: Path, epochs: tuple[int, ...]) -> None:
        self.folder, self.epochs = folder, set(epochs)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.epoch in self.epochs:
            trainer.save_checkpoint(self.folder / f"epoch{trainer.epoch}.pt")


def distribution_rows(result: FitResult) -> list[dict[str, int]]:
    """(epoch, block, count): the start (epoch 0), then after every relocation."""
    snapshots = [(0, result.initial_distribution)] + [
        (event["epoch"], event["distribution"]) for event in result.events.get("relocation", [])
    ]
    return [{"epoch": e, "block": b, "count": c} for e, counts in snapshots for b, c in enumerate(counts)]


def _log_prompt_artifacts(tracker: Tracker, run_id: str, run: str, artifacts: dict, rows: list[dict[str, int]]) -> None:
    """The method's exported tensors (FitResult.artifacts) and the distribution after every
    relocation: parquet for readers, and for the MLflow UI a CSV (epochs x blocks) and, when the
    distribution changed, its picture."""
    import pandas as pd
    from safetensors.torch import save_file

    frame = pd.DataFrame(rows, columns=["epoch", "block", "count"]).astype("int64")
    wide = frame.pivot_table(index="epoch", columns="block", values="count", aggfunc="last")
    wide.columns = [f"block{b + 1}" for b in wide.columns]
    with tempfile.TemporaryDirectory() as folder:
        if artifacts:
            save_file(artifacts, os.path.join(folder, PROMPTS_ARTIFACT))
        frame.to_parquet(os.path.join(folder, DISTRIBUTIONS_ARTIFACT), index=False)
        wide.to_csv(os.path.join(folder, f"{DISTRIBUTION_HISTORY}.csv"))
        if len(wide.drop_duplicates()) > 1:
            from orchestrator.report.figures import save_png, trace_figure

            save_png(trace_figure(frame, f"{run}: prompts per block"), Path(folder) / f"{DISTRIBUTION_HISTORY}.png")
        tracker.client.log_artifacts(run_id, folder)
