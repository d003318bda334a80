"""The PPO allocator, as the PRO-VPT reference runs it.

State (3L values): the per-block idleness sums z-normalised across blocks, the per-block prompt
counts after the pruned prompt left divided by their total, and a one-hot of the source block.
Action: a categorical over the L blocks. Separate actor and critic MLPs; one Adam with an lr
per network; a clipped-surrogate update of `update_epochs` passes after every `buffer_size`
rewarded choices, with Monte-Carlo returns normalised by the buffer's mean and std. The
reference's values are the defaults; with its 2-choice buffer and gamma 1 the normalised
returns are always +-0.707, set by the sign of the first reward alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from provpt_core.relocation.allocators import Allocator, Observation, register_allocator
from provpt_core.relocation.config import PPOConfig

_RETURN_EPS = 1e-8
_STATE_EPS = 1e-8


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, outputs)
    )


class ActorCritic(nn.Module):
    def __init__(self, state_dim: int, actions: int, hidden: int) -> None:
        super().__init__()
        self.actor = nn.Sequential(_mlp(state_dim, hidden, actions), nn.Softmax(dim=-1))
        self.critic = _mlp(state_dim, hidden, 1)

    def evaluate(self, states: torch.Tensor, actions: torch.Tensor):
        dist = torch.distributions.Categorical(probs=self.actor(states))
        return dist.log_prob(actions), self.critic(states).squeeze(-1), dist.entropy()


def ppo_state(observation: Observation) -> torch.Tensor:
    """The policy's input, computed in float64 as the reference does, then given to the
    float32 networks."""
    scores = observation.block_scores.double()
    z = (scores - scores.mean()) / (scores.std(unbiased=False) + _STATE_EPS)
    counts = observation.counts.double()
    share = counts / counts.sum().clamp_min(1.0)
    source = torch.zeros_like(scores)
    source[observation.source] = 1.0
    return torch.cat([z, share, source]).float()


def discounted_returns(rewards: list[float], gamma: float, normalize: bool) -> torch.Tensor:
    returns, running = [], 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.insert(0, running)
    out = torch.tensor(returns, dtype=torch.float32)
    if normalize and len(out) > 1:
        out = (out - out.mean()) / (out.std() + _RETURN_EPS)
    return out


def joint_state(observation: Observation) -> torch.Tensor:
    """The joint policy's input (2L values): `ppo_state` without the source, which it chooses."""
    return ppo_state(Observation(observation.block_scores, observation.counts, 0))[: 2 * len(observation.counts)]


@register_allocator("ppo", lambda config, num_blocks, seed: PPOAllocator(num_blocks, seed, config.ppo))
class PPOAllocator(Allocator):
    """PRO-VPT's allocator: the destination of a pruned prompt, one of L actions."""

    state_size = 3  # values of the state per block

    def __init__(self, num_blocks: int, seed: int, config: PPOConfig) -> None:
        super().__init__(num_blocks, seed)
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = ActorCritic(self.state_size * num_blocks, self.num_actions(num_blocks), config.hidden)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.policy.actor.parameters(), "lr": config.actor_lr},
                {"params": self.policy.critic.parameters(), "lr": config.critic_lr},
            ]
        )
        self.states: list[torch.Tensor] = []
        self.actions: list[int] = []
        self.logprobs: list[float] = []
        self.values: list[float] = []
        self.rewards: list[float] = []

    @staticmethod
    def num_actions(num_blocks: int) -> int:
        return num_blocks

    def choose(self, observation: Observation) -> int:
        return self._act(ppo_state(observation))

    def _act(self, state: torch.Tensor) -> int:
        """Sample an action for `state` and keep what the update needs."""
        with torch.no_grad():
            probs = self.policy.actor(state)
            action = int(torch.multinomial(probs, 1, generator=self.generator))
            value = float(self.policy.critic(state))
        self.states.append(state)
        self.actions.append(action)
        self.logprobs.append(float(torch.log(probs[action])))
        self.values.append(value)
        return action

    def reward(self, value: float) -> dict[str, Any]:
        self.rewards.extend([value] * (len(self.actions) - len(self.rewards)))
        if len(self.rewards) < self.config.buffer_size:
            return {}
        return self.update()

    def update(self) -> dict[str, Any]:
        """One PPO update on the rewarded choices in the buffer, which is then cleared."""
        cfg = self.config
        n = len(self.rewards)
        returns = discounted_returns(self.rewards, cfg.gamma, cfg.normalize_returns)
        states = torch.stack(self.states[:n])
        actions = torch.tensor(self.actions[:n])
        old_logprobs = torch.tensor(self.logprobs[:n])
        advantages = returns - torch.tensor(self.values[:n])
        losses, skipped = [], 0
        for _ in range(cfg.update_epochs):
            logprobs, values, entropy = self.policy.evaluate(states, actions)
            ratios = torch.exp(logprobs - old_logprobs)
            surrogate = torch.min(
                ratios * advantages, torch.clamp(ratios, 1 - cfg.clip, 1 + cfg.clip) * advantages
            )
            value_loss = nn.functional.mse_loss(values, returns, reduction="none")
            loss = (-surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy).mean()
            if not torch.isfinite(loss):
                skipped += 1  # as the reference: a non-finite loss takes no step
                continue
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        del self.states[:n], self.actions[:n], self.logprobs[:n], self.values[:n], self.rewards[:n]
        mean_loss = sum(losses) / len(losses) if losses else float("nan")
        return {"ppo_returns": returns.tolist(), "ppo_loss": mean_loss, "ppo_skipped_steps": skipped}

    def action_probabilities(self, observation: Observation) -> torch.Tensor:
        with torch.no_grad():
            return self.policy.actor(ppo_state(observation))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "states": [s.clone() for s in self.states],
            "actions": list(self.actions),
            "logprobs": list(self.logprobs),
            "values": list(self.values),
            "rewards": list(self.rewards),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.states = [s.clone() for s in state["states"]]
        self.actions = list(state["actions"])
        self.logprobs = list(state["logprobs"])
        self.values = list(state["values"])
        self.rewards = list(state["rewards"])


@register_allocator("ppo_joint", lambda config, num_blocks, seed: JointPPOAllocator(num_blocks, seed, config.ppo))
class JointPPOAllocator(PPOAllocator):
    """The paper's undecomposed action space: one PPO choice among L^2 (source, destination)
    pairs, from the block idleness sums and the prompt shares, instead of prune-then-allocate."""

    chooses_source = True
    state_size = 2

    @staticmethod
    def num_actions(num_blocks: int) -> int:
        return num_blocks * num_blocks

    def choose_move(self, observation: Observation) -> tuple[int, int]:
        return divmod(self._act(joint_state(observation)), self.num_blocks)

    def action_probabilities(self, observation: Observation) -> torch.Tensor:
        """[L, L]: the probability of moving from block i (row) to block j (column)."""
        with torch.no_grad():
            return self.policy.actor(joint_state(observation)).view(self.num_blocks, self.num_blocks)
