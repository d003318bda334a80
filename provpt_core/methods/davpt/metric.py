"""DA-VPT's metric loss: Proxy-Anchor (Kim et al. 2020) with a guided block's prompts as proxies."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from provpt_core.methods.config.davpt import PullAverage



def proxy_anchor_loss(
    embeddings: torch.Tensor,
    proxies: torch.Tensor,
    assigned: torch.Tensor,
    scale: float,
    margin: float,
    proxy_length: float = 1.0,
    pull_average: PullAverage = "all_proxies",
) -> torch.Tensor:
    """Proxy-Anchor of embeddings [batch, dim] against proxies [P, dim]; `assigned` [batch] is
    the proxy of each embedding's class.

    For proxy p, with s the similarity of an embedding to p:
      pull_p = log(1 + sum over its positives  exp(-scale * (s - margin)))
      push_p = log(1 + sum over its negatives  exp( scale * (s + margin)))
    loss = mean of pull_p + mean over all proxies of push_p. The pull is averaged over every
    proxy ("all_proxies": the authors' code, a proxy without positives in the batch adds 0) or
    over the proxies with positives only ("with_positives": the paper's eq. 4). They agree
    when every proxy has a positive in the batch.

    s is cosine similarity times `proxy_length`: the authors scale the unit-normalised proxies
    to this length (their `loss_vpt_scale_ratio`), so s lies in [-length, length] and the loss
    equals plain Proxy-Anchor with scale * length and margin / length: sharper, with a smaller
    margin. The sums are taken as log-sum-exp: scale * length reaches 32 * 60 in their configs.
    """
    similarity = (
        F.normalize(embeddings.float(), dim=1) @ (proxy_length * F.normalize(proxies.float(), dim=1)).T
    )
    positive = F.one_hot(assigned, proxies.shape[0]).bool()
    pull = _log_one_plus_sum_exp(-scale * (similarity - margin), positive)
    push = _log_one_plus_sum_exp(scale * (similarity + margin), ~positive)
    if pull_average == "with_positives":
        with_positives = positive.any(0)
        pulled = pull[with_positives].sum() / with_positives.sum().clamp_min(1)
    else:
        pulled = pull.mean()
    return pulled + push.mean()


def _log_one_plus_sum_exp(exponents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + sum over the masked rows of exp(exponents)), per column, without overflow."""
    masked = exponents.masked_fill(~mask, float("-inf"))
    one = torch.zeros_like(masked[:1])  # exp(0) = 1
    return torch.logsumexp(torch.cat([masked, one]), dim=0)
