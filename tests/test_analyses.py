"""The mechanisms of PRO-VPT's analyses: criteria, additive adjustment, the joint (L^2) allocator,
idleness fidelity and branches of a run with scripted moves."""

import copy

import pytest
import torch

from conftest import tiny_trial
from provpt_core.backbone import BackboneConfig, load_backbone
from provpt_core.config import ConfigError
from provpt_core.engine import Callback, Trainer, fit
from provpt_core.model import PromptedViT
from provpt_core.prompts import PRUNED, PromptBank
from provpt_core.relocation import RelocationConfig, Relocator
from provpt_core.relocation.allocators import Observation
from provpt_core.relocation.fidelity import mean_loss, removal_effects, taylor_scores
from provpt_core.relocation.idleness import norm_scores
from provpt_core.relocation.ppo import JointPPOAllocator, PPOConfig
from provpt_core.tiny_vit import TINY_VIT_NAME
from provpt_core.trial import TrialConfig


def test_norm_criterion_scores_short_prompts_idle_and_ignores_rows_outside_the_model():
    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [10.0, 0.0]])  # norms 5, 1, 2, 10
    block_of = torch.tensor([0, 0, 1, PRUNED])
    scores = norm_scores(weight, block_of)  # mean norm of the three in the model: 8 / 3
    torch.testing.assert_close(scores, torch.tensor([1 - 15 / 8, 1 - 3 / 8, 1 - 6 / 8, 0.0]))
    assert int(torch.argmax(scores)) == 1


def _bank_and_optimizer(counts, spare=0, dim=3):
    torch.manual_seed(0)
    bank = PromptBank(counts, dim=dim, init_range=0.5, spare=spare)
    optimizer = torch.optim.SGD([bank.weight], lr=0.1, momentum=0.9, weight_decay=0.1)
    bank.weight.grad = torch.randn_like(bank.weight)
    optimizer.step()  # momentum in every row, the spare ones too (weight decay)
    return bank, optimizer


def test_additive_adjustment_adds_a_rescaled_copy_and_keeps_the_idle_prompt_until_rows_run_out():
    bank, optimizer = _bank_and_optimizer([2, 2, 2], spare=2)
    assert bank.counts() == [2, 2, 2] and bank.num_prompts == 8
    relocator = Relocator(RelocationConfig(adjustment="add", max_added=2, allocator="random"), num_blocks=3, seed=0)
    scores = torch.tensor([-0.3, -0.1, -0.2, -0.5, -0.4, -0.6, 0.0, 0.0])  # none positive: adds anyway
    before = bank.weight.detach().clone()
    event = relocator.step(bank, optimizer, scores, loss=1.0, epoch=1)
    (move,) = event["moves"]
    assert move["prompt"] == 1 and move["source"] == 0 and move["added"] == 6
    assert int(bank.block_of[1]) == 0  # the idle prompt stays where it was
    assert int(bank.block_of[6]) == move["destination"] and sum(bank.counts()) == 7
    torch.testing.assert_close(bank.weight.detach()[6], before[1] * 1e-3)
    assert optimizer.state[bank.weight]["momentum_buffer"][6].abs().sum() == 0
    relocator.step(bank, optimizer, scores, loss=0.9, epoch=2)
    assert sum(bank.counts()) == 8
    assert relocator.step(bank, optimizer, scores, loss=0.8, epoch=3)["moves"] == []  # no spare row left
    assert sum(bank.counts()) == 8


def test_additive_adjustment_needs_rows_and_a_destination_only_allocator():
    with pytest.raises(ConfigError, match="max_added"):
        RelocationConfig(adjustment="add")
    with pytest.raises(ConfigError, match="adjustment"):
        RelocationConfig(adjustment="add", max_added=3, allocator="ppo_joint")


def test_joint_allocator_learns_a_two_step_bandit():
    """Only one (source, destination) pair of 4 x 4 pays: the policy must find the pair, which
    neither choice alone reveals."""
    blocks, best = 4, (2, 1)
    allocator = JointPPOAllocator(blocks, seed=0, config=PPOConfig(buffer_size=8, update_epochs=20, actor_lr=3e-3))
    observation = Observation(torch.tensor([0.1, 0.4, -0.2, 0.0]), torch.tensor([2, 2, 2, 2]), source=-1)
    start = float(allocator.action_probabilities(observation)[best])
    for _ in range(400):
        allocator.reward(1.0 if allocator.choose_move(observation) == best else -1.0)
    probabilities = allocator.action_probabilities(observation)
    assert probabilities.shape == (blocks, blocks)
    assert start < 0.1 and float(probabilities[best]) > 0.5


