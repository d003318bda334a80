"""Every method's config, registered by name; configs only (no torch), so a study file is checked
without loading any method's model code. A new method adds its config module here."""

from provpt_core.methods.config import adapter, davpt, lora, provpt, simple, vapt, vpt  # noqa: F401  (registration)
from provpt_core.methods.config.base import METHOD_CONFIGS, VPT_HEAD_BIAS, MethodConfig, register_config

__all__ = ["METHOD_CONFIGS", "VPT_HEAD_BIAS", "MethodConfig", "register_config"]
