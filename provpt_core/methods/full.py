"""Full fine-tuning: every backbone weight trains with the head, the reference row of every
table (VPT's recipe for it is AdamW; studies set `train.optimizer: adamw` for this method)."""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from provpt_core.methods.base import Method
from provpt_core.methods.config.simple import FullConfig
from provpt_core.methods.registry import register_method
from provpt_core.model import PromptedViT


@register_method("full")
class FullFineTuning(Method):
    config_class = FullConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        backbone.requires_grad_(True)
        return PromptedViT(backbone, num_classes, prompts=None, head_bias=self.config.head_bias)
