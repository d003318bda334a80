"""Bottleneck adapters (Houlsby et al. 2019) on a frozen ViT, the "Adapter" row of the VTAB-1k
tables (NOAH, V-PETL Bench, PRO-VPT).

An adapter maps a sub-layer's output y to y + up(dropout(GELU(down(y)))), with down: dim -> r
and up: r -> dim, and the block then adds the result to its residual stream as it added y. A
forward hook puts one after the MLP of every block (sequential, as NOAH re-implements it)
and, Houlsby's placement, one after every attention (after its output projection). The
up-projection starts at zero (weight and bias), so at init every adapter is the identity and
the model computes exactly what the frozen backbone computes. Houlsby et al. also train the
backbone's layer-norm parameters per task; `train_norms` does that for every LayerNorm (the
blocks' norm1 and norm2 and the final norm), the one part of the backbone that then trains.

Which setting gives PRO-VPT's 0.35 M (ViT-B/16: dim 768, 12 blocks, 25 LayerNorms; head
excluded). One adapter of width r has 2 * 768 * r weights, plus r + 768 biases:

=====================================================  =========  =====
setting                                                params     M
=====================================================  =========  =====
after the MLP only, r = 8 (NOAH's config)               156,768   0.16
after the MLP only, r = 16                              304,320   0.30
after the MLP only, r = 18                              341,208   0.34
after the MLP only, r = 19                              359,652   0.36
after the MLP only, r = 19, no biases                   350,208   0.35
after attention and MLP, r = 8, no layer norms          313,536   0.31
after attention and MLP, r = 8, every LayerNorm         351,936   0.35  <- the default
=====================================================  =========  =====

No width of one adapter per block with biases rounds to 0.35 M (only the odd r = 19 without
biases does); Houlsby's own configuration at the bottleneck width 8 that the VTAB-1k tables
use does: two adapters per block (313,536) plus the LayerNorm scales and shifts (25 x 2 x 768
= 38,400). It is also the "houlsby" configuration of the Adapters-Strike-Back code (attention
adapters on, width 8, every LayerNorm trained). PRO-VPT does not spell out its Adapter
configuration in what we could read, so this is the sensible setting that reproduces its
count, not a confirmed one. ``attention: false, train_norms: false`` is NOAH's 0.16 M adapter.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from provpt_core.methods.base import Method
from provpt_core.methods.config.adapter import AdapterConfig
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT


class BottleneckAdapter(nn.Module):
    """y -> y + up(dropout(GELU(down(y)))), identity at init (up is zero)."""

    def __init__(self, dim: int, width: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width, bias=bias)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(width, dim, bias=bias)
        nn.init.zeros_(self.up.weight)
        if bias:
            nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.dropout(self.act(self.down(y)))).to(y.dtype)

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self(output)


class BlockAdapters(nn.Module):
    """The adapters of one block: after its MLP, and after its attention if asked."""

    def __init__(self, dim: int, config: AdapterConfig) -> None:
        super().__init__()
        def make() -> BottleneckAdapter:
            return BottleneckAdapter(dim, config.bottleneck, config.bias, config.dropout)

        self.attn = make() if config.attention else None
        self.mlp = make()


@register_method("adapter")
class Adapter(Method):
    config_class = AdapterConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        model = super().build_model(backbone, num_classes)
        dim = backbone.embed_dim
        model.extras["adapters"] = nn.ModuleList(BlockAdapters(dim, self.config) for _ in backbone.blocks)
        for block, adapters in zip(backbone.blocks, model.extras["adapters"]):
            block.mlp.register_forward_hook(adapters.mlp.hook)
            if adapters.attn is not None:
                block.attn.register_forward_hook(adapters.attn.hook)
        if self.config.train_norms:
            for module in backbone.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)
        return model
