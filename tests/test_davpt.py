"""DA-VPT and DA-VPT+ as the authors' released code computes them, checked against values
computed by hand or from the written-out formula on small cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_trial
from timm.models.vision_transformer import VisionTransformer

from provpt_core.config import ConfigError
from provpt_core.data.synthetic import synthetic_splits
from provpt_core.engine import Callback, Trainer
from provpt_core.methods import build_method_config
from provpt_core.methods.davpt import (
    DAVPT,
    DAVPTConfig,
    DAVPTPlus,
    DAVPTPlusConfig,
    cosine_kmeans,
    proxy_anchor_loss,
    sample_per_class,
)
from provpt_core.methods.davpt import method as davpt_method
from provpt_core.model import VPT_HEAD_BIAS

DIM, DEPTH = 64, 12  # the tiny ViT


@pytest.fixture(scope="module")
def seven_classes():
    return synthetic_splits(num_classes=7, train=140, val=28, test=28, seed=2)


def hand_proxy_anchor(embeddings, proxies, assigned, alpha=32.0, delta=0.1, length=1.0, pull="all_proxies"):
    """Proxy-Anchor written out term by term, in float64."""
    e = F.normalize(embeddings.detach().double(), dim=1)
    p = F.normalize(proxies.detach().double(), dim=1) * length
    pulls, pushes = [], []
    for k in range(len(p)):
        positives = [i for i in range(len(e)) if int(assigned[i]) == k]
        negatives = [i for i in range(len(e)) if int(assigned[i]) != k]
        pos = sum(math.exp(-alpha * (float(e[i] @ p[k]) - delta)) for i in positives)
        neg = sum(math.exp(alpha * (float(e[i] @ p[k]) + delta)) for i in negatives)
        if positives or pull == "all_proxies":
            pulls.append(math.log(1 + pos))
        pushes.append(math.log(1 + neg))
    return sum(pulls) / len(pulls) + sum(pushes) / len(pushes)


# ------------------------------------------------------------------ the loss
def test_pull_term_averaged_over_all_proxies_or_those_with_positives():
    proxies = torch.eye(3)
    embeddings = torch.eye(3)[[0, 0]]  # two images of proxy 0's class: proxies 1 and 2 have no positives
    assigned = torch.tensor([0, 0])
    # cosines 1 to proxy 0, 0 to the others; alpha 1, delta 0
    pull = math.log(1 + 2 * math.exp(-1))  # proxy 0's pull; 0 for proxies 1 and 2
    push = (0 + math.log(1 + 2) + math.log(1 + 2)) / 3  # proxy 0 has no negatives
    code = proxy_anchor_loss(embeddings, proxies, assigned, 1.0, 0.0, pull_average="all_proxies")
    paper = proxy_anchor_loss(embeddings, proxies, assigned, 1.0, 0.0, pull_average="with_positives")
    assert code.item() == pytest.approx(pull / 3 + push)
    assert paper.item() == pytest.approx(pull / 1 + push)
    # every proxy with a positive: the two agree
    assigned = torch.tensor([0, 1, 2])
    both = [
        proxy_anchor_loss(torch.eye(3), proxies, assigned, 1.0, 0.0, pull_average=a)
        for a in ("all_proxies", "with_positives")
    ]
    assert both[0].item() == pytest.approx(both[1].item())


def test_proxy_length_scales_the_cosine_and_stays_finite():
    torch.manual_seed(0)
    embeddings, proxies, assigned = torch.randn(6, 8), torch.randn(3, 8), torch.tensor([0, 1, 2, 0, 1, 1])
    for length in (1.0, 5.0):
        loss = proxy_anchor_loss(embeddings, proxies, assigned, 2.0, 0.1, proxy_length=length)
        assert loss.item() == pytest.approx(
            hand_proxy_anchor(embeddings, proxies, assigned, 2.0, 0.1, length), rel=1e-5
        )
    # cosine times length: Proxy-Anchor with alpha * length and delta / length
    scaled = proxy_anchor_loss(embeddings, proxies, assigned, 2.0, 0.1, proxy_length=5.0)
    plain = proxy_anchor_loss(embeddings, proxies, assigned, 2.0 * 5.0, 0.1 / 5.0)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-5)
    # alpha 32 at length 60 (their largest): exp(32 * 60) overflows; the loss must not
    assert torch.isfinite(proxy_anchor_loss(embeddings, proxies, assigned, 32.0, 0.1, proxy_length=60.0))


def test_proxy_anchor_loss_prefers_embeddings_near_their_proxy():
    proxies = torch.eye(2, 4)
    assigned = torch.tensor([0, 1])
    near = proxy_anchor_loss(proxies.clone(), proxies, assigned, 32.0, 0.1)
    swapped = proxy_anchor_loss(proxies.flip(0), proxies, assigned, 32.0, 0.1)
    assert near < swapped
    embeddings = torch.randn(2, 4, requires_grad=True)
    proxy_anchor_loss(embeddings, proxies, assigned, 32.0, 0.1).backward()
    assert embeddings.grad.abs().sum() > 0


CODE = {}
PAPER = {
    "patch_embedding": "block_output",
    "cls_embedding": "block_output",
    "pull_average": "with_positives",
    "guided_reduction": "sum",
}


@pytest.mark.parametrize("variant", [CODE, PAPER], ids=["code", "paper"])
def test_loss_from_block_inputs_and_cls_query_averaged_over_guided_blocks(variant, seven_classes):
    method = {
        "name": "davpt",
        "num_prompts": 2,
        "guided_num_prompts": 3,
        "guided_blocks": [-1, 5],
        "beta": 0.3,
        "lam": 0.7,
    }
    trainer = Trainer(tiny_trial({**method, **variant}, epochs=1), seven_classes)
    model = trainer.model
    seen = {}
    for block in (5, 11):
        model.backbone.blocks[block].register_forward_pre_hook(
            lambda m, args, b=block: seen.__setitem__((b, "in"), args[0])
        )
        model.backbone.blocks[block].register_forward_hook(
            lambda m, args, out, b=block: seen.__setitem__((b, "out"), out)
        )
    model.head.register_forward_hook(lambda m, args, out: seen.__setitem__("logits", out))
    images, labels = next(trainer.train_batches())
    loss = trainer.loss(images, labels)

    assigned = trainer.method.mapping[labels]
    assert set(assigned.tolist()) <= {0, 1, 2}
    terms = []
    for block in (5, 11):
        vit_block = model.backbone.blocks[block]
        tokens = seen[(block, "in")]
        assert tokens.shape[1] == 1 + 3 + 16  # [CLS, the block's 3 prompts, 16 patches]
        proxies = model.prompts.weight[model.prompts.block_rows(block)]
        if variant:
            patch = seen[(block, "out")][:, 1 + 3 :].mean(1)
            cls = seen[(block, "out")][:, 0]
        else:
            patch = tokens[:, 1 + 3 :].mean(1)  # the block input's patch tokens
            cls = vit_block.attn.qkv(vit_block.norm1(tokens))[:, 0, :DIM]  # the CLS query
        pull = variant.get("pull_average", "all_proxies")
        terms.append(
            0.3 * hand_proxy_anchor(patch, proxies, assigned, pull=pull)
            + 0.7 * hand_proxy_anchor(cls, proxies, assigned, pull=pull)
        )
    guided = sum(terms) if variant else sum(terms) / len(terms)
    expected = F.cross_entropy(seen["logits"].double(), labels).item() + guided
    assert loss.item() == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------- the mapping
def test_mapping_sampler_draws_ten_images_per_class():
    labels = torch.tensor([0] * 30 + [1] * 4 + [3] * 10)  # class 2 has no images
    draws = sample_per_class(labels, 4, 10, torch.Generator().manual_seed(0))
    first = draws[:30]
    assert first.sum() == 10 and set(first.tolist()) == {0.0, 1.0}  # 10 distinct images of 30
    few = draws[30:34]
    assert few.sum() == 10 and sorted(few.tolist()) == [2.0, 2.0, 3.0, 3.0]  # all twice, 2 of them once more
    assert draws[34:].tolist() == [1.0] * 10


def test_initial_mapping_uses_the_frozen_mean_cls_of_ten_images_per_class(seven_classes, monkeypatch):
    clustered = []
    real = davpt_method.cosine_kmeans

    def spy(points, *args, **kwargs):
        clustered.append((points.clone(), kwargs))
        return real(points, *args, **kwargs)

    monkeypatch.setattr(davpt_method, "cosine_kmeans", spy)
    config = tiny_trial({"name": "davpt", "num_prompts": 2, "guided_num_prompts": 3}, epochs=1)
    trainer = Trainer(config, seven_classes)
    ((points, kwargs),) = clustered
    assert kwargs["norm"] == "layer" and kwargs["init"] == "random" and kwargs["empty"] == "keep"
    vit = trainer.model.backbone
    features = trainer.split_features(
        "train", lambda x: vit.forward_head(vit.forward_features(x), pre_logits=True)
    )
    labels = seven_classes.train.labels
    # the method's generator, seeded with the trial seed, draws the images first
    draws = sample_per_class(labels, 7, 10, torch.Generator().manual_seed(config.train.seed))
    for c in range(7):
        chosen = (labels == c) & (draws > 0)
        assert int(chosen.sum()) == 10 < int((labels == c).sum())
        assert torch.allclose(points[c], features[chosen].mean(0), atol=1e-5)
        assert not torch.allclose(points[c], features[labels == c].mean(0), atol=1e-5)


def _layer_norm_by_hand(x):
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_kmeans_layer_norms_and_keeps_an_empty_cluster():
    points = torch.tensor([[10.0, 10, 10, 11], [10, 10, 10, 12], [10, 11, 10, 10], [10, 12, 10, 11]])
    normed = _layer_norm_by_hand(points)
    # start: normed points 0 and 2, and a third centroid opposite to point 0 that no point is near
    start = torch.stack([normed[0], normed[2], -normed[0]])
    assign, centroids = cosine_kmeans(points, 3, 5, torch.Generator(), start, norm="layer", empty="keep")
    cosines = F.normalize(normed, dim=1) @ F.normalize(start, dim=1).T
    assert assign.tolist() == cosines.argmax(1).tolist() == [0, 0, 1, 1]
    assert torch.allclose(centroids[0], normed[:2].mean(0), atol=1e-5)
    assert torch.allclose(centroids[1], normed[2:].mean(0), atol=1e-5)
    assert torch.equal(centroids[2], start[2])  # the empty cluster keeps its centroid, and no class
    # the earlier behaviour: an emptied cluster takes the worst-fitting point
    assign, _ = cosine_kmeans(points, 3, 5, torch.Generator(), start, norm="layer", empty="refill")
    assert set(assign.tolist()) == {0, 1, 2}


def test_kmeans_starts_from_random_points():
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(9, 6, generator=generator)
    seeds = torch.randperm(9, generator=torch.Generator().manual_seed(5))[:4]
    assign, _ = cosine_kmeans(points, 4, 1, torch.Generator().manual_seed(5), norm="layer")
    normed = _layer_norm_by_hand(points)
    expected = (F.normalize(normed, dim=1) @ F.normalize(normed[seeds], dim=1).T).argmax(1)
    assert assign.tolist() == expected.tolist()


def test_cosine_kmeans_separates_directions():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([d + 0.05 * torch.randn(5, 3, generator=generator) for d in torch.eye(3)])
    for norm, init in (("l2", "kmeans++"), ("none", "random")):
        assign, _ = cosine_kmeans(points, 3, 10, generator, norm=norm, init=init)
        groups = [set(assign[i * 5 : (i + 1) * 5].tolist()) for i in range(3)]
        assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3


def test_fewer_classes_than_guided_prompts_get_one_prompt_each(seven_classes):
    trainer = Trainer(
        tiny_trial({"name": "davpt", "num_prompts": 2}, epochs=1), seven_classes
    )  # 10 guided prompts
    assert trainer.method.mapping.tolist() == list(range(7))
    assert (
        len(trainer.model.prompts.block_rows(DEPTH - 1)) == 7
        and len(trainer.model.prompts.block_rows(0)) == 2
    )
    trainer = Trainer(
        tiny_trial({"name": "davpt", "num_prompts": 2, "guided_num_prompts": 3}, epochs=1), seven_classes
    )
    assert len(trainer.model.prompts.block_rows(DEPTH - 1)) == 3
    mapping = trainer.method.mapping
    assert mapping.shape == (7,) and 0 <= int(mapping.min()) and int(mapping.max()) < 3


@pytest.mark.parametrize("start, epochs, remapped", [(2, 5, [3, 4]), (1, 4, [2, 3]), (0, 4, [])])
def test_remapping_only_from_the_configured_epoch(start, epochs, remapped, seven_classes, monkeypatch):
    calls, holder = [], {}
    real = davpt_method.cosine_kmeans

    def spy(*args, **kwargs):
        calls.append(holder["trainer"].epoch if holder else "setup")
        return real(*args, **kwargs)

    monkeypatch.setattr(davpt_method, "cosine_kmeans", spy)

    class Counts(Callback):
        def on_epoch_end(self, trainer, metrics):
            counted.append(int(trainer.method.class_counts.sum()))

    counted = []
    method = {"name": "davpt", "num_prompts": 2, "guided_num_prompts": 3, "remap_from_epoch": start}
    trainer = Trainer(tiny_trial(method, epochs=epochs), seven_classes, [Counts()])
    holder["trainer"] = trainer
    trainer.fit()
    # the initial mapping, then a re-mapping at the start of every epoch after a collecting one
    assert calls == ["setup"] + remapped
    collected = [140 if start and epoch >= start else 0 for epoch in range(epochs)]
    assert counted == collected


class StopAndSave(Callback):
    def __init__(self, after, path):
        self.after, self.path = after, path

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch == self.after:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


@pytest.mark.parametrize("name", ["davpt", "davpt_plus"])
def test_resume_with_remapping_is_identical(name, seven_classes, tmp_path):
    config = tiny_trial(
        {"name": name, "num_prompts": 2, "guided_num_prompts": 3, "guided_blocks": [-1, 6]}, epochs=4
    )
    straight = Trainer(config, seven_classes)
    straight.fit()
    Trainer(config, seven_classes, [StopAndSave(2, tmp_path / "ckpt.pt")]).fit()
    resumed = Trainer(config, seven_classes)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.fit()
    assert torch.equal(straight.method.mapping, resumed.method.mapping)
    a, b = straight.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------- init and parameters
def _vit_b() -> VisionTransformer:
    vit = VisionTransformer(embed_dim=768, depth=12, num_heads=12, num_classes=0, weight_init="skip")
    return vit.requires_grad_(False)


def test_prompt_and_head_init_on_vit_b_dimensions():
    torch.manual_seed(0)
    model = DAVPT(DAVPTConfig(num_prompts=10)).build_model(_vit_b(), 200)
    bank = model.prompts
    guided, others = (
        bank.weight[bank.block_rows(11)],
        bank.weight[torch.cat([bank.block_rows(b) for b in range(11)])],
    )
    # xavier-uniform on their [blocks, prompts, 768] tensors (fan_in prompts*768, fan_out blocks*768), / 8
    for rows, blocks in ((guided, 1), (others, 11)):
        bound = math.sqrt(6 / (10 * 768 + blocks * 768)) / 8
        assert rows.abs().max() <= bound and rows.abs().max() > 0.99 * bound
    assert bank.dropout.p == 0.0
    assert torch.equal(model.head.bias, torch.zeros(200))
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.head.weight.mean().abs() < 1e-3
    # VPT's: uniform +-sqrt(6 / (3 * 16 * 16 + 768)) = 0.0625, kaiming head with bias -log 99
    vpt = DAVPT(DAVPTConfig(num_prompts=10, prompt_init="vpt_uniform", head_init="vpt")).build_model(
        _vit_b(), 200
    )
    assert vpt.prompts.weight.abs().max().item() == pytest.approx(0.0625, rel=0.01)
    assert torch.allclose(vpt.head.bias, torch.full((200,), VPT_HEAD_BIAS))


@pytest.mark.parametrize(
    "bias_set, key, expected",
    [
        ("authors", True, 66_048),
        ("authors", False, 56_832),
        ("kv", True, 12 * 2 * 768),
        ("kv", False, 12 * 768),
    ],
)
def test_davpt_plus_trained_backbone_parameters_on_vit_b(bias_set, key, expected):
    config = DAVPTPlusConfig(num_prompts=10, bias_set=bias_set, train_key_bias=key)
    model = DAVPTPlus(config).build_model(_vit_b(), 200)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trained - model.prompts.weight.numel() - 200 * 769 == expected
    names = {
        n.split(".", 3)[-1] if n.startswith("backbone.blocks") else n
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    if bias_set == "authors":
        # per block (k), v, proj, fc2 and norm2 biases and norm1; the CLS token, the patch-embedding bias
        per_block = {"norm1.weight", "norm1.bias", "attn.proj.bias", "mlp.fc2.bias", "norm2.bias"}
        outside = {"backbone.cls_token", "backbone.patch_embed.proj.bias"}
        ours = {"prompts.weight", "head.weight", "head.bias"} | {f"extras.kv_biases.{i}.offset" for i in range(12)}
        assert names == per_block | outside | ours


def test_davpt_plus_kv_trains_only_key_and_value_biases(tiny_data):
    trainer = Trainer(
        tiny_trial({"name": "davpt_plus", "num_prompts": 2, "bias_set": "kv"}, epochs=2), tiny_data
    )
    qkv = trainer.model.backbone.blocks[0].attn.qkv
    before = qkv(torch.ones(1, 1, DIM)).detach()
    trainer.fit()
    after = qkv(torch.ones(1, 1, DIM)).detach()
    assert torch.equal(before[..., :DIM], after[..., :DIM])  # queries untouched
    assert not torch.equal(before[..., DIM:], after[..., DIM:])


def test_config_checks_and_defaults():
    config = build_method_config({"name": "davpt_plus"})
    assert (config.bias_set, config.train_key_bias, config.guided_num_prompts, config.remap_from_epoch) == (
        "authors",
        True,
        10,
        1,
    )
    with pytest.raises(ConfigError, match="remap_from_epoch"):
        build_method_config({"name": "davpt", "remap_from_epoch": -1})
    with pytest.raises(ConfigError, match="guided_num_prompts"):
        build_method_config({"name": "davpt", "guided_num_prompts": 0})
    with pytest.raises(ConfigError, match="pull_average"):
        build_method_config({"name": "davpt", "pull_average": "some"})
