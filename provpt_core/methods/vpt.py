"""VPT (Jia et al. 2022): learnable prompt tokens in a frozen ViT.

VPT-deep inserts N prompts at every block, replacing the previous block's prompt outputs; with
`blocks` (VPT's depth ablation) a block without prompts carries the previous ones on.
VPT-shallow inserts N prompts once, before block 0, and carries them through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from timm.models.vision_transformer import VisionTransformer

from provpt_core.config import check
from provpt_core.methods.base import Method, MethodConfig
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT
from provpt_core.prompts import Insertion, PromptBank, vpt_init_range

if TYPE_CHECKING:
    from provpt_core.methods.base import TrainerView


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


def prompted_vit(
    config: PromptConfig,
    backbone: VisionTransformer,
    num_classes: int,
    counts: list[int],
    insertion: Insertion,
    spare: int = 0,
) -> PromptedViT:
    """A PromptedViT whose prompt bank holds `counts[l]` prompts at block l (and `spare` rows
    outside the model)."""
    dim = backbone.embed_dim
    init_range = config.init_range
    if init_range is None:
        init_range = vpt_init_range(backbone.patch_embed.patch_size[0], dim)
    bank = PromptBank(counts, dim, init_range, config.dropout, insertion, spare)
    return PromptedViT(backbone, num_classes, prompts=bank, head_bias=config.head_bias)


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


@register_method("vpt_deep")
class VPTDeep(Method):
    config_class = VPTDeepConfig
    insertion: Insertion = "keep_until_replaced"

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        depth = len(backbone.blocks)
        blocks = range(depth) if self.config.blocks is None else self.config.blocks
        if any(b >= depth for b in blocks):
            raise ValueError(f"method.blocks: {list(blocks)} names a block >= the backbone's {depth}")
        for move in self.config.moves:
            if max(move.source, move.target) >= depth:
                raise ValueError(f"method.moves: {move} names a block >= the backbone's {depth}")
        counts = [self.config.num_prompts if b in blocks else 0 for b in range(depth)]
        return prompted_vit(self.config, backbone, num_classes, counts, self.insertion, self.spare_prompts())

    def spare_prompts(self) -> int:
        """Rows of the prompt bank that start outside the model."""
        return 0

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        for move in self.config.moves:
            if move.epoch == epoch:
                trainer.emit("scripted_move", apply_move(trainer.model.prompts, move))


def apply_move(bank: PromptBank, move: ScriptedMove) -> dict:
    """Move the last `move.count` prompts of the source block (none when the target is the
    source, as PRO-VPT's choice of the source block); the event record."""
    rows = bank.block_rows(move.source).tolist()
    if len(rows) < move.count:
        raise ValueError(
            f"method.moves: at epoch {move.epoch} block {move.source} holds {len(rows)} prompts, "
            f"{move.count} cannot move"
        )
    moved = rows[len(rows) - move.count :] if move.target != move.source else []
    for prompt in moved:
        bank.relocate(prompt, move.target, move.rescale)
    return {"epoch": move.epoch, "prompts": moved, "source": move.source, "target": move.target, "distribution": bank.counts()}


@dataclass
class VPTShallowConfig(PromptConfig):
    dropout: float = 0.0


@register_method("vpt_shallow")
class VPTShallow(Method):
    config_class = VPTShallowConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        counts = [self.config.num_prompts] + [0] * (len(backbone.blocks) - 1)
        return prompted_vit(self.config, backbone, num_classes, counts, "carry")
