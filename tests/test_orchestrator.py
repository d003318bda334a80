"""The orchestrator end to end on a local Ray: a micro study (with ASHA) is interrupted with
Ctrl-C (SIGINT), re-run, killed mid-way with SIGKILL, re-run with the same command, and must finish with every trial run once, a
correct MLflow tree, a diverging trial recorded as failed while the study goes on, and a trial
that raises (on a device the machine lacks) failed with its cause on the console, in MLflow and
in the coverage table, never as stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from services import kill_processes_using, scaled

REPO = Path(__file__).resolve().parents[1]
TRIALS_BEFORE_INTERRUPT = 2
TRIALS_BEFORE_KILL = 4
METHODS = ("linear", "provpt", "vpt_shallow", "linear_gpu")


def _finished_trials(db: Path) -> dict[str, int]:
    """run_id -> end_time of finished trial runs, read straight from MLflow's SQLite file."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT r.run_uuid, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'provpt.kind' AND t.value = 'trial' AND r.status = 'FINISHED'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return dict(rows)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, shared_cache):
    work = tmp_path_factory.mktemp("orchestrator")
    ray_temp = Path(tempfile.mkdtemp(prefix="pvray", dir="/tmp"))  # Ray's socket paths must stay short
    study = yaml.safe_load((REPO / "tests" / "studies" / "micro.yaml").read_text())
    study["methods"].append({"name": "vpt_shallow", "config": {"num_prompts": 1}, "search": {"train.lr": {"choices": [1.0e30]}}})
    study["methods"].append({"name": "linear", "label": "linear_gpu", "trial": {"train": {"head_lr": None, "device": "cuda:99"}}})
    study["max_failures"] = 1
    study_file = work / "micro.yaml"
    study_file.write_text(yaml.safe_dump(study))
    output = work / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PROVPT_CACHE": str(shared_cache),
        "PROVPT_RAY_TMP": str(ray_temp),
        "RAY_ADDRESS": "",
    }
    command = [sys.executable, "-m", "orchestrator.run", str(study_file), "--output", str(output), "--num-cpus", "2"]
    db = output / "mlflow.db"

    interrupted = _run_until(command, env, db, TRIALS_BEFORE_INTERRUPT, signal.SIGINT)
    kill_processes_using(ray_temp)
    running_after_interrupt = _running_runs(db)
    _run_until(command, env, db, TRIALS_BEFORE_KILL, signal.SIGKILL)
    time.sleep(2)
    kill_processes_using(ray_temp)
    finished_before = _finished_trials(db)

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    kill_processes_using(ray_temp)
    shutil.rmtree(ray_temp, ignore_errors=True)
    return {
        "output": output, "db": db, "before": finished_before, "second": second,
        "interrupted": interrupted, "running_after_interrupt": running_after_interrupt,
    }


