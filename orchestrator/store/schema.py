"""What the writers and the readers of a study's stores agree on, in one place.

A study's results live twice: in MLflow (runs, tags, metrics, artifacts) and in the output
folder (``records/``: one JSON-lines file per trial, one selection file per pipeline). The
execution writes both; the report reads either and must get the same tables. Every name
they share is defined here: the run keys and kinds, the trial tags, the summary metrics, the
artifact names, and the pipeline's selection record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- MLflow runs

KEY = "provpt.key"  # a run's deterministic key: asking for it again re-attaches
KIND = "provpt.kind"
PARENT = "mlflow.parentRunId"
STUDY, PIPELINE, TRIAL = "study", "pipeline", "trial"  # the kinds, top to bottom


def pipeline_key(study: str, task: str, method: str, phase: str) -> str:
    return f"{study}/{task}/{method}/{phase}"


def trial_key(study: str, task: str, method: str, phase: str, seed: int | None, trial_id: str) -> str:
    """Final trials are named by their seed, search trials by their Optuna number (`search_trial_id`)."""
    return f"{pipeline_key(study, task, method, phase)}/" + (f"seed{seed}" if seed is not None else trial_id)


def run_name(key: str) -> str:
    """A trial's MLflow run name: its key without the study."""
    return key.split("/", 1)[1]


# ---------------------------------------------------------------- what a trial writes

# The scores of a finished trial: attributes of provpt_core.FitResult of the same names.
SUMMARY_METRICS = ("best_val_acc", "final_val_acc", "test_acc", "best_late_test_acc", "trainable_params", "wall_seconds")
CONFIG_ARTIFACT = "config.json"  # the whole trial config
PROMPTS_ARTIFACT = "prompts.safetensors"  # the method's exported tensors
DISTRIBUTIONS_ARTIFACT = "distributions.parquet"  # prompts per block after every relocation
DISTRIBUTION_HISTORY = "distribution_history"  # .csv (epochs x blocks) and .png, for the MLflow UI
SELECTION_TABLE = "selection"  # on a final phase's run: .md, .html, .csv of the search trials
RESULTS_ARTIFACTS = "results"  # on the study run: the results folder's tables and figures
STUDY_ARTIFACT = "study.json"  # on the study run: the study's settings
DATA_MANIFEST = "data_manifest.json"  # in the output folder and on the study run: the data read
ANALYSIS_ARTIFACT = "analysis.json"  # the events of the paper's analyses (ANALYSIS_EVENTS)
# FitResult.events kept for the analyses: removal effects beside scores, scripted moves
ANALYSIS_EVENTS = ("fidelity", "scripted_move")
RELOCATION_REWARD = "relocation_reward"  # epoch metric: the reward credited at that epoch's relocation
IDENTITY = ("study", "task", "group", "method", "phase")


@dataclass(frozen=True)
class TrialTags:
    """The tags of a trial, in MLflow and in its record (all strings once stored)."""

    study: str
    task: str
    group: str
    method: str
    phase: str  # search or final
    seed: int
    config_hash: str
    code_version: str
    ray_trial_id: str
    ray_node_id: str  # the node it last started on
    searched: str  # JSON of the searched values
    gpu_fraction: float
    cpus: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TRIAL_TAGS = tuple(f.name for f in fields(TrialTags))
# tags added after a trial started
OPTUNA_TRIAL_NUMBER = "optuna_trial_number"
# in a trial's Tune results and as its Optuna trial's user attributes: the same trial in every tool
MLFLOW_RUN_ID = "mlflow_run_id"
MLFLOW_RUN_NAME = "mlflow_run_name"
FAILURE_REASON = "failure_reason"
DISTRIBUTION = "distribution"  # JSON: prompts per block at the end


# ---------------------------------------------------------------- the output folder

RECORDS = "records"
CHECKPOINTS = "checkpoints"  # <task>/<method>/<phase>/<trial>.pt while a trial runs
SELECTION_FILE = "selection.json"


def phase_folder(output: str | Path, task: str, method: str, phase: str) -> Path:
    return Path(output) / RECORDS / task / method / phase


def snapshot_file(output: str | Path, task: str, method: str, seed: int, epoch: int) -> Path:
    """A final trial's full checkpoint after `epoch` epochs: where its branches start."""
    return Path(output) / "snapshots" / task / method / f"seed{seed}" / f"epoch{epoch}.pt"


def search_trial_id(number: int) -> str:
    return f"trial{number}"


def checkpoint_file(output: str | Path, key: str) -> Path:
    """A trial's latest checkpoint while it runs (removed once it finished): where a retry, or
    the trial in a resumed study, continues."""
    return Path(output) / CHECKPOINTS / f"{run_name(key)}.pt"


def branch_trial_id(seed: int, epoch: int, target: int) -> str:
    return f"seed{seed}-epoch{epoch}-block{target}"


def selection_file(output: str | Path, task: str, method: str) -> Path:
    return Path(output) / RECORDS / task / method / SELECTION_FILE


# ---------------------------------------------------------------- the pipeline's selection

SELECTED = "selected"  # JSON of the selected values
SELECTED_TRIAL = "selected_trial"
SELECTED_VAL_ACC = "selected_val_acc"
SELECTION_REASON = "selection_reason"


@dataclass(frozen=True)
class SelectionRecord:
    """What a pipeline's search chose for its final seeds, and why. Written once, by the
    pipeline, to its final-phase MLflow run and to `selection_file`; figures and tables read it."""

    study: str
    task: str
    method: str
    trial: str | None  # the selected search trial's key; None: nothing was searched
    values: dict[str, Any]  # the selected searched values
    val_acc: float | None
    reason: str

    def tags(self) -> dict[str, str]:
        return {
            SELECTED: json.dumps(self.values, sort_keys=True),
            SELECTED_TRIAL: self.trial or "",
            SELECTED_VAL_ACC: "" if self.val_acc is None else repr(self.val_acc),
            SELECTION_REASON: self.reason,
        }

    @classmethod
    def from_tags(cls, study: str, task: str, method: str, tags: dict[str, str]) -> SelectionRecord:
        val = tags.get(SELECTED_VAL_ACC, "")
        return cls(
            study, task, method, tags.get(SELECTED_TRIAL) or None, json.loads(tags[SELECTED]), float(val) if val else None, tags[SELECTION_REASON]
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SelectionRecord:
        return cls(**json.loads(text))
