"""The scale-out path end to end on loopback: PostgreSQL, an `mlflow server` on it, a Ray head
(`ray start --head`) and a second node (`ray start --address`), token auth on, and a study
submitted with `ray job submit`. While it runs, the second node's raylet is killed under a
trial and the MLflow server is stopped for a few seconds: the trial resumes from its
checkpoint, nothing is lost, and the tables are written to the shared output folder."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from services import (
    BIN,
    kill_processes_using,
    postgres_binaries,
    raylet_pid,
    scaled,
    start_mlflow,
    start_postgres,
    start_ray_node,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 10  # long enough that a PRO-VPT trial is seen mid-way on the second node, even on a busy machine
JOB_TIMEOUT = 480

pytestmark = pytest.mark.skipif(postgres_binaries() is None, reason="PostgreSQL is not installed")


def _study(path: Path) -> Path:
    study = {
        "name": "cluster",
        "tasks": ["mini_count"],
        "backbone": {"name": "provpt_tiny_patch8_32"},
        "data": {"cache_dir": "${PROVPT_CACHE}"},
        "trial": {"train": {"epochs": EPOCHS, "batch_size": 100, "head_lr": 0.1}},
        "methods": [
            {"name": "linear", "trial": {"train": {"head_lr": None}}, "search": {"train.lr": {"low": 0.05, "high": 0.5, "log": True}}},
            {"name": "provpt", "config": {"num_prompts": 1}, "search": {"train.lr": {"low": 0.05, "high": 0.5, "log": True}}},
        ],
        "resources": {"cpu": 1},
        "search": {"trials": 2, "concurrency": 2},
        "final": {"seeds": [0, 1]},
        "tracking": {"uri": "${MLFLOW_TRACKING_URI}"},
        "checkpoint_every": 1,
        "max_failures": 3,
    }
    path.write_text(yaml.safe_dump(study))
    return path


def _ray(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=scaled(timeout))


def _nodes(env: dict[str, str], gcs: str) -> list[dict]:
    script = f"import json, ray; ray.init(address='{gcs}', log_to_driver=False); print(json.dumps(ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=scaled(120))
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="pvc", dir="/tmp"))  # short socket paths; postgres must traverse it
    os.chmod(root, 0o755)
    started = []
    try:
        postgres, backend, password = start_postgres(root / "pg")
        started.append(postgres)
        mlflow, url = start_mlflow(root / "ml", backend, password)
        started.append(mlflow)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "HF_HUB_OFFLINE": "1",
            "RAY_ADDRESS": "",
        }
        head, ports = start_ray_node(root / "h", env)
        started.append(head.service)
        dashboard = f"http://127.0.0.1:{ports['dashboard']}"
        # a busy machine may take minutes, and an early `ray job list` may hang: probe again
        wait_for(lambda: _ray(env, "job", "list", "--address", dashboard, timeout=30).returncode == 0, "ray head", head.service, timeout=300)
        worker, _ = start_ray_node(root / "w", env, head)
        started.append(worker.service)
        wait_for(lambda: len([n for n in _nodes(env, head.gcs_address) if n["Alive"]]) == 2, "second ray node", worker.service)
        yield {
            "root": root, "env": env, "dashboard": dashboard, "head": head, "worker": worker, "mlflow": mlflow,
            "mlflow_url": url, "backend": backend, "password": password, "started": started,
        }
    finally:
        for service in reversed(started):
            service.stop()
        for folder in (root / "h", root / "w"):
            kill_processes_using(folder)
        shutil.rmtree(root, ignore_errors=True)


def _records(output: Path) -> list[dict]:
    from orchestrator.store.records import read_records

    try:
        return [vars(r) for r in read_records(output)]
    except (ValueError, KeyError):  # a line being written
        return []


def _ended(status: str) -> bool:
    """`ray job status` says the job ended: "Job 'x' succeeded", "... failed", "... was stopped"."""
    status = status.lower()
    return any(end in status for end in ("' succeeded", "' failed", "' was stopped"))


@pytest.fixture(scope="module")
def submitted(cluster, shared_cache):
    root, env = cluster["root"], cluster["env"]
    output = root / "shared" / "out"
    study = _study(root / "cluster.yaml")
    job = f"provpt-{secrets.token_hex(4)}"
    # as the README says: `provpt submit` passes the study's ${VAR}s from this shell and the output
    shell = {**env, "MLFLOW_TRACKING_URI": cluster["mlflow_url"], "PROVPT_CACHE": str(shared_cache)}
    submit = subprocess.run(
        [str(BIN / "provpt"), "submit", str(study), "--address", cluster["dashboard"], "--working-dir", str(REPO),
         "--output", str(output), "--env", "HF_HUB_OFFLINE", "--python", sys.executable, "--no-wait", "--submission-id", job],
        env=shell, capture_output=True, text=True, timeout=scaled(120),
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "passing PROVPT_CACHE, MLFLOW_TRACKING_URI, HF_HUB_OFFLINE" in submit.stdout, submit.stdout
    assert cluster["password"] not in submit.stdout + submit.stderr

    worker_id = next(n["NodeID"] for n in _nodes(env, cluster["head"].gcs_address) if n["NodeManagerPort"] == cluster["worker"].node_manager_port)
    deadline = time.monotonic() + scaled(JOB_TIMEOUT)  # the tests may share the machine with other studies
    victim = None
    checked = time.monotonic()
    while victim is None and time.monotonic() < deadline:  # a PRO-VPT trial running on the second node
        if time.monotonic() - checked > 10:  # a job that ended (e.g. a refused study) fails the test now
            checked = time.monotonic()
            if _ended(_ray(env, "job", "status", job, "--address", cluster["dashboard"]).stdout):
                logs = _ray(env, "job", "logs", job, "--address", cluster["dashboard"])
                pytest.fail(f"the job ended before a PRO-VPT trial was seen mid-way on the second node:\n{logs.stdout[-3000:]}")
        for record in _records(output):
            if (record["tags"].get("ray_node_id") == worker_id and record["status"] == "RUNNING"
                    and record["tags"]["method"] == "provpt" and 1 <= len(record["epochs"]) < EPOCHS - 1):
                victim = record["key"]
        time.sleep(0.2)
    assert victim is not None, "no trial ran on the second node"
    os.kill(raylet_pid(cluster["worker"].node_manager_port), signal.SIGKILL)

    mlflow = cluster["mlflow"]  # and the tracking server goes away for a few seconds
    mlflow.stop()
    time.sleep(5)
    port = int(cluster["mlflow_url"].rsplit(":", 1)[1])
    cluster["mlflow"], _ = start_mlflow(root / "ml", cluster["backend"], cluster["password"], port)
    cluster["started"].append(cluster["mlflow"])

    status = ""
    while time.monotonic() < deadline:
        status = _ray(env, "job", "status", job, "--address", cluster["dashboard"]).stdout.lower()
        if _ended(status):
            break
        time.sleep(3)
    logs = _ray(env, "job", "logs", job, "--address", cluster["dashboard"]).stdout
    return {"output": output, "status": status, "logs": logs, "victim": victim, "worker_id": worker_id}


def test_the_submitted_study_succeeds_on_both_nodes(submitted):
    assert "' succeeded" in submitted["status"], submitted["status"] + submitted["logs"][-4000:]
    trials = pd.read_parquet(submitted["output"] / "results" / "trials.parquet")
    assert len(trials) == 2 * (2 + 2) and set(trials["status"]) == {"FINISHED"}
    assert trials["ray_node_id"].nunique() == 2 and submitted["worker_id"] in set(trials["ray_node_id"])


def test_the_trial_under_the_killed_node_resumed_from_its_checkpoint(submitted):
    from orchestrator.store.records import read_records

    (victim,) = [r for r in read_records(submitted["output"]) if r.key == submitted["victim"]]
    assert victim.status == "FINISHED" and sorted(victim.epochs) == list(range(1, EPOCHS + 1))
    assert victim.resumed_from and victim.resumed_from[-1] >= 1  # not from scratch


def test_every_run_and_artifact_is_in_the_tracking_server(submitted, cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.report.build import main

    client = MlflowClient(cluster["mlflow_url"])
    experiment = client.get_experiment_by_name("cluster")
    runs = client.search_runs([experiment.experiment_id], "tags.`provpt.kind` = 'trial'", max_results=100)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        relocates = run.data.tags["method"] == "provpt"
        expected = {"config.json"} | ({"distributions.parquet", "prompts.safetensors", "distribution_history.csv"} if relocates else set())
        assert names - ({"distribution_history.png"} if relocates else set()) == expected  # the picture: when it moved
    stored = list((cluster["root"] / "ml" / "artifacts").rglob("prompts.safetensors"))
    assert len(stored) == 4  # the provpt trials' prompts, in the server's artifact store
    assert main([str(submitted["output"]), "--from-mlflow", cluster["mlflow_url"], "--out", str(tmp_path), "--no-figures"]) == 0
    written = submitted["output"] / "results"
    for name in ("trials", "epochs", "distributions"):
        pd.testing.assert_frame_equal(pd.read_parquet(written / f"{name}.parquet"), pd.read_parquet(tmp_path / f"{name}.parquet"))
    assert (written / "tables" / "mini.md").exists()


def test_no_credential_reaches_the_output_or_the_logs(submitted, cluster):
    secret_values = [cluster["password"], cluster["env"]["RAY_AUTH_TOKEN"]]
    texts = [submitted["logs"], *(p.read_text(errors="replace") for p in submitted["output"].rglob("*") if p.suffix in (".json", ".jsonl", ".md", ".csv"))]
    assert not any(secret in text for secret in secret_values for text in texts)


def test_a_job_with_a_relative_output_is_refused_before_it_writes_into_rays_copy(cluster, shared_cache):
    """`ray job submit --working-dir .` runs the driver in a copy Ray deletes: a relative output
    (the shipped studies' default) is refused, naming the absolute-path fix."""
    root, env = cluster["root"], cluster["env"]
    study = _study(root / "relative.yaml")
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": cluster["mlflow_url"], "PROVPT_CACHE": str(shared_cache), "HF_HUB_OFFLINE": "1"}}
    done = _ray(
        env, "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps(runtime_env), "--", sys.executable, "-m", "orchestrator.run",
        str(study), "--output", "outputs/relative", timeout=300,
    )
    logs = done.stdout + done.stderr
    assert done.returncode != 0, logs[-3000:]
    assert "--output outputs/relative: a relative path inside a Ray job resolves into Ray's temporary copy" in logs, logs[-3000:]
    assert "working_dir_files" in logs and "PROVPT_OUTPUT" in logs
    assert not (REPO / "outputs" / "relative").exists()


def test_no_placeholder_score_reaches_optuna(submitted):
    """Search trials here score val only after their last epoch: the epochs before report no val
    score, so each Optuna trial's intermediate values are its real score only."""
    import optuna

    storage = f"sqlite:///{submitted['output'] / 'optuna.db'}"
    study = optuna.load_study(study_name="cluster/mini_count/linear", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:
        assert trial.intermediate_values and set(trial.intermediate_values.values()) == {trial.value}, trial.intermediate_values
