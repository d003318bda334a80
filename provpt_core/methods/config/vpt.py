"""VPT-deep's and VPT-shallow's configs (methods/vpt.py), and the prompt fields they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from provpt_core.config import check
from provpt_core.methods.config.base import MethodConfig, register_config


@dataclass
class PromptConfig(MethodConfig):
    num_prompts: int = 10  # per prompted block
    dropout: float = 0.1
    init_range: float | None = None  # None: VPT's sqrt(6 / (3 * patch_area + dim))

    def __post_init__(self) -> None:
        check(self.num_prompts >= 0, "num_prompts", "an integer >= 0", self.num_prompts)
        check(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)", self.dropout)
        check(
            self.init_range is None or self.init_range >= 0,
            "init_range",
            "null or a number >= 0",
            self.init_range,
        )


@dataclass
class ScriptedMove:
    """Move `count` prompts from block `source` to block `target` at the start of `epoch`
    (0-based), each multiplied by `rescale` (PRO-VPT's restart of a moved prompt): a branch of
    the paper's adjustment-timing analysis."""

    epoch: int
    source: int
    target: int
    count: int = 1
    rescale: float = 1e-3

    def __post_init__(self) -> None:
        check(self.epoch >= 0, "epoch", "an epoch >= 0", self.epoch)
        check(min(self.source, self.target) >= 0, "source", "block indices >= 0 (source and target)", self.source)
        check(self.count >= 1, "count", "an integer >= 1", self.count)
        check(self.rescale > 0, "rescale", "a number > 0", self.rescale)


@register_config("vpt_deep", "VPT-deep")
@dataclass
class VPTDeepConfig(PromptConfig):
    blocks: list[int] | None = None  # which blocks get prompts; None: all of them
    moves: list[ScriptedMove] = field(default_factory=list)  # scripted moves; none: plain VPT-deep

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.blocks is None or all(b >= 0 for b in self.blocks),
            "blocks",
            "null or a list of block indices >= 0",
            self.blocks,
        )


@register_config("vpt_shallow", "VPT-shallow")
@dataclass
class VPTShallowConfig(PromptConfig):
    dropout: float = 0.0
