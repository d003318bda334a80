"""`provpt slurm`: the sbatch command it writes (fast, no SLURM needed), the template's own
checks, and end to end on a real one-node SLURM on loopback (munged, slurmctld, slurmd from
Debian's packages, started here and stopped by PID): a study submitted with `provpt slurm`
runs on the Ray head the template starts, and no Ray process outlives the job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from services import SLURM_PROGRAMS, kill_processes_using, processes_using, scaled, start_slurm, wait_for

from orchestrator.cli import main
from orchestrator.execution.slurm import TEMPLATE

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT = 600
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")

needs_slurm = pytest.mark.skipif(
    any(shutil.which(p) is None for p in SLURM_PROGRAMS) or os.geteuid() != 0,
    reason="needs root and Debian's slurmctld, slurmd, slurm-client and munge",
)


def _study(path: Path, search_trials: int = 2, seeds: int = 1) -> Path:
    """tests/studies/micro.yaml cut to one pipeline: mini_count x linear, two epochs."""
    study = yaml.safe_load((REPO / "tests" / "studies" / "micro.yaml").read_text())
    study.update(
        name="slurm",
        tasks=["mini_count"],
        methods=[m for m in study["methods"] if m["name"] == "linear"],
        search={"trials": search_trials, "concurrency": 2},
        final={"seeds": list(range(seeds))},
    )
    path.write_text(yaml.safe_dump(study))
    return path


def test_the_sbatch_command_holds_the_allocation_an_absolute_output_and_the_studys_variables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = _study(tmp_path / "study.yaml")
    monkeypatch.setenv("PROVPT_CACHE", "cache")  # relative: the job runs in this folder (--chdir)
    monkeypatch.setenv("UNRELATED", "x")
    argv = ["slurm", "study.yaml", "--dry-run", "--nodes", "2", "--cpus-per-node", "8", "--gpus-per-node", "1",
            "--time", "02:00:00", "--partition", "gpu", "--account", "lab"]
    assert main(argv) == 0
    summary, command = capsys.readouterr().out.splitlines()
    output = tmp_path / "outputs" / "slurm"
    assert summary.startswith(f"study slurm: 2 nodes x 8 CPUs, 1 GPUs; output {output} ") and summary.endswith("passing PROVPT_CACHE")
    assert command == (
        f"PROVPT_PYTHON={sys.executable} sbatch --job-name=provpt-slurm --nodes=2 --ntasks-per-node=1 --cpus-per-task=8 "
        f"--output={output}/slurm-%j.log --chdir={tmp_path} --export=ALL --gpus-per-node=1 --time=02:00:00 "
        f"--partition=gpu --account lab {TEMPLATE} {study} {output}"
    )
    assert not output.exists()  # a dry run writes nothing


def test_submitting_runs_sbatch_with_the_python_and_creates_the_output_for_the_log(tmp_path, monkeypatch, capsys):
    """A stand-in sbatch records what the real one would get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/bash\necho "$PROVPT_PYTHON $*" > {tmp_path}/called\necho "Submitted batch job 42"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path / "cache"))
    study = _study(tmp_path / "study.yaml")
    output = tmp_path / "shared" / "out"
    assert main(["slurm", str(study), "--output", str(output), "--python", "/opt/venv/bin/python"]) == 0
    called = (tmp_path / "called").read_text()
    assert called.startswith("/opt/venv/bin/python --job-name=provpt-slurm --nodes=1 ")
    assert "--cpus-per-task=2" in called  # the default: resources.cpu 1 x search.concurrency 2
    assert output.is_dir() and f"log: {output}/slurm-42.log" in capsys.readouterr().out


