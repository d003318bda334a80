"""Linear probe: only the head is trained, on the frozen backbone's CLS feature."""

from __future__ import annotations

from dataclasses import dataclass

from provpt_core.methods.base import Method, MethodConfig
from provpt_core.methods.registry import register_method


@dataclass
class LinearConfig(MethodConfig):
    pass


@register_method("linear")
class LinearProbe(Method):
    config_class = LinearConfig
    frozen_features = True
