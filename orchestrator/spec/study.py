"""Study files: what to run (tasks x methods), how to search, how to finish, where to write.

A study is YAML, validated here before Ray starts; any mistake is one message that names the
file and the field, e.g. ``studies/x.yaml: methods[1].search.train.lr: low 0.5 > high 0.1``.
``${VAR}`` and ``${VAR:-default}`` in strings are replaced from the environment (paths, URIs);
a value that is one placeholder with a numeric default (``epochs: ${EPOCHS:-12}``) is a number.
Credentials belong in the environment, never in a study file.

    name: quickstart
    tasks: [mini]                     # names, aliases or selectors (vtab1k:structured, fgvc, mini)
    backbone: {name: provpt_tiny_patch8_32}
    data: {roots: {vtab1k: ${VTAB_ROOT}}}
    trial: {train: {epochs: 20}}      # defaults of every trial's config
    methods:
      - name: provpt
        config: {num_prompts: 2}      # the method's fixed fields
        search:                       # dotted paths into the trial config
          train.lr: {low: 0.05, high: 2.0, log: true}
          method.relocation.allocator: {choices: [ppo, thompson]}
          method.relocation.ppo.buffer_size: {low: 2, high: 16, when: {method.relocation.allocator: ppo}}
    search: {trials: 8, concurrency: 2}
    final: {seeds: [18, 25, 42]}
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.spec.space import Bool, Int, Number, Param

if TYPE_CHECKING:
    from provpt_core import Recipe, TaskSpec, TrialConfig

# Checking a study file needs only YAML and pydantic: the core (torch, timm) is imported by the
# checks that build trial configs, after everything a file can get wrong on its own is checked.

MAX_TRIALS = 10_000  # search trials of one pipeline; more is a typo, not a study
MAX_SEEDS = 100
TRACKING_SCHEMES = (
    "sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks",
)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
ENV_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _plain_name(name: str) -> str:
    """A study's or method's name: it names folders and runs, so no path separators."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"expected letters, digits, '_', '.' or '-' (it names folders and runs), got {name!r}")
    return name


def _refuse_repeats(items: list[Any], describe) -> list[Any]:
    """`items` if all are distinct; else a ValueError describing the first repeated one."""
    twice = _first_repeat(items)
    if twice is not None:
        raise ValueError(describe(twice))
    return items


def _first_repeat(items: list[Any]) -> Any:
    """The first item listed a second time; None if all are distinct."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


class StudyError(ValueError):
    """A study file is wrong; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BranchSection(_Strict):
    """The adjustment-timing analysis: from each final trial's checkpoint at `epochs` (0-based:
    the move happens before that epoch trains), branch runs that move `count` prompts from
    block `source` to each of `targets` and train to the end; they cost the remaining epochs."""

    epochs: list[Int] = Field(default_factory=list)
    fractions: list[Number] = Field(default_factory=list)  # or: at these fractions of the training
    source: Int = Field(ge=0)
    targets: list[Int] | None = None  # None: every block but the source
    count: Int = Field(1, ge=1)
    rescale: Number = Field(1e-3, gt=0)  # a moved prompt is multiplied by this, as PRO-VPT's

    @model_validator(mode="after")
    def _when(self) -> BranchSection:
        if not self.epochs and not self.fractions:
            raise ValueError("give epochs (0-based, e.g. [25, 50, 75]) or fractions of the training (e.g. [0.25, 0.5, 0.75])")
        if any(not 0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions: expected numbers in (0, 1), got {self.fractions}")
        return self

    def branch_epochs(self, total: int) -> list[int]:
        """The branch epochs (0-based) of a trial of `total` epochs, in order."""
        from provpt_core import fraction_epoch

        return sorted({*self.epochs, *(fraction_epoch(f, total) for f in self.fractions)})

    def target_blocks(self, depth: int) -> list[int]:
        return [b for b in range(depth) if b != self.source] if self.targets is None else list(self.targets)


class MethodEntry(_Strict):
    name: str
    label: str | None = None  # name in tables and runs when one method appears twice
    config: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Param] = Field(default_factory=dict)
    # this method's defaults of the trial config, over the study's `trial`, e.g. full
    # fine-tuning's {train: {optimizer: adamw, lr: 1.0e-4}}
    trial: dict[str, Any] = Field(default_factory=dict)
    recipe: Literal["shared", "published"] | None = None  # None: the study's
    branches: BranchSection | None = None  # branch runs of the final trials (adjustment timing)

    @field_validator("label")
    @classmethod
    def _label(cls, label: str | None) -> str | None:
        return None if label is None else _plain_name(label)

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def display(self) -> str:
        """The name tables and figures print: the method's as papers write it (VPT-deep), with
        the label when the study gives one."""
        from provpt_core import METHOD_CONFIGS

        name = METHOD_CONFIGS[self.name].display_name
        return name if self.label is None else f"{name} ({self.label})"


