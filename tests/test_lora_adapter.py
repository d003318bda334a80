"""LoRA and bottleneck adapters: parameter counts, identity at init, what trains and what stays."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_trial
from timm.models.vision_transformer import VisionTransformer

from provpt_core.config import ConfigError
from provpt_core.data.synthetic import synthetic_splits
from provpt_core.engine import Trainer
from provpt_core.methods import build_method_config, create_method
from provpt_core.methods.adapter import AdapterConfig, BlockAdapters, BottleneckAdapter
from provpt_core.methods.lora import LoRAConfig, QKVLoRA
from provpt_core.trial import TrialConfig

DIM, DEPTH = 64, 12  # the tiny ViT
VIT_B_DIM, VIT_B_DEPTH = 768, 12
HEAD = DIM * 4 + 4  # tiny_data has 4 classes


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _adapter(dim: int, width: int, bias: bool = True) -> int:
    return 2 * dim * width + (width + dim if bias else 0)


def _vit_b_trainable(spec: dict) -> int:
    """Trainable parameters, head excluded, of a method on a ViT-B/16-shaped backbone (built on
    the meta device: shapes only, no memory)."""
    with torch.device("meta"):
        backbone = VisionTransformer(
            img_size=224, patch_size=16, embed_dim=VIT_B_DIM, depth=VIT_B_DEPTH, num_heads=12, num_classes=0
        )
        backbone.requires_grad_(False)
        model = create_method(build_method_config(spec)).build_model(backbone, 100)
    trained = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("head.")]
    return sum(p.numel() for p in trained)


# ------------------------------------------------------------------ parameter counts
def test_lora_parameter_count_on_vit_b_dimensions():
    qkv = torch.nn.Linear(VIT_B_DIM, 3 * VIT_B_DIM, device="meta")
    blocks = [QKVLoRA(qkv, LoRAConfig()) for _ in range(VIT_B_DEPTH)]
    assert sum(_count(b) for b in blocks) == 294_912  # PRO-VPT's 0.29 M
    assert sum(_count(b) for b in blocks) == VIT_B_DEPTH * 2 * (VIT_B_DIM * 8 + 8 * VIT_B_DIM)
    assert _vit_b_trainable({"name": "lora"}) == 294_912
    assert _vit_b_trainable({"name": "lora", "targets": ["q", "k", "v"]}) == 294_912 * 3 // 2
    assert _vit_b_trainable({"name": "lora", "rank": 4}) == 294_912 // 2


def test_adapter_parameter_count_on_vit_b_dimensions():
    per_block = _count(BlockAdapters(VIT_B_DIM, AdapterConfig()))
    assert per_block == 2 * _adapter(VIT_B_DIM, 8)
    norms = (2 * VIT_B_DEPTH + 1) * 2 * VIT_B_DIM  # norm1, norm2 of every block and the final norm
    default = _vit_b_trainable({"name": "adapter"})
    assert default == VIT_B_DEPTH * per_block + norms == 351_936
    assert round(default / 1e6, 2) == 0.35  # PRO-VPT's Adapter row
    # the other settings of the docstring's table
    assert _vit_b_trainable({"name": "adapter", "train_norms": False}) == 313_536
    noah = {"name": "adapter", "attention": False, "train_norms": False}
    assert _vit_b_trainable(noah) == VIT_B_DEPTH * _adapter(VIT_B_DIM, 8) == 156_768
    assert _vit_b_trainable({**noah, "bottleneck": 16}) == 304_320
    assert _vit_b_trainable({**noah, "bottleneck": 18}) == 341_208
    assert _vit_b_trainable({**noah, "bottleneck": 19}) == 359_652
    assert _vit_b_trainable({**noah, "bottleneck": 19, "bias": False}) == 350_208
    assert _vit_b_trainable({**noah, "bias": False}) == VIT_B_DEPTH * _adapter(VIT_B_DIM, 8, bias=False)


def test_trainable_parameter_counts_on_the_tiny_vit(tiny_data):
    def count(method):
        return Trainer(tiny_trial(method, epochs=1), tiny_data).trainable_params()

    assert count({"name": "lora"}) == DEPTH * 2 * 8 * (DIM + DIM) + HEAD
    assert count({"name": "lora", "rank": 2, "targets": ["k"]}) == DEPTH * 2 * (DIM + DIM) + HEAD
    norms = (2 * DEPTH + 1) * 2 * DIM
    assert count({"name": "adapter"}) == DEPTH * 2 * _adapter(DIM, 8) + norms + HEAD
    noah = {"name": "adapter", "attention": False, "train_norms": False, "bottleneck": 4}
    assert count(noah) == DEPTH * _adapter(DIM, 4) + HEAD


def test_checkpoints_hold_the_new_modules(tiny_data):
    lora = Trainer(tiny_trial({"name": "lora"}, epochs=1), tiny_data).model.trainable_state_dict()
    assert "extras.lora.0.updates.q.down" in lora and "extras.lora.11.updates.v.up" in lora
    assert not any(k.startswith("extras.lora.0.updates.k") for k in lora)
    assert not any(k.startswith("backbone.") for k in lora)
    adapter = Trainer(tiny_trial({"name": "adapter"}, epochs=1), tiny_data).model.trainable_state_dict()
    assert "extras.adapters.0.attn.up.weight" in adapter and "extras.adapters.11.mlp.down.bias" in adapter
    backbone = {k for k in adapter if k.startswith("backbone.")}
    assert backbone and all(".norm" in k or k.startswith("backbone.norm.") for k in backbone)


def test_configs_are_checked():
    for bad, field in (
        ({"name": "lora", "rank": 0}, "rank"),
        ({"name": "lora", "alpha": 0.0}, "alpha"),
        ({"name": "lora", "dropout": 1.0}, "dropout"),
        ({"name": "lora", "targets": []}, "targets"),
        ({"name": "lora", "targets": ["q", "q"]}, "targets"),
        ({"name": "lora", "targets": ["o"]}, "targets"),
        ({"name": "adapter", "bottleneck": 0}, "bottleneck"),
        ({"name": "adapter", "dropout": -0.1}, "dropout"),
    ):
        with pytest.raises(ConfigError, match=f"method.{field}"):
            build_method_config(bad)
    assert LoRAConfig(rank=4, alpha=16.0).scaling == 4.0


# ------------------------------------------------------------- behaviour of the model
METHODS = {
    "lora": {"name": "lora"},
    "adapter": {"name": "adapter"},
    "adapter_mlp_only": {"name": "adapter", "attention": False, "train_norms": False},
}


def _inputs(trainer: Trainer) -> torch.Tensor:
    return trainer._prepare(trainer.splits["test"].images[:16], train=False)


@pytest.mark.parametrize("method", METHODS)
def test_output_equals_the_frozen_backbone_at_init(method, tiny_data):
    # the linear probe, same seed: the same backbone and head, without the method's modules
    reference = Trainer(tiny_trial({"name": "linear"}, epochs=1), tiny_data)
    trainer = Trainer(tiny_trial(METHODS[method], epochs=1), tiny_data)
    frozen = {k: v for k, v in trainer.model.state_dict().items() if k.startswith(("backbone.", "head."))}
    assert all(torch.equal(v, reference.model.state_dict()[k]) for k, v in frozen.items())
    hooked = [m for m in trainer.model.backbone.modules() if m._forward_hooks]
    assert len(hooked) == {"lora": DEPTH, "adapter": 2 * DEPTH, "adapter_mlp_only": DEPTH}[method]
    trainer.model.eval()
    reference.model.eval()
    with torch.no_grad():
        x = _inputs(trainer)
        assert torch.equal(trainer.model(x), reference.model(x))


@pytest.mark.parametrize("method", METHODS)
def test_training_changes_the_features_and_leaves_the_frozen_backbone_bitwise(method, tiny_data):
    trainer = Trainer(tiny_trial(METHODS[method], epochs=2), tiny_data)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    x = _inputs(trainer)
    trainer.model.eval()
    with torch.no_grad():
        features = trainer.model.features(x)
    trainer.fit()
    trainer.model.eval()
    with torch.no_grad():
        assert not torch.allclose(trainer.model.features(x), features)  # the head alone cannot do this
    after = trainer.model.backbone.state_dict()
    trains_norms = METHODS[method].get("train_norms", method == "adapter")
    norms = {k for k in before if ".norm" in k or k.startswith("norm.")}
    assert norms  # the LayerNorm names are what the test thinks they are
    for key, value in before.items():
        if trains_norms and key in norms:
            continue
        assert torch.equal(value, after[key]), key
    if trains_norms:
        assert any(not torch.equal(before[k], after[k]) for k in norms)


@pytest.mark.parametrize(
    "targets, changed", [(["q", "v"], (True, False, True)), (["k"], (False, True, False))], ids=["qv", "k"]
)
def test_lora_updates_only_its_target_projections(targets, changed, tiny_data):
    trainer = Trainer(tiny_trial({"name": "lora", "targets": targets}, epochs=2), tiny_data)
    qkv = trainer.model.backbone.blocks[0].attn.qkv
    probe = torch.randn(1, 5, DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = qkv(probe).clone()
    trainer.fit()
    trainer.model.eval()
    with torch.no_grad():
        after = qkv(probe)
    for third, expect in enumerate(changed):
        part = slice(third * DIM, (third + 1) * DIM)
        assert torch.equal(before[..., part], after[..., part]) is not expect, (targets, third)


def _learning_run(method: dict) -> list[float]:
    """Six AdamW epochs on the pretrained tiny ViT (on its random init an adapter, which cannot
    move information between tokens, has no attention pattern worth adapting to)."""
    data = synthetic_splits(num_classes=4, train=256, val=64, test=64, seed=1)
    config = tiny_trial(method, epochs=6, optimizer="adamw", lr=1e-3, grad_clip=None).to_dict()
    config["backbone"]["weights"] = "pretrained"
    result = Trainer(TrialConfig.from_dict(config), data).fit()
    return [m["train_loss"] for m in result.history]


@pytest.fixture(scope="module")
def head_only_losses():
    return _learning_run({"name": "linear"})


@pytest.mark.parametrize("method", METHODS)
def test_each_method_learns(method, head_only_losses):
    losses = _learning_run(METHODS[method])
    assert losses[-1] < 0.8 * losses[0], losses
    # and it is the new modules that learn: the head alone, same budget, stays far behind
    assert losses[-1] < 0.5 * head_only_losses[-1], (losses, head_only_losses)


def test_adapter_is_the_identity_at_init_and_not_after_a_step():
    adapter = BottleneckAdapter(DIM, 4)
    y = torch.randn(2, 3, DIM)
    assert torch.equal(adapter(y), y)
    adapter(y).pow(2).sum().backward()
    assert adapter.up.weight.grad.abs().sum() > 0 and adapter.down.weight.grad.abs().sum() == 0  # up is zero
