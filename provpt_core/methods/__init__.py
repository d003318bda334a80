"""Fine-tuning methods, one module each, found by name in the registry.

A new method is a config dataclass in `methods/config/` decorated with
`@register_config("name")` and a module with a `Method` subclass decorated with
`@register_method("name")`, listed in `methods/models.py`; no other method changes. The configs
load with this package, the model code (and torch) when first used.
"""

from provpt_core.lazy import lazy_exports
from provpt_core.methods.config import METHOD_CONFIGS, MethodConfig, register_config
from provpt_core.methods.registry import (
    build_method_config,
    config_class,
    create_method,
    method_class,
    method_name,
    method_spec,
    register_method,
)

__getattr__, __dir__ = lazy_exports(__name__, {"METHODS": "provpt_core.methods.models", "Method": "provpt_core.methods.base"})

__all__ = [
    "METHODS",
    "METHOD_CONFIGS",
    "Method",
    "MethodConfig",
    "build_method_config",
    "config_class",
    "create_method",
    "method_class",
    "method_name",
    "method_spec",
    "register_config",
    "register_method",
]
