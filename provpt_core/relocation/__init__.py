"""PRO-VPT's prompt relocation: idleness scores, the relocation step and its allocators.

The configs load with the package; the relocation code (and torch) when first used. (The
`idleness` function is imported from `relocation.idleness`: a package attribute of that name
would be the submodule once it has loaded.)"""

from provpt_core.lazy import lazy_exports
from provpt_core.relocation.config import FidelityConfig, PPOConfig, RelocationConfig

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Allocator": "provpt_core.relocation.allocators",
        "Observation": "provpt_core.relocation.allocators",
        "IdlenessMeter": "provpt_core.relocation.idleness",
        "PPOAllocator": "provpt_core.relocation.ppo",
        "Relocator": "provpt_core.relocation.relocator",
    },
)

__all__ = [
    "Allocator",
    "FidelityConfig",
    "IdlenessMeter",
    "Observation",
    "PPOAllocator",
    "PPOConfig",
    "RelocationConfig",
    "Relocator",
]
