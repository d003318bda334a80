"""The configs of the methods without fields of their own: full fine-tuning and the linear
probe (methods/full.py, methods/linear.py)."""

from __future__ import annotations

from dataclasses import dataclass

from provpt_core.methods.config.base import MethodConfig, register_config


@register_config("full", "Full FT")
@dataclass
class FullConfig(MethodConfig):
    pass


@register_config("linear", "Linear")
@dataclass
class LinearConfig(MethodConfig):
    frozen_features = True  # only the head trains
