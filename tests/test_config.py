import pytest

from provpt_core.config import ConfigError
from provpt_core.methods.provpt import ProVPTConfig
from provpt_core.trial import REFERENCE_SEEDS, TrialConfig


def test_round_trip_keeps_every_field():
    config = TrialConfig.from_dict(
        {
            "method": {"name": "provpt", "num_prompts": 7, "relocation": {"allocator": "thompson"}},
            "train": {"lr": 0.3, "seed": 3},
        }
    )
    assert isinstance(config.method, ProVPTConfig)
    assert config.method.relocation.allocator == "thompson"
    assert TrialConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"lrr": 1.0}}, "train.lrr: unknown field"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
        ({"train": {"lr": -1.0}}, "train.lr: expected a number > 0, got -1.0"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer, got 2.5"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer: expected one of 'sgd', 'adamw'"),
        ({"method": {"name": "prefix_tuning"}}, "method.name: unknown method 'prefix_tuning'"),
        ({"method": {"name": "provpt", "relocation": {"ppo": {"gamma": 2.0}}}}, "method.relocation.ppo.gamma"),
        ({"method": {"name": "vpt_deep", "dropout": 1.5}}, "method.dropout: expected a probability"),
        ({"backbone": {"weights": "model.ckpt"}}, "backbone.weights: expected 'pretrained', 'random' or a path"),
        ({"preset": "mine"}, "preset: unknown preset 'mine'"),
        ({"trian": {}}, "trian: unknown field"),
    ],
)
def test_bad_values_name_their_field(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrialConfig.from_dict(data)


def test_reference_preset_is_the_published_command_and_can_be_overridden():
    config = TrialConfig.from_dict({"preset": "reference", "train": {"seed": REFERENCE_SEEDS[0]}})
    assert config.backbone.name == "vit_base_patch16_224.orig_in21k"
    assert config.method.num_prompts == 20 and config.method.dropout == 0.1
    relocation = config.method.relocation
    assert (relocation.idleness, relocation.allocator) == ("reference", "ppo")
    assert (relocation.warmup_epochs, relocation.interval, relocation.prompts_per_move) == (1, 1, 1)
    assert (relocation.moved_rescale, relocation.keep_momentum, relocation.identification_clip) == (1e-3, True, 0.25)
    ppo = relocation.ppo
    assert (ppo.buffer_size, ppo.update_epochs, ppo.gamma, ppo.hidden) == (2, 60, 1.0, 64)
    assert (ppo.actor_lr, ppo.critic_lr, ppo.clip, ppo.entropy_coef, ppo.value_coef) == (3e-4, 1e-3, 0.2, 0.01, 0.5)
    train = config.train
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay) == ("sgd", 2.5, 0.9, 1e-4)
    assert (train.batch_size, train.epochs, train.schedule, train.grad_clip) == (64, 100, "constant", 0.25)
    assert train.seed == 18


def test_preset_method_replaced_by_another_method():
    config = TrialConfig.from_dict({"preset": "reference", "method": {"name": "vpt_deep", "num_prompts": 5}})
    assert type(config.method).__name__ == "VPTDeepConfig" and config.method.num_prompts == 5
