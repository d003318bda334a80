import itertools

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_trial
from provpt_core.data.mini.build import GENERATORS, mini_root
from provpt_core.data.tasks import resolve_tasks
from provpt_core.data.verify import verify_task
from provpt_core.engine import fit
from provpt_core.trial import TrialConfig


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("provpt-cache")


@pytest.fixture(scope="module")
def root(cache):
    return mini_root(cache)


def test_mini_tasks_are_in_the_exact_vtab1k_format(root):
    specs = resolve_tasks(["mini"])
    assert len(specs) >= 4
    for spec in specs:
        report = verify_task(spec, root)
        assert report.ok, report.problems[:3]
        assert report.counts["train800"] == 800 and report.counts["val200"] == 200
        assert report.counts["train800val200"] == 1000 and report.counts["test"] >= 500
        labels = [int(line.split()[-1]) for line in (root / spec.name / "train800.txt").read_text().splitlines()]
        assert set(labels) == set(range(spec.num_classes))  # every class is represented


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
