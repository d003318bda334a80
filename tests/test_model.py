import math

import pytest
import torch

from provpt_core.backbone import BackboneConfig, load_backbone
from provpt_core.methods import build_method_config, create_method
from provpt_core.methods.vpt import VPTDeepConfig, prompted_vit
from provpt_core.prompts import PRUNED, PromptBank, vpt_init_range
from provpt_core.tiny_vit import TINY_VIT_NAME

PATCHES = 16  # the tiny ViT sees 32 px images as 4 x 4 patches of 8 px


@pytest.fixture()
def backbone():
    torch.manual_seed(0)
    return load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))


def _sequence_lengths(model, batch=2):
    lengths = []
    hooks = [
        block.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
        for block in model.backbone.blocks
    ]
    model.eval()
    model(torch.randn(batch, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return lengths


def _model(method: dict, backbone):
    return create_method(build_method_config(method)).build_model(backbone, num_classes=5)


def test_deep_prompts_replace_each_block(backbone):
    assert _sequence_lengths(_model({"name": "vpt_deep", "num_prompts": 3}, backbone)) == [1 + 3 + PATCHES] * 12


def test_shallow_prompts_are_inserted_once_and_carried(backbone):
    model = _model({"name": "vpt_shallow", "num_prompts": 5}, backbone)
    assert model.prompts.counts() == [5] + [0] * 11
    assert _sequence_lengths(model) == [1 + 5 + PATCHES] * 12


def test_deep_on_some_blocks_carries_prompt_outputs_past_the_last_prompted_block(backbone):
    """VPT's depth ablation: blocks before the first prompted one see no prompts; after it,
    a block without prompts of its own keeps the previous block's prompt outputs."""
    model = _model({"name": "vpt_deep", "num_prompts": 4, "blocks": [3, 7]}, backbone)
    assert _sequence_lengths(model) == [1 + PATCHES] * 3 + [1 + 4 + PATCHES] * 9
    seen = {}
    for b, block in enumerate(model.backbone.blocks):
        block.register_forward_pre_hook(lambda m, args, b=b: seen.__setitem__(b, args[0][0, 1:5].clone()))
        block.register_forward_hook(lambda m, args, out, b=b: seen.__setitem__(("out", b), out[0, 1:5].clone()))
    model.eval()
    model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(seen[3], model.prompts.weight[:4])  # inserted fresh
    torch.testing.assert_close(seen[4], seen[("out", 3)])  # block 3's outputs carried on
    torch.testing.assert_close(seen[7], model.prompts.weight[4:])  # replaced at block 7
    torch.testing.assert_close(seen[8], seen[("out", 7)])


def test_deep_prompts_at_block_zero_alone_are_vpt_shallow(backbone):
    deep = _model({"name": "vpt_deep", "num_prompts": 3, "blocks": [0], "dropout": 0.0}, backbone).eval()
    shallow = _model({"name": "vpt_shallow", "num_prompts": 3}, backbone).eval()
    shallow.prompts.weight.data.copy_(deep.prompts.weight.data)
    shallow.head.load_state_dict(deep.head.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(deep(images), shallow(images), rtol=0, atol=0)


def test_provpt_keeps_an_emptied_block_empty(backbone):
    model = _model({"name": "provpt", "num_prompts": 2}, backbone)
    for prompt in (0, 1):  # empty block 0 into block 1
        model.prompts.relocate(prompt, 1, rescale=1.0)
    assert _sequence_lengths(model) == [1 + PATCHES, 1 + 4 + PATCHES] + [1 + 2 + PATCHES] * 10


def test_variable_distribution_with_empty_blocks(backbone):
    counts = [3, 0, 0, 7, 1, 0, 2, 0, 0, 0, 0, 4]
    model = prompted_vit(VPTDeepConfig(), backbone, 5, counts, "replace")
    assert _sequence_lengths(model) == [1 + c + PATCHES for c in counts]
    carried = prompted_vit(VPTDeepConfig(), backbone, 5, counts, "carry")
    running = [sum(counts[: b + 1]) for b in range(12)]
    assert _sequence_lengths(carried) == [1 + c + PATCHES for c in running]


def test_each_block_sees_exactly_its_own_prompt_rows(backbone):
    model = prompted_vit(VPTDeepConfig(dropout=0.0), backbone, 5, [2, 0, 3] + [0] * 9, "replace")
    seen = {}
    for b, block in enumerate(model.backbone.blocks):
        block.register_forward_pre_hook(lambda m, args, b=b: seen.__setitem__(b, args[0][0, 1:-PATCHES].clone()))
    model.eval()
    model(torch.randn(1, 3, 32, 32))
    bank = model.prompts
    torch.testing.assert_close(seen[0], bank.weight[:2])
    assert seen[1].shape[0] == 0
    torch.testing.assert_close(seen[2], bank.weight[2:5])
    bank.relocate(0, 2, rescale=1.0)  # prompt 0 now sits in block 2 and only there
    model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(seen[0], bank.weight[1:2])
    assert {tuple(r.tolist()) for r in seen[2]} == {tuple(bank.weight[k].tolist()) for k in (0, 2, 3, 4)}


def test_vpt_init_and_head_bias(backbone):
    assert vpt_init_range(16, 768) == pytest.approx(0.0625)
    model = _model({"name": "vpt_deep", "num_prompts": 50}, backbone)
    bound = vpt_init_range(8, 64)
    weight = model.prompts.weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform's std
    assert torch.all(model.head.bias == -math.log(99))
    # kaiming normal, fan-out mode (the head's 5 outputs), gain sqrt(2): std sqrt(2 / 5)
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(2 / 5), rel=0.15)


def test_prompt_dropout_only_in_training(backbone):
    bank = PromptBank([4] * 12, dim=64, init_range=0.1, dropout=0.5)
    tokens = torch.zeros(8, 16, 64)
    bank.train()
    dropped = bank.block_prompts(0, tokens)
    assert (dropped == 0).float().mean() > 0.3
    assert not torch.equal(dropped[0], dropped[1])  # a mask per sample
    bank.eval()
    assert torch.equal(bank.block_prompts(0, tokens), bank.weight[:4].expand(8, -1, -1))


def test_backbone_stays_frozen_in_eval_mode_while_prompts_train(backbone):
    model = _model({"name": "vpt_deep", "num_prompts": 2}, backbone)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.prompts.training
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert model.prompts.weight.grad.abs().sum() > 0


def test_pruned_prompts_leave_the_distribution(backbone):
    bank = PromptBank([2, 1], dim=4, init_range=0.1)
    bank.relocate(1, PRUNED, rescale=1.0)
    assert bank.counts() == [1, 1] and bank.num_prompts == 3


def test_distribution_survives_state_dict(backbone):
    model = _model({"name": "vpt_deep", "num_prompts": 2}, backbone)
    model.prompts.relocate(0, 7, rescale=1e-3)
    other = _model({"name": "vpt_deep", "num_prompts": 2}, backbone)
    _sequence_lengths(other)  # caches the rows of the old distribution
    other.load_trainable_state_dict(model.trainable_state_dict())
    assert other.prompts.counts() == model.prompts.counts()
    assert _sequence_lengths(other) == [1 + c + PATCHES for c in model.prompts.counts()]