class Scripted(JointPPOAllocator):
    def __init__(self, pair):
        super().__init__(4, seed=0, config=PPOConfig())
        self.pair = pair

    def choose_move(self, observation):
        return self.pair


def test_joint_allocator_moves_the_most_idle_prompt_of_the_source_it_names():
    bank, optimizer = _bank_and_optimizer([2, 2, 2, 2])
    relocator = Relocator(RelocationConfig(allocator="ppo_joint"), num_blocks=4, seed=0)
    relocator.allocator = Scripted((1, 3))
    scores = torch.tensor([0.9, 0.0, -0.5, -0.2, 0.3, 0.1, 0.0, 0.0])  # block 1's most idle: prompt 3
    event = relocator.step(bank, optimizer, scores, loss=1.0, epoch=1)
    assert event["moves"] == [{"prompt": 3, "source": 1, "destination": 3}]
    assert bank.counts() == [2, 1, 2, 3]
    relocator.allocator = Scripted((1, 1))
    assert relocator.step(bank, optimizer, scores, loss=1.0, epoch=2)["distribution"] == [2, 1, 2, 3]


@pytest.fixture(scope="module")
def prompted():
    torch.manual_seed(0)
    backbone = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    model = PromptedViT(backbone, num_classes=3, prompts=PromptBank([1, 2, 0] + [1] * 9, dim=64, init_range=0.5))
    model.eval()
    images = torch.randn(10, 3, 32, 32)
    batches = [(images[:6], torch.tensor([0, 1, 2, 0, 1, 2])), (images[6:], torch.tensor([2, 2, 1, 0]))]
    return model, batches


def test_removal_effects_match_the_loss_of_a_model_built_without_the_prompt(prompted):
    model, batches = prompted
    bank = model.prompts
    effects = removal_effects(model, bank, batches)
    base = mean_loss(model, batches)
    for prompt in (0, 2, 5):
        keep = [k for k in range(bank.num_prompts) if k != prompt]
        counts = torch.bincount(bank.block_of[keep], minlength=12).tolist()
        smaller = PromptBank(counts, dim=64, init_range=0.0)
        with torch.no_grad():
            smaller.weight.copy_(bank.weight[keep])
        without = PromptedViT(model.backbone, 3, prompts=smaller)
        without.head.load_state_dict(model.head.state_dict())
        assert effects["dropped"][prompt] == pytest.approx(mean_loss(without, batches) - base, abs=1e-5)
        zeroed = PromptedViT(model.backbone, 3, prompts=PromptBank(bank.counts(), dim=64, init_range=0.0))
        with torch.no_grad():
            zeroed.prompts.weight.copy_(bank.weight)
            zeroed.prompts.weight[prompt] = 0.0
        zeroed.head.load_state_dict(model.head.state_dict())
        assert effects["zeroed"][prompt] == pytest.approx(mean_loss(zeroed, batches) - base, abs=1e-5)
    assert torch.equal(bank.block_of, torch.tensor([0, 1, 1] + list(range(3, 12))))  # restored


def _scaled(model, batches, scale):
    bank = model.prompts
    kept = bank.weight.detach().clone()
    with torch.no_grad():
        bank.weight.mul_(scale)
    try:
        return taylor_scores(model, bank, batches), removal_effects(model, bank, batches)["zeroed"]
    finally:
        with torch.no_grad():
            bank.weight.copy_(kept)


def test_taylor_score_predicts_the_zeroing_effect_only_where_layernorm_is_linear(prompted):
    """A block sees its prompts through its first LayerNorm, which is invariant to their scale
    once |p| >> sqrt(eps): then <dL/dp, p> ~ 0 (Euler) while zeroing p changes the loss a lot.
    Only for prompts far below sqrt(eps) = 1e-3 does the first-order score predict zeroing."""
    model, batches = prompted
    exact = copy.deepcopy(model).double()  # float32 cannot resolve the loss change of a 1e-6 prompt
    tiny_scores, tiny_zeroed = _scaled(exact, [(x.double(), y) for x, y in batches], 1e-6)
    torch.testing.assert_close(tiny_zeroed, -tiny_scores, rtol=0.02, atol=1e-12)  # both float64
    scores, zeroed = _scaled(model, batches, 1.0)
    assert zeroed.abs().max() > 1e-3
    assert scores.abs().max() < 1e-3 * zeroed.abs().max()


