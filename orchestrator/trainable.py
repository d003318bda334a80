"""The Ray Tune function trainable: one trial of provpt_core, tracked in MLflow.

The trial knows its epoch, its prompt distribution and its prompts, so it logs them itself
into its own MLflow run (keyed, so a retried or resumed trial re-attaches). A trial whose run
already finished (the driver was killed after the trial ended but before Tune saved that)
reports the recorded result instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from orchestrator.space import apply_values
from orchestrator.tracking import Tracker, code_version, flatten
from provpt_core import Callback, DivergedError, FitResult, Trainer, TrialConfig

CHECKPOINT_FILE = "trial.pt"
SUMMARY_METRICS = ("best_val_acc", "final_val_acc", "test_acc", "trainable_params", "wall_seconds")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one pipeline phase shares (passed with tune.with_parameters)."""

    study: str
    task: str
    group: str
    method: str
    phase: str  # search or final
    base_trial: dict[str, Any]
    tracking_uri: str
    parent_run_id: str
    search_seed: int
    checkpoint_every: int
    threads: int
    val_every: int = 0  # search trials score val this often (ASHA needs it every epoch)


def trial_config(context: TrialContext, values: dict[str, Any]) -> TrialConfig:
    """The full trial config: the pipeline's base, the sampled values, the phase and seed."""
    searched = {k: v for k, v in values.items() if k != "seed"}
    trial = apply_values(context.base_trial, searched)
    trial.setdefault("train", {})["seed"] = values.get("seed", context.search_seed)
    trial["train"].setdefault("threads", context.threads)
    trial.setdefault("data", {})["phase"] = context.phase
    if context.val_every:
        trial.setdefault("eval", {})["val_every"] = context.val_every
    return TrialConfig.from_dict(trial)


def config_hash(config: TrialConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def trial_key(context: TrialContext, values: dict[str, Any], trial_id: str) -> str:
    base = f"{context.study}/{context.task}/{context.method}/{context.phase}"
    return f"{base}/seed{values['seed']}" if "seed" in values else f"{base}/{trial_id}"


class TrialReporter(Callback):
    """Per-epoch metrics to MLflow and Tune, with a checkpoint every few epochs."""

    def __init__(self, tracker: Tracker, run_id: str, checkpoint_every: int, logged_epochs: int) -> None:
        self.tracker, self.run_id = tracker, run_id
        self.checkpoint_every = checkpoint_every
        self.logged_epochs = logged_epochs  # epochs MLflow already has (a retried trial)
        self.last_val: float | None = None

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        epoch = int(metrics["epoch"])
        if epoch > self.logged_epochs:
            self.tracker.log(self.run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        # Tune wants the metric in every result: epochs without evaluation repeat the last
        # val score (0 before the first); `val_evaluated` tells them apart.
        if "val_acc" in metrics:
            self.last_val = metrics["val_acc"]
        report = {**metrics, "val_acc": self.last_val or 0.0, "val_evaluated": int("val_acc" in metrics)}
        if epoch % self.checkpoint_every == 0 and epoch < trainer.config.train.epochs:
            with tempfile.TemporaryDirectory() as folder:
                trainer.save_checkpoint(Path(folder) / CHECKPOINT_FILE)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(report)


def run_trial(values: dict[str, Any], context: TrialContext) -> None:
    """The trainable: `values` are the sampled search values (or the final phase's seed)."""
    torch.set_num_threads(context.threads)
    config = trial_config(context, values)
    tune_context = tune.get_context()
    trial_id = tune_context.get_trial_id()
    tracker = Tracker(context.tracking_uri, context.study)
    key = trial_key(context, values, trial_id)
    name = key.split("/", 1)[1]
    run = tracker.run(
        key,
        name,
        "trial",
        parent=context.parent_run_id,
        tags={
            "study": context.study,
            "task": context.task,
            "group": context.group,
            "method": context.method,
            "phase": context.phase,
            "seed": config.train.seed,
            "config_hash": config_hash(config),
            "code_version": code_version(),
            "ray_trial_id": trial_id,
            "searched": json.dumps({k: v for k, v in values.items() if k != "seed"}, sort_keys=True),
        },
    )
    run_id = run.info.run_id
    if run.info.status == "FINISHED":
        recorded = {k: run.data.metrics.get(k) for k in SUMMARY_METRICS}
        tune.report({**recorded, "val_acc": recorded["final_val_acc"], "from_record": 1})
        return
    if run.info.status != "RUNNING":
        tracker.client.update_run(run_id, status="RUNNING")
    tracker.log(run_id, params=flatten(config.to_dict()))
    logged = len(tracker.client.get_metric_history(run_id, "train_loss"))
    reporter = TrialReporter(tracker, run_id, context.checkpoint_every, logged)
    trainer = Trainer(config, callbacks=[reporter])
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    try:
        result = trainer.fit()
    except DivergedError as err:
        tracker.finish(run_id, failed_reason=f"diverged: {err}")
        tune.report({"val_acc": math.nan, "failed": 1})
        return
    summary = {
        "best_val_acc": result.best_val_acc,
        "final_val_acc": result.final_val_acc,
        "test_acc": result.test_acc,
        "trainable_params": result.trainable_params,
        "wall_seconds": result.wall_seconds,
    }
    tags = {}
    if result.distribution is not None:
        tags["distribution"] = json.dumps(result.distribution)
        _log_prompt_artifacts(tracker, run_id, trainer, distribution_rows(result))
    tracker.log(run_id, summary, step=result.epochs_completed, tags=tags)
    tracker.finish(run_id)
    tune.report({**summary, "val_acc": result.final_val_acc, "epoch": result.epochs_completed})


def distribution_rows(result: FitResult) -> list[dict[str, int]]:
    """(epoch, block, count): the start (epoch 0), then after every relocation."""
    snapshots = [(0, result.initial_distribution)] + [
        (event["epoch"], event["distribution"]) for event in result.events.get("relocation", [])
    ]
    return [{"epoch": e, "block": b, "count": c} for e, counts in snapshots for b, c in enumerate(counts)]


def _log_prompt_artifacts(tracker: Tracker, run_id: str, trainer: Trainer, rows: list[dict[str, int]]) -> None:
    import pandas as pd
    from safetensors.torch import save_file

    bank = trainer.model.prompts
    with tempfile.TemporaryDirectory() as folder:
        save_file(
            {"prompts": bank.weight.detach().float().cpu().contiguous(), "block_of": bank.block_of.cpu().contiguous()},
            os.path.join(folder, "prompts.safetensors"),
        )
        pd.DataFrame(rows, columns=["epoch", "block", "count"]).astype("int64").to_parquet(
            os.path.join(folder, "distributions.parquet"), index=False
        )
        tracker.client.log_artifacts(run_id, folder)
