import math

import pytest
import torch

from conftest import tiny_trial
from provpt_core.data.synthetic import synthetic_splits
from provpt_core.engine import Callback, DivergedError, Trainer, fit
from provpt_core.trial import TrialConfig

METHODS = {
    "linear": {"name": "linear"},
    "vpt_shallow": {"name": "vpt_shallow", "num_prompts": 3},
    "vpt_deep": {"name": "vpt_deep", "num_prompts": 2},
    "provpt": {"name": "provpt", "num_prompts": 2},
    "provpt_reference": {"name": "provpt", "num_prompts": 2, "relocation": {"idleness": "reference"}},
    "provpt_thompson": {
        "name": "provpt",
        "num_prompts": 2,
        "relocation": {"allocator": "thompson", "prompts_per_move": 2, "keep_momentum": False},
    },
    "provpt_additive_random": {
        "name": "provpt",
        "num_prompts": 1,
        "relocation": {"adjustment": "add", "max_added": 2, "criterion": "random"},
    },
    "provpt_joint_norm": {"name": "provpt", "num_prompts": 2, "relocation": {"allocator": "ppo_joint", "criterion": "norm"}},
    "vpt_deep_moved": {"name": "vpt_deep", "num_prompts": 2, "moves": [{"epoch": 1, "source": 0, "target": 5}]},
    "vapt": {"name": "vapt", "num_prompts": 2},
    "vapt_ablated": {"name": "vapt", "num_prompts": 2, "conv": False, "shared_projector": False, "static_blocks": 3},
    "davpt": {"name": "davpt", "num_prompts": 2, "guided_blocks": [-1, 5]},
    "davpt_plus": {"name": "davpt_plus", "num_prompts": 2},
    "davpt_plus_authors": {"name": "davpt_plus", "num_prompts": 8, "bias_set": "authors"},
    "full": {"name": "full"},
    "lora": {"name": "lora", "dropout": 0.1},
    "adapter": {"name": "adapter", "dropout": 0.1},
}


class StopAndSave(Callback):
    def __init__(self, after: int, path) -> None:
        self.after, self.path = after, path

    def on_epoch_end(self, trainer, metrics):
        if trainer.epoch == self.after:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("start", trainer.epoch))

    def on_epoch_end(self, trainer, metrics):
        self.calls.append(("epoch", metrics["epoch"]))

    def on_relocation(self, trainer, event):
        self.calls.append(("relocation", event["epoch"], tuple(event["distribution"])))

    def on_fit_end(self, trainer, result):
        self.calls.append(("end", result.epochs_completed))


def _trainable(trainer):
    return {k: v.clone() for k, v in trainer.model.trainable_state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_resume_is_identical_to_an_uninterrupted_run(method, tiny_data, tmp_path):
    config = tiny_trial(METHODS[method], epochs=4)
    straight = Trainer(config, tiny_data)
    straight_result = straight.fit()

    first = Trainer(config, tiny_data, [StopAndSave(2, tmp_path / "ckpt.pt")])
    halfway = first.fit()
    assert not halfway.finished and halfway.test_acc is None
    resumed = Trainer(config, tiny_data)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    resumed_result = resumed.fit()

    assert resumed_result.finished and resumed_result.epochs_completed == 4
    a, b = _trainable(straight), _trainable(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed_result.distribution == straight_result.distribution
    assert resumed_result.history == [
        {**m, "epoch_seconds": r["epoch_seconds"]} for m, r in zip(straight_result.history, resumed_result.history)
    ]
    assert resumed_result.events == straight_result.events
    assert resumed_result.test_acc == straight_result.test_acc


def test_relocations_reach_callbacks_and_conserve_prompts(tiny_data):
    recorder = Recorder()
    result = fit(tiny_trial(METHODS["provpt"], epochs=5), tiny_data, [recorder])
    relocations = [c for c in recorder.calls if c[0] == "relocation"]
    assert [c[1] for c in relocations] == [1, 2, 3, 4]
    assert all(sum(c[2]) == 24 for c in relocations) and sum(result.distribution) == 24
    assert recorder.calls[0] == ("start", 0) and recorder.calls[-1] == ("end", 5)
    assert [c[0] for c in recorder.calls[1:4]] == ["epoch", "relocation", "epoch"]
    assert len(result.events["relocation"]) == 4


def test_prompt_tuning_learns_the_synthetic_task():
    data = synthetic_splits(num_classes=4, train=256, val=128, test=128, seed=1)
    result = fit(tiny_trial(METHODS["vpt_deep"], epochs=8, lr=0.1, eval={"val_every": 2}), data)
    losses = [m["train_loss"] for m in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.test_acc > 0.4  # chance is 0.25
    assert [m["epoch"] for m in result.history if "val_acc" in m] == [2, 4, 6, 8]
    assert result.best_val_acc == max(m["val_acc"] for m in result.history if "val_acc" in m)
    assert result.final_val_acc == result.history[-1]["val_acc"]


def test_linear_probe_on_cached_features_matches_the_full_forward(tiny_data, monkeypatch):
    config = tiny_trial(METHODS["linear"], epochs=3)
    cached = Trainer(config, tiny_data)
    cached_result = cached.fit()
    assert set(cached.feature_cache) == {"train", "val", "test"}
    from provpt_core.methods.linear import LinearProbe

    monkeypatch.setattr(LinearProbe, "frozen_features", False)
    full = Trainer(config, tiny_data)
    full_result = full.fit()
    assert not full.feature_cache
    torch.testing.assert_close(cached.model.head.weight, full.model.head.weight, rtol=1e-4, atol=1e-5)
    assert cached_result.test_acc == full_result.test_acc
    assert cached_result.trainable_params == 64 * 4 + 4


def test_divergence_is_reported(tiny_data):
    with pytest.raises(DivergedError, match="training loss is (nan|inf) in epoch 1"):
        fit(tiny_trial(METHODS["vpt_deep"], epochs=2, lr=1e30, grad_clip=None), tiny_data)


def test_checkpoint_of_another_config_is_refused(tiny_data, tmp_path):
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=2), tiny_data)
    trainer.save_checkpoint(tmp_path / "a.pt")
    other = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=2, lr=0.5), tiny_data)
    with pytest.raises(ValueError, match=r"train\.lr: 0\.05 -> 0\.5"):
        other.load_checkpoint(tmp_path / "a.pt")


