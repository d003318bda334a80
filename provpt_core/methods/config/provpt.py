"""PRO-VPT's config (methods/provpt.py): VPT-deep's, with relocation and fidelity settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from provpt_core.methods.config.base import register_config
from provpt_core.methods.config.vpt import VPTDeepConfig
from provpt_core.relocation.config import FidelityConfig, RelocationConfig


@register_config("provpt", "PRO-VPT")
@dataclass
class ProVPTConfig(VPTDeepConfig):
    relocation: RelocationConfig = field(default_factory=RelocationConfig)
    # the idleness-fidelity analysis: measured removal effects beside the scores, at chosen epochs
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
