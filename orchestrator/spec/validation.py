"""Checking a study file: reading it (UTF-8 YAML that gives no key twice), explaining pydantic's
errors (a misspelled field first, with what it probably meant), and the checks that need the
core's config registries: tasks, methods, every pipeline's trial config, conditions, ASHA,
branches. The core's configs load without torch, so a bad file is answered in a fraction of a
second."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.spec.space import corner_values
from orchestrator.spec.study import ENV_PLACEHOLDER, MethodEntry, Study, StudyError

if TYPE_CHECKING:
    from provpt_core import Recipe, TrialConfig


def check_study(study: Study, path: Path) -> None:
    """The checks of a validated study that build its trial configs; each mistake names the file and the field."""
    _check_tasks(study, path)
    _check_trials(study, path)


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


def read_yaml(path: Path) -> dict[str, Any]:
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


def explain(err: ValidationError) -> str:
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


def environment_names(path: str | Path) -> list[str]:
    """The `${VAR}`s a study file reads, in order of first use."""
    names: dict[str, None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            names.update(dict.fromkeys(m.group(1) for m in ENV_PLACEHOLDER.finditer(value)))

    walk(read_yaml(Path(path)))
    return list(names)
