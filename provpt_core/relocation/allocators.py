"""Allocators: given the block a pruned prompt left, pick the block it goes to.

Every allocator sees the same `Observation` and is told, one relocation later, the reward of
the choices it made (loss before - loss after - weight * largest idleness after). Each owns a
torch.Generator, so its choices are reproducible and checkpointed without touching the
training RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from provpt_core.prompts import PRUNED
from provpt_core.relocation.config import ALLOCATOR_NAMES

# name -> factory(relocation config, number of blocks, seed): a new allocator registers here
# (see `register_allocator`) and touches no other
ALLOCATORS: dict[str, Callable[..., Allocator]] = {}


def register_allocator(name: str, factory: Callable[..., Allocator] | None = None):
    """Register `factory(config, num_blocks, seed)` under `name`; as a class decorator, the
    class itself is built from (num_blocks, seed)."""

    def register(target):
        if name in ALLOCATORS:
            raise ValueError(f"allocator '{name}' is registered twice")
        if ALLOCATOR_NAMES.setdefault(name, target.chooses_source) != target.chooses_source:
            raise ValueError(f"allocator '{name}': chooses_source disagrees with relocation/config.py's ALLOCATOR_NAMES")
        ALLOCATORS[name] = factory or (lambda config, num_blocks, seed: target(num_blocks, seed))
        return target

    return register


@dataclass
class Observation:
    block_scores: torch.Tensor  # [L] sum of the idleness scores of each block's prompts
    counts: torch.Tensor  # [L] prompts per block once the pruned prompt has left
    source: int  # the block the pruned prompt left; -1 when the allocator chooses it


class Allocator:
    """Base: a seeded generator and the bookkeeping of choices awaiting their reward.

    An allocator places a pruned prompt (`choose`), or, with `chooses_source`, names both the
    block to move a prompt from and the block to move it to (`choose_move`)."""

    chooses_source: ClassVar[bool] = False

    def __init__(self, num_blocks: int, seed: int) -> None:
        self.num_blocks = num_blocks
        self.generator = torch.Generator().manual_seed(seed)

    def choose(self, observation: Observation) -> int:
        raise NotImplementedError

    def choose_move(self, observation: Observation) -> tuple[int, int]:
        raise NotImplementedError

    def reward(self, value: float) -> dict[str, Any]:
        """Credit `value` to every choice made since the last call; returns update figures."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@register_allocator("random")
class RandomAllocator(Allocator):
    """Uniform over all blocks (the source block included, as for PPO's action space)."""

    def choose(self, observation: Observation) -> int:
        return int(torch.randint(self.num_blocks, (1,), generator=self.generator))


@register_allocator("none")
class PruneOnly(Allocator):
    """No allocation: pruned prompts leave the model for good."""

    def choose(self, observation: Observation) -> int:
        return PRUNED


@register_allocator("thompson")
class ThompsonAllocator(Allocator):
    """Beta(1 + successes, 1 + failures) per destination block; a move succeeded when its
    reward was >= 0, i.e. loss(e+1) + weight * max idleness(e+1) <= loss(e)."""

    def __init__(self, num_blocks: int, seed: int) -> None:
        super().__init__(num_blocks, seed)
        self.successes = torch.zeros(num_blocks, dtype=torch.long)
        self.failures = torch.zeros(num_blocks, dtype=torch.long)
        self.pending: list[int] = []

    def choose(self, observation: Observation) -> int:
        draws = torch.stack(
            [self._beta(1 + int(s), 1 + int(f)) for s, f in zip(self.successes, self.failures)]
        )
        block = int(torch.argmax(draws))
        self.pending.append(block)
        return block

    def reward(self, value: float) -> dict[str, Any]:
        counter = self.successes if value >= 0 else self.failures
        for block in self.pending:
            counter[block] += 1
        self.pending = []
        return {}

    def _beta(self, a: int, b: int) -> torch.Tensor:
        # For integer a, b, Beta(a, b) is the a-th smallest of a + b - 1 uniforms: exact, and
        # drawn from our own generator (torch's Beta sampler takes none).
        uniforms = torch.rand(a + b - 1, generator=self.generator)
        return torch.kthvalue(uniforms, a).values

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "successes": self.successes.clone(),
            "failures": self.failures.clone(),
            "pending": list(self.pending),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.successes = state["successes"].clone()
        self.failures = state["failures"].clone()
        self.pending = list(state["pending"])

