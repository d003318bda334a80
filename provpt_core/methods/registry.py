"""The registry from method name to method class."""

from __future__ import annotations

from typing import Any, TypeVar

from provpt_core.config import ConfigError, as_dict, build
from provpt_core.methods.base import Method, MethodConfig

METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(name: str):
    """Class decorator: make a Method subclass available under `name`."""

    def register(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice")
        if cls.config_class.__dict__.get("method") not in (None, name):
            raise ValueError(f"method '{name}': its config class {cls.config_class.__name__} belongs to another method")
        cls.name = name
        cls.config_class.method = name
        METHODS[name] = cls
        return cls

    return register


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"method.name: unknown method '{name}'; expected one of {', '.join(sorted(METHODS))}"
        ) from None


def build_method_config(spec: dict[str, Any] | MethodConfig, name: str | None = None) -> MethodConfig:
    """A method's typed config from {"name": ..., field: value, ...}."""
    if isinstance(spec, MethodConfig):
        return spec
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"method: expected a mapping with a 'name' field, got {spec!r}")
    fields = dict(spec)
    cls = method_class(fields.pop("name"))
    return build(cls.config_class, fields, "method")


def method_spec(config: MethodConfig) -> dict[str, Any]:
    """The inverse of build_method_config: {"name": ..., **fields}."""
    return {"name": method_name(config), **as_dict(config)}


def method_name(config: MethodConfig) -> str:
    name = type(config).__dict__.get("method")  # set at registration, on the class itself
    if name is None:
        raise ConfigError(f"method: no registered method takes a {type(config).__name__}")
    return name


def create_method(config: MethodConfig) -> Method:
    return METHODS[method_name(config)](config)
