"""Idleness: the first-order Taylor estimate of the loss change when a prompt is removed.

For prompt k, I_k = <dL/dp_k, p_k>: the gradient of a unit gate multiplying p_k, so removing
k changes the loss by about -I_k. Larger positive = more idle.
"""

from __future__ import annotations

import torch


def idleness(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-prompt scores <grad_k, p_k> for a prompt bank weight [n, dim]."""
    return (grad.detach() * weight.detach()).sum(dim=1)


class IdlenessMeter:
    """Mean idleness per prompt and the reference's training-loss figure over a set of batches.

    The loss figure is what the reference feeds its reward: the per-batch mean losses summed
    over batches and divided by the batch size.
    """

    def __init__(self, num_prompts: int) -> None:
        self.score_sum = torch.zeros(num_prompts, dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.batches = 0

    def add(self, weight: torch.Tensor, grad: torch.Tensor, batch_loss: torch.Tensor) -> None:
        if self.score_sum.device != weight.device:
            self.score_sum = self.score_sum.to(weight.device)
            self.loss_sum = self.loss_sum.to(weight.device)
        self.score_sum += idleness(weight, grad).double()
        self.loss_sum += batch_loss.detach().double()
        self.batches += 1

    def scores(self) -> torch.Tensor:
        return (self.score_sum / max(self.batches, 1)).float().cpu()

    def loss(self, batch_size: int) -> float:
        return float(self.loss_sum) / batch_size

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
