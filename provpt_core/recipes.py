"""Each method's training recipe as its authors published it, beside the shared protocol.

A study runs every method either under one shared protocol (the study's `trial` section: a
fair comparison) or under its authors' recipe (a reproduction). A recipe is a fragment of the
trial config (train, eval and method fields) with its source; the trial config records which
recipe it was built from (`TrialConfig.recipe`), so every run says how it was trained.

What a recipe cannot express is written in its `not_reproduced`, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SHARED = "shared"


@dataclass(frozen=True)
class Recipe:
    name: str
    methods: tuple[str, ...]  # the registered methods whose authors ran this recipe
    source: str
    config: dict[str, Any]  # trial-config fragment: "train", "eval", "method" (fields of the method)
    seeds: tuple[int, ...] = ()  # the authors' seeds, for the record (studies pick their own)
    not_reproduced: tuple[str, ...] = field(default=())


_VPT_TRAIN = {
    "epochs": 100,
    "batch_size": 128,
    "optimizer": "sgd",
    "momentum": 0.9,
    "schedule": "cosine",
    "warmup_epochs": 10,
    "warmup_from_zero": True,
    "no_decay": "head_bias",
    "grad_clip": None,
}

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "vpt",
            ("linear", "vpt_shallow", "vpt_deep"),
            "VPT (Jia et al. 2022) code, base config: SGD momentum 0.9, batch 128, cosine after a "
            "10-epoch warm-up whose factor is e/10 from epoch 0, no weight decay on the head bias, "
            "no gradient clipping; lr and weight decay searched per task",
            {"train": _VPT_TRAIN},
        ),
        Recipe(
            "vpt_full",
            ("full",),
            "VPT (Jia et al. 2022): its full fine-tuning row uses AdamW, otherwise VPT's recipe",
            {"train": {**_VPT_TRAIN, "optimizer": "adamw"}},
        ),
        Recipe(
            "vapt",
            ("vapt",),
            "VAPT (arXiv 2501.18936) code: VPT's recipe without gradient clipping, kernel init randn",
            {"train": _VPT_TRAIN, "method": {"conv_init": "randn"}},
            seeds=(42, 44, 82, 100, 800),
        ),
        Recipe(
            "provpt",
            ("provpt",),
            "PRO-VPT (ICCV 2025) published command: SGD lr 2.5 constant, batch 64, clip 0.25, fp32, "
            "reference identification pass, PPO",
            {
                "train": {
                    "epochs": 100,
                    "batch_size": 64,
                    "optimizer": "sgd",
                    "lr": 2.5,
                    "weight_decay": 1e-4,
                    "momentum": 0.9,
                    "schedule": "constant",
                    "grad_clip": 0.25,
                    "precision": "fp32",
                },
                "method": {"num_prompts": 20, "dropout": 0.1, "relocation": {"idleness": "reference", "allocator": "ppo"}},
            },
            seeds=(18, 25, 42),
        ),
        Recipe(
            "davpt",
            ("davpt", "davpt_plus"),
            "DA-VPT (CVPR 2025) code: AdamW, cosine per step, batch 32 with a class-balanced sampler, "
            "fp16, gradient values clipped at 10, no weight decay on biases and norms; they report the best test accuracy from epoch 60 on "
            "(here a labelled readout beside the last epoch's)",
            {
                "train": {
                    "epochs": 100,
                    "batch_size": 32,
                    "optimizer": "adamw",
                    "schedule": "cosine",
                    "schedule_unit": "step",
                    "sampler": "class_balanced",
                    "grad_clip": None,
                    "grad_clip_value": 10.0,
                    "precision": "fp16",
                    "no_decay": "biases_and_norms",
                },
                # their reported number, as a labelled readout beside ours: never for selection
                "eval": {"late_test_from": 60},
            },
            not_reproduced=(
                "drop-path 0-0.1 (the backbone stays in eval mode here)",
                "a separate weight decay for the head",
                "vit_base_patch16_224.augreg_in21k weights: set the study's backbone",
            ),
        ),
    )
}


def published_recipe(method: str) -> Recipe | None:
    """The recipe `method`'s authors ran, or None when none is sourced."""
    return next((r for r in RECIPES.values() if method in r.methods), None)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe '{name}'; expected one of {', '.join(RECIPES)}") from None