def _run_until(command: list[str], env: dict[str, str], db: Path, finished: int, sig: int) -> tuple[int, str]:
    """Start the study, send `sig` once `finished` trials have finished; (exit status, output)."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + scaled(400)
    while len(_finished_trials(db)) < finished and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, "the study ended before it could be interrupted:\n" + process.stdout.read()[-3000:]
    process.send_signal(sig)
    output, _ = process.communicate(timeout=scaled(180))
    return process.returncode, output


def _running_runs(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM runs WHERE status = 'RUNNING'")]


@pytest.fixture(scope="module")
def runs(study_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{study_run['db']}")
    experiment = client.get_experiment_by_name("micro")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _kind(runs, kind):
    return [r for r in runs if r.data.tags.get("provpt.kind") == kind]


def test_resumed_study_completes_and_reports_the_failed_pipeline(study_run):
    second = study_run["second"]
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]  # one pipeline failed
    outcomes = {o["pipeline"]: o for o in json.loads((study_run["output"] / "pipelines.json").read_text())}
    assert set(outcomes) == {f"{t}/{m}" for t in ("mini_count", "mini_loc") for m in METHODS}
    cause = _device_error(study_run)
    for key, record in outcomes.items():
        if key.endswith("vpt_shallow"):
            assert record["failed"].startswith("no search trial finished (2 failed)")
        elif key.endswith("linear_gpu"):
            assert record["failed"] == f"no final trial finished ({cause})"
        else:
            assert len(record["test_acc"]) == 2 and "train.lr" in record["selected"]
    assert "MLflow runs: sqlite:///" in second.stdout
    assert f"a trial failed: {cause}" in second.stdout and f"FAILED: no final trial finished ({cause})" in second.stdout


def _device_error(study_run) -> str:
    """What a trial on device cuda:99 raises on this machine: its exception line, as the study
    reports it (e.g. "AssertionError: Torch not compiled with CUDA enabled")."""
    failed = [r for r in _kind(_all_runs(study_run), "trial") if r.data.tags["method"] == "linear_gpu"]
    reasons = {r.data.tags.get("failure_reason") for r in failed}
    assert len(failed) == 4 and len(reasons) == 1, reasons
    (reason,) = reasons
    assert reason and reason.split(":")[0].endswith(("Error", "Exception")), reason
    return reason


def _all_runs(study_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{study_run['db']}")
    return client.search_runs([client.get_experiment_by_name("micro").experiment_id], max_results=1000)


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(study_run, runs):
    code, output = study_run["interrupted"]
    assert code == 130 and "Traceback" not in output, output[-3000:]
    assert "interrupted: " in output and "re-run the same command to resume" in output
    assert study_run["running_after_interrupt"] == []  # every run closed (KILLED), none left RUNNING
    _, all_runs = runs
    (study,) = _kind(all_runs, "study")
    # reopened on resume, then closed by the run that finished: its reason is that run's, not the interrupt's
    assert study.data.tags["failure_reason"] == "4 pipelines failed", study.data.tags


def test_every_trial_ran_once_and_nothing_is_duplicated(study_run, runs):
    client, all_runs = runs
    keys = Counter(r.data.tags["provpt.key"] for r in all_runs)
    assert max(keys.values()) == 1
    trials = _kind(all_runs, "trial")
    assert len(trials) == 4 * (2 + 2) + 2 * 2 + 2 * 2  # 4 good pipelines x (2 search + 2 seeds) + 2 diverging x 2 search + 2 erroring x 2 seeds
    assert len(study_run["before"]) >= TRIALS_BEFORE_KILL
    end_times = {r.info.run_id: r.info.end_time for r in trials}
    for run_id, end_time in study_run["before"].items():
        assert end_times[run_id] == end_time, "a trial finished before the kill was run again"
    for run in trials:
        if run.info.status == "FINISHED":
            # every epoch logged (an epoch re-run after a restore is logged again, and its last value counts)
            assert {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")} == {1, 2}


def test_mlflow_tree_tags_and_summary_metrics(study_run, runs):
    client, all_runs = runs
    output = study_run["output"]
    (study,) = _kind(all_runs, "study")
    pipelines = _kind(all_runs, "pipeline")
    assert len(pipelines) == 6 + 4 + 2  # search runs of 6 pipelines, final runs of the 4 that selected and of the 2 that search nothing
    assert all(p.data.tags["mlflow.parentRunId"] == study.info.run_id for p in pipelines)
    by_id = {p.info.run_id: p for p in pipelines}
    for trial in _kind(all_runs, "trial"):
        tags = trial.data.tags
        parent = by_id[tags["mlflow.parentRunId"]]
        for tag in ("study", "task", "method", "phase"):
            assert tags[tag] == parent.data.tags[tag]
        for tag in ("seed", "config_hash", "code_version", "ray_trial_id", "group"):
            assert tags[tag]
        assert trial.info.run_name.startswith(f"{tags['task']}/{tags['method']}/{tags['phase']}/")
        assert trial.data.params["data.task"] == tags["task"]
        if trial.info.status != "FINISHED":
            continue
        metrics = trial.data.metrics
        if tags["phase"] == "search":
            assert 0 <= metrics["final_val_acc"] <= metrics["best_val_acc"] <= 1 and "test_acc" not in metrics
            assert tags["optuna_trial_number"].isdigit()
            # ASHA decides on val scores, so search trials score val every epoch (a trial resumed
            # after the kill logs the epochs it re-runs again: steps, not points, are counted)
            assert {m.step for m in client.get_metric_history(trial.info.run_id, "val_acc")} == {1, 2}
        else:
            assert 0 <= metrics["test_acc"] <= 1 and trial.info.run_name.endswith(f"seed{tags['seed']}")
            assert trial.data.params["data.phase"] == "final"
        if tags["method"] == "provpt":
            artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
            assert {"config.json", "distributions.parquet", "prompts.safetensors", "distribution_history.csv"} <= artifacts
            _check_distribution_history(client, trial.info.run_id, artifacts)
            assert trial.info.artifact_uri.startswith((output / "artifacts").as_uri())
            assert sum(json.loads(tags["distribution"])) == 12
    finals = [p for p in pipelines if p.data.tags["phase"] == "final"]
    assert all("selection_reason" in p.data.tags for p in finals)
    assert all(("test_acc_mean" in p.data.metrics) == (p.data.tags["method"] != "linear_gpu") for p in finals)


def _check_distribution_history(client, run_id: str, artifacts: set[str]) -> None:
    """The UI's CSV (epochs x blocks) says what the parquet says; a picture when it changed."""
    import pandas as pd

    rows = pd.read_parquet(client.download_artifacts(run_id, "distributions.parquet"))
    wide = pd.read_csv(client.download_artifacts(run_id, "distribution_history.csv"), index_col="epoch")
    for row in rows.itertuples():
        assert wide.loc[row.epoch, f"block{row.block + 1}"] == row.count
    assert ("distribution_history.png" in artifacts) == (len(wide.drop_duplicates()) > 1)


