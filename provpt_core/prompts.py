"""The prompt bank: every prompt of a model as a row of one parameter, plus its block.

``weight[k]`` is prompt k and ``block_of[k]`` the block it sits in (``PRUNED`` once pruning
removed it). Relocating a prompt changes one entry of ``block_of`` and rescales its row; the row
keeps its place in the parameter, so optimizer state stays aligned with its prompt and
``state_dict()`` holds the whole distribution.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

import torch
from torch import nn

PRUNED = -1
Insertion = Literal["replace", "carry", "keep_until_replaced"]


def vpt_init_range(patch_size: int, dim: int) -> float:
    """VPT's uniform init bound: sqrt(6 / (3 * patch_area + dim)), 0.0625 for ViT-B/16."""
    return math.sqrt(6.0 / (3 * patch_size * patch_size + dim))


class PromptBank(nn.Module):
    """Prompts of all blocks; `block_prompts(l, ...)` gives the ones block l inserts.

    `insertion="replace"` (PRO-VPT): at every block the previous block's prompt outputs are
    dropped and the block's own prompts (possibly none) are inserted.
    `insertion="keep_until_replaced"` (VPT-deep): a block with prompts replaces the previous
    prompt outputs, a block without keeps them, as VPT's depth ablation runs (so prompts at
    block 0 alone are VPT-shallow).
    `insertion="carry"` (VPT-shallow): a block's prompts are added to the carried ones.
    """

    def __init__(
        self,
        counts: Sequence[int],
        dim: int,
        init_range: float,
        dropout: float = 0.0,
        insertion: Insertion = "replace",
        spare: int = 0,
    ) -> None:
        super().__init__()
        if any(c < 0 for c in counts) or spare < 0:
            raise ValueError(f"prompt counts per block and spare rows must be >= 0, got {list(counts)}, {spare}")
        self.num_blocks = len(counts)
        self.insertion = insertion
        block_of = torch.repeat_interleave(torch.arange(self.num_blocks), torch.tensor(counts, dtype=torch.long))
        # spare rows start outside the model (PRUNED) until `add` places one in a block
        block_of = torch.cat([block_of, torch.full((spare,), PRUNED, dtype=torch.long)])
        self.weight = nn.Parameter(torch.empty(len(block_of), dim).uniform_(-init_range, init_range))
        self.register_buffer("block_of", block_of)
        self.dropout = nn.Dropout(dropout)
        self._rows: list[torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_rows())

    @property
    def num_prompts(self) -> int:
        return self.weight.shape[0]

    def counts(self) -> list[int]:
        """Prompts per block: the prompt distribution."""
        active = self.block_of[self.block_of != PRUNED]
        return torch.bincount(active, minlength=self.num_blocks).tolist()

    def block_prompts(self, block: int, patch_tokens: torch.Tensor) -> torch.Tensor | None:
        """The prompts block `block` inserts, [batch, n_block, dim]; None: insert nothing."""
        rows = self.block_rows(block)
        if self.insertion != "replace" and len(rows) == 0:
            return None
        prompts = self.weight.index_select(0, rows).to(patch_tokens.dtype)
        return self.dropout(prompts.expand(patch_tokens.shape[0], -1, -1))

    @torch.no_grad()
    def relocate(self, prompt: int, block: int, rescale: float) -> None:
        """Move `prompt` to `block` (or PRUNED), multiplying it by `rescale`."""
        self.weight[prompt].mul_(rescale)
        self.block_of[prompt] = block
        self._forget_rows()

    @torch.no_grad()
    def add(self, copy_of: int, block: int, rescale: float) -> int | None:
        """Place a copy of prompt `copy_of`, multiplied by `rescale`, in `block`, in the first
        row outside the model; returns that row, or None when no row is left."""
        free = torch.nonzero(self.block_of == PRUNED).flatten()
        if len(free) == 0:
            return None
        row = int(free[0])
        self.weight[row] = self.weight[copy_of] * rescale
        self.block_of[row] = block
        self._forget_rows()
        return row

    @contextmanager
    def without(self, prompt: int) -> Iterator[None]:
        """Prompt `prompt` taken out of the model (its token is not inserted) for the block."""
        block = int(self.block_of[prompt])
        self.block_of[prompt] = PRUNED
        self._forget_rows()
        try:
            yield
        finally:
            self.block_of[prompt] = block
            self._forget_rows()

    def block_rows(self, block: int) -> torch.Tensor:
        """Indices (rows of `weight`) of the prompts in `block`."""
        if self._rows is None:
            self._rows = [torch.nonzero(self.block_of == b).flatten() for b in range(self.num_blocks)]
        return self._rows[block]

    def _forget_rows(self) -> None:
        self._rows = None

    def _apply(self, fn, recurse=True):  # a device move must not keep stale index tensors
        self._forget_rows()
        return super()._apply(fn, recurse)
