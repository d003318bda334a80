"""PRO-VPT (ICCV 2025): VPT-deep whose prompts are relocated between blocks while training.

Every relocation epoch the most idle prompt (first-order Taylor score) is pruned and an
allocator (PPO by default) places it in another block. Idleness comes either from the
gradients the training steps already compute (`idleness: accumulated`, no extra cost) or, as
in the reference, from a separate pass over the training set at the start of the epoch with
prompts frozen, dropout on and the head's gradients clipped jointly (`idleness: reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from provpt_core.methods.registry import register_method
from provpt_core.methods.vpt import VPTDeep, VPTDeepConfig
from provpt_core.relocation import IdlenessMeter, RelocationConfig, Relocator

if TYPE_CHECKING:
    from provpt_core.engine import Trainer


@dataclass
class ProVPTConfig(VPTDeepConfig):
    relocation: RelocationConfig = field(default_factory=RelocationConfig)


@register_method("provpt")
class ProVPT(VPTDeep):
    config_class = ProVPTConfig

    def setup(self, trainer: Trainer) -> None:
        bank = trainer.model.prompts
        self.meter = IdlenessMeter(bank.num_prompts)
        self.relocator = Relocator(self.config.relocation, bank.num_blocks, trainer.config.train.seed)

    def after_backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        if self.config.relocation.idleness == "accumulated":
            bank = trainer.model.prompts
            self.meter.add(bank.weight, bank.weight.grad, loss)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.relocator.is_due(epoch, trainer.config.train.epochs):
            if self.config.relocation.idleness == "reference":
                self.meter.reset()
                self._identification_pass(trainer)
            event = self.relocator.step(
                trainer.model.prompts,
                trainer.optimizer,
                self.meter.scores(),
                self.meter.loss(trainer.config.train.batch_size),
                epoch,
            )
            trainer.emit("relocation", event)
        self.meter.reset()

    def _identification_pass(self, trainer: Trainer) -> None:
        """The reference's pass: gradients over the training set, no optimizer step."""
        model = trainer.model
        clipped = [model.prompts.weight, *model.head.parameters()]
        model.train()
        for inputs, labels in trainer.train_batches():
            trainer.optimizer.zero_grad(set_to_none=True)
            loss = trainer.loss(inputs, labels)
            loss.backward()
            if self.config.relocation.identification_clip is not None:
                torch.nn.utils.clip_grad_norm_(clipped, self.config.relocation.identification_clip)
            self.meter.add(model.prompts.weight, model.prompts.weight.grad, loss)
        trainer.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"meter": self.meter.state_dict(), "relocator": self.relocator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state["meter"])
        self.relocator.load_state_dict(state["relocator"])
