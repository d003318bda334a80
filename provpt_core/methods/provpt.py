"""PRO-VPT (ICCV 2025): VPT-deep whose prompts are relocated between blocks while training.

Every relocation epoch the most idle prompt (first-order Taylor score) is pruned and an
allocator (PPO by default) places it in another block. Idleness comes either from the
gradients the training steps already compute (`idleness: accumulated`, no extra cost) or, as
in the reference, from a separate pass over the training set at the start of the epoch with
prompts frozen and dropout on, each batch's head gradients and gate gradients (the scores)
clipped jointly (`idleness: reference`).

For the paper's analyses, the criterion (`relocation.criterion`: taylor, norm, random), the
adjustment (`relocation.adjustment`: relocate, or add a prompt) and the allocator (`ppo_joint`:
L^2 actions) are fields, and `fidelity.epochs` records, at those epochs, every prompt's score
beside the measured loss change when it is removed (relocation/fidelity.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from provpt_core.methods.registry import register_method
from provpt_core.methods.config.provpt import ProVPTConfig
from provpt_core.methods.vpt import VPTDeep
from provpt_core.prompts import PRUNED, PromptBank
from provpt_core.relocation.fidelity import removal_effects, taylor_scores
from provpt_core.relocation.idleness import IdlenessMeter
from provpt_core.relocation.relocator import Relocator
from provpt_core.relocation.idleness import clip_factor, idleness, norm_scores, random_scores

if TYPE_CHECKING:
    from provpt_core.methods.base import TrainerView


@register_method("provpt")
class ProVPT(VPTDeep):
    config_class = ProVPTConfig
    insertion = "replace"  # a block that relocation emptied inserts nothing, as the reference
    REFERENCE_PASS_COST = 2.2  # bench/core_step.py: an epoch with the reference identification pass

    @classmethod
    def epoch_cost(cls, config: ProVPTConfig) -> float:
        return cls.REFERENCE_PASS_COST if config.relocation.idleness == "reference" else 1.0

    RANDOM_CRITERION_STREAM = 7919  # the random criterion's generator: seed + this, apart from the allocator's

    @classmethod
    def measurement_images(cls, config: ProVPTConfig, batch_size: int, depth: int) -> float:
        """Fidelity: per measured epoch, the base loss, a gradient (~3 forwards), and two
        forwards per prompt (dropped, zeroed), each over the fixed batches."""
        fidelity = config.fidelity
        prompts = depth * config.num_prompts + config.relocation.max_added
        measurements = len(fidelity.epochs) + len(fidelity.fractions)
        return measurements * (2 * prompts + 4) * fidelity.batches * batch_size

    def spare_prompts(self) -> int:
        relocation = self.config.relocation
        return relocation.max_added if relocation.adjustment == "add" else 0

    def setup(self, trainer: TrainerView) -> None:
        bank = trainer.model.prompts
        self.meter = IdlenessMeter(bank.num_prompts)
        seed = trainer.config.train.seed
        self.relocator = Relocator(self.config.relocation, bank.num_blocks, seed)
        self.generator = torch.Generator().manual_seed(seed + self.RANDOM_CRITERION_STREAM)

    def after_backward(self, trainer: TrainerView, loss: torch.Tensor, labels: torch.Tensor) -> None:
        if self.config.relocation.idleness == "accumulated":
            bank = trainer.model.prompts
            self.meter.add(bank.weight, bank.weight.grad, loss, len(labels))

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        super().on_epoch_start(trainer, epoch)
        due = self.relocator.is_due(epoch, trainer.config.train.epochs)
        if due and self.config.relocation.idleness == "reference":
            self.meter.reset()
            self._identification_pass(trainer)
        if epoch in self.config.fidelity.measured_epochs(trainer.config.train.epochs):
            trainer.emit("fidelity", self._fidelity(trainer, epoch, scored=due or self.meter.batches > 0))
        if due:
            bank = trainer.model.prompts
            event = self.relocator.step(bank, trainer.optimizer, self._scores(bank), self.meter.loss(), epoch)
            trainer.emit("relocation", event)
        self.meter.reset()

    def _scores(self, bank: PromptBank) -> torch.Tensor:
        """Every prompt's idleness under the configured criterion."""
        criterion = self.config.relocation.criterion
        if criterion == "norm":
            return norm_scores(bank.weight, bank.block_of)
        if criterion == "random":
            return random_scores(bank.num_prompts, self.generator)
        return self.meter.scores()

    def _fidelity(self, trainer: TrainerView, epoch: int, scored: bool) -> dict[str, Any]:
        """Scores beside measured removal effects on fixed batches, without touching training:
        eval mode, no random number drawn, every prompt restored."""
        model, bank = trainer.model, trainer.model.prompts
        batches = trainer.fixed_batches(self.config.fidelity.batches)
        was_training = model.training
        model.eval()
        taylor = taylor_scores(model, bank, batches)
        effects = removal_effects(model, bank, batches)
        model.train(was_training)
        active = torch.nonzero(bank.block_of != PRUNED).flatten().cpu()
        record = {
            "epoch": epoch,
            "prompt": active.tolist(),
            "block": bank.block_of.cpu()[active].tolist(),
            "taylor": taylor[active].tolist(),
            "loss_change_dropped": effects["dropped"][active].tolist(),
            "loss_change_zeroed": effects["zeroed"][active].tolist(),
        }
        if scored and self.config.relocation.criterion == "taylor":  # the score relocation uses now
            record["method_score"] = self.meter.scores()[active].tolist()
        return record

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
        return {
            "meter": self.meter.state_dict(),
            "relocator": self.relocator.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state["meter"])
        self.relocator.load_state_dict(state["relocator"])
        if "generator" in state:  # checkpoints written before the random criterion existed have none
            self.generator.set_state(state["generator"])