def test_results_and_each_selection_are_where_the_runs_live(study_run, runs):
    """The study run holds the results tables and figures; each final phase's run the search as
    a table; the selected trial has one name in the reason, MLflow and Optuna."""
    import optuna
    import pandas as pd

    client, all_runs = runs
    (study,) = _kind(all_runs, "study")
    tables = {a.path for a in client.list_artifacts(study.info.run_id, "results/tables")}
    assert {"results/tables/mini.md", "results/tables/mini.html", "results/tables/coverage.md"} <= tables
    figures = {a.path for a in client.list_artifacts(study.info.run_id, "results/figures")}
    assert figures and all(path.endswith(".png") for path in figures)
    # the data it read: a manifest in the output folder and on the study run, its hash under the tables
    manifest = json.loads((study_run["output"] / "data_manifest.json").read_text())
    assert set(manifest["tasks"]) == {"mini_count", "mini_loc"}
    assert all(t["splits"]["test"]["count"] == 1000 for t in manifest["tasks"].values())
    assert json.loads(open(client.download_artifacts(study.info.run_id, "data_manifest.json")).read()) == manifest
    mini = (study_run["output"] / "results" / "tables" / "mini.md").read_text()
    assert f"Data: manifest sha256 {manifest['sha256'][:12]}" in mini
    trials = {r.data.tags["provpt.key"]: r for r in _kind(all_runs, "trial")}
    storage = f"sqlite:///{study_run['output'] / 'optuna.db'}"
    searched = [p for p in _kind(all_runs, "pipeline") if p.data.tags["phase"] == "final" and p.data.tags["method"] in ("linear", "provpt")]
    assert len(searched) == 4
    for final in searched:
        tags = final.data.tags
        table = pd.read_csv(client.download_artifacts(final.info.run_id, "selection.csv"))
        assert len(table) == 2 and set(table["state"]) == {"finished"}
        chosen = table[table["selected"] == "yes"].iloc[0]
        run = trials[tags["selected_trial"]]
        assert chosen["mlflow_run_id"] == run.info.run_id and chosen["mlflow_run"] == run.info.run_name
        number = int(run.data.tags["optuna_trial_number"])
        assert chosen["optuna_trial"] == number
        assert f"(Optuna trial {number}, MLflow run {run.info.run_name})" in tags["selection_reason"]
        optuna_study = optuna.load_study(study_name=f"micro/{tags['task']}/{tags['method']}", storage=storage)
        linked = optuna_study.trials[number].user_attrs
        assert linked == {"mlflow_run_id": run.info.run_id, "mlflow_run_name": run.info.run_name}


