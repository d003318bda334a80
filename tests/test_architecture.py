"""The import contracts of pyproject.toml hold, and a planted violation breaks them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's packages before the installed ones
    return subprocess.run([str(LINT)], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    "module, planted, message",
    [
        ("provpt_core/prompts.py", "import mlflow", "provpt_core.prompts -> mlflow"),
        ("provpt_core/engine.py", "from orchestrator.spec import study", "provpt_core.engine -> orchestrator.spec.study"),
        # report never imports execution
        ("orchestrator/report/figures.py", "from orchestrator.execution import trainable", "orchestrator.report.figures -> orchestrator.execution.trainable"),
        # spec and store are independent
        ("orchestrator/spec/plan.py", "from orchestrator.store import schema", "orchestrator.spec.plan -> orchestrator.store.schema"),
        # the stores import nothing of ours but the schema
        ("orchestrator/store/records.py", "from orchestrator.store import tracking", "orchestrator.store.records -> orchestrator.store.tracking"),
        ("orchestrator/store/schema.py", "import provpt_core", "orchestrator.store.schema -> provpt_core"),
        # the service enters the core through its facade only
        ("orchestrator/execution/trainable.py", "from provpt_core.engine import Trainer", "orchestrator.execution.trainable -> provpt_core.engine"),
        ("orchestrator/report/scores.py", "import ray", "orchestrator.report.scores -> ray"),
    ],
)
def test_a_planted_violation_breaks_a_contract(tmp_path, module, planted, message):
    for package in ("provpt_core", "orchestrator"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{planted}  # planted\n")
    done = _lint(tmp_path)
    assert done.returncode == 1 and " 0 broken" not in done.stdout and message in done.stdout, done.stdout