class DataSection(_Strict):
    roots: dict[Literal["vtab1k", "fgvc"], str] = Field(default_factory=dict)
    cache_dir: str | None = None
    check_images: Bool = False  # also decode every image in the pre-flight check

    @field_validator("roots")
    @classmethod
    def _given(cls, roots: dict[str, str]) -> dict[str, str]:
        """An empty root (``${VTAB_ROOT:-}`` unset) is no root: the pre-flight asks for it."""
        return {benchmark: root for benchmark, root in roots.items() if root}


class Resources(_Strict):
    cpu: Number = 1.0
    gpu: Number = 0.0  # a fraction shares one GPU between trials; a trial uses one device

    @model_validator(mode="after")
    def _check(self) -> Resources:
        if self.cpu <= 0:
            raise ValueError(f"cpu: expected a number > 0, got {self.cpu}")
        if not 0 <= self.gpu <= 1:
            raise ValueError(
                f"gpu: expected a share of one GPU in [0, 1] (a trial trains on one device), got {self.gpu:g}"
            )
        return self


class Asha(_Strict):
    grace_period: Int = Field(5, ge=1)  # epochs before a trial may be stopped
    reduction_factor: Int = Field(3, ge=2)  # 1 would stop nothing


class SearchSection(_Strict):
    sampler: Literal["tpe", "random"] = "tpe"
    trials: Int = Field(8, ge=1, le=MAX_TRIALS)
    concurrency: Int = Field(2, ge=1, le=MAX_TRIALS)  # trials of one pipeline at once
    seed: Int = 0  # training seed of search trials (and the sampler's, mixed with the pipeline)
    asha: Asha | None = None


class FinalSection(_Strict):
    seeds: list[Int] = Field(default_factory=lambda: [42], min_length=1, max_length=MAX_SEEDS)
    selection: Literal["best_val_smaller_lr"] = "best_val_smaller_lr"

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        return _refuse_repeats(seeds, lambda seed: f"seed {seed} is listed twice: each final seed runs once")


class TrackingSection(_Strict):
    uri: str | None = None  # None or "": sqlite:///<output>/mlflow.db

    @field_validator("uri")
    @classmethod
    def _empty_is_default(cls, uri: str | None) -> str | None:
        if not uri:
            return None
        scheme = urlsplit(uri).scheme
        if scheme.partition("+")[0] not in TRACKING_SCHEMES:  # dialect+driver, e.g. postgresql+psycopg2
            close = difflib.get_close_matches(scheme, TRACKING_SCHEMES, n=1)
            raise ValueError(
                f"unknown scheme {scheme!r} in {redact(uri)!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + "; expected a URI like sqlite:////abs/path/mlflow.db, postgresql://user@host/db or http://host:5000"
            )
        return uri


class AblationSection(_Strict):
    """The study is an ablation: its methods are variants of one factor, tabled against the tasks."""

    factor: str  # what is varied: the table's title (e.g. "allocator")
    field: str | None = None  # a dotted trial-config path that labels each row; None: the method's label
    claim: str | None = None  # the published statement the ablation tests, printed under its table


