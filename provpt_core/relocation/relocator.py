"""PRO-VPT's relocation step: prune the most idle prompts, let an allocator place them.

At a relocation epoch, given every prompt's idleness and the training-loss figure:
1. the reward of the previous relocation's choices is credited:
   loss(previous) - loss(now) - reward_correction * max idleness(now);
2. the `prompts_per_move` prompts with the largest positive idleness are pruned (none if no
   score is positive);
3. for each, the allocator picks a destination block; the prompt moves there, rescaled by
   `moved_rescale`, its momentum kept or reset. Choosing the source block means no move.
The total number of prompts is conserved (except with the prune-only allocator `none`).

Two variants of the paper's analyses:
- `adjustment: add` (its "additive adjustment"): nothing is pruned; the allocator's choice
  gets a new prompt, a copy of the most idle prompt rescaled by `moved_rescale` (any score,
  while spare rows last), so the count grows by one per move;
- an allocator that picks the source block too (`chooses_source`, e.g. `ppo_joint`: L^2
  actions): the most idle prompt of the block it names moves to the block it names.
"""

from __future__ import annotations

from typing import Any

import torch

from provpt_core.prompts import PRUNED, PromptBank
from provpt_core.relocation.allocators import ALLOCATORS, Allocator, Observation
from provpt_core.relocation import ppo  # noqa: F401  (registers the PPO allocators)
from provpt_core.relocation.config import RelocationConfig


def make_allocator(config: RelocationConfig, num_blocks: int, seed: int) -> Allocator:
    return ALLOCATORS[config.allocator](config, num_blocks, seed)


class Relocator:
    def __init__(self, config: RelocationConfig, num_blocks: int, seed: int) -> None:
        self.config = config
        self.num_blocks = num_blocks
        self.allocator = make_allocator(config, num_blocks, seed)
        self.previous_loss: float | None = None
        self.awaiting_reward = False

    def is_due(self, epoch: int, total_epochs: int) -> bool:
        cfg = self.config
        stop = total_epochs if cfg.stop_epoch is None else min(cfg.stop_epoch, total_epochs)
        return cfg.warmup_epochs <= epoch < stop and (epoch - cfg.warmup_epochs) % cfg.interval == 0

    def step(
        self,
        bank: PromptBank,
        optimizer: torch.optim.Optimizer,
        scores: torch.Tensor,
        loss: float,
        epoch: int,
    ) -> dict[str, Any]:
        """One relocation; returns the event record (moves, distribution, reward, ...)."""
        block_of = bank.block_of.cpu()
        active = block_of != PRUNED
        max_score = float(scores[active].max()) if active.any() else 0.0
        event: dict[str, Any] = {"epoch": epoch, "loss": loss, "max_idleness": max_score}
        if self.awaiting_reward:
            reward = self.previous_loss - loss - self.config.reward_correction * max_score
            event["reward"] = reward
            event.update(self.allocator.reward(reward))
        self.previous_loss = loss

        block_scores = torch.zeros(self.num_blocks).index_add_(0, block_of[active], scores[active])
        event["block_idleness"] = block_scores.tolist()
        if self.allocator.chooses_source:
            moves = self._joint_moves(bank, optimizer, scores, block_scores)
        else:
            moves = self._moves(bank, optimizer, scores, block_scores)
        self.awaiting_reward = bool(moves)
        event["moves"] = moves
        event["distribution"] = bank.counts()
        return event

    def _moves(
        self, bank: PromptBank, optimizer: torch.optim.Optimizer, scores: torch.Tensor, block_scores: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Prune the most idle prompts (or, adding, copy them), let the allocator place them."""
        block_of = bank.block_of.cpu()
        active = block_of != PRUNED
        adding = self.config.adjustment == "add"
        candidates = torch.nonzero(active if adding else active & (scores > 0)).flatten()
        ranked = candidates[torch.argsort(scores[candidates], descending=True, stable=True)]
        moves = []
        for prompt in ranked[: self.config.prompts_per_move].tolist():
            if adding and not (bank.block_of == PRUNED).any():
                break
            source = int(block_of[prompt])
            counts = torch.tensor(bank.counts())
            if not adding:
                counts[source] -= 1
            destination = self.allocator.choose(Observation(block_scores.clone(), counts, source))
            if adding:
                row = bank.add(prompt, destination, self.config.moved_rescale)
                self._reset_momentum(bank, optimizer, row)
                moves.append({"prompt": prompt, "source": source, "destination": destination, "added": row})
                continue
            block_scores[source] -= scores[prompt]
            if destination != source:
                self._move(bank, optimizer, prompt, destination)
            moves.append({"prompt": prompt, "source": source, "destination": destination})
        return moves

    def _joint_moves(
        self, bank: PromptBank, optimizer: torch.optim.Optimizer, scores: torch.Tensor, block_scores: torch.Tensor
    ) -> list[dict[str, Any]]:
        """The allocator names (source, destination); the source's most idle prompt moves."""
        moves = []
        for _ in range(self.config.prompts_per_move):
            block_of = bank.block_of.cpu()
            observation = Observation(block_scores.clone(), torch.tensor(bank.counts()), source=-1)
            source, destination = self.allocator.choose_move(observation)
            in_source = torch.nonzero(block_of == source).flatten()
            if len(in_source) == 0:  # an empty source: nothing to move, the choice is still paid
                moves.append({"prompt": None, "source": source, "destination": destination})
                continue
            prompt = int(in_source[torch.argmax(scores[in_source])])
            block_scores[source] -= scores[prompt]
            if destination != source:
                self._move(bank, optimizer, prompt, destination)
            moves.append({"prompt": prompt, "source": source, "destination": destination})
        return moves

    def _move(self, bank: PromptBank, optimizer: torch.optim.Optimizer, prompt: int, block: int) -> None:
        bank.relocate(prompt, block, self.config.moved_rescale)
        if not self.config.keep_momentum:
            self._reset_momentum(bank, optimizer, prompt)

    @staticmethod
    def _reset_momentum(bank: PromptBank, optimizer: torch.optim.Optimizer, prompt: int) -> None:
        for value in optimizer.state.get(bank.weight, {}).values():
            if torch.is_tensor(value) and value.shape == bank.weight.shape:
                value[prompt].zero_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "allocator": self.allocator.state_dict(),
            "previous_loss": self.previous_loss,
            "awaiting_reward": self.awaiting_reward,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.allocator.load_state_dict(state["allocator"])
        self.previous_loss = state["previous_loss"]
        self.awaiting_reward = state["awaiting_reward"]
