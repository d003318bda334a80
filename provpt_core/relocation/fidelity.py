"""How faithful is an idleness score? The measured loss change when each prompt is removed.

The paper's claim ("Taylor scores are highly correlated with the true values") is tested by
comparing, prompt by prompt, the first-order score I_k = <dL/dp_k, p_k> with what removing
prompt k really does to the loss on a fixed set of batches: dropping its token (what pruning
does) and zeroing it (the point the first-order expansion extrapolates to). A first-order
score predicts a loss change of -I_k for zeroing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from provpt_core.prompts import PRUNED, PromptBank
from provpt_core.relocation.config import FidelityConfig, fraction_epoch  # noqa: F401 (fraction_epoch: re-exported)

Batch = tuple[torch.Tensor, torch.Tensor]


def _loss_sum(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = forward(x)
    return F.cross_entropy(logits if logits.dtype == torch.float64 else logits.float(), y, reduction="sum")


@torch.no_grad()
def mean_loss(forward: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[Batch]) -> float:
    """The mean cross-entropy over every example of `batches`."""
    total = sum(float(_loss_sum(forward, x, y)) for x, y in batches)
    return total / sum(len(y) for _, y in batches)


def taylor_scores(
    forward: Callable[[torch.Tensor], torch.Tensor], bank: PromptBank, batches: Sequence[Batch]
) -> torch.Tensor:
    """<dL/dp_k, p_k> of the mean loss over `batches`, every prompt (0 outside the model)."""
    grad = torch.zeros_like(bank.weight)
    count = sum(len(y) for _, y in batches)
    for x, y in batches:
        loss = _loss_sum(forward, x, y) / count
        grad += torch.autograd.grad(loss, bank.weight)[0]
    return (grad * bank.weight.detach()).sum(dim=1).cpu()


@torch.no_grad()
def removal_effects(
    forward: Callable[[torch.Tensor], torch.Tensor], bank: PromptBank, batches: Sequence[Batch]
) -> dict[str, torch.Tensor]:
    """For every prompt in the model, the mean loss over `batches` without it minus with it:
    `dropped` (its token not inserted) and `zeroed` (inserted as a zero vector). Positive: the
    prompt helps. Rows outside the model get NaN."""
    base = mean_loss(forward, batches)
    dropped = torch.full((bank.num_prompts,), float("nan"), dtype=torch.float64)
    zeroed = torch.full((bank.num_prompts,), float("nan"), dtype=torch.float64)
    for prompt in torch.nonzero(bank.block_of != PRUNED).flatten().tolist():
        with bank.without(prompt):
            dropped[prompt] = mean_loss(forward, batches) - base
        kept = bank.weight[prompt].clone()
        bank.weight[prompt] = 0.0
        zeroed[prompt] = mean_loss(forward, batches) - base
        bank.weight[prompt] = kept
    return {"dropped": dropped, "zeroed": zeroed}