@pytest.mark.parametrize("gpus, message", [(None, "resources: cpu: expected a number > 0"), ("0", "--gpus-per-node is 0")])
def test_a_study_that_would_be_refused_is_never_submitted(tmp_path, monkeypatch, capsys, gpus, message):
    study = tmp_path / "bad.yaml"
    if gpus is None:
        study.write_text("name: x\ntasks: [mini_count]\nmethods: [{name: linear}]\nresources: {cpu: 0}\n")
    else:
        study.write_text("name: x\ntasks: [mini_count]\nmethods: [{name: linear}]\nresources: {gpu: 1}\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: a submission would fail differently
    argv = ["slurm", str(study)] + (["--gpus-per-node", gpus] if gpus else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and "sbatch" not in captured.out


@pytest.mark.parametrize(
    "job_id, args, message",
    [
        ("", ["/s.yaml", "/out"], "not inside a SLURM job"),
        ("7", [str(REPO / "tests" / "studies" / "micro.yaml"), "outputs/micro"], "output outputs/micro: expected an absolute path"),
        ("7", ["studies/micro.yaml", "/out"], "study studies/micro.yaml: expected the absolute path"),
    ],
)
def test_the_template_refuses_to_start_without_a_job_or_with_relative_paths(job_id, args, message):
    env = {**os.environ, "SLURM_JOB_ID": job_id}
    done = subprocess.run(["bash", str(TEMPLATE), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"provpt.sbatch: error: {message}" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def slurm():
    root = Path(tempfile.mkdtemp(prefix="pvs", dir="/tmp"))  # short: munge's and Ray's sockets live under it
    os.chmod(root, 0o755)  # munged's clients must reach its socket through every folder above it
    cluster = None
    try:
        cluster = start_slurm(root / "slurm", cpus=2)
        yield cluster, root
    finally:
        if cluster is not None:
            for job in re.findall(r"JobId=(\d+)", cluster.scontrol("show", "jobs")):
                if "JobState=RUNNING" in cluster.scontrol("show", "job", job):  # a test that failed early
                    subprocess.run(["scancel", job], env=cluster.env, capture_output=True, timeout=scaled(30))
            cluster.stop()
        kill_processes_using(root)  # what outlived its daemon: job steps, Ray of a cancelled job
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def job(slurm, shared_cache):
    cluster, root = slurm
    study = _study(root / "study.yaml")
    output = root / "shared" / "out"
    env = {**cluster.env, "PROVPT_CACHE": str(shared_cache), "HF_HUB_OFFLINE": "1", "PROVPT_SLURM_TMP": str(root)}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "slurm", str(study), "--nodes", "1", "--cpus-per-node", "2", "--output", str(output)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(120),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
    state = {}

    def ended() -> bool:
        state["text"] = cluster.scontrol("show", "job", job_id)
        return re.search(r"JobState=(\w+)", state["text"]).group(1) in ENDED

    wait_for(ended, f"SLURM job {job_id}", cluster.services[-1], timeout=JOB_TIMEOUT)
    wait_for(cluster.idle, f"the node after job {job_id}", cluster.services[-1], timeout=120)  # SLURM's cleanup done
    left = processes_using(root / f"ray-{job_id}")
    log = output / f"slurm-{job_id}.log"
    print(f"SLURM job {job_id} ended after {time.monotonic() - start:.0f} s")
    return {"id": job_id, "state": state["text"], "log": log.read_text(errors="replace"), "output": output,
            "left": left, "temp": root / f"ray-{job_id}"}


@needs_slurm
def test_the_study_runs_to_the_end_in_the_slurm_job(job):
    assert "JobState=COMPLETED" in job["state"] and "ExitCode=0:0" in job["state"], job["state"] + job["log"][-4000:]
    trials = pd.read_parquet(job["output"] / "results" / "trials.parquet")
    assert len(trials) == 2 + 1 and set(trials["status"]) == {"FINISHED"}  # 2 search trials, 1 seed
    (pipeline,) = json.loads((job["output"] / "pipelines.json").read_text())
    assert pipeline["pipeline"] == "mini_count/linear" and "failed" not in pipeline and len(pipeline["test_acc"]) == 1


@needs_slurm
def test_the_driver_ran_on_the_ray_head_the_template_started(job):
    log = job["log"]
    head = re.search(r"provpt\.sbatch: job \d+: Ray head on \S+ at [\d.]+:(\d+), 1 nodes, temp dir (\S+)", log)
    assert head and head.group(2) == str(job["temp"]), log[-4000:]
    driver = log[log.index("provpt.sbatch: Ray nodes up: 1, 2 CPUs"):]  # the study's driver connects after
    assert re.search(rf"Connecting to existing Ray cluster at address: [\d.]+:{head.group(1)}\.\.\.", driver), log[-4000:]
    assert "study slurm: 1 pipelines on Ray 2 CPUs" in driver and "Started a local Ray instance" not in log
    assert "provpt.sbatch: Ray stopped on" in log


@needs_slurm
def test_no_ray_process_outlives_the_job(job):
    assert any(job["temp"].glob("session_*")), "Ray's temp dir was not the job's"
    assert job["left"] == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in job["left"] if Path(f"/proc/{pid}").exists()]


@needs_slurm
def test_a_cancelled_job_stops_its_ray(slurm, shared_cache, job):
    """scancel while the study runs (after the first job: the node has 2 CPUs): every Ray process
    of the job ends with it."""
    cluster, root = slurm
    study = _study(root / "cancelled.yaml", search_trials=4)
    output = root / "shared" / "cancelled"
    env = {**cluster.env, "PROVPT_CACHE": str(shared_cache), "HF_HUB_OFFLINE": "1", "PROVPT_SLURM_TMP": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "slurm", str(study), "--cpus-per-node", "2", "--output", str(output)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(120),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = re.search(r"Submitted batch job (\d+)", done.stdout).group(1)
    log = output / f"slurm-{job_id}.log"
    wait_for(lambda: "study slurm: 1 pipelines on Ray" in log.read_text(), f"the study of job {job_id} on Ray",
             cluster.services[-1], timeout=JOB_TIMEOUT)
    temp = root / f"ray-{job_id}"
    assert processes_using(temp)  # Ray is up
    subprocess.run(["scancel", job_id], env=cluster.env, check=True, timeout=scaled(30))
    wait_for(lambda: "JobState=CANCELLED" in cluster.scontrol("show", "job", job_id) and cluster.idle(),
             f"job {job_id} cancelled and its node idle", cluster.services[-1], timeout=120)
    # scancel signals every process of the job at once: the trap may not get to its last line
    assert processes_using(temp) == [], log.read_text()[-3000:]