class Study(_Strict):
    name: str
    output: str | None = None  # None: outputs/<name>
    tasks: list[str] = Field(min_length=1)
    backbone: dict[str, Any] = Field(default_factory=lambda: {"name": "vit_base_patch16_224.orig_in21k"})
    data: DataSection = Field(default_factory=DataSection)
    trial: dict[str, Any] = Field(default_factory=dict)  # defaults of every trial (train, eval)
    # shared: every method trains under `trial` (a fair comparison); published: each method
    # under its authors' recipe (provpt_core.recipes) over `trial` (a reproduction)
    recipe: Literal["shared", "published"] = "shared"
    methods: list[MethodEntry] = Field(min_length=1)
    resources: Resources = Field(default_factory=Resources)
    search: SearchSection = Field(default_factory=SearchSection)
    final: FinalSection = Field(default_factory=FinalSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    checkpoint_every: Int = Field(5, ge=1)  # epochs between trial checkpoints
    max_failures: Int = Field(2, ge=0)  # retries of a trial from its last checkpoint
    max_concurrent_pipelines: Int | None = Field(None, ge=1)  # None: enough to fill the cluster's trial slots
    ablation: AblationSection | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _plain_name(name)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        return _refuse_repeats(tasks, lambda task: f"task {task!r} is listed twice")

    @model_validator(mode="after")
    def _distinct_methods(self) -> Study:
        keys = [m.key for m in self.methods]
        twice = _first_repeat(keys)
        if twice is not None:
            second = keys.index(twice, keys.index(twice) + 1)
            raise ValueError(
                f"methods[{second}]: '{twice}' is listed twice (methods[{keys.index(twice)}]); to run one method "
                "twice with other settings, give each a distinct label"
            )
        return self

    @property
    def task_specs(self) -> list[TaskSpec]:
        from provpt_core import resolve_tasks

        return resolve_tasks(self.tasks)

    def display(self, key: str) -> str:
        """The printed name of the method entry with this key (the key itself if none has it)."""
        return next((m.display for m in self.methods if m.key == key), key)

    def output_dir(self, override: str | Path | None = None) -> Path:
        return Path(override or self.output or Path("outputs") / self.name).expanduser().resolve()

    def tracking_uri(self, output: Path) -> str:
        return self.tracking.uri or f"sqlite:///{output / 'mlflow.db'}"

    def recipe_of(self, method: MethodEntry) -> Recipe | None:
        """The authors' recipe `method` trains with in this study; None: the shared protocol."""
        if (method.recipe or self.recipe) == "shared":
            return None
        from provpt_core import published_recipe

        recipe = published_recipe(method.name)
        if recipe is None:
            raise ValueError(f"no published recipe is sourced for method '{method.name}'; give it recipe: shared")
        return recipe

    def trial_config(self, method: MethodEntry, task: TaskSpec) -> TrialConfig:
        """The trial config of (method, task) before search values and seeds are applied: the
        study's `trial`, then the method's recipe if published, then the method's `trial`."""
        from provpt_core import TrialConfig

        return TrialConfig.from_dict(self._trial_dict(method, task))

    def _trial_dict(self, method: MethodEntry, task: TaskSpec) -> dict[str, Any]:
        from provpt_core import merge

        recipe = self.recipe_of(method)
        trial = copy.deepcopy(self.trial)
        recipe_fields: dict[str, Any] = {}
        if recipe is not None:
            fragment = copy.deepcopy(recipe.config)
            recipe_fields = fragment.pop("method", {})
            trial = merge(trial, fragment)
            trial["recipe"] = recipe.name
        trial = merge(trial, copy.deepcopy(method.trial))
        trial["backbone"] = {**self.backbone, **trial.get("backbone", {})}
        trial["method"] = merge({"name": method.name, **recipe_fields}, copy.deepcopy(method.config))
        data = {**trial.get("data", {}), "task": task.name}
        if task.benchmark in self.data.roots:
            data["root"] = self.data.roots[task.benchmark]
        if self.data.cache_dir:
            data["cache_dir"] = self.data.cache_dir
        trial["data"] = data
        return trial


def redact(uri: str) -> str:
    """The URI without its password (for printing and records): credentials come from the
    environment and go nowhere else."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def load_study(path: str | Path) -> Study:
    """Read and check a study file; every mistake names the file and the field. What the file
    can get wrong on its own is checked first, with YAML and pydantic only (fast); then the
    tasks, methods and every pipeline's trial config, with the core."""
    from orchestrator.spec.validation import check_study, explain, read_yaml

    path = Path(path)
    raw = read_yaml(path)
    try:
        study = Study.model_validate(_interpolate(raw, path))
    except ValidationError as err:
        raise StudyError(f"{path}: {explain(err)}") from None
    check_study(study, path)
    return study


def _interpolate(value: Any, path: Path, field: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, path, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path, f"{field}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise StudyError(f"{path}: {field}: environment variable {name} is not set")

    whole = ENV_PLACEHOLDER.fullmatch(value)
    if whole is not None and whole.group(2) is not None and _number(whole.group(2)) is not None:
        number = _number(replace(whole))
        if number is None:
            raise StudyError(f"{path}: {field}: expected a number in ${{{whole.group(1)}}}, got {replace(whole)!r}")
        return number
    return ENV_PLACEHOLDER.sub(replace, value)


def _number(text: str) -> int | float | None:
    """`text` as an int or a float; None if it is neither."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None

