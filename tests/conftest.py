"""Shared fixtures. The hub must never be asked (no network here): set before timm loads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from provpt_core.data.synthetic import synthetic_splits  # noqa: E402
from provpt_core.tiny_vit import TINY_VIT_NAME  # noqa: E402
from provpt_core.trial import TrialConfig  # noqa: E402

torch.set_num_threads(1)


def tiny_trial(method: dict, eval: dict | None = None, **train) -> TrialConfig:
    """A CPU-sized trial on the tiny 12-block ViT with random weights."""
    return TrialConfig.from_dict(
        {
            "backbone": {"name": TINY_VIT_NAME, "weights": "random"},
            "method": method,
            "train": {"epochs": 4, "lr": 0.05, "batch_size": 32, "threads": 1, **train},
            "eval": eval or {},
        }
    )


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic_splits(num_classes=4, train=96, val=64, test=64, seed=0)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One data cache for the tests that only use the mini benchmark: it is generated once
    (about 20 s on 2 cores) instead of once per test, and shared by the pytest-xdist workers
    (their builders wait on the cache's file locks). tests/test_mini.py builds its own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "shared-cache"
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("shared-cache")


# The studies run end to end on Ray: started first, so the workers of `pytest -n 2 --dist
# loadfile` run them beside each other and beside the short tests, not after them.
LONG_FIRST = ("test_orchestrator.py", "test_cluster.py", "test_slurm.py", "test_analyses_study.py", "test_bench_gpu.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))