def test_checkpoint_is_loadable_with_weights_only(tiny_data, tmp_path):
    trainer = Trainer(tiny_trial(METHODS["provpt"], epochs=2), tiny_data)
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith("backbone.") for k in state["model"])  # the frozen backbone is not copied
    assert state["epoch"] == 2 and "relocator" in state["method"]
    assert not list(tmp_path.glob(".*partial"))


def test_warmup_cosine_schedule(tiny_data):
    config = tiny_trial(METHODS["vpt_deep"], epochs=6, lr=0.1, schedule="cosine", warmup_epochs=2)
    lrs = [m["lr"] for m in fit(config, tiny_data).history]
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert lrs == pytest.approx(expected)


def test_head_lr_and_adamw(tiny_data):
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], optimizer="adamw", lr=0.01, head_lr=0.2), tiny_data)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    lrs = sorted(group["lr"] for group in trainer.optimizer.param_groups)
    assert lrs == [0.01, 0.2]


def test_reference_pass_leaves_weights_and_optimizer_untouched(tiny_data):
    config = tiny_trial(METHODS["provpt_reference"], epochs=2)
    trainer = Trainer(config, tiny_data)
    trainer.fit()
    before = _trainable(trainer)
    momentum = {id(p): s["momentum_buffer"].clone() for p, s in trainer.optimizer.state.items()}
    trainer.method.meter.reset()
    trainer.method._identification_pass(trainer)
    after = _trainable(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(momentum[id(p)], s["momentum_buffer"]) for p, s in trainer.optimizer.state.items())
    assert trainer.method.meter.batches == math.ceil(len(tiny_data.train) / config.train.batch_size)


def test_trial_runs_from_a_plain_dict(tiny_data):
    config = TrialConfig.from_dict(tiny_trial(METHODS["provpt"], epochs=2).to_dict())
    assert fit(config, tiny_data).epochs_completed == 2


def test_bf16_autocast_when_asked_and_fp32_by_default_on_cpu(tiny_data):
    default = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=1), tiny_data)
    assert default.autocast_dtype is None
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=1, precision="bf16"), tiny_data)
    assert trainer.autocast_dtype == torch.bfloat16
    images, _ = next(trainer.train_batches())
    assert trainer._forward(images).dtype == torch.bfloat16
    assert trainer.model.prompts.weight.dtype == torch.float32  # parameters stay fp32
    assert math.isfinite(trainer.fit().history[-1]["train_loss"])


def _lrs_per_step(trainer):
    """The lr of every optimizer step of a fit (observed, not computed)."""
    seen, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.fit()
    return seen


