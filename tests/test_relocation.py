import pytest
import torch

from provpt_core.prompts import PRUNED, PromptBank
from provpt_core.relocation import RelocationConfig, Relocator
from provpt_core.relocation.allocators import Allocator, Observation


class FixedDestination(Allocator):
    """Sends every pruned prompt to one block and remembers what it saw and was paid."""

    def __init__(self, block: int) -> None:
        super().__init__(num_blocks=4, seed=0)
        self.block, self.seen, self.rewards = block, [], []

    def choose(self, observation: Observation) -> int:
        self.seen.append(observation)
        return self.block

    def reward(self, value: float) -> dict:
        self.rewards.append(value)
        return {}


def _setup(allocator_block: int = 3, **config):
    torch.manual_seed(0)
    bank = PromptBank([2, 2, 2, 2], dim=5, init_range=0.5)
    optimizer = torch.optim.SGD([bank.weight], lr=0.1, momentum=0.9)
    bank.weight.grad = torch.randn_like(bank.weight)
    optimizer.step()  # fills the momentum buffer with distinct rows
    relocator = Relocator(RelocationConfig(**config), num_blocks=4, seed=0)
    relocator.allocator = FixedDestination(allocator_block)
    return bank, optimizer, relocator


def test_most_idle_prompt_moves_and_its_optimizer_row_moves_with_it():
    bank, optimizer, relocator = _setup()
    weight_before = bank.weight.detach().clone()
    momentum_before = optimizer.state[bank.weight]["momentum_buffer"].clone()
    scores = torch.tensor([0.1, -0.2, 0.5, 0.0, 0.3, -0.1, 0.2, 0.05])
    event = relocator.step(bank, optimizer, scores, loss=1.0, epoch=1)
    assert event["moves"] == [{"prompt": 2, "source": 1, "destination": 3}]
    assert bank.counts() == [2, 1, 2, 3] and sum(bank.counts()) == 8
    assert event["distribution"] == [2, 1, 2, 3]
    expected = weight_before.clone()
    expected[2] *= 1e-3
    torch.testing.assert_close(bank.weight.detach(), expected, rtol=0, atol=0)
    # the momentum row stays with its prompt: row 2 is the moved prompt's own buffer
    torch.testing.assert_close(optimizer.state[bank.weight]["momentum_buffer"], momentum_before, rtol=0, atol=0)
    seen = relocator.allocator.seen[0]
    assert seen.source == 1 and seen.counts.tolist() == [2, 1, 2, 2]
    torch.testing.assert_close(seen.block_scores, torch.tensor([-0.1, 0.5, 0.2, 0.25]))


def test_momentum_reset_clears_only_the_moved_row():
    bank, optimizer, relocator = _setup(keep_momentum=False)
    momentum_before = optimizer.state[bank.weight]["momentum_buffer"].clone()
    relocator.step(bank, optimizer, torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0]), loss=1.0, epoch=1)
    momentum = optimizer.state[bank.weight]["momentum_buffer"]
    assert momentum[3].abs().sum() == 0 and momentum_before[3].abs().sum() > 0
    others = [k for k in range(8) if k != 3]
    torch.testing.assert_close(momentum[others], momentum_before[others], rtol=0, atol=0)


def test_no_move_when_no_prompt_is_idle():
    bank, optimizer, relocator = _setup()
    event = relocator.step(bank, optimizer, -torch.rand(8), loss=1.0, epoch=1)
    assert event["moves"] == [] and bank.counts() == [2, 2, 2, 2]


def test_choosing_the_source_block_is_no_move():
    bank, optimizer, relocator = _setup(allocator_block=0)
    before = bank.weight.detach().clone()
    event = relocator.step(bank, optimizer, torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), loss=1.0, epoch=1)
    assert event["moves"] == [{"prompt": 0, "source": 0, "destination": 0}]
    assert torch.equal(bank.weight.detach(), before) and bank.counts() == [2, 2, 2, 2]


def test_several_prompts_per_move_and_blocks_may_empty():
    bank, optimizer, relocator = _setup(prompts_per_move=3)
    scores = torch.tensor([0.9, 0.8, 0.0, 0.0, 0.0, 0.0, 0.7, -1.0])
    event = relocator.step(bank, optimizer, scores, loss=1.0, epoch=1)
    assert [m["prompt"] for m in event["moves"]] == [0, 1, 6]
    assert bank.counts() == [0, 2, 2, 4]
    assert [o.counts.tolist() for o in relocator.allocator.seen] == [[1, 2, 2, 2], [0, 2, 2, 3], [0, 2, 2, 3]]


def test_reward_of_the_previous_move():
    bank, optimizer, relocator = _setup(reward_correction=0.5)
    relocator.step(bank, optimizer, torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), loss=2.0, epoch=1)
    event = relocator.step(bank, optimizer, torch.tensor([0, 0.4, 0, 0, 0, 0, 0, 0]), loss=1.5, epoch=2)
    assert event["reward"] == pytest.approx(2.0 - 1.5 - 0.5 * 0.4)
    assert relocator.allocator.rewards == [pytest.approx(event["reward"])]


def test_prune_only_removes_prompts_for_good():
    bank, optimizer, _ = _setup()
    relocator = Relocator(RelocationConfig(allocator="none"), num_blocks=4, seed=0)
    relocator.step(bank, optimizer, torch.tensor([0, 0, 0, 0, 0, 0, 0, 1.0]), loss=1.0, epoch=1)
    assert bank.block_of[7] == PRUNED and bank.counts() == [2, 2, 2, 1]
    # a pruned prompt is never a candidate again, whatever its score
    event = relocator.step(bank, optimizer, torch.tensor([0, 0, 0, 0, 0, 0, 0.1, 9.0]), loss=1.0, epoch=2)
    assert event["moves"][0]["prompt"] == 6 and bank.counts() == [2, 2, 2, 0]


@pytest.mark.parametrize(
    "config, due",
    [
        ({}, [1, 2, 3, 4]),
        ({"interval": 2}, [1, 3]),
        ({"warmup_epochs": 0, "stop_epoch": 3}, [0, 1, 2]),
        ({"warmup_epochs": 2, "interval": 3}, [2]),
    ],
)
def test_relocation_schedule(config, due):
    relocator = Relocator(RelocationConfig(**config), num_blocks=4, seed=0)
    assert [e for e in range(5) if relocator.is_due(e, total_epochs=5)] == due
