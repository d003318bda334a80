"""A study expands to pipelines (task x method); each runs a search phase then a final phase,
and, for a method with `branches`, a branch phase (branches of the final trials).

`--dry-run` prints this plan with trial counts and an estimate of trial-hours, without Ray.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from orchestrator.spec.study import MethodEntry, Study
from provpt_core import TaskSpec, TrialConfig

# Training images per second of one trial, for the estimate only: measured where noted,
# assumed otherwise. Evaluation counts a third of a training image.
THROUGHPUT = {
    ("provpt_tiny_patch8_32", "cpu"): 650.0,  # bench/core_step.py, one thread
}
DEFAULT_THROUGHPUT = {"cpu": 20.0, "gpu": 1500.0}
EVAL_COST = 1 / 3
# Seconds a trial spends besides its images (the model and its optimizer built, the loaders,
# the tracking): measured on CPU by bench/estimate.py on the quickstart (linear probes, whose
# trials are little else); assumed on GPU.
TRIAL_SETUP_SECONDS = {"cpu": 0.8, "gpu": 3.0}
PHASES = ("search", "final", "branch")


@dataclass(frozen=True)
class Pipeline:
    study: str
    task: TaskSpec
    method: MethodEntry
    base: TrialConfig  # every trial's config before its searched values and seed

    @property
    def key(self) -> str:
        return f"{self.task.name}/{self.method.key}"

    @property
    def searches(self) -> bool:
        return bool(self.method.search)

    def branch_points(self) -> list[tuple[int, int]]:
        return branch_points(self.method, self.base)


def branch_points(method: MethodEntry, base: TrialConfig) -> list[tuple[int, int]]:
    """(epoch, target block) of every branch of one final trial; none without `branches`."""
    branches = method.branches
    if branches is None:
        return []
    targets = branches.target_blocks(depth(base.backbone.name))
    return [(epoch, target) for epoch in branches.branch_epochs(base.train.epochs) for target in targets]


@functools.lru_cache(maxsize=None)
def depth(backbone: str) -> int:
    from provpt_core import backbone_depth  # timm: only for a study with branches

    return backbone_depth(backbone)


def make_plan(study: Study) -> list[Pipeline]:
    return [
        Pipeline(study.name, task, method, study.trial_config(method, task))
        for task in study.task_specs
        for method in study.methods
    ]


def planned_trials(study: Study, method: MethodEntry, phase: str) -> int:
    """How many trials a pipeline of `method` runs in `phase`: the study's search budget (none
    if nothing is searched), one final trial per seed."""
    if phase == "search":
        return study.search.trials if method.search else 0
    if phase == "branch":
        return len(branch_points(method, study.trial_config(method, study.task_specs[0]))) * len(study.final.seeds)
    return len(study.final.seeds)


def trial_seconds(study: Study, pipeline: Pipeline, phase: str) -> float:
    """A rough trial duration from the trial config and a throughput table; a branch trial's is
    the mean over its branch points of the epochs left after the branch."""
    config = pipeline.base
    device = "gpu" if study.resources.gpu > 0 else "cpu"
    rate = THROUGHPUT.get((config.backbone.name, device), DEFAULT_THROUGHPUT[device])
    fit_split, score_split = pipeline.task.search_splits if phase == "search" else pipeline.task.final_splits
    from provpt_core import METHODS  # the methods' code (torch): only for the estimate

    method = METHODS[pipeline.method.name]
    epochs = config.train.epochs
    if phase == "branch":
        points = pipeline.branch_points()
        epochs = sum(epochs - epoch for epoch, _ in points) / len(points) if points else 0
    if method.frozen_features:  # features computed once, the head trains on them
        images = pipeline.task.split_sizes[fit_split] * EVAL_COST
    else:
        images = pipeline.task.split_sizes[fit_split] * epochs * method.epoch_cost(config.method)
        measured = method.measurement_images(config.method, config.train.batch_size, depth(config.backbone.name))
        images += measured * EVAL_COST
    evaluated = pipeline.task.split_sizes[score_split] * EVAL_COST
    return (images + evaluated) / rate + TRIAL_SETUP_SECONDS[device]


def format_plan(study: Study, pipelines: list[Pipeline], output: str, tracking_uri: str) -> str:
    lines = [
        f"study {study.name}: {len(pipelines)} pipelines ({len(study.task_specs)} tasks x {len(study.methods)} methods)",
        f"output {output}",
        f"tracking {tracking_uri}",
        f"resources per trial: {study.resources.cpu:g} CPU, {study.resources.gpu:g} GPU; "
        f"search concurrency {study.search.concurrency} per pipeline",
        "",
        "recipes (how each method trains):",
        *_recipe_lines(study),
        "",
        f"{'pipeline':40s} {'search':>6s} {'final':>6s} {'branch':>6s} {'trial-hours':>12s}",
    ]
    totals = {"search": 0, "final": 0, "branch": 0, "hours": 0.0}
    for pipeline in pipelines:
        n = {phase: planned_trials(study, pipeline.method, phase) for phase in PHASES}
        hours = sum(n[phase] * trial_seconds(study, pipeline, phase) for phase in n if n[phase]) / 3600
        for phase in PHASES:
            totals[phase] += n[phase]
        totals["hours"] += hours
        lines.append(f"{pipeline.key:40s} {n['search']:6d} {n['final']:6d} {n['branch']:6d} {hours:12.2f}")
    lines.append(f"{'total':40s} {totals['search']:6d} {totals['final']:6d} {totals['branch']:6d} {totals['hours']:12.2f}")
    device = "GPU" if study.resources.gpu > 0 else "CPU"
    lines.append(f"(estimate from a throughput table; {device} trial-hours)")
    return "\n".join(lines)


def _recipe_lines(study: Study) -> list[str]:
    """One line per recipe in use, naming its methods; what a recipe leaves out follows it."""
    users: dict[str, list[str]] = {}
    recipes = {}
    for method in study.methods:
        recipe = study.recipe_of(method)
        name = recipe.name if recipe else "shared"
        recipes[name] = recipe
        users.setdefault(name, []).append(method.key)
    lines = []
    for name, methods in users.items():
        recipe = recipes[name]
        if recipe is None:
            lines.append(f"  {', '.join(methods)}: the shared protocol (the study's trial section)")
            continue
        lines.append(f"  {', '.join(methods)}: published recipe '{name}': {recipe.source}")
        if recipe.seeds:
            lines.append(f"      the authors' seeds: {', '.join(map(str, recipe.seeds))} (this study runs final.seeds)")
        lines += [f"      not reproduced: {item}" for item in recipe.not_reproduced]
    return lines
