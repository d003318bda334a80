"""The fields every method has, and the registry from method name to config class."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, TypeVar

VPT_HEAD_BIAS = -math.log(99.0)  # VPT's head bias init: a 1% prior on every class


@dataclass
class MethodConfig:
    """Fields every method has. `method` and `display_name` (class attributes, not fields) are
    the name its method was registered under and the name papers print."""

    method: ClassVar[str | None] = None
    display_name: ClassVar[str | None] = None
    # True when the backbone features do not depend on any trained parameter, so the engine
    # may compute them once per split and train the head on cached features.
    frozen_features: ClassVar[bool] = False

    head_bias: float = VPT_HEAD_BIAS


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}
C = TypeVar("C", bound=type[MethodConfig])


def register_config(name: str, display_name: str | None = None):
    """Class decorator: the config of the method registered as `name` (`methods.registry`),
    printed in tables and figures as `display_name` (default: `name`)."""

    def register(cls: C) -> C:
        if name in METHOD_CONFIGS:
            raise ValueError(f"method config '{name}' is registered twice")
        cls.method = name
        cls.display_name = display_name or name
        METHOD_CONFIGS[name] = cls
        return cls

    return register
