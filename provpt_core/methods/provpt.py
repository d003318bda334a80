"""PRO-VPT (ICCV 2025): VPT-deep whose prompts are relocated between blocks while training.

Every relocation epoch the most idle prompt (first-order Taylor score) is pruned and an
allocator (PPO by default) places it in another block. Idleness comes either from the
gradients the training steps already compute (`idleness: accumulated`, no extra cost) or, as
in the reference, from a separate pass over the training set at the start of the epoch with
prompts frozen and dropout on, each batch's head gradients and gate gradients (the scores)
clipped jointly (`idleness: reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from provpt_core.methods.registry import register_method
from provpt_core.methods.vpt import VPTDeep, VPTDeepConfig
from provpt_core.relocation import IdlenessMeter, RelocationConfig, Relocator
from provpt_core.relocation.idleness import clip_factor, idleness

if TYPE_CHECKING:
    from provpt_core.methods.base import TrainerView


@dataclass
class ProVPTConfig(VPTDeepConfig):
    relocation: RelocationConfig = field(default_factory=RelocationConfig)


@register_method("provpt")
class ProVPT(VPTDeep):
    config_class = ProVPTConfig
    insertion = "replace"  # a block that relocation emptied inserts nothing, as the reference
    REFERENCE_PASS_COST = 2.2  # bench/core_step.py: an epoch with the reference identification pass

    @classmethod
    def epoch_cost(cls, config: ProVPTConfig) -> float:
        return cls.REFERENCE_PASS_COST if config.relocation.idleness == "reference" else 1.0

    def setup(self, trainer: TrainerView) -> None:
        bank = trainer.model.prompts
        self.meter = IdlenessMeter(bank.num_prompts)
        self.relocator = Relocator(self.config.relocation, bank.num_blocks, trainer.config.train.seed)

    def after_backward(self, trainer: TrainerView, loss: torch.Tensor, labels: torch.Tensor) -> None:
        if self.config.relocation.idleness == "accumulated":
            bank = trainer.model.prompts
            self.meter.add(bank.weight, bank.weight.grad, loss, len(labels))

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if self.relocator.is_due(epoch, trainer.config.train.epochs):
            if self.config.relocation.idleness == "reference":
                self.meter.reset()
                self._identification_pass(trainer)
            event = self.relocator.step(
                trainer.model.prompts, trainer.optimizer, self.meter.scores(), self.meter.loss(), epoch
            )
            trainer.emit("relocation", event)
        self.meter.reset()

    def _identification_pass(self, trainer: TrainerView) -> None:
        """The reference's pass: gradients over the training set, no optimizer step. The
        reference clips the head's gradients together with the gates' (whose gradients are
        the scores), so each batch's scores shrink by that joint clip factor."""
        model = trainer.model
        clip = self.config.relocation.identification_clip
        model.train()
        for inputs, labels in trainer.train_batches():
            trainer.optimizer.zero_grad(set_to_none=True)
            loss = trainer.loss(inputs, labels)
            loss.backward()
            scores = idleness(model.prompts.weight, model.prompts.weight.grad)
            if clip is not None:
                scores = scores * clip_factor(clip, scores, *(p.grad for p in model.head.parameters()))
            self.meter.add_scores(scores, loss, len(labels))
        trainer.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"meter": self.meter.state_dict(), "relocator": self.relocator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state["meter"])
        self.relocator.load_state_dict(state["relocator"])
