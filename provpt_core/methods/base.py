"""What a fine-tuning method is: its config, its model, and its hooks into the epoch loop.

A method knows nothing of the loop that runs it (the engine's `Trainer`); the trainer calls
the hooks below at fixed points and hands over a `TrainerView`: exactly what a method may use
of it (the model, the optimizer, the trial config, the data through a few calls, events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from provpt_core.methods.config.base import MethodConfig
from provpt_core.model import PromptedViT
from provpt_core.prompts import PromptBank

if TYPE_CHECKING:
    from provpt_core.trial import TrialConfig


class TrainerView(Protocol):
    """The part of the trainer a method's hooks may use (tests/test_methods.py checks that
    the methods use nothing else)."""

    model: PromptedViT
    optimizer: torch.optim.Optimizer
    config: TrialConfig
    device: torch.device

    @property
    def num_classes(self) -> int: ...

    def split_labels(self, split: str) -> torch.Tensor: ...

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def fixed_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def split_features(
        self, split: str, features: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor: ...

    def emit(self, event: str, payload: dict[str, Any]) -> None: ...


class Method:
    """Base class: a linear head on the frozen backbone, with no-op hooks."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    frozen_features: ClassVar[bool] = False  # the config class's (set at registration)

    @classmethod
    def epoch_cost(cls, config: MethodConfig) -> float:
        """An epoch's cost in training passes over the train split (a plan's estimate only)."""
        return 1.0

    @classmethod
    def measurement_images(cls, config: MethodConfig, batch_size: int, depth: int) -> float:
        """Forward passes of images, over a whole trial, that the method spends measuring rather
        than training (a plan's estimate only; an image's forward costs a third of a training step)."""
        return 0.0

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        return PromptedViT(backbone, num_classes, prompts=None, head_bias=self.config.head_bias)

    def param_groups(self, model: PromptedViT) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry "role": "head" for a separate head lr."""
        head = list(model.head.parameters())
        head_ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head, "role": "head"}]
        if rest:
            groups.insert(0, {"params": rest, "role": "body"})
        return groups

    # Hooks, in the order the trainer calls them. All optional.
    def setup(self, trainer: TrainerView) -> None:
        """Once the model, optimizer and data exist, before a checkpoint is restored."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Before the training batches of `epoch` (0-based)."""

    def training_loss(self, trainer: TrainerView, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of a training forward (cross-entropy); a method may add terms from what it
        captured during that forward."""
        return F.cross_entropy(logits.float(), labels)

    def after_backward(self, trainer: TrainerView, loss: torch.Tensor, labels: torch.Tensor) -> None:
        """After a training step's backward and gradient clipping, before the optimizer step."""

    def artifacts(self, model: PromptedViT) -> dict[str, torch.Tensor]:
        """What a finished trial exports of the method (float32, on the CPU): a prompt bank's
        prompts and the block each sits in; nothing for a method without one."""
        bank = model.prompts
        if not isinstance(bank, PromptBank):
            return {}
        return {"prompts": bank.weight.detach().float().cpu().contiguous(), "block_of": bank.block_of.cpu().contiguous()}

    def state_dict(self) -> dict[str, Any]:
        """Method state outside the model (e.g. an allocator), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise KeyError(f"method {self.name} keeps no state, but the checkpoint has {sorted(state)}")
