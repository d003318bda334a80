"""LoRA's config (methods/lora.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from provpt_core.config import check
from provpt_core.methods.config.base import MethodConfig, register_config

Target = Literal["q", "k", "v"]
QKV_ORDER = ("q", "k", "v")  # the layout of timm's fused qkv output


@register_config("lora", "LoRA")
@dataclass
class LoRAConfig(MethodConfig):
    rank: int = 8
    alpha: float = 8.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on the input of the low-rank path
    targets: list[Target] = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self) -> None:
        check(self.rank >= 1, "rank", "an integer >= 1", self.rank)
        check(self.alpha > 0, "alpha", "a number > 0", self.alpha)
        check(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)", self.dropout)
        distinct = len(set(self.targets)) == len(self.targets)
        check(
            bool(self.targets) and distinct and set(self.targets) <= set(QKV_ORDER),
            "targets",
            "a non-empty list of distinct projections out of q, k, v",
            self.targets,
        )

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank
