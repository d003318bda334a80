"""Which backbone a trial uses and where its weights come from: a config only (no torch), so a
study file is checked without loading the model code."""

from __future__ import annotations

from dataclasses import dataclass

from provpt_core.config import check

PRETRAINED = "pretrained"
RANDOM = "random"
WEIGHT_SUFFIXES = (".npz", ".safetensors", ".pth", ".pt", ".bin")


@dataclass
class BackboneConfig:
    """Which ViT, and where its weights come from."""

    name: str = "vit_base_patch16_224.orig_in21k"
    weights: str = PRETRAINED  # "pretrained", "random", or a .npz / .safetensors / .pth path
    img_size: int | None = None  # None: the model's own input size

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "a timm model name", self.name)
        check(
            self.weights in (PRETRAINED, RANDOM) or self.weights.endswith(WEIGHT_SUFFIXES),
            "weights",
            f"'pretrained', 'random' or a path ending in one of {', '.join(WEIGHT_SUFFIXES)}",
            self.weights,
        )
