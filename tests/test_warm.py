"""Warm workers: a trial in a process that ran others gives bitwise the result of a fresh process,
and the cache never serves another backbone config or a rewritten weight file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from conftest import tiny_trial
from provpt_core import TrialConfig, WarmCache, fit
from provpt_core.backbone import BackboneConfig, load_backbone
from provpt_core.tiny_vit import TINY_VIT_NAME

REPO = Path(__file__).resolve().parents[1]
VPT = {"name": "provpt", "num_prompts": 1}


def _mini(method: dict, seed: int) -> TrialConfig:
    """A trial on the mini benchmark's data (loaded, so the data cache is exercised too)."""
    config = tiny_trial(method, epochs=1, seed=seed, batch_size=100).to_dict()
    config["data"] = {"task": "mini_count", "phase": "search"}
    return TrialConfig.from_dict(config)


def _summary(result) -> dict:
    return {
        "history": [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in result.history],
        "prompts": result.artifacts["prompts"].tolist(),
        "distribution": result.distribution,
        "val": result.final_val_acc,
    }


def test_a_trial_in_a_reused_worker_equals_one_in_a_fresh_process(shared_cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROVPT_CACHE": str(shared_cache)}
    os.environ["PROVPT_CACHE"] = env["PROVPT_CACHE"]
    try:
        warm = WarmCache()
        fit(_mini({"name": "full"}, seed=3), warm=warm)  # trains the backbone copy it was given
        fit(_mini(VPT, seed=5), warm=warm)
        reused = _summary(fit(_mini(VPT, seed=7), warm=warm))
    finally:
        del os.environ["PROVPT_CACHE"]
    assert warm.backbones.misses == 1 and warm.backbones.hits == 2
    assert warm.datasets.misses == 1 and warm.datasets.hits == 2
    script = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from conftest import tiny_trial; from provpt_core import TrialConfig, fit;"
        "from test_warm import _mini, _summary, VPT;"
        "print(json.dumps(_summary(fit(_mini(VPT, seed=7)))))"
    )
    fresh = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads(fresh.stdout.splitlines()[-1]) == json.loads(json.dumps(reused))


def test_the_cache_serves_a_backbone_only_for_the_same_config_and_file(tmp_path):
    warm = WarmCache()
    random_config = BackboneConfig(name=TINY_VIT_NAME, weights="random")
    first = warm.backbone(random_config)
    path = tmp_path / "weights.safetensors"
    weights = {k: v + 1.0 if v.is_floating_point() else v for k, v in load_backbone(random_config).state_dict().items()}
    save_file(weights, path)
    from_file = warm.backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))
    assert warm.backbones.misses == 2
    assert not torch.equal(first.pos_embed, from_file.pos_embed)
    torch.testing.assert_close(from_file.pos_embed, weights["pos_embed"])

    again = warm.backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))
    assert warm.backbones.hits == 1 and again is not from_file and torch.equal(again.pos_embed, from_file.pos_embed)
    save_file({k: v * 2 if v.is_floating_point() else v for k, v in weights.items()}, path)
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    rewritten = warm.backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))
    assert warm.backbones.misses == 3
    torch.testing.assert_close(rewritten.pos_embed, 2 * weights["pos_embed"])
    assert warm.backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random", img_size=48)).pos_embed.shape[1] == 37
    assert warm.backbones.misses == 4


def test_a_trial_cannot_change_the_cached_backbone():
    warm = WarmCache()
    config = BackboneConfig(name=TINY_VIT_NAME, weights="random")
    mine = warm.backbone(config)
    with torch.no_grad():
        mine.blocks[0].attn.qkv.weight.add_(1.0)
    assert not torch.equal(warm.backbone(config).blocks[0].attn.qkv.weight, mine.blocks[0].attn.qkv.weight)
