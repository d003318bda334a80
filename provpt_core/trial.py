"""A trial's whole config: backbone, method, training and evaluation. A trial runs from this alone.

`TrialConfig.from_dict` reads the nested dict of a study file or a checkpoint. A ``preset``
key names a registered set of values (e.g. ``reference``: PRO-VPT's published command) that
the rest of the dict then overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from provpt_core.backbone import BackboneConfig
from provpt_core.config import ConfigError, as_dict, build, check
from provpt_core.data.loading import DataConfig
from provpt_core.methods import MethodConfig, build_method_config, method_spec
from provpt_core.methods.vpt import VPTDeepConfig


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
    warmup_epochs: int = 0  # linear warm-up before the cosine decay
    grad_clip: float | None = 0.25  # global gradient-norm clip on every step; None: off
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
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
        check(self.threads is None or self.threads >= 1, "threads", "null or an integer >= 1", self.threads)


@dataclass
class EvalConfig:
    """What is evaluated when. The val split is always scored after the last epoch."""

    val_every: int = 0  # also score val every n epochs; 0: only after the last epoch
    test_at_end: bool = True  # score the test split once, after the last epoch
    batch_size: int = 256

    def __post_init__(self) -> None:
        check(self.val_every >= 0, "val_every", "an integer >= 0", self.val_every)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)


@dataclass
class TrialConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=VPTDeepConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)  # used when fit() is given no data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"trial config: expected a mapping, got {data!r}")
        data = copy.deepcopy(data)
        preset = data.pop("preset", None)
        if preset is not None:
            data = merge_config(get_preset(preset), data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown field; expected one of preset, {', '.join(sorted(known))}")
        method = build_method_config(data.pop("method", {"name": "vpt_deep"}))
        return cls(method=method, **{name: build(_FIELD_TYPES[name], value, name) for name, value in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": as_dict(self.backbone),
            "method": method_spec(self.method),
            "train": as_dict(self.train),
            "eval": as_dict(self.eval),
            "data": as_dict(self.data),
        }


_FIELD_TYPES = {"backbone": BackboneConfig, "train": TrainConfig, "eval": EvalConfig, "data": DataConfig}

PRESETS: dict[str, dict[str, Any]] = {
    # The authors' published PRO-VPT command (CIFAR-100, VTAB-1k): ViT-B/16 orig_in21k, 20
    # prompts per block, reference identification pass and PPO, SGD lr 2.5 constant, 100
    # epochs, batch 64, clip 0.25. Their seeds are 18, 25 and 42.
    "reference": {
        "backbone": {"name": "vit_base_patch16_224.orig_in21k", "weights": "pretrained"},
        "method": {
            "name": "provpt",
            "num_prompts": 20,
            "dropout": 0.1,
            "relocation": {"idleness": "reference", "allocator": "ppo"},
        },
        "train": {
            "epochs": 100,
            "batch_size": 64,
            "optimizer": "sgd",
            "lr": 2.5,
            "weight_decay": 1e-4,
            "momentum": 0.9,
            "schedule": "constant",
            "grad_clip": 0.25,
            "seed": 42,
        },
    },
}
REFERENCE_SEEDS = (18, 25, 42)


def get_preset(name: str) -> dict[str, Any]:
    try:
        return copy.deepcopy(PRESETS[name])
    except KeyError:
        raise ConfigError(f"preset: unknown preset '{name}'; expected one of {', '.join(PRESETS)}") from None


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s values in, mappings merged key by key (shares their values:
    copy what must stay untouched)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            # a method override naming another method replaces the preset's method whole
            if key == "method" and value.get("name", merged[key]["name"]) != merged[key]["name"]:
                merged[key] = value
            else:
                merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged
