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
