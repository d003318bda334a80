"""The paper's analyses through the service on a local Ray: branch runs start from their final
trial's checkpoint and run only the remaining epochs; fidelity records and relocation rewards
reach MLflow, the records and the tables (the same from both stores)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from services import kill_processes_using

from orchestrator.execution.timing import TIMINGS_ENV

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3

STUDY = {
    "name": "analyses",
    "tasks": ["mini_count"],
    "backbone": {"name": "provpt_tiny_patch8_32"},
    "data": {"cache_dir": "${PROVPT_CACHE}"},
    "trial": {"train": {"epochs": EPOCHS, "batch_size": 200, "head_lr": 0.1, "lr": 0.3}},
    "methods": [
        {
            "name": "vpt_deep",
            "config": {"num_prompts": 1},
            "branches": {"fractions": [0.5], "source": 0, "targets": [3, 7]},
        },
        {
            "name": "provpt",
            "config": {"num_prompts": 1, "relocation": {"allocator": "ppo_joint"}, "fidelity": {"epochs": [2], "batches": 1}},
        },
    ],
    "resources": {"cpu": 1},
    "final": {"seeds": [0]},
}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, shared_cache):
    work = tmp_path_factory.mktemp("analyses")
    ray_temp = Path(tempfile.mkdtemp(prefix="pvray", dir="/tmp"))
    study_file = work / "analyses.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    output = work / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROVPT_CACHE": str(shared_cache), "PROVPT_RAY_TMP": str(ray_temp), "RAY_ADDRESS": "",
           TIMINGS_ENV: str(work / "timings.jsonl")}
    command = [sys.executable, "-m", "orchestrator.run", str(study_file), "--output", str(output), "--num-cpus", "2"]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    finally:
        kill_processes_using(ray_temp)
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output


def test_branches_start_from_the_final_trial_at_the_branch_epoch_and_are_tabled(analysed):
    results = analysed / "results"
    trials = pd.read_parquet(results / "trials.parquet")
    epochs = pd.read_parquet(results / "epochs.parquet")
    branches = trials[trials["phase"] == "branch"].set_index("trial")
    assert sorted(branches.index) == [
        f"analyses/mini_count/vpt_deep/branch/seed0-epoch2-block{b}" for b in (3, 7)
    ] and set(branches["status"]) == {"FINISHED"}
    for trial, row in branches.iterrows():
        (move,) = json.loads(row["config.method.moves"])
        assert move == {"epoch": 2, "source": 0, "target": int(trial[-1]), "count": 1, "rescale": 1e-3}
        # only the epochs after the branch point ran (and were logged)
        assert sorted(epochs.loc[epochs["trial"] == trial, "epoch"]) == list(range(3, EPOCHS + 1))
    assert (analysed / "snapshots" / "mini_count" / "vpt_deep" / "seed0" / "epoch2.pt").is_file()
    parent = trials[(trials["method"] == "vpt_deep") & (trials["phase"] == "final")]["test_acc"].item()
    timing = pd.read_csv(results / "tables" / "timing_vpt_deep.csv").set_index("column")
    assert set(timing["row"]) == {"epoch 2"}
    for block in (3, 7):
        gain = 100 * (branches.loc[f"analyses/mini_count/vpt_deep/branch/seed0-epoch2-block{block}", "test_acc"] - parent)
        assert timing.loc[f"block{block}", "value"] == pytest.approx(gain)
    best = max((3, 7), key=lambda b: timing.loc[f"block{b}", "value"])
    assert timing.loc["best", "state"] == f"block {best}"
    assert (results / "figures" / "timing_vpt_deep.png").exists()
    coverage = pd.read_csv(results / "tables" / "coverage_trials.csv")
    assert set(coverage["state"]) == {"done"} and (coverage["phase"] == "branch").sum() == 2


def test_fidelity_and_rewards_reach_both_stores_and_their_tables(analysed, tmp_path):
    from orchestrator.report.build import main

    results = analysed / "results"
    fidelity = pd.read_parquet(results / "fidelity.parquet")
    assert len(fidelity) == 12 and set(fidelity["epoch"]) == {2}  # 12 blocks x 1 prompt, measured once
    assert fidelity["loss_change_dropped"].abs().max() > 0 and fidelity["method_score"].notna().all()
    epochs = pd.read_parquet(results / "epochs.parquet")
    rewards = epochs.dropna(subset=["relocation_reward"])
    assert len(rewards) >= 1 and set(rewards["trial"]) == {"analyses/mini_count/provpt/final/seed0"}
    assert main([str(analysed), "--from-mlflow", f"sqlite:///{analysed / 'mlflow.db'}", "--out", str(tmp_path), "--no-figures"]) == 0
    for name in ("trials", "epochs", "fidelity"):
        pd.testing.assert_frame_equal(pd.read_parquet(results / f"{name}.parquet"), pd.read_parquet(tmp_path / f"{name}.parquet"))
    for table in ("fidelity", "rewards"):
        assert (results / "tables" / f"{table}.md").read_bytes() == (tmp_path / "tables" / f"{table}.md").read_bytes()
    assert (results / "figures" / "fidelity_provpt.png").exists() and (results / "figures" / "rewards.png").exists()


def test_trial_workers_outlive_phases_and_pipelines(analysed):
    """Every trial of the study runs in one Tune experiment that keeps its workers: the five
    trials (two pipelines' final trials, then the branch phase) run in at most two worker
    processes (two slots), and a worker runs trials of more than one pipeline or phase."""
    lines = [json.loads(line) for line in (analysed.parent / "timings.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    groups: dict[int, set[str]] = {}
    for line in lines:
        groups.setdefault(line["pid"], set()).add(line["trial"].rsplit("/", 1)[0])
    assert len(groups) <= 2, groups
    assert max(len(g) for g in groups.values()) >= 2, groups
