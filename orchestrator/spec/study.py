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
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.spec.space import Param, corner_values
from provpt_core import (
    METHODS,
    ConfigError,
    Recipe,
    TaskSpec,
    TrialConfig,
    backbone_depth,
    fraction_epoch,
    merge,
    published_recipe,
    resolve_tasks,
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StudyError(ValueError):
    """A study file is wrong; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BranchSection(_Strict):
    """The adjustment-timing analysis: from each final trial's checkpoint at `epochs` (0-based:
    the move happens before that epoch trains), branch runs that move `count` prompts from
    block `source` to each of `targets` and train to the end; they cost the remaining epochs."""

    epochs: list[int] = Field(default_factory=list)
    fractions: list[float] = Field(default_factory=list)  # or: at these fractions of the training
    source: int = Field(ge=0)
    targets: list[int] | None = None  # None: every block but the source
    count: int = Field(1, ge=1)
    rescale: float = Field(1e-3, gt=0)  # a moved prompt is multiplied by this, as PRO-VPT's

    @model_validator(mode="after")
    def _when(self) -> BranchSection:
        if not self.epochs and not self.fractions:
            raise ValueError("give epochs (0-based, e.g. [25, 50, 75]) or fractions of the training (e.g. [0.25, 0.5, 0.75])")
        if any(not 0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions: expected numbers in (0, 1), got {self.fractions}")
        return self

    def branch_epochs(self, total: int) -> list[int]:
        """The branch epochs (0-based) of a trial of `total` epochs, in order."""
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

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in METHODS:
            raise ValueError(f"unknown method '{name}'; expected one of {', '.join(sorted(METHODS))}")
        return name

    @property
    def key(self) -> str:
        return self.label or self.name


class DataSection(_Strict):
    roots: dict[Literal["vtab1k", "fgvc"], str] = Field(default_factory=dict)
    cache_dir: str | None = None
    check_images: bool = False  # also decode every image in the pre-flight check

    @field_validator("roots")
    @classmethod
    def _given(cls, roots: dict[str, str]) -> dict[str, str]:
        """An empty root (``${VTAB_ROOT:-}`` unset) is no root: the pre-flight asks for it."""
        return {benchmark: root for benchmark, root in roots.items() if root}


class Resources(_Strict):
    cpu: float = 1.0
    gpu: float = 0.0  # a fraction shares one GPU between trials

    @model_validator(mode="after")
    def _check(self) -> Resources:
        if self.cpu <= 0:
            raise ValueError(f"cpu: expected a number > 0, got {self.cpu}")
        if not 0 <= self.gpu:
            raise ValueError(f"gpu: expected a number >= 0, got {self.gpu}")
        return self


class Asha(_Strict):
    grace_period: int = 5  # epochs before a trial may be stopped
    reduction_factor: int = 3


class SearchSection(_Strict):
    sampler: Literal["tpe", "random"] = "tpe"
    trials: int = Field(8, ge=1)
    concurrency: int = Field(2, ge=1)  # trials of one pipeline at once
    seed: int = 0  # training seed of search trials (and the sampler's, mixed with the pipeline)
    asha: Asha | None = None


class FinalSection(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    selection: Literal["best_val_smaller_lr"] = "best_val_smaller_lr"


class TrackingSection(_Strict):
    uri: str | None = None  # None or "": sqlite:///<output>/mlflow.db

    @field_validator("uri")
    @classmethod
    def _empty_is_default(cls, uri: str | None) -> str | None:
        return uri or None


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
    checkpoint_every: int = Field(5, ge=1)  # epochs between trial checkpoints
    max_failures: int = Field(2, ge=0)  # retries of a trial from its last checkpoint
    max_concurrent_pipelines: int | None = None  # None: enough to fill the cluster's trial slots
    ablation: AblationSection | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"expected letters, digits, '_', '.' or '-', got {name!r}")
        return name

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        try:
            resolve_tasks(tasks)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        return tasks

    @property
    def task_specs(self) -> list[TaskSpec]:
        return resolve_tasks(self.tasks)

    def output_dir(self, override: str | Path | None = None) -> Path:
        return Path(override or self.output or Path("outputs") / self.name).expanduser().resolve()

    def tracking_uri(self, output: Path) -> str:
        return self.tracking.uri or f"sqlite:///{output / 'mlflow.db'}"

    def recipe_of(self, method: MethodEntry) -> Recipe | None:
        """The authors' recipe `method` trains with in this study; None: the shared protocol."""
        if (method.recipe or self.recipe) == "shared":
            return None
        recipe = published_recipe(method.name)
        if recipe is None:
            raise ValueError(f"no published recipe is sourced for method '{method.name}'; give it recipe: shared")
        return recipe

    def trial_config(self, method: MethodEntry, task: TaskSpec) -> TrialConfig:
        """The trial config of (method, task) before search values and seeds are applied: the
        study's `trial`, then the method's recipe if published, then the method's `trial`."""
        return TrialConfig.from_dict(self._trial_dict(method, task))

    def _trial_dict(self, method: MethodEntry, task: TaskSpec) -> dict[str, Any]:
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
    """Read and check a study file; every mistake names the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StudyError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of study fields")
    try:
        study = Study.model_validate(_interpolate(raw, path))
    except ValidationError as err:
        first = err.errors()[0]
        field = _field_path(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise StudyError(f"{path}: {field}: {message}") from None
    _check_trials(study, path)
    return study


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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

    whole = _ENV.fullmatch(value)
    if whole is not None and whole.group(2) is not None and _number(whole.group(2)) is not None:
        number = _number(replace(whole))
        if number is None:
            raise StudyError(f"{path}: {field}: expected a number in ${{{whole.group(1)}}}, got {replace(whole)!r}")
        return number
    return _ENV.sub(replace, value)


def _number(text: str) -> int | float | None:
    """`text` as an int or a float; None if it is neither."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _check_trials(study: Study, path: Path) -> None:
    """Build every pipeline's trial config with the searched values at their bounds and
    choices, so unknown fields and bad values fail here, not in a trial."""
    for i, method in enumerate(study.methods):
        for name in method.search:
            if name.split(".")[0] not in ("train", "method", "eval", "backbone", "data"):
                raise StudyError(
                    f"{path}: methods[{i}].search.{name}: expected a dotted path into the trial config "
                    "(train., method., eval., ...)"
                )
        try:
            study.recipe_of(method)
        except ValueError as err:
            raise StudyError(f"{path}: methods[{i}].recipe: {err}") from None
        for task in study.task_specs:
            try:
                base = study.trial_config(method, task)
                _check_searched_lr(study, i, method, base, path)
                for values in corner_values(method.search):
                    base.override(values)
            except ConfigError as err:
                raise StudyError(f"{path}: methods[{i}] ({method.key}): {err}") from None
        if method.branches is not None:
            _check_branches(study, i, method, path)
        if len({m.key for m in study.methods}) != len(study.methods):
            raise StudyError(f"{path}: methods[{i}].label: two methods share the name '{method.key}'")


