"""The bundled tiny ViT: 12 blocks like ViT-B/16, small enough to train trials on a CPU.

Registered with timm's model registry, so configs and study files name it like any other
backbone (``provpt_tiny_patch8_32``). Twelve blocks keep prompt distributions over blocks as
meaningful as on ViT-B/16; width 64 and 16 patch tokens keep an epoch of 800 images around a
second on one CPU core.
"""

from __future__ import annotations

from pathlib import Path

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

TINY_VIT_NAME = "provpt_tiny_patch8_32"
# Pretrained by scripts/pretrain_tiny_vit.py; its recipe and figures are in the .json beside it.
TINY_VIT_WEIGHTS = Path(__file__).parent / "weights" / f"{TINY_VIT_NAME}.safetensors"

default_cfgs = generate_default_cfgs(
    {
        TINY_VIT_NAME: {
            "file": str(TINY_VIT_WEIGHTS),
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        }
    }
)


@register_model
def provpt_tiny_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    architecture = dict(img_size=32, patch_size=8, embed_dim=64, depth=12, num_heads=4, mlp_ratio=4.0)
    return build_model_with_cfg(
        VisionTransformer,
        TINY_VIT_NAME,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **{**architecture, **kwargs},
    )
