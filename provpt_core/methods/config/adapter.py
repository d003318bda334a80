"""The bottleneck adapter's config (methods/adapter.py)."""

from __future__ import annotations

from dataclasses import dataclass

from provpt_core.config import check
from provpt_core.methods.config.base import MethodConfig, register_config


@register_config("adapter", "Adapter")
@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = 8  # the adapter's width r (dim -> r -> dim)
    attention: bool = True  # an adapter after every attention too (Houlsby); false: after the MLP only (NOAH)
    bias: bool = True  # biases on the down- and up-projections
    train_norms: bool = True  # also train the backbone's LayerNorm parameters (Houlsby)
    dropout: float = 0.0  # inside the adapter, after the nonlinearity

    def __post_init__(self) -> None:
        check(self.bottleneck >= 1, "bottleneck", "an integer >= 1", self.bottleneck)
        check(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)", self.dropout)