def test_diverging_trials_are_failed_with_their_reason(runs):
    _, all_runs = runs
    diverged = [r for r in _kind(all_runs, "trial") if r.data.tags["method"] == "vpt_shallow"]
    assert len(diverged) == 4
    for run in diverged:
        assert run.info.status == "FAILED"
        assert run.data.tags["failure_reason"].startswith("diverged: training loss is")
    searches = [p for p in _kind(all_runs, "pipeline") if p.data.tags["method"] == "vpt_shallow"]
    assert all(p.info.status == "FAILED" and "no search trial finished" in p.data.tags["failure_reason"] for p in searches)


def test_an_erroring_trial_is_failed_with_its_cause_everywhere(study_run, runs):
    _, all_runs = runs
    cause = _device_error(study_run)
    erroring = [r for r in _kind(all_runs, "trial") if r.data.tags["method"] == "linear_gpu"]
    assert all(r.info.status == "FAILED" for r in erroring)
    coverage = (study_run["output"] / "results" / "tables" / "coverage.md").read_text()
    row = next(line for line in coverage.splitlines() if line.startswith("| linear_gpu final seed 0 |"))
    assert row.count("| failed") == 2 and "stopped" not in row, row
    assert f"failed: {cause} (4 trials)" in coverage
    assert "failed: diverged: training loss is" in coverage


def test_optuna_studies_are_persisted(study_run):
    import optuna

    storage = f"sqlite:///{study_run['output'] / 'optuna.db'}"
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert "micro/mini_count/provpt" in names
    study = optuna.load_study(study_name="micro/mini_count/provpt", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 2 and all("train.lr" in t.params for t in complete)


def test_tables_from_mlflow_equal_the_tables_from_the_output_folder(study_run, tmp_path):
    import pandas as pd

    from orchestrator.report.build import main

    output = study_run["output"]
    written = output / "results"  # by the study's own run, from its records
    assert main([str(output), "--from-mlflow", f"sqlite:///{study_run['db']}", "--out", str(tmp_path), "--no-figures"]) == 0
    for name in ("trials", "epochs", "distributions", "selections"):
        pd.testing.assert_frame_equal(pd.read_parquet(written / f"{name}.parquet"), pd.read_parquet(tmp_path / f"{name}.parquet"))
    tables = sorted(p.name for p in (written / "tables").iterdir())
    assert "mini.md" in tables and tables == sorted(p.name for p in (tmp_path / "tables").iterdir())
    for name in tables:
        assert (written / "tables" / name).read_bytes() == (tmp_path / "tables" / name).read_bytes(), name
    trials = pd.read_parquet(written / "trials.parquet")
    assert len(trials) == 24 and trials["trial"].is_unique
    assert set(trials.loc[trials["method"] == "vpt_shallow", "status"]) == {"FAILED"}
    epochs = pd.read_parquet(written / "epochs.parquet")
    finished = trials.loc[trials["status"] == "FINISHED", "trial"]
    assert (epochs[epochs["trial"].isin(finished)].groupby("trial").size() == 2).all()
    # the selection the pipeline recorded: a search trial of its own with the best last val score
    selections = pd.read_parquet(written / "selections.parquet")
    assert len(selections) == 6 and set(selections["method"]) == {"linear", "provpt", "linear_gpu"}
    last_val = epochs.dropna(subset=["val_acc"]).sort_values("epoch").groupby("trial")["val_acc"].last()
    for row in selections.itertuples():
        if row.method == "linear_gpu":  # searches nothing: its selection is the config as given
            continue
        search = trials[(trials["task"] == row.task) & (trials["method"] == row.method) & (trials["phase"] == "search")]
        assert row.trial in set(search["trial"]) and row.val_acc == last_val[row.trial]
        assert row.val_acc == max(last_val[t] for t in search["trial"] if t in last_val.index)
        assert json.loads(row.values)["train.lr"] == search.set_index("trial").loc[row.trial, "config.train.lr"]
    mini = (written / "tables" / "mini.md").read_text()
    shallow = next(line for line in mini.splitlines() if line.startswith("| VPT-shallow |"))
    assert shallow.count("| failed") == 2 and "incomplete (0/2 tasks)" in shallow  # the diverged method, as such
    assert (written / "figures" / "distribution_provpt.png").exists()
