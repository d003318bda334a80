"""VPT (Jia et al. 2022): learnable prompt tokens in a frozen ViT.

VPT-deep inserts N prompts at every block, replacing the previous block's prompt outputs; with
`blocks` (VPT's depth ablation) a block without prompts carries the previous ones on.
VPT-shallow inserts N prompts once, before block 0, and carries them through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from timm.models.vision_transformer import VisionTransformer

from provpt_core.methods.base import Method
from provpt_core.methods.config.vpt import PromptConfig, ScriptedMove, VPTDeepConfig, VPTShallowConfig  # noqa: F401 (re-exported)
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT
from provpt_core.prompts import Insertion, PromptBank, vpt_init_range

if TYPE_CHECKING:
    from provpt_core.methods.base import TrainerView


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


@register_method("vpt_shallow")
class VPTShallow(Method):
    config_class = VPTShallowConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        counts = [self.config.num_prompts] + [0] * (len(backbone.blocks) - 1)
        return prompted_vit(self.config, backbone, num_classes, counts, "carry")
