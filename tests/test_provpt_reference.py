"""PRO-VPT's `reference` preset against the authors' semantics, each on a small case computed
from their described formula (gates as parameters, torch's own clip), not from our code."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import tiny_trial
from provpt_core.data.synthetic import synthetic_splits
from provpt_core.engine import Trainer
from provpt_core.relocation.allocators import Observation
from provpt_core.relocation.ppo import PPOAllocator, PPOConfig, discounted_returns, ppo_state
from provpt_core.trial import TrialConfig

CLIP = 0.25


def _authors_identification_pass(trainer):
    """Each batch: prompts behind unit gates, loss backward, torch's clip over the head's and
    the gates' gradients jointly; scores = mean of the clipped gate gradients, loss figure =
    sum of each batch's mean loss divided by that batch's size."""
    model = trainer.model
    weight = model.prompts.weight.detach()
    head = list(model.head.parameters())
    scores, loss_figure, factors = [], 0.0, []
    model.train()
    for inputs, labels in trainer.train_batches():
        model.zero_grad(set_to_none=True)
        gates = torch.ones(weight.shape[0], requires_grad=True)
        logits = functional_call(model, {"prompts.weight": gates[:, None] * weight}, (trainer._prepare(inputs, True),))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([gates, *head], CLIP)
        factors.append(min(1.0, CLIP / (float(norm) + 1e-6)))
        scores.append(gates.grad.clone())
        loss_figure += float(loss.detach()) / len(labels)
    model.zero_grad(set_to_none=True)
    return torch.stack(scores).mean(0), loss_figure, factors


def test_identification_pass_clips_head_and_gates_jointly_and_divides_by_each_batch_size():
    data = synthetic_splits(num_classes=4, train=96, val=32, test=32, seed=0)  # batches 40, 40, 16
    method = {"name": "provpt", "num_prompts": 2, "dropout": 0.0, "relocation": {"idleness": "reference"}}
    trainer = Trainer(tiny_trial(method, epochs=3, batch_size=40, lr=0.5), data)
    trainer.fit()  # trained prompts: scores and gradients far from their initial values
    shuffle = trainer.shuffle.get_state()
    expected_scores, expected_loss, factors = _authors_identification_pass(trainer)
    trainer.shuffle.set_state(shuffle)
    trainer.method.meter.reset()
    trainer.method._identification_pass(trainer)

    assert min(factors) < 0.99  # the clip was active, so the test says something about it
    torch.testing.assert_close(trainer.method.meter.scores(), expected_scores, rtol=1e-4, atol=1e-9)
    assert trainer.method.meter.loss() == pytest.approx(expected_loss, rel=1e-5)
    assert trainer.method.meter.batches == 3


def test_partial_last_batch_weighs_by_its_own_size():
    meter_losses = [0.9, 0.6, 0.3]
    sizes = [40, 40, 16]
    from provpt_core.relocation import IdlenessMeter

    meter = IdlenessMeter(1)
    for loss, size in zip(meter_losses, sizes):
        meter.add_scores(torch.zeros(1), torch.tensor(loss), size)
    assert meter.loss() == pytest.approx(0.9 / 40 + 0.6 / 40 + 0.3 / 16)
    assert meter.loss() != pytest.approx(sum(meter_losses) / 40)


def test_reference_preset_pins_fp32():
    config = TrialConfig.from_dict({"preset": "reference"})
    assert config.train.precision == "fp32" and config.train.grad_clip == 0.25
    assert config.method.relocation.idleness == "reference"


def test_return_normalisation_uses_epsilon_1e_8():
    returns = discounted_returns([0.0, 1e-7], gamma=0.0, normalize=True)
    spread = torch.tensor([0.0, 1e-7]).std().item()
    expected = 0.5e-7 / (spread + 1e-8)
    torch.testing.assert_close(returns, torch.tensor([-expected, expected]))


def test_ppo_state_is_computed_in_float64():
    scores = torch.tensor([1e8, 1e8 + 1, 1e8 + 2, 1e8 + 3], dtype=torch.float64)
    state = ppo_state(Observation(scores, torch.ones(4), 0))
    z = [(k - 1.5) / (1.25**0.5) for k in range(4)]  # offsets 0..3: mean 1.5, variance 1.25
    torch.testing.assert_close(state[:4], torch.tensor(z), atol=1e-6, rtol=0)


def _filled_agent(config: PPOConfig) -> PPOAllocator:
    agent = PPOAllocator(4, seed=0, config=config)
    for source, reward in ((0, 0.3), (1, -0.2)):
        agent.choose(Observation(torch.tensor([1.0, 2.0, 0.5, 0.0]), torch.full((4,), 3.0), source))
        agent.rewards.append(reward)
    return agent


def test_ppo_loss_is_the_mean_over_the_update_epochs():
    config = PPOConfig(update_epochs=3)
    agent = _filled_agent(config)
    twin = copy.deepcopy(agent)
    returns = discounted_returns(twin.rewards, config.gamma, config.normalize_returns)
    states, actions = torch.stack(twin.states), torch.tensor(twin.actions)
    old, advantages = torch.tensor(twin.logprobs), returns - torch.tensor(twin.values)
    losses = []
    for _ in range(3):  # the clipped-surrogate objective of the PPO paper, written out
        logprobs, values, entropy = twin.policy.evaluate(states, actions)
        ratio = torch.exp(logprobs - old)
        surrogate = torch.min(ratio * advantages, ratio.clamp(1 - config.clip, 1 + config.clip) * advantages)
        loss = (-surrogate + config.value_coef * (values - returns) ** 2 - config.entropy_coef * entropy).mean()
        twin.optimizer.zero_grad()
        loss.backward()
        twin.optimizer.step()
        losses.append(float(loss.detach()))
    figures = agent.update()
    assert figures["ppo_loss"] == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert figures["ppo_loss"] != pytest.approx(losses[-1], rel=1e-3)


def test_a_non_finite_ppo_loss_takes_no_step():
    agent = _filled_agent(PPOConfig(update_epochs=4))
    agent.rewards[1] = float("nan")
    before = copy.deepcopy(agent.policy.state_dict())
    figures = agent.update()
    assert figures["ppo_skipped_steps"] == 4
    assert all(torch.equal(before[k], v) for k, v in agent.policy.state_dict().items())
