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
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.spec.space import Bool, Int, Number, Param, corner_values

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
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    path = Path(path)
    raw = _read(path)
    try:
        study = Study.model_validate(_interpolate(raw, path))
    except ValidationError as err:
        raise StudyError(f"{path}: {_explain(err)}") from None
    _check_tasks(study, path)
    _check_trials(study, path)
    return study


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's loader keeps the last of two equal keys; a study file must not lose a setting so."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(
                    key_node.start_mark.line + 1,
                    f"key {key!r} is given twice in one mapping (first on line {seen[key]}); YAML would keep only the last",
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise StudyError(f"{path}: is a folder; expected a study file (YAML), e.g. studies/quickstart.yaml")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except OSError as err:
        raise StudyError(f"{path}: cannot read the study file: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise StudyError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); a study file is YAML text") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise StudyError(f"{path}:{err.line}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise StudyError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of study fields (name, tasks, methods, ...)")
    return raw


def _explain(err: ValidationError) -> str:
    """One sentence for the first mistake; an unknown field before anything else, because a
    misspelled field also makes the field it meant look missing."""
    errors = err.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]
    field = _field_path(first["loc"])
    if not unknown:
        message = first["msg"].removeprefix("Value error, ")
        bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        if first["type"] in bounds:
            limit = next(iter(first["ctx"].values()))
            message = f"expected a value {bounds[first['type']]} {limit}, got {first['input']!r}"
        elif first["type"] in ("int_type", "float_type", "bool_type", "int_from_float"):
            message = f"{message}, got {first['input']!r}"
        return f"{field}: {message}" if field else message
    parent, name = first["loc"][:-1], str(first["loc"][-1])
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == parent]
    known = _fields_at(parent)
    close = difflib.get_close_matches(name, missing or known, n=1, cutoff=0.6)
    message = f"{field}: unknown field"
    if close:
        message += f" (did you mean '{close[0]}'?)"
    elif known:
        message += f"; expected one of {', '.join(known)}"
    if missing:
        message += f"; the required field '{_field_path((*parent, missing[0]))}' is missing"
    return message


