import itertools

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_trial
from provpt_core.backbone import BackboneConfig, load_backbone
from provpt_core.data.mini.build import GENERATORS, mini_root
from provpt_core.data.tasks import resolve_tasks
from provpt_core.data.verify import verify_task
from provpt_core.engine import fit
from provpt_core.probe import position_r2
from provpt_core.tiny_vit import TINY_VIT_NAME
from provpt_core.trial import TrialConfig


@pytest.fixture(scope="module")
def cache(shared_cache):
    return shared_cache  # the e2e tests' cache: the benchmark is generated once per session


@pytest.fixture(scope="module")
def root(cache):
    return mini_root(cache)


def test_mini_tasks_are_in_the_exact_vtab1k_format(root):
    specs = resolve_tasks(["mini"])
    assert {spec.group for spec in specs} == {"Natural", "Specialized", "Structured"}
    for spec in specs:
        report = verify_task(spec, root)
        assert report.ok, report.problems[:3]
        assert report.counts["train800"] == 800 and report.counts["val200"] == 200
        assert report.counts["train800val200"] == 1000 and report.counts["test"] >= 500
        labels = [int(line.split()[-1]) for line in (root / spec.name / "train800.txt").read_text().splitlines()]
        counts = np.bincount(labels, minlength=spec.num_classes)
        assert counts.min() > 0 and counts.max() <= 2.5 * counts.min(), (spec.name, counts)  # balanced


def test_digits_are_real_grayscale_scans(root):
    first = (root / "mini_digits" / "test.txt").read_text().split()[0]
    with Image.open(root / "mini_digits" / first) as image:
        assert image.mode == "L" and image.size == (32, 32)


def test_generation_is_deterministic():
    for name, generate in GENERATORS.items():
        a = list(itertools.islice(generate(), 20))
        b = list(itertools.islice(generate(), 20))
        assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b)), name


def test_second_use_does_not_rebuild(cache, root):
    stamp = (root / "mini_count" / "test.txt").stat().st_mtime_ns
    assert mini_root(cache) == root
    assert (root / "mini_count" / "test.txt").stat().st_mtime_ns == stamp
    assert not list(cache.glob(".mini-*"))


def test_a_trial_runs_from_its_config_alone(cache, root):
    config = tiny_trial({"name": "vpt_deep", "num_prompts": 1}, epochs=1).to_dict()
    config["data"] = {"task": "mini_count", "cache_dir": str(cache)}
    result = fit(TrialConfig.from_dict(config))
    assert result.finished and result.final_val_acc is not None and result.test_acc is None
    final = {**config, "data": {**config["data"], "phase": "final"}}
    assert fit(TrialConfig.from_dict(final)).test_acc is not None


def test_the_shipped_backbone_keeps_position_in_its_patch_tokens_not_its_cls_feature():
    """Like a VTAB backbone (it names *what*): a re-pretraining must not bring back a CLS that reads position."""
    backbone = load_backbone(BackboneConfig(TINY_VIT_NAME, "pretrained"))
    r2 = position_r2(backbone, images=1200, seed=99)
    assert r2["cls"] < 0.5 * r2["patch_tokens"], r2
    assert r2["patch_tokens"] > 0.5, r2
