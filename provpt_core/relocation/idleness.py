"""Idleness: which prompt contributes least. Larger positive = more idle.

The paper's criterion (`taylor`): for prompt k, I_k = <dL/dp_k, p_k>, the gradient of a unit
gate multiplying p_k, so removing k changes the loss by about -I_k. The alternatives of its
ablation: `norm`, the prompt's norm relative to the mean norm of the prompts in the model (a
short prompt is idle), and `random`, a uniform draw (pruning at random).
"""

from __future__ import annotations

import torch

from provpt_core.prompts import PRUNED



def idleness(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-prompt scores <grad_k, p_k> for a prompt bank weight [n, dim]."""
    return (grad.detach() * weight.detach()).sum(dim=1)


def norm_scores(weight: torch.Tensor, block_of: torch.Tensor) -> torch.Tensor:
    """1 - |p_k| / mean |p| over the prompts in the model: positive for a prompt shorter than
    the mean; 0 for the prompts outside the model."""
    norms = torch.linalg.vector_norm(weight.detach().float(), dim=1).cpu()
    active = block_of.cpu() != PRUNED
    scores = torch.zeros_like(norms)
    if active.any():
        scores[active] = 1.0 - norms[active] / norms[active].mean().clamp_min(1e-12)
    return scores


def random_scores(count: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores in (0, 1): every prompt is a candidate, the most idle one at random."""
    return torch.rand(count, generator=generator) + 1e-6


def clip_factor(max_norm: float, *gradients: torch.Tensor) -> torch.Tensor:
    """The factor `torch.nn.utils.clip_grad_norm_` would multiply these gradients by: a joint
    clip of the head's gradients and the gate gradients (the scores) is the reference's."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in gradients]))
    return (max_norm / (norm + 1e-6)).clamp(max=1.0)


class IdlenessMeter:
    """Mean idleness per prompt and the reference's training-loss figure over a set of batches.

    The loss figure is what the reference feeds its reward: each batch's mean loss divided by
    that batch's size, summed over the batches (a partial last batch weighs more).
    """

    def __init__(self, num_prompts: int) -> None:
        self.score_sum = torch.zeros(num_prompts, dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.batches = 0

    def add(self, weight: torch.Tensor, grad: torch.Tensor, batch_loss: torch.Tensor, batch_size: int) -> None:
        """One batch: scores from the prompts' gradients, and its mean loss."""
        self.add_scores(idleness(weight, grad), batch_loss, batch_size)

    def add_scores(self, scores: torch.Tensor, batch_loss: torch.Tensor, batch_size: int) -> None:
        if self.score_sum.device != scores.device:
            self.score_sum = self.score_sum.to(scores.device)
            self.loss_sum = self.loss_sum.to(scores.device)
        self.score_sum += scores.detach().double()
        self.loss_sum += batch_loss.detach().double() / batch_size
        self.batches += 1

    def scores(self) -> torch.Tensor:
        return (self.score_sum / max(self.batches, 1)).float().cpu()

    def loss(self) -> float:
        return float(self.loss_sum)

    def reset(self) -> None:
        self.score_sum.zero_()
        self.loss_sum.zero_()
        self.batches = 0

    def state_dict(self) -> dict:
        return {"score_sum": self.score_sum.cpu(), "loss_sum": self.loss_sum.cpu(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.score_sum = state["score_sum"].clone()
        self.loss_sum = state["loss_sum"].clone()
        self.batches = int(state["batches"])
