"""Fine-tuning methods, one module each, found by name in the registry.

A new method is a module with a config dataclass and a `Method` subclass decorated with
`@register_method("name")`, imported below; no other method changes.
"""

from provpt_core.methods import adapter, davpt, full, linear, lora, provpt, vapt, vpt  # noqa: F401  (registration)
from provpt_core.methods.base import Method, MethodConfig
from provpt_core.methods.registry import (
    METHODS,
    build_method_config,
    create_method,
    method_name,
    method_spec,
    register_method,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "build_method_config",
    "create_method",
    "method_name",
    "method_spec",
    "register_method",
]