def _check_branches(study: Study, index: int, method: MethodEntry, path: Path) -> None:
    """Branch epochs inside the training, blocks inside the backbone, a method that can move prompts."""
    where = f"{path}: methods[{index}].branches"
    if "moves" not in METHODS[method.name].config_class.__dataclass_fields__:
        movable = sorted(n for n, m in METHODS.items() if "moves" in m.config_class.__dataclass_fields__)
        raise StudyError(f"{where}: {method.name} has no prompts to move; branch one of {', '.join(movable)}")
    branches = method.branches
    base = study.trial_config(method, study.task_specs[0])
    epochs = base.train.epochs
    wrong = [e for e in branches.branch_epochs(epochs) if not 1 <= e < epochs]
    if wrong:
        raise StudyError(f"{where}.epochs: expected epochs in [1, {epochs - 1}] (the trial trains {epochs}), got {wrong[0]}")
    depth = backbone_depth(base.backbone.name)
    blocks = [branches.source, *(branches.targets or [])]
    if max(blocks) >= depth:
        raise StudyError(f"{where}: block {max(blocks)} does not exist: {base.backbone.name} has {depth} blocks (0-{depth - 1})")
    if branches.count > base.method.num_prompts:
        raise StudyError(
            f"{where}.count: {branches.count} prompts cannot leave block {branches.source}, which starts with "
            f"{base.method.num_prompts}"
        )


def _check_searched_lr(study: Study, index: int, method: MethodEntry, base: TrialConfig, path: Path) -> None:
    """A method on frozen features trains only its head, at `train.head_lr` when that is set:
    a search over `train.lr` would then change nothing."""
    if "train.lr" in method.search and METHODS[method.name].frozen_features and base.train.head_lr is not None:
        raise StudyError(
            f"{path}: methods[{index}].search.train.lr: {method.key} trains only its head, at train.head_lr="
            f"{base.train.head_lr:g}, so searching train.lr changes nothing; give this method "
            "trial: {train: {head_lr: null}} (its head then trains at the searched lr), or search train.head_lr"
        )
