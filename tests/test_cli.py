"""`provpt`: the installed command dispatches to every entry point."""

import subprocess
import sys
from pathlib import Path

from orchestrator.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PROVPT = Path(sys.executable).with_name("provpt")  # installed beside the interpreter by `pip install -e .`


def test_the_installed_command_plans_a_study_without_starting_it(tmp_path):
    output = tmp_path / "out"
    command = [str(PROVPT), "plan", "studies/quickstart.yaml", "--output", str(output)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("study quickstart: 12 pipelines") and "recipes (how each method trains):" in done.stdout
    assert not output.exists()  # a plan writes nothing


def test_an_unknown_command_names_the_known_ones(capsys):
    assert main(["bogus"]) == 2
    assert f"expected one of {', '.join(COMMANDS)}" in capsys.readouterr().err
    assert main([]) == 2 and "provpt run STUDY.yaml" in capsys.readouterr().out


def test_verify_and_tables_errors_come_from_their_commands(tmp_path, capsys):
    assert main(["verify", "--benchmark", "mini", str(tmp_path / "absent")]) == 1
    assert "absent: not a folder" in capsys.readouterr().err
    assert main(["tables", str(tmp_path / "nothing.yaml")]) != 0


def test_submit_passes_the_studys_variables_and_an_absolute_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PROVPT_OUTPUT", "shared/provpt")  # relative here: made absolute before it leaves
    monkeypatch.setenv("VTAB_ROOT", "/data/vtab-1k")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://me:hunter2@db:5432/mlflow")
    monkeypatch.setenv("UNRELATED", "x")
    assert main(["submit", "studies/vtab_full.yaml", "--dry-run", "--address", "http://head:8265", "--no-wait"]) == 0
    out = capsys.readouterr().out
    command = out.splitlines()[1]
    assert "--address http://head:8265 --working-dir " + str(REPO) in command
    assert "--no-wait -- python -m orchestrator.run studies/vtab_full.yaml --output " + str(REPO / "shared/provpt/vtab_full") in command
    assert '"PROVPT_OUTPUT": "shared/provpt"' in command and '"VTAB_ROOT": "/data/vtab-1k"' in command
    assert "UNRELATED" not in command and "hunter2" not in out and "me:***@db:5432" in command


def test_submit_refuses_a_bad_study_before_submitting(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [mini_count]\nmethods: [{name: linear}]\nresources: {cpu: 0}\n")
    assert main(["submit", str(bad), "--address", "http://127.0.0.1:1"]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: resources: cpu: expected a number > 0" in captured.err and "ray job submit" not in captured.out
