"""PRO-VPT and its baselines on a frozen timm ViT: torch + timm only.

A trial runs from a `TrialConfig` alone::

    from provpt_core import TrialConfig, fit
    result = fit(TrialConfig.from_dict({...}))

This module is the core's public surface: whoever runs trials (the orchestrator, a script, a
notebook) needs nothing else. The service imports only from here (an import contract).
"""

from provpt_core.lazy import lazy_exports

# Each public name and the module that defines it, loaded on first use: the configs, the task
# registry and the recipes come without torch (a study file is checked in a fraction of a
# second); the engine, the models and the data loading load when a trial needs them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrialConfig": "provpt_core.trial",
        "TrainConfig": "provpt_core.trial",
        "EvalConfig": "provpt_core.trial",
        "ConfigError": "provpt_core.config",
        "fit": "provpt_core.engine",
        "Callback": "provpt_core.engine",
        "Trainer": "provpt_core.engine",
        "FitResult": "provpt_core.engine",
        "DivergedError": "provpt_core.engine",
        "WarmCache": "provpt_core.warm",
        "TASKS": "provpt_core.data.tasks",
        "TaskSpec": "provpt_core.data.tasks",
        "get_task": "provpt_core.data.tasks",
        "resolve_tasks": "provpt_core.data.tasks",
        "METHODS": "provpt_core.methods.models",
        "METHOD_CONFIGS": "provpt_core.methods.config",
        "Recipe": "provpt_core.recipes",
        "published_recipe": "provpt_core.recipes",
        "check": "provpt_core.preflight",
        "Preflight": "provpt_core.preflight",
        "verify": "provpt_core.data.verify",
        "TaskReport": "provpt_core.data.verify",
        "format_reports": "provpt_core.data.verify",
        "build_manifest": "provpt_core.data.manifest",
        "compare_manifests": "provpt_core.data.manifest",
        "study_manifest": "provpt_core.data.manifest",
        "prepare_image_folder": "provpt_core.data.prepare",
        "PrepareError": "provpt_core.data.prepare",
        "fetch_weights": "provpt_core.backbone:fetch",
        "BackboneLoadError": "provpt_core.backbone",
        "backbone_depth": "provpt_core.backbone",
        "fraction_epoch": "provpt_core.relocation.config",
        "apply": "provpt_core.overrides",
        "flatten": "provpt_core.overrides",
        "lookup": "provpt_core.overrides",
        "merge": "provpt_core.overrides",
    },
)

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
    # what exists: tasks, methods (their configs without loading their code), the authors' recipes
    "TASKS",
    "TaskSpec",
    "get_task",
    "resolve_tasks",
    "METHODS",
    "METHOD_CONFIGS",
    "Recipe",
    "published_recipe",
    # before any compute: the pre-flight, a benchmark root's check, weights into the cache
    "check",
    "Preflight",
    "verify",
    "TaskReport",
    "format_reports",
    "build_manifest",
    "compare_manifests",
    "study_manifest",
    "prepare_image_folder",
    "PrepareError",
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
