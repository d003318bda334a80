"""PRO-VPT's prompt relocation: idleness scores, the relocation step and its allocators."""

from provpt_core.relocation.allocators import Allocator, Observation
from provpt_core.relocation.idleness import IdlenessMeter, idleness
from provpt_core.relocation.ppo import PPOAllocator, PPOConfig
from provpt_core.relocation.relocator import RelocationConfig, Relocator

__all__ = [
    "Allocator",
    "IdlenessMeter",
    "Observation",
    "PPOAllocator",
    "PPOConfig",
    "RelocationConfig",
    "Relocator",
    "idleness",
]
