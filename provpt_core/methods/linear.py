"""Linear probe: only the head is trained, on the frozen backbone's CLS feature."""

from __future__ import annotations

from provpt_core.methods.base import Method
from provpt_core.methods.config.simple import LinearConfig
from provpt_core.methods.registry import register_method


@register_method("linear")
class LinearProbe(Method):
    config_class = LinearConfig
