import pytest
import torch

from provpt_core.relocation.allocators import Observation, RandomAllocator, ThompsonAllocator
from provpt_core.relocation.ppo import PPOAllocator, PPOConfig, discounted_returns, ppo_state

BLOCKS = 4


def _observation(source: int) -> Observation:
    return Observation(torch.zeros(BLOCKS), torch.full((BLOCKS,), 3.0), source)


def test_ppo_state_layout():
    state = ppo_state(Observation(torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([2.0, 0.0, 1.0, 1.0]), 2))
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0])
    torch.testing.assert_close(state[:4], (scores - 3.0) / scores.std(unbiased=False))
    torch.testing.assert_close(state[4:8], torch.tensor([0.5, 0.0, 0.25, 0.25]))
    assert state[8:].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_ppo_learns_a_contextual_bandit():
    """The best block depends on the source block; PPO (reference lrs, clip, 60 update epochs)
    with a larger buffer and gamma 0 finds it for every source."""
    agent = PPOAllocator(BLOCKS, seed=0, config=PPOConfig(buffer_size=16, gamma=0.0))
    sources = torch.Generator().manual_seed(1)
    best = lambda source: (source + 1) % BLOCKS  # noqa: E731
    before = [float(agent.action_probabilities(_observation(s))[best(s)]) for s in range(BLOCKS)]
    for _ in range(480):
        source = int(torch.randint(BLOCKS, (1,), generator=sources))
        agent.reward(1.0 if agent.choose(_observation(source)) == best(source) else 0.0)
    after = [float(agent.action_probabilities(_observation(s))[best(s)]) for s in range(BLOCKS)]
    assert max(before) < 0.5
    assert min(after) > 0.9


def test_reference_ppo_returns_are_always_plus_minus_0707():
    """With the reference's 2-choice buffer, gamma 1 and return normalisation, the normalised
    returns are (+-0.707, -+0.707), set only by the sign of the first reward."""
    rewards = torch.Generator().manual_seed(5)
    for _ in range(20):
        agent = PPOAllocator(BLOCKS, seed=0, config=PPOConfig())
        first, second = (torch.randn(2, generator=rewards) * torch.tensor([1.0, 100.0])).tolist()
        agent.choose(_observation(0))
        assert agent.reward(first) == {}  # one reward: no update yet
        agent.choose(_observation(1))
        returns = agent.reward(second)["ppo_returns"]
        sign = 1.0 if first > 0 else -1.0
        # float32 returns, as the reference's: rewards 100x apart round by up to ~2e-4
        assert returns == pytest.approx([sign * 0.7071, -sign * 0.7071], abs=5e-4)
        assert agent.actions == [] and agent.rewards == []  # the buffer is cleared


def test_discounted_returns():
    torch.testing.assert_close(discounted_returns([1.0, 2.0, 4.0], 0.5, False), torch.tensor([3.0, 4.0, 4.0]))
    normalised = discounted_returns([1.0, 2.0, 4.0], 0.5, True)
    assert normalised.mean().abs() < 1e-6 and normalised.std().item() == pytest.approx(1.0, abs=1e-5)


def test_thompson_sampling_prefers_the_rewarded_block():
    agent = ThompsonAllocator(BLOCKS, seed=0)
    for _ in range(60):
        agent.reward(1.0 if agent.choose(_observation(0)) == 3 else -1.0)
    picks = [agent.choose(_observation(0)) for _ in range(50)]
    assert picks.count(3) > 40
    assert int(agent.successes[3]) > 0 and int(agent.successes[:3].sum()) == 0


def test_random_allocator_is_uniform_and_reproducible():
    picks = [RandomAllocator(BLOCKS, seed=3).choose(_observation(0)) for _ in range(3)]
    assert len(set(picks)) == 1
    agent = RandomAllocator(BLOCKS, seed=3)
    counts = torch.bincount(torch.tensor([agent.choose(_observation(0)) for _ in range(4000)]), minlength=BLOCKS)
    assert (counts - 1000).abs().max() < 150


@pytest.mark.parametrize("make", [lambda: PPOAllocator(BLOCKS, 0, PPOConfig()), lambda: ThompsonAllocator(BLOCKS, 0)])
def test_allocator_state_round_trip_continues_identically(make):
    agent = make()
    for step in range(5):
        agent.reward(float(agent.choose(_observation(step % BLOCKS)) - 1.5))
    agent.choose(_observation(1))  # leaves one choice awaiting its reward
    copy = make()
    copy.load_state_dict(agent.state_dict())
    for step in range(6):
        a, b = agent.choose(_observation(step % BLOCKS)), copy.choose(_observation(step % BLOCKS))
        assert a == b
        assert agent.reward(a - 1.0).keys() == copy.reward(b - 1.0).keys()


def test_allocators_come_from_a_registry_a_new_one_touches_no_other(monkeypatch):
    from provpt_core.config import ConfigError
    from provpt_core.relocation import allocators
    from provpt_core.relocation.config import ALLOCATOR_NAMES
    from provpt_core.relocation.relocator import RelocationConfig, make_allocator

    for registry in (allocators.ALLOCATORS, ALLOCATOR_NAMES):  # both forget the new one after the test
        monkeypatch.setitem(registry, "first_block", None)
        del registry["first_block"]
    with pytest.raises(ConfigError, match="allocator: expected one of"):
        RelocationConfig(allocator="first_block")  # registering is what makes a name known

    @allocators.register_allocator("first_block")
    class FirstBlock(allocators.Allocator):
        def choose(self, observation):
            return 0

    allocator = make_allocator(RelocationConfig(allocator="first_block"), BLOCKS, seed=0)
    assert isinstance(allocator, FirstBlock) and allocator.choose(_observation(2)) == 0
    assert isinstance(make_allocator(RelocationConfig(), BLOCKS, seed=0), PPOAllocator)
    with pytest.raises(ConfigError, match="allocator: expected one of .*ppo.*, got 'greedy'"):
        RelocationConfig(allocator="greedy")


def test_every_allocator_a_config_may_name_is_built_in_a_fresh_process():
    """The allocators register when their modules load: a trial that imports only the relocation
    step must still find every one (a lazily loaded package must not lose a registration)."""
    import subprocess
    import sys

    script = (
        "from provpt_core.relocation.config import ALLOCATOR_NAMES, RelocationConfig\n"
        "from provpt_core.relocation.relocator import make_allocator\n"
        "for name in ALLOCATOR_NAMES:\n"
        "    make_allocator(RelocationConfig(allocator=name), 4, seed=0)\n"
        "print(sorted(ALLOCATOR_NAMES))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['none', 'ppo', 'ppo_joint', 'random', 'thompson']"
