"""PRO-VPT and its baselines on a frozen timm ViT: torch + timm only.

A trial runs from a `TrialConfig` alone::

    from provpt_core import TrialConfig, fit
    result = fit(TrialConfig.from_dict({...}))

This module is the core's public surface: whoever runs trials (the orchestrator, a script, a
notebook) needs nothing else. The service imports only from here (an import contract).
"""

from provpt_core.backbone import BackboneLoadError, backbone_depth
from provpt_core.backbone import fetch as fetch_weights
from provpt_core.config import ConfigError
from provpt_core.data.tasks import TASKS, TaskSpec, get_task, resolve_tasks
from provpt_core.data.verify import TaskReport, format_reports, verify
from provpt_core.engine import Callback, DivergedError, FitResult, Trainer, fit
from provpt_core.methods import METHODS
from provpt_core.overrides import apply, flatten, lookup, merge
from provpt_core.preflight import Preflight, check
from provpt_core.recipes import Recipe, published_recipe
from provpt_core.relocation.fidelity import fraction_epoch
from provpt_core.trial import EvalConfig, TrainConfig, TrialConfig
from provpt_core.warm import WarmCache

__all__ = [
    # a trial: its config, its run, its result
    "TrialConfig",
    "TrainConfig",
    "EvalConfig",
    "ConfigError",
    "fit",
    "Callback",
    "Trainer",
    "FitResult",
    "DivergedError",
    "WarmCache",
    # what exists: tasks, methods, the authors' recipes
    "TASKS",
    "TaskSpec",
    "get_task",
    "resolve_tasks",
    "METHODS",
    "Recipe",
    "published_recipe",
    # before any compute: the pre-flight, a benchmark root's check, weights into the cache
    "check",
    "Preflight",
    "verify",
    "TaskReport",
    "format_reports",
    "fetch_weights",
    "BackboneLoadError",
    "backbone_depth",
    "fraction_epoch",
    # dotted paths into a trial config's dict
    "apply",
    "flatten",
    "lookup",
    "merge",
]
