"""The optimisation recipe of a trial: optimizer parameter groups and the lr schedule.

Both read only the trial's `TrainConfig`, so a recipe (provpt_core.recipes) is fields, not code.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from provpt_core.trial import TrainConfig


def make_optimizer(groups: list[dict[str, Any]], head_bias: torch.nn.Parameter, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over a method's parameter groups: a group with "role": "head" takes the
    head lr; the parameters `train.no_decay` exempts get a group of their own without decay."""

    def exempt(param: torch.nn.Parameter) -> bool:
        if train.no_decay == "head_bias":
            return param is head_bias
        return train.no_decay == "biases_and_norms" and param.ndim <= 1

    optimizer_groups = []
    for group in groups:
        group = dict(group)
        role = group.pop("role", "body")
        lr = train.head_lr if role == "head" and train.head_lr is not None else train.lr
        params = group.pop("params")
        free = [p for p in params if exempt(p)]
        if free:
            optimizer_groups.append({"params": free, "lr": lr, "weight_decay": 0.0, **group})
        decayed = [p for p in params if not exempt(p)]
        optimizer_groups.append({"params": decayed, "lr": lr, "weight_decay": train.weight_decay, **group})
    if train.optimizer == "sgd":
        return torch.optim.SGD(optimizer_groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(optimizer_groups, lr=train.lr)


def lr_factor(train: TrainConfig, steps_per_epoch: int, tick: int) -> float:
    """The lr factor at scheduler tick `tick` (an epoch, or a step with schedule_unit step):
    constant, or a linear warm-up then a cosine decay to 0."""
    if train.schedule == "constant":
        return 1.0
    per_tick = steps_per_epoch if train.schedule_unit == "step" else 1
    warmup, total = train.warmup_epochs * per_tick, train.epochs * per_tick
    if tick < warmup:
        return tick / warmup if train.warmup_from_zero else (tick + 1) / warmup
    progress = (tick - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
