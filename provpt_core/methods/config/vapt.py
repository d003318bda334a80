"""VAPT's config (methods/vapt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provpt_core.config import check
from provpt_core.methods.config.base import register_config
from provpt_core.methods.config.vpt import PromptConfig


@register_config("vapt", "VAPT")
@dataclass
class VAPTConfig(PromptConfig):
    static_blocks: int = 1  # early blocks that keep ordinary learnable prompts
    conv: bool = True  # the channel-shared KxK convolution
    kernel_size: int = 2  # K
    # the kernel's init: "randn" (standard normal, as the authors' code); "pytorch": Conv2d's own
    # kaiming-uniform, bound 1/K
    conv_init: Literal["randn", "pytorch"] = "randn"
    conv_dropout: float = 0.1  # Dropout2d after the convolution
    projector: bool = True  # the residual bottleneck projector
    shared_projector: bool = True  # one projector for all layers; False: one per layer
    projector_rank: int = 8  # r
    projector_dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_prompts >= 1, "num_prompts", "an integer >= 1", self.num_prompts)
        check(self.static_blocks >= 0, "static_blocks", "an integer >= 0", self.static_blocks)
        check(self.kernel_size >= 1, "kernel_size", "an integer >= 1", self.kernel_size)
        check(self.projector_rank >= 1, "projector_rank", "an integer >= 1", self.projector_rank)
        check(0.0 <= self.conv_dropout < 1.0, "conv_dropout", "a probability in [0, 1)", self.conv_dropout)
        check(0.0 <= self.projector_dropout < 1.0, "projector_dropout", "a probability in [0, 1)", self.projector_dropout)