def test_vpt_warmup_starts_from_zero(tiny_data):
    config = tiny_trial(METHODS["vpt_deep"], epochs=6, lr=0.1, schedule="cosine", warmup_epochs=2, warmup_from_zero=True)
    lrs = [m["lr"] for m in fit(config, tiny_data).history]
    expected = [0.0, 0.05] + [0.05 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert lrs == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_cosine_per_step(tiny_data):
    # 96 images, batch 32: 3 steps an epoch, 9 in all, the first 3 warming up
    config = tiny_trial(METHODS["vpt_deep"], epochs=3, lr=0.1, schedule="cosine", schedule_unit="step", warmup_epochs=1)
    lrs = _lrs_per_step(Trainer(config, tiny_data))
    expected = [0.1 * (s + 1) / 3 for s in range(3)] + [0.05 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
    assert lrs == pytest.approx(expected)


def test_class_balanced_sampler_draws_every_class_equally_often():
    data = synthetic_splits(num_classes=4, train=96, val=16, test=16, seed=0)
    trainer = Trainer(tiny_trial(METHODS["linear"], epochs=1, sampler="class_balanced"), data)
    labels = torch.cat([torch.zeros(900, dtype=torch.long), torch.arange(1, 4).repeat(34)])  # 90 % class 0
    drawn = torch.cat([labels[trainer._epoch_order(labels)] for _ in range(10)])
    shares = torch.bincount(drawn, minlength=4).double() / len(drawn)
    assert torch.allclose(shares, torch.full((4,), 0.25, dtype=torch.double), atol=0.02), shares


def _decays(trainer):
    return {name: g["weight_decay"] for name, p in trainer.model.named_parameters() for g in trainer.optimizer.param_groups
            if any(p is q for q in g["params"])}


def test_no_weight_decay_on_the_head_bias(tiny_data):
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], weight_decay=0.01, no_decay="head_bias"), tiny_data)
    assert _decays(trainer) == {"prompts.weight": 0.01, "head.weight": 0.01, "head.bias": 0.0}
    assert trainer.trainable_params() == Trainer(tiny_trial(METHODS["vpt_deep"]), tiny_data).trainable_params()


def test_no_weight_decay_on_biases_and_norms(tiny_data):
    method = {"name": "davpt_plus", "num_prompts": 2, "bias_set": "authors"}
    trainer = Trainer(tiny_trial(method, weight_decay=0.01, no_decay="biases_and_norms"), tiny_data)
    decays = _decays(trainer)
    exempt = {name for name, decay in decays.items() if decay == 0.0}
    assert exempt == {name for name, p in trainer.model.named_parameters() if p.requires_grad and p.ndim == 1}
    assert "backbone.blocks.0.norm1.weight" in exempt and "head.bias" in exempt
    assert decays["head.weight"] == decays["backbone.cls_token"] == 0.01


def test_gradient_values_are_clipped(tiny_data):
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=1, lr=5.0, grad_clip=None, grad_clip_value=1e-4), tiny_data)
    largest = []
    trainer.method.after_backward = lambda t, loss, labels: largest.append(
        max(float(p.grad.abs().max()) for g in t.optimizer.param_groups for p in g["params"])
    )
    trainer.fit()
    assert largest and max(largest) <= 1e-4


def test_fp16_autocast_when_asked(tiny_data):
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=1, precision="fp16"), tiny_data)
    images, _ = next(trainer.train_batches())
    assert trainer._forward(images).dtype == torch.float16
    assert math.isfinite(trainer.fit().history[-1]["train_loss"])


def test_late_test_readout_is_the_best_late_epoch_and_changes_nothing_else(tiny_data):
    plain = fit(tiny_trial(METHODS["vpt_deep"], epochs=4), tiny_data)
    trainer = Trainer(tiny_trial(METHODS["vpt_deep"], epochs=4, eval={"late_test_from": 2}), tiny_data)
    scored = []
    evaluate = trainer.evaluate
    trainer.evaluate = lambda split: scored.append(split) or evaluate(split)
    readout = trainer.fit()
    assert scored.count("test") == 3  # epochs 2, 3 and 4; the end reuses epoch 4's score
    late = [m.get("late_test_acc") for m in readout.history]
    assert late[0] is None and all(v is not None for v in late[1:])
    assert readout.best_late_test_acc == max(late[1:]) and late[-1] == readout.test_acc == plain.test_acc
    assert readout.final_val_acc == plain.final_val_acc and plain.best_late_test_acc is None


def test_a_finished_trial_exports_its_prompts_and_their_blocks(tiny_data):
    trainer = Trainer(tiny_trial(METHODS["provpt"], epochs=3), tiny_data)
    result = trainer.fit()
    bank = trainer.model.prompts
    assert set(result.artifacts) == {"prompts", "block_of"}
    assert torch.equal(result.artifacts["prompts"], bank.weight.detach()) and torch.equal(result.artifacts["block_of"], bank.block_of)
    assert torch.bincount(result.artifacts["block_of"], minlength=12).tolist() == result.distribution
    assert fit(tiny_trial(METHODS["linear"], epochs=1), tiny_data).artifacts == {}
