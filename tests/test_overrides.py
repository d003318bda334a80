"""The dotted-path helpers every part shares."""

from provpt_core.overrides import apply, flatten, lookup, merge


def test_merge_apply_lookup_flatten():
    base = {"train": {"lr": 0.1, "epochs": 10}, "method": {"name": "provpt", "num_prompts": 2}}
    merged = merge(base, {"train": {"lr": 0.5}, "method": {"relocation": {"interval": 2}}})
    assert merged == {"train": {"lr": 0.5, "epochs": 10}, "method": {"name": "provpt", "num_prompts": 2, "relocation": {"interval": 2}}}
    # another method replaces the method whole: the old method's fields would not fit it
    assert merge(base, {"method": {"name": "linear"}})["method"] == {"name": "linear"}
    applied = apply(base, {"train.lr": 0.3, "method.relocation.ppo.gamma": 0.9})
    assert applied["train"] == {"lr": 0.3, "epochs": 10} and lookup(applied, "method.relocation.ppo.gamma") == 0.9
    assert base["train"]["lr"] == 0.1 and lookup(base, "method.relocation") is None  # apply copies
    assert flatten({"train": {"lr": 0.1}, "method": {"blocks": [0, 5]}}) == {"train.lr": 0.1, "method.blocks": "[0, 5]"}
