"""A trial's whole config: backbone, method, training and evaluation. A trial runs from this alone.

`TrialConfig.from_dict` reads the nested dict of a study file or a checkpoint. A ``preset``
key names a registered set of values (e.g. ``reference``: PRO-VPT's published command) that
the rest of the dict then overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from provpt_core.backbone_config import BackboneConfig
from provpt_core.config import ConfigError, as_dict, build, check
from provpt_core.data.config import DataConfig
from provpt_core.methods import MethodConfig, build_method_config, method_spec
from provpt_core.methods.config.vpt import VPTDeepConfig
from provpt_core.overrides import apply, merge
from provpt_core.recipes import RECIPES, SHARED


@dataclass
class TrainConfig:
    """The optimisation recipe. Defaults: PRO-VPT's published command (constant lr 2.5 is
    meant for SGD on prompts; searches override lr and weight decay per task)."""

    epochs: int = 100
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 2.5
    head_lr: float | None = None  # None: the same as lr
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    schedule: Literal["constant", "cosine"] = "constant"
    schedule_unit: Literal["epoch", "step"] = "epoch"  # the lr changes once per epoch or every step
    warmup_epochs: int = 0  # linear warm-up before the cosine decay
    # False: the warm-up's first lr is lr / warmup (it reaches lr in its last epoch); True: it
    # starts from 0, as VPT's (factor e / warmup in epoch e)
    warmup_from_zero: bool = False
    # parameters without weight decay: none; the head's bias (VPT's recipe); every bias and
    # norm weight, i.e. every 1-D parameter (DA-VPT's recipe)
    no_decay: Literal["none", "head_bias", "biases_and_norms"] = "none"
    grad_clip: float | None = 0.25  # global gradient-norm clip on every step; None: off
    grad_clip_value: float | None = None  # clip every gradient value to +-this (DA-VPT's recipe); None: off
    sampler: Literal["shuffle", "class_balanced"] = "shuffle"  # class_balanced: classes drawn equally often
    seed: int = 42
    # auto: bf16 on GPU, fp32 on CPU; fp16 uses a gradient scaler on GPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int | None = None  # torch CPU threads; None: torch's default
    device_data_mb: int = 4096  # splits up to this size live on the device for the whole trial

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(self.head_lr is None or self.head_lr > 0, "head_lr", "null or a number > 0", self.head_lr)
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        check(0 <= self.momentum < 1, "momentum", "a number in [0, 1)", self.momentum)
        check(
            0 <= self.warmup_epochs < self.epochs,
            "warmup_epochs",
            f"an integer in [0, epochs={self.epochs})",
            self.warmup_epochs,
        )
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "null or a number > 0", self.grad_clip)
        check(
            self.grad_clip_value is None or self.grad_clip_value > 0,
            "grad_clip_value",
            "null or a number > 0",
            self.grad_clip_value,
        )
        check(self.threads is None or self.threads >= 1, "threads", "null or an integer >= 1", self.threads)


@dataclass
class EvalConfig:
    """What is evaluated when. The val split is always scored after the last epoch."""

    val_every: int = 0  # also score val every n epochs; 0: only after the last epoch
    test_at_end: bool = True  # score the test split once, after the last epoch
    batch_size: int = 256
    # An "as published" readout, never a selection: also score test after every epoch from
    # this one (1-based) on and report the best (DA-VPT's authors report that number); None: off
    late_test_from: int | None = None

    def __post_init__(self) -> None:
        check(self.val_every >= 0, "val_every", "an integer >= 0", self.val_every)
        check(self.late_test_from is None or self.late_test_from >= 1, "late_test_from", "null or an epoch >= 1", self.late_test_from)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)


@dataclass
class TrialConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=VPTDeepConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)  # used when fit() is given no data
    recipe: str = SHARED  # the recipe this config was built from (recipes.py): a record, not a switch

    def __post_init__(self) -> None:
        check(self.recipe == SHARED or self.recipe in RECIPES, "recipe", f"'{SHARED}' or one of {', '.join(RECIPES)}", self.recipe)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"trial config: expected a mapping, got {data!r}")
        data = copy.deepcopy(data)
        preset = data.pop("preset", None)
        if preset is not None:
            data = merge(get_preset(preset), data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown field; expected one of preset, {', '.join(sorted(known))}")
        method = build_method_config(data.pop("method", {"name": "vpt_deep"}))
        recipe = data.pop("recipe", SHARED)
        sections = {name: build(_FIELD_TYPES[name], value, name) for name, value in data.items()}
        return cls(method=method, recipe=recipe, **sections)

    def override(self, values: dict[str, Any]) -> TrialConfig:
        """A copy with dotted-path values (``train.lr``, ``method.num_prompts``) set, checked."""
        return TrialConfig.from_dict(apply(self.to_dict(), values)) if values else self

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": as_dict(self.backbone),
            "method": method_spec(self.method),
            "train": as_dict(self.train),
            "eval": as_dict(self.eval),
            "data": as_dict(self.data),
            "recipe": self.recipe,
        }


_FIELD_TYPES = {"backbone": BackboneConfig, "train": TrainConfig, "eval": EvalConfig, "data": DataConfig}

PRESETS: dict[str, dict[str, Any]] = {
    # The authors' published PRO-VPT command (CIFAR-100, VTAB-1k) on their backbone: ViT-B/16
    # orig_in21k with PRO-VPT's recipe (recipes.py).
    "reference": {
        "backbone": {"name": "vit_base_patch16_224.orig_in21k", "weights": "pretrained"},
        "method": {"name": "provpt", **RECIPES["provpt"].config["method"]},
        "train": {**RECIPES["provpt"].config["train"], "seed": 42},
        "recipe": "provpt",
    },
}
REFERENCE_SEEDS = RECIPES["provpt"].seeds


def get_preset(name: str) -> dict[str, Any]:
    try:
        return copy.deepcopy(PRESETS[name])
    except KeyError:
        raise ConfigError(f"preset: unknown preset '{name}'; expected one of {', '.join(PRESETS)}") from None