def _fields_at(loc: tuple) -> list[str]:
    """The field names of the study model at a location (e.g. ("search", "asha"))."""
    model: Any = Study
    for part in loc:
        if model is not None and part in model.model_fields:  # else a list index or a mapping's key
            model = _model_in(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


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


def _check_tasks(study: Study, path: Path) -> None:
    """Every task name known, and no task named by two entries (e.g. vtab1k and cifar100)."""
    from provpt_core import resolve_tasks

    named_by: dict[str, str] = {}
    for i, entry in enumerate(study.tasks):
        for part in entry.split(","):
            try:
                specs = resolve_tasks([part])
            except KeyError as err:
                raise StudyError(f"{path}: tasks[{i}]: {err.args[0]}") from None
            for spec in specs:
                if spec.name in named_by:
                    raise StudyError(
                        f"{path}: tasks[{i}]: task {spec.name} is listed twice ('{named_by[spec.name]}' and '{part.strip()}')"
                    )
                named_by[spec.name] = part.strip()


def _check_trials(study: Study, path: Path) -> None:
    """Build every pipeline's trial config with the searched values at their bounds and
    choices, so unknown fields and bad values fail here, not in a trial."""
    from provpt_core import METHOD_CONFIGS, ConfigError

    for i, method in enumerate(study.methods):
        if method.name not in METHOD_CONFIGS:
            close = difflib.get_close_matches(method.name, METHOD_CONFIGS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise StudyError(
                f"{path}: methods[{i}].name: unknown method '{method.name}'{hint}; expected one of {', '.join(sorted(METHOD_CONFIGS))}"
            )
        for name in method.search:
            if name.split(".")[0] not in ("train", "method", "eval", "backbone", "data"):
                raise StudyError(
                    f"{path}: methods[{i}].search.{name}: expected a dotted path into the trial config "
                    "(train., method., eval., ...)"
                )
            if name == "train.seed":
                raise StudyError(f"{path}: methods[{i}].search.train.seed: {_SEEDS_COME_FROM}")
        for where, trial in (("trial", study.trial), (f"methods[{i}].trial", method.trial)):
            if "seed" in (trial.get("train") or {}):
                raise StudyError(f"{path}: {where}.train.seed: {_SEEDS_COME_FROM}")
        try:
            recipe = study.recipe_of(method)
        except ValueError as err:
            raise StudyError(f"{path}: methods[{i}].recipe: {err}") from None
        if recipe is not None:
            _check_recipe_overrides(study, i, method, recipe, path)
        for task in study.task_specs:
            try:
                base = study.trial_config(method, task)
                _check_searched_lr(study, i, method, base, path)
                for values in corner_values(method.search):
                    base.override(values)
            except ConfigError as err:
                raise StudyError(f"{path}: methods[{i}] ({method.key}): {err}") from None
        _check_conditions(method, i, base, path)
        _check_asha(study, method, base, path)
        if method.branches is not None:
            _check_branches(study, i, method, path)


_SEEDS_COME_FROM = (
    "a trial's seed is set by the study (search.seed for the search, final.seeds for the final runs); "
    "remove it here and set those"
)


def _check_recipe_overrides(study: Study, index: int, method: MethodEntry, recipe: Recipe, path: Path) -> None:
    """A study-wide `trial` value that a method's published recipe sets otherwise would be
    replaced without a word: refused, saying where the value takes effect."""
    from provpt_core import flatten

    mine = flatten({k: v for k, v in study.trial.items() if k != "method"})
    theirs = flatten({k: v for k, v in recipe.config.items() if k != "method"})
    for field, value in mine.items():
        if field in theirs and theirs[field] != value:
            raise StudyError(
                f"{path}: trial.{field}: {value!r} would be replaced by {theirs[field]!r}: methods[{index}] "
                f"({method.key}) trains under the published recipe '{recipe.name}'; to override the recipe, set it in "
                "that method's trial:, or give the method recipe: shared"
            )


def _check_conditions(method: MethodEntry, index: int, base: TrialConfig, path: Path) -> None:
    """A `when` names a searched value of the method or a field of its trial config."""
    trial = base.to_dict()
    for name, param in method.search.items():
        for condition in param.when:
            if condition in method.search or _has_path(trial, condition):
                continue
            raise StudyError(
                f"{path}: methods[{index}].search.{name}.when: {condition} is neither a searched value of "
                f"{method.key} ({', '.join(method.search)}) nor a field of its trial config"
            )


def _has_path(tree: dict[str, Any], dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and leaf in node


def _check_asha(study: Study, method: MethodEntry, base: TrialConfig, path: Path) -> None:
    """ASHA's first rung must come before the end of training, or it stops nothing."""
    asha = study.search.asha
    if asha is not None and method.search and asha.grace_period >= base.train.epochs:
        raise StudyError(
            f"{path}: search.asha.grace_period: {asha.grace_period} epochs, but {method.key}'s trials train "
            f"{base.train.epochs}; expected fewer than the epochs (or no asha)"
        )


def _check_branches(study: Study, index: int, method: MethodEntry, path: Path) -> None:
    """Branch epochs inside the training, blocks inside the backbone, a method that can move prompts."""
    from provpt_core import METHOD_CONFIGS, backbone_depth

    where = f"{path}: methods[{index}].branches"
    if "moves" not in METHOD_CONFIGS[method.name].__dataclass_fields__:
        movable = sorted(n for n, c in METHOD_CONFIGS.items() if "moves" in c.__dataclass_fields__)
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
    from provpt_core import METHOD_CONFIGS

    if "train.lr" in method.search and METHOD_CONFIGS[method.name].frozen_features and base.train.head_lr is not None:
        raise StudyError(
            f"{path}: methods[{index}].search.train.lr: {method.key} trains only its head, at train.head_lr="
            f"{base.train.head_lr:g}, so searching train.lr changes nothing; give this method "
            "trial: {train: {head_lr: null}} (its head then trains at the searched lr), or search train.head_lr"
        )
