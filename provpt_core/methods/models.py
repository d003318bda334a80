"""Every method's model code, imported for registration: `METHODS` then holds them all. A new
method adds its module here (and its config to `methods/config/`)."""

from provpt_core.methods import adapter, davpt, full, linear, lora, provpt, vapt, vpt  # noqa: F401  (registration)
from provpt_core.methods.registry import METHODS

__all__ = ["METHODS"]
