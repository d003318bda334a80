"""The registries from method name to config class (`config.METHOD_CONFIGS`, light) and to
method class (`METHODS`, filled as the method modules load: `methods.models` loads them all)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar

from provpt_core.config import ConfigError, as_dict, build
from provpt_core.methods.config import METHOD_CONFIGS, MethodConfig

if TYPE_CHECKING:
    from provpt_core.methods.base import Method

METHODS: dict[str, type[Method]] = {}
M = TypeVar("M")


def register_method(name: str):
    """Class decorator: make a Method subclass available under `name`, the name its config
    class was registered under (`config.register_config`)."""

    def register(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice")
        if cls.config_class.__dict__.get("method") != name:
            raise ValueError(f"method '{name}': its config class {cls.config_class.__name__} is not registered as '{name}'")
        cls.name = name
        cls.frozen_features = cls.config_class.frozen_features
        METHODS[name] = cls
        return cls

    return register


def config_class(name: str) -> type[MethodConfig]:
    try:
        return METHOD_CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"method.name: unknown method '{name}'; expected one of {', '.join(sorted(METHOD_CONFIGS))}"
        ) from None


def method_class(name: str) -> type[Method]:
    config_class(name)
    importlib.import_module("provpt_core.methods.models")
    return METHODS[name]


def build_method_config(spec: dict[str, Any] | MethodConfig, name: str | None = None) -> MethodConfig:
    """A method's typed config from {"name": ..., field: value, ...}."""
    if isinstance(spec, MethodConfig):
        return spec
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"method: expected a mapping with a 'name' field, got {spec!r}")
    fields = dict(spec)
    return build(config_class(fields.pop("name")), fields, "method")


def method_spec(config: MethodConfig) -> dict[str, Any]:
    """The inverse of build_method_config: {"name": ..., **fields}."""
    return {"name": method_name(config), **as_dict(config)}


def method_name(config: MethodConfig) -> str:
    name = type(config).__dict__.get("method")  # set at registration, on the class itself
    if name is None:
        raise ConfigError(f"method: no registered method takes a {type(config).__name__}")
    return name


def create_method(config: MethodConfig) -> Method:
    return method_class(method_name(config))(config)
