"""PromptedViT: a frozen timm ViT whose blocks see prompt tokens, and a linear head.

At block l the token sequence is [prefix (CLS), prompts, patch tokens]. Where the prompts come
from is the prompt source's business (a `PromptBank`, or a method's own generator): the model
only asks every block's source for the prompts to insert. Prompts get no position embedding.
"""

from __future__ import annotations

from typing import Protocol

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from provpt_core.methods.config.base import VPT_HEAD_BIAS


class PromptSource(Protocol):
    """What the model asks of its prompts: an `nn.Module` (so its parameters train and are
    saved) that gives each block the prompt tokens to insert."""

    insertion: str  # "carry": keep the previous block's prompts and add; otherwise replace them

    def block_prompts(self, block: int, patch_tokens: torch.Tensor) -> torch.Tensor | None: ...


class PromptedViT(nn.Module):
    """Frozen backbone + prompt source + linear head on the final CLS token."""

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        prompts: PromptSource | None = None,
        head_bias: float = VPT_HEAD_BIAS,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompts = prompts
        # a method's own trained modules that hook into the frozen backbone (LoRA's updates,
        # adapters, DA-VPT+'s bias offsets), by name: the one place a method adds to the model
        self.extras = nn.ModuleDict()
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.kaiming_normal_(self.head.weight, a=0, mode="fan_out")
        nn.init.constant_(self.head.bias, head_bias)

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    def train(self, mode: bool = True) -> PromptedViT:
        """Train mode for the prompt source and head only: the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The final CLS feature after the encoder's last norm, [batch, dim]."""
        vit = self.backbone
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        prefix = vit.num_prefix_tokens
        carried = 0  # prompt tokens currently in the sequence, right after the prefix
        for index, block in enumerate(vit.blocks):
            if self.prompts is not None:
                new = self.prompts.block_prompts(index, x[:, prefix + carried :])
                if new is not None:
                    kept = carried if self.prompts.insertion == "carry" else 0
                    x = torch.cat([x[:, : prefix + kept], new, x[:, prefix + carried :]], dim=1)
                    carried = kept + new.shape[1]
            x = block(x)
        x = vit.norm(x)
        return vit.fc_norm(x[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone weights: what a checkpoint must hold."""
        frozen = self._frozen_keys()
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        result = self.load_state_dict(state, strict=False)
        missing = sorted(set(result.missing_keys) - self._frozen_keys())
        if missing or result.unexpected_keys:
            raise KeyError(
                f"checkpoint does not fit this model: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )

    def _frozen_keys(self) -> set[str]:
        return {
            f"backbone.{name}"
            for name, p in self.backbone.named_parameters()
            if not p.requires_grad
        } | {f"backbone.{name}" for name, _ in self.backbone.named_buffers()}
