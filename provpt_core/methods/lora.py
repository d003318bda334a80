"""LoRA (Hu et al. 2022) on a frozen ViT, placed as the visual-PEFT literature places it for
VTAB-1k: low-rank updates of the attention query and value projections of every block.

timm fuses the three projections into one Linear, ``attn.qkv`` (dim -> 3 * dim, laid out
[q | k | v]). A forward hook on it adds ``B_t A_t dropout(x) * alpha / rank`` to the third of
target t (query and value by default); the other thirds pass through untouched. A is
kaiming-uniform (a = sqrt(5), nn.Linear's init) and B zero, as in the paper, so at init every
update is exactly zero and the model computes what the frozen backbone computes.

Trainable parameters, without the head: blocks x targets x rank x (dim + dim). On ViT-B/16
(dim 768, 12 blocks) with rank 8 on q and v: 12 x 2 x 8 x 1536 = 294,912, the 0.29 M of the
LoRA row in PRO-VPT's (and NOAH's) VTAB-1k table. (NOAH's implementation shares one A of rank
8 across q, k and v with a B of 3 x dim rows: 8 x 768 + 3 x 768 x 8 per block, also 294,912.)
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from provpt_core.methods.base import Method
from provpt_core.methods.config.lora import QKV_ORDER, LoRAConfig
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT

class LowRankUpdate(nn.Module):
    """x -> B A x for one projection: A [rank, in], B [out, rank]."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up)


class QKVLoRA(nn.Module):
    """The low-rank updates of one block's fused qkv projection, applied by a forward hook."""

    def __init__(self, qkv: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        if qkv.out_features % 3:
            raise ValueError(f"attn.qkv has {qkv.out_features} outputs, not three equal projections")
        self.third = qkv.out_features // 3
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout)
        self.updates = nn.ModuleDict(
            {
                target: LowRankUpdate(qkv.in_features, self.third, config.rank)
                for target in QKV_ORDER
                if target in config.targets
            }
        )

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = self.dropout(inputs[0])
        parts = list(output.split(self.third, dim=-1))
        for index, name in enumerate(QKV_ORDER):
            if name in self.updates:
                parts[index] = parts[index] + self.scaling * self.updates[name](x).to(output.dtype)
        return torch.cat(parts, dim=-1)


@register_method("lora")
class LoRA(Method):
    config_class = LoRAConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        model = super().build_model(backbone, num_classes)
        model.extras["lora"] = nn.ModuleList(QKVLoRA(block.attn.qkv, self.config) for block in backbone.blocks)
        for block, lora in zip(backbone.blocks, model.extras["lora"]):
            block.attn.qkv.register_forward_hook(lora.hook)
        return model
