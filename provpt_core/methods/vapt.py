"""VAPT (arXiv 2501.18936): visual prompts built from each block's own input.

The first `static_blocks` blocks insert ordinary learnable prompts. Every later block l builds
its N prompts from the patch tokens it receives: a per-layer LayerNorm, the tokens laid out on
the patch grid, one KxK kernel shared by all channels (no padding) and Dropout2d, a per-layer
linear map from the grid positions to the N prompt slots (zero-initialised, so generated
prompts start at exactly 0), then a residual bottleneck projector d -> r -> d (no biases, ReLU,
dropout) shared by all layers. Every part is a switch for the ablations.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from provpt_core.methods.base import Method
from provpt_core.methods.config.vapt import VAPTConfig
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT
from provpt_core.prompts import PromptBank, vpt_init_range


class BottleneckProjector(nn.Module):
    """p + W_up ReLU(W_down p), no biases."""

    def __init__(self, dim: int, rank: int, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        return prompts + self.up(self.dropout(torch.relu(self.down(prompts))))


class PromptGenerator(nn.Module):
    """One block's prompts from its patch tokens: norm, shared-kernel conv, positions -> N slots."""

    def __init__(self, config: VAPTConfig, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        size = config.kernel_size if config.conv else 1
        if config.conv and (size > grid[0] or size > grid[1]):
            raise ValueError(f"method.kernel_size: {size} is larger than the patch grid {grid}")
        self.conv = nn.Conv2d(1, 1, size, bias=False) if config.conv else None
        if self.conv is not None and config.conv_init == "randn":
            nn.init.normal_(self.conv.weight)
        self.conv_dropout = nn.Dropout2d(config.conv_dropout)
        positions = (grid[0] - size + 1) * (grid[1] - size + 1)
        self.to_slots = nn.Linear(positions, config.num_prompts)
        nn.init.zeros_(self.to_slots.weight)
        nn.init.zeros_(self.to_slots.bias)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        batch, _, dim = patch_tokens.shape
        x = self.norm(patch_tokens).transpose(1, 2)  # [batch, dim, positions]
        if self.conv is not None:
            x = self.conv(x.reshape(batch * dim, 1, *self.grid))  # every channel, one kernel
            x = self.conv_dropout(x.reshape(batch, dim, -1, 1)).reshape(batch, dim, -1)
        return self.to_slots(x).transpose(1, 2)  # [batch, N, dim]


class VAPTPrompts(nn.Module):
    """The prompt source: static prompts first, generated prompts after."""

    insertion = "replace"

    def __init__(self, config: VAPTConfig, dim: int, depth: int, grid: tuple[int, int], init_range: float) -> None:
        super().__init__()
        static = min(config.static_blocks, depth)
        counts = [config.num_prompts] * static + [0] * (depth - static)
        self.static = PromptBank(counts, dim, init_range, config.dropout, "replace")
        self.static_blocks = static
        self.generators = nn.ModuleList(PromptGenerator(config, dim, grid) for _ in range(depth - static))
        projectors = 0 if not config.projector else (1 if config.shared_projector else depth - static)
        self.projectors = nn.ModuleList(
            BottleneckProjector(dim, config.projector_rank, config.projector_dropout) for _ in range(projectors)
        )

    def block_prompts(self, block: int, patch_tokens: torch.Tensor) -> torch.Tensor:
        if block < self.static_blocks:
            return self.static.block_prompts(block, patch_tokens)
        layer = block - self.static_blocks
        prompts = self.generators[layer](patch_tokens)
        if len(self.projectors):
            prompts = self.projectors[layer if len(self.projectors) > 1 else 0](prompts)
        return prompts


@register_method("vapt")
class VAPT(Method):
    config_class = VAPTConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        config = self.config
        dim = backbone.embed_dim
        init_range = config.init_range if config.init_range is not None else vpt_init_range(backbone.patch_embed.patch_size[0], dim)
        grid = tuple(backbone.patch_embed.grid_size)
        prompts = VAPTPrompts(config, dim, len(backbone.blocks), grid, init_range)
        return PromptedViT(backbone, num_classes, prompts=prompts, head_bias=config.head_bias)
