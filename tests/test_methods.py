"""The seed papers' other methods: VAPT, DA-VPT, DA-VPT+ and full fine-tuning."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_trial

from provpt_core.data.synthetic import synthetic_splits
from provpt_core.engine import Trainer
from provpt_core.methods.davpt import cosine_kmeans, proxy_anchor_loss
from provpt_core.methods.vapt import VAPTConfig, VAPTPrompts

DIM, DEPTH = 64, 12  # the tiny ViT


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vapt_parameter_count_on_vit_b_dimensions():
    prompts = VAPTPrompts(VAPTConfig(num_prompts=10, kernel_size=2, projector_rank=8), 768, 12, (14, 14), 0.06)
    assert _count(prompts) == 55_608
    # the parts: block-0 prompts, 11 x (LayerNorm, 2x2 kernel, 169 -> 10 map), one shared projector
    assert _count(prompts) == 10 * 768 + 11 * (2 * 768 + 4 + 169 * 10 + 10) + 2 * 768 * 8
    per_layer = VAPTPrompts(VAPTConfig(num_prompts=10, shared_projector=False), 768, 12, (14, 14), 0.06)
    assert _count(per_layer) == 55_608 + 10 * 2 * 768 * 8
    no_conv = VAPTPrompts(VAPTConfig(num_prompts=10, conv=False, projector=False), 768, 12, (14, 14), 0.06)
    assert _count(no_conv) == 10 * 768 + 11 * (2 * 768 + 196 * 10 + 10)


def test_vapt_generated_prompts_are_exactly_zero_at_init_and_shaped():
    prompts = VAPTPrompts(VAPTConfig(num_prompts=5, static_blocks=2), DIM, DEPTH, (4, 4), 0.1)
    tokens = torch.randn(3, 16, DIM)
    for block in range(2, DEPTH):
        generated = prompts.block_prompts(block, tokens)
        assert generated.shape == (3, 5, DIM) and torch.equal(generated, torch.zeros_like(generated))
    static = prompts.block_prompts(0, tokens)
    assert static.shape == (3, 5, DIM) and static.abs().sum() > 0


def test_vapt_prompts_depend_on_the_input_once_trained(tiny_data):
    trainer = Trainer(tiny_trial({"name": "vapt", "num_prompts": 2}, epochs=2), tiny_data)
    trainer.fit()
    prompts = trainer.model.prompts.eval()
    a, b = prompts.block_prompts(4, torch.randn(1, 16, DIM)), prompts.block_prompts(4, torch.randn(1, 16, DIM))
    assert a.abs().sum() > 0 and not torch.allclose(a, b)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "vapt", "num_prompts": 4},
        {"name": "davpt", "num_prompts": 4},
        {"name": "davpt_plus", "num_prompts": 4},
        {"name": "full"},
    ],
    ids=lambda m: m["name"],
)
def test_each_method_learns(method):
    data = synthetic_splits(num_classes=4, train=256, val=64, test=64, seed=1)
    train = {"optimizer": "adamw", "lr": 1e-3} if method["name"] == "full" else {"lr": 0.1}
    result = Trainer(tiny_trial(method, epochs=6, **train), data).fit()
    losses = [m["train_loss"] for m in result.history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_trainable_parameter_counts(tiny_data):
    head = DIM * 4 + 4

    def count(method):
        return Trainer(tiny_trial(method, epochs=1), tiny_data).trainable_params()

    assert count({"name": "davpt", "num_prompts": 3}) == 3 * DEPTH * DIM + head
    assert count({"name": "davpt_plus", "num_prompts": 3}) == 3 * DEPTH * DIM + DEPTH * 2 * DIM + head
    authors = DEPTH * (2 * DIM + DIM + DIM + 2 * DIM) + DIM  # kv, proj and fc2 biases, norm1, the CLS token
    assert count({"name": "davpt_plus", "num_prompts": 3, "bias_set": "authors"}) == 3 * DEPTH * DIM + authors + head
    trainer = Trainer(tiny_trial({"name": "full"}, epochs=1), tiny_data)
    assert trainer.trainable_params() == _count(trainer.model)


def test_davpt_plus_trains_only_key_and_value_biases(tiny_data):
    trainer = Trainer(tiny_trial({"name": "davpt_plus", "num_prompts": 2}, epochs=2), tiny_data)
    qkv = trainer.model.backbone.blocks[0].attn.qkv
    before = qkv(torch.ones(1, 1, DIM)).detach()
    trainer.fit()
    after = qkv(torch.ones(1, 1, DIM)).detach()
    assert torch.equal(before[..., :DIM], after[..., :DIM])  # queries untouched
    assert not torch.equal(before[..., DIM:], after[..., DIM:])


def test_davpt_mapping_covers_every_class():
    data = synthetic_splits(num_classes=7, train=140, val=28, test=28, seed=2)
    for prompts in (3, 7, 10):
        trainer = Trainer(tiny_trial({"name": "davpt", "num_prompts": prompts}, epochs=2), data)
        mapping = trainer.method.mapping
        assert mapping.shape == (7,) and int(mapping.min()) >= 0 and int(mapping.max()) < prompts
        if prompts >= 7:
            assert mapping.tolist() == list(range(7))  # a prompt of its own per class
        else:
            assert set(mapping.tolist()) == set(range(prompts))  # and no prompt left without a class
        trainer.fit()  # re-clustered, warm-started, after every epoch
        assert set(trainer.method.mapping.tolist()) == set(range(min(prompts, 7)))


def test_cosine_kmeans_separates_directions_and_keeps_clusters_non_empty():
    generator = torch.Generator().manual_seed(0)
    directions = torch.eye(3)
    points = torch.cat([d + 0.05 * torch.randn(5, 3, generator=generator) for d in directions])
    assign, _ = cosine_kmeans(points, 3, 10, generator)
    groups = [set(assign[i * 5 : (i + 1) * 5].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    # four clusters of three directions: none is left empty
    assign, _ = cosine_kmeans(points, 4, 10, generator)
    assert set(assign.tolist()) == {0, 1, 2, 3}


def test_proxy_anchor_loss_prefers_embeddings_near_their_proxy():
    proxies = torch.eye(2, 4)
    assigned = torch.tensor([0, 1])
    near = proxy_anchor_loss(proxies.clone(), proxies, assigned, 32.0, 0.1)
    swapped = proxy_anchor_loss(proxies.flip(0), proxies, assigned, 32.0, 0.1)
    assert near < swapped
    embeddings = torch.randn(2, 4, requires_grad=True)
    proxy_anchor_loss(embeddings, proxies, assigned, 32.0, 0.1).backward()
    assert embeddings.grad.abs().sum() > 0
