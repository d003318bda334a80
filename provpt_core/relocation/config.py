"""PRO-VPT's relocation settings: the relocation step, its PPO allocator, the fidelity
measurements. Configs only (no torch): a study file is checked without the relocation code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from provpt_core.config import check

Criterion = Literal["taylor", "norm", "random"]  # how idleness is scored (idleness.py)

# The allocators a config may name, and whether each chooses the source block too: the built-in
# ones here, a new one added by `allocators.register_allocator` when its module is imported.
ALLOCATOR_NAMES: dict[str, bool] = {"ppo": False, "ppo_joint": True, "thompson": False, "random": False, "none": False}


@dataclass
class PPOConfig:
    buffer_size: int = 2  # rewarded choices per update
    update_epochs: int = 60
    gamma: float = 1.0
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    clip: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    hidden: int = 64
    normalize_returns: bool = True

    def __post_init__(self) -> None:
        check(self.buffer_size >= 1, "buffer_size", "an integer >= 1", self.buffer_size)
        check(self.update_epochs >= 1, "update_epochs", "an integer >= 1", self.update_epochs)
        check(0.0 <= self.gamma <= 1.0, "gamma", "a number in [0, 1]", self.gamma)
        check(self.actor_lr > 0, "actor_lr", "a number > 0", self.actor_lr)
        check(self.critic_lr > 0, "critic_lr", "a number > 0", self.critic_lr)
        check(self.clip > 0, "clip", "a number > 0", self.clip)
        check(self.hidden >= 1, "hidden", "an integer >= 1", self.hidden)


@dataclass
class RelocationConfig:
    idleness: Literal["accumulated", "reference"] = "accumulated"
    allocator: str = "ppo"  # a registered allocator: ppo, thompson, random, none (pruning only)
    interval: int = 1  # epochs between relocations
    warmup_epochs: int = 1  # the first relocation happens at the start of this epoch (0-based)
    stop_epoch: int | None = None  # no relocation from this epoch on; None: until the last epoch
    prompts_per_move: int = 1
    reward_correction: float = 1.0  # weight of the largest idleness in the reward
    moved_rescale: float = 1e-3
    keep_momentum: bool = True
    identification_clip: float | None = 0.25  # reference pass: joint clip of head + gate gradients
    criterion: Criterion = "taylor"  # how idleness is scored (idleness.py)
    adjustment: Literal["relocate", "add"] = "relocate"
    max_added: int = 0  # adjustment add: prompts that may be added in all (spare rows)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        check(self.allocator in ALLOCATOR_NAMES, "allocator", f"one of {', '.join(ALLOCATOR_NAMES)}", self.allocator)
        check(self.max_added >= 0, "max_added", "an integer >= 0", self.max_added)
        check(
            self.adjustment != "add" or self.max_added >= 1,
            "max_added",
            "an integer >= 1 with adjustment: add (how many prompts may be added)",
            self.max_added,
        )
        check(
            self.adjustment != "add" or not ALLOCATOR_NAMES.get(self.allocator, False),
            "adjustment",
            f"'relocate' with allocator {self.allocator} (it chooses a source to move from)",
            self.adjustment,
        )
        check(self.interval >= 1, "interval", "an integer >= 1", self.interval)
        check(self.warmup_epochs >= 0, "warmup_epochs", "an integer >= 0", self.warmup_epochs)
        check(self.prompts_per_move >= 1, "prompts_per_move", "an integer >= 1", self.prompts_per_move)
        check(
            self.identification_clip is None or self.identification_clip > 0,
            "identification_clip",
            "null or a number > 0",
            self.identification_clip,
        )


@dataclass
class FidelityConfig:
    epochs: list[int] = field(default_factory=list)  # measured at the start of these epochs (0-based)
    fractions: list[float] = field(default_factory=list)  # or at these fractions of the training
    batches: int = 4  # the fixed batches (the first of the train split, in its stored order)

    def __post_init__(self) -> None:
        check(all(e >= 0 for e in self.epochs), "epochs", "a list of epochs >= 0", self.epochs)
        check(all(0 < f < 1 for f in self.fractions), "fractions", "a list of numbers in (0, 1)", self.fractions)
        check(self.batches >= 1, "batches", "an integer >= 1", self.batches)

    def measured_epochs(self, total: int) -> set[int]:
        """The epochs (0-based) at whose start the measurement is taken, in a trial of `total`."""
        return {*self.epochs, *(fraction_epoch(f, total) for f in self.fractions)}


def fraction_epoch(fraction: float, total: int) -> int:
    """The epoch that starts after `fraction` of `total` epochs (at least 1, at most total - 1)."""
    return min(max(round(fraction * total), 1), total - 1)