class Weights(Callback):
    def on_fit_end(self, trainer, result):
        self.prompts = trainer.model.prompts.weight.detach().clone()


def test_fidelity_records_scores_and_effects_and_leaves_the_run_untouched(tiny_data):
    method = {"name": "provpt", "num_prompts": 2}
    plain, measured = Weights(), Weights()
    a = fit(tiny_trial(method, epochs=4), tiny_data, [plain])
    b = fit(tiny_trial({**method, "fidelity": {"epochs": [2, 3], "batches": 2}}, epochs=4), tiny_data, [measured])
    assert torch.equal(plain.prompts, measured.prompts)
    assert [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in a.history] == [
        {k: v for k, v in m.items() if k != "epoch_seconds"} for m in b.history
    ]
    assert a.events["relocation"] == b.events["relocation"]
    records = b.events["fidelity"]
    assert [r["epoch"] for r in records] == [2, 3]
    for record in records:
        assert len(record["prompt"]) == 24 and len(record["method_score"]) == 24
        assert all(len(record[k]) == 24 for k in ("block", "taylor", "loss_change_dropped", "loss_change_zeroed"))
        assert any(v != 0 for v in record["loss_change_dropped"])


class SaveAt(Callback):
    def __init__(self, epoch, path):
        self.epoch, self.path = epoch, path

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch == self.epoch:
            trainer.save_checkpoint(self.path)


def _branch(config: TrialConfig, moves) -> TrialConfig:
    return TrialConfig.from_dict({**config.to_dict(), "method": {**config.to_dict()["method"], "moves": moves}})


def test_a_branch_from_a_checkpoint_equals_the_run_that_moved_from_the_start(tiny_data, tmp_path):
    parent = tiny_trial({"name": "vpt_deep", "num_prompts": 2}, epochs=4)
    parent_result = fit(parent, tiny_data, [SaveAt(2, tmp_path / "epoch2.pt")])

    no_op = _branch(parent, [{"epoch": 2, "source": 4, "target": 4}])
    same = Weights()
    assert fit(no_op, tiny_data, [same], branch_from=tmp_path / "epoch2.pt").test_acc == parent_result.test_acc

    moved = _branch(parent, [{"epoch": 2, "source": 4, "target": 9}])
    branched, scratch = Weights(), Weights()
    result = fit(moved, tiny_data, [branched], branch_from=tmp_path / "epoch2.pt")
    whole = fit(moved, tiny_data, [scratch])
    assert result.distribution == whole.distribution and result.distribution[4] == 1 and result.distribution[9] == 3
    assert torch.equal(branched.prompts, scratch.prompts)
    assert result.test_acc == whole.test_acc and result.events["scripted_move"] == whole.events["scripted_move"]

    parent_weights = Weights()
    fit(parent, tiny_data, [parent_weights])
    assert torch.equal(same.prompts, parent_weights.prompts)
    assert not torch.equal(branched.prompts, parent_weights.prompts)


def test_a_branch_refuses_a_move_due_before_its_checkpoint(tiny_data, tmp_path):
    parent = tiny_trial({"name": "vpt_deep", "num_prompts": 2}, epochs=3)
    fit(parent, tiny_data, [SaveAt(2, tmp_path / "epoch2.pt")])
    late = Trainer(_branch(parent, [{"epoch": 1, "source": 0, "target": 3}]), tiny_data)
    with pytest.raises(ValueError, match="due before the checkpoint's epoch 2"):
        late.load_checkpoint(tmp_path / "epoch2.pt", branch=True)
    other = Trainer(_branch(tiny_trial({"name": "vpt_deep", "num_prompts": 2}, epochs=3, lr=0.1), []), tiny_data)
    with pytest.raises(ValueError, match="train.lr"):
        other.load_checkpoint(tmp_path / "epoch2.pt", branch=True)


def test_a_scripted_move_from_a_block_with_too_few_prompts_is_an_error_naming_it(tiny_data):
    config = tiny_trial({"name": "vpt_deep", "num_prompts": 1, "moves": [{"epoch": 1, "source": 3, "target": 0, "count": 2}]})
    with pytest.raises(ValueError, match="block 3 holds 1 prompts"):
        fit(config, tiny_data)
