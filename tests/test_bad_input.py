"""Bad input, as a new user gives it: one message that names the file and the field or line and
says what is expected; exit status not 0; no traceback; no Ray started; nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.execution.driver import claim_output, main
from orchestrator.spec.study import load_study

REPO = Path(__file__).resolve().parents[1]
MICRO = (REPO / "tests" / "studies" / "micro.yaml").read_text()
PROVPT = Path(sys.executable).with_name("provpt")


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys, shared_cache):
    """Run `provpt run ARGS` in-process; return its error output after checking that it was a
    refusal: exit status not 0, no traceback, no Ray session folder, no Ray initialised."""
    ray_temp = tmp_path / "ray-session"
    monkeypatch.setenv("PROVPT_RAY_TMP", str(ray_temp))
    monkeypatch.setenv("PROVPT_CACHE", str(shared_cache))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def call(*argv) -> str:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit:  # argparse's refusal
            code = exit.code
        out = capsys.readouterr()
        assert code not in (0, None), out.out + out.err
        assert "Traceback" not in out.err + out.out
        assert not ray_temp.exists(), "a Ray session was started"
        assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
        return out.err

    return call


def _study(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _edit(*changes: tuple[str, str]) -> str:
    text = MICRO
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


# class 1: mistakes that used to plan without a word
ACCEPTED_SILENTLY = [
    (("tasks: [mini_count, mini_loc]", "tasks: [mini_count, mini_loc, mini_count]"), ["tasks", "'mini_count' is listed twice"]),
    (("tasks: [mini_count, mini_loc]", "tasks: [mini, mini_loc]"), ["tasks[1]", "mini_loc is listed twice", "'mini'"]),
    (("resources: {cpu: 1}", "resources: {cpu: 1}\nmethods:\n  - name: linear"), ["'methods' is given twice", "first on line 8"]),
    (("  - name: provpt\n", "  - name: linear\n    trial: {train: {head_lr: null}}\n  - name: provpt\n"),
     ["methods[1]", "'linear' is listed twice", "distinct label"]),
    (("when: {method.relocation.allocator: ppo}", "when: {method.relocation.alocator: ppo}"),
     ["methods[1].search.method.relocation.ppo.buffer_size.when", "method.relocation.alocator", "neither a searched value"]),
    (("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 2}"), ["resources", "gpu", "[0, 1]", "got 2"]),
    (("grace_period: 1", "grace_period: 2"), ["search.asha.grace_period", "train 2", "fewer than the epochs"]),
    (("reduction_factor: 2", "reduction_factor: 1"), ["search.asha.reduction_factor", ">= 2", "got 1"]),
    (("trials: 2,", "trials: 50000000,"), ["search.trials", "<= 10000", "50000000"]),
    (("seeds: [0, 1]", "seeds: [0, 1, 0]"), ["final.seeds", "seed 0 is listed twice"]),
    (("concurrency: 2", "concurrency: true"), ["search.concurrency", "expected an integer", "true"]),
    (("train: {epochs: 2,", "train: {epochs: true,"), ["methods[0] (linear)", "train.epochs", "expected an integer"]),
    (("{low: 2, high: 4,", "{low: 2, high: 4, log: true, step: 1,"), ["search.method.relocation.ppo.buffer_size", "step", "log range"]),
    (("{low: 0.05, high: 0.5, log: true}", "{low: false, high: 0.5}"), ["methods[0].search.train.lr.low", "expected a number, got false"]),
    (("head_lr: 0.1}", "head_lr: 0.1, seed: 7}"), ["trial.train.seed", "final.seeds"]),
    (("resources: {cpu: 1}", "resources: {cpu: 1}\nrecipe: published"),
     ["trial.train.epochs", "2 would be replaced by 100", "published recipe 'vpt'", "method's trial"]),
    (("  - name: provpt\n", "  - name: provpt\n    label: runs/provpt\n"), ["methods[1].label", "'runs/provpt'", "letters, digits"]),
    (("checkpoint_every: 1", "checkpoint_every: 1\nmax_concurrent_pipelines: -2"), ["max_concurrent_pipelines", ">= 1", "-2"]),
]


# class 3 and 5: tracebacks and unclear messages, now one clear line
TRACEBACKS_AND_UNCLEAR = [
    (("checkpoint_every: 1", "checkpoint_every: 1\ntracking: {uri: 'sqllite:////tmp/x.db'}"),
     ["tracking.uri", "unknown scheme 'sqllite'", "did you mean 'sqlite'"]),
    (("checkpoint_every: 1", "checkpoint_every: 1\ntracking: {uri: 'postgresql+pg8000://u@localhost/db'}"),
     ["tracking.uri", "pg8000", "not installed", "pip install pg8000"]),
    (("methods:", "method:"), ["method: unknown field (did you mean 'methods'?)", "'methods' is missing"]),
    (("search: {trials", "search: {trails"), ["search.trails: unknown field (did you mean 'trials'?)"]),
]
BAD_FILES = ACCEPTED_SILENTLY + TRACEBACKS_AND_UNCLEAR


@pytest.mark.parametrize("change, expected", BAD_FILES, ids=[e[1][0][:40] + "|" + e[1][-1][:30] for e in BAD_FILES])
def test_a_bad_study_file_is_refused_naming_the_file_and_the_field(tmp_path, refused, change, expected):
    path = _study(tmp_path, _edit(change))
    err = refused(path)
    assert err.startswith(f"error: {path}"), err
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "outputs").exists()


def test_a_study_path_that_is_no_study_file_is_named(tmp_path, refused):
    assert "is a folder; expected a study file" in refused(tmp_path)
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(MICRO.encode() + "# r\u00e9sum\u00e9\n".encode("latin-1"))
    err = refused(binary)
    assert f"{binary}:{MICRO.count(chr(10)) + 1}: not UTF-8 text" in err, err
    assert "no such study file" in refused(tmp_path / "nope.yaml")


def test_command_line_mistakes_are_refused_before_ray(tmp_path, refused, capsys):
    path = _study(tmp_path, MICRO)
    for cpus in ("0", "-3"):
        assert "--num-cpus: expected a whole number of CPUs >= 1" in refused(path, "--num-cpus", cpus)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert f"--output {afile}: is a file; expected a folder" in refused(path, "--output", afile)


def test_gpus_the_machine_lacks_are_refused_not_waited_for(tmp_path, refused):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    path = _study(tmp_path, _edit(("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 0.5}")))
    err = refused(path)
    assert err.startswith(f"error: {path}: resources.gpu: each trial asks for 0.5 GPU, but this machine has none"), err


# class 2: every backbone is built before Ray starts
def test_every_backbone_is_loaded_before_ray_starts(tmp_path, refused):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    cases = [
        (f"backbone: {{name: provpt_tiny_patch8_32, weights: {garbage}}}", ["cannot read weight file", str(garbage), "used by linear, provpt"]),
        ("backbone: {name: vit_nonexistent_patch16_224}", ["'vit_nonexistent_patch16_224': not a timm model name"]),
    ]
    for backbone, expected in cases:
        path = _study(tmp_path, _edit(("backbone: {name: provpt_tiny_patch8_32}", backbone)))
        err = refused(path)
        assert err.startswith(f"error: {path}: backbone: "), err
        for part in expected:
            assert part in err, (part, err)
    missing = tmp_path / "provpt-only.pth"
    path = _study(tmp_path, _edit(("    config: {num_prompts: 1}", f"    config: {{num_prompts: 1}}\n    trial: {{backbone: {{weights: {missing}}}}}")))
    err = refused(path)
    assert f"weight file {missing} does not exist (used by provpt)" in err and err.count("error:") == 1, err


def test_data_problems_are_named_before_ray_starts(tmp_path, refused):
    from fixtures import make_vtab_task

    root = tmp_path / "vtab"
    folder = make_vtab_task(root, "kitti")
    lines = (folder / "train800.txt").read_text().splitlines()
    lines[2] = "../../secret.png 0"
    (folder / "train800.txt").write_text("\n".join(lines) + "\n")
    text = _edit(("tasks: [mini_count, mini_loc]", "tasks: [kitti]")) + f"data: {{roots: {{vtab1k: {root}}}}}\n"
    text = text.replace('data: {cache_dir: "${PROVPT_CACHE}"}\n', "")
    err = refused(_study(tmp_path, text))
    assert f"{folder / 'train800.txt'}:3: image path '../../secret.png' leaves the task folder" in err, err
    afile = tmp_path / "vtab.tar"
    afile.write_text("not a folder")
    err = refused(_study(tmp_path, text.replace(str(root), str(afile))))
    assert f"data.root: {afile} is a file; expected the folder that holds the vtab1k tasks" in err, err


@pytest.mark.parametrize(
    "change, message",
    [
        (("search: {trials", "search: {trails"), "search.trails: unknown field"),  # the file alone
        (("config: {num_prompts: 1}", "config: {num_promts: 1}"), "method.num_promts: unknown field"),  # a trial config
    ],
)
def test_validation_imports_neither_torch_nor_ray(tmp_path, change, message):
    """A bad study file is answered before the heavy stack loads (bench/reject.py times it)."""
    path = _study(tmp_path, _edit(change))
    probe = (
        "import sys\nfrom orchestrator.cli import main\ncode = main(['run', sys.argv[1]])\n"
        "print(sorted(m for m in ('torch', 'timm', 'numpy', 'ray', 'mlflow', 'optuna') if m in sys.modules))\nsys.exit(code)"
    )
    env = {**os.environ, "PROVPT_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_rerun_leaves_the_finished_results_byte_identical(tmp_path, refused):
    from orchestrator.store.records import RecordFile
    from orchestrator.store.tracking import Tracker

    path = _study(tmp_path, MICRO)
    study = load_study(path)
    output = tmp_path / "outputs" / "micro"
    claim_output(study, output)  # a finished study's folder: settings, records, MLflow runs, tables
    tracker = Tracker(f"sqlite:///{output / 'mlflow.db'}", study.name)
    run = tracker.run("micro/mini_count/linear/final/seed0", "seed0", "trial")
    tracker.log(run.info.run_id, {"test_acc": 0.5})
    tracker.finish(run.info.run_id)
    record = RecordFile(output / "records" / "mini_count" / "linear" / "final" / "seed0.jsonl")
    record.start("micro/mini_count/linear/final/seed0", run.info.run_id, {"seed": 0}, {})
    record.end("FINISHED", {"test_acc": 0.5})
    (output / "results" / "tables").mkdir(parents=True)
    (output / "results" / "tables" / "mini.md").write_text("| method | mini_count |\n")
    before = _tree(output)

    other = _study(tmp_path, MICRO.replace("name: micro", "name: other"), "other.yaml")
    assert f"output {output} holds study 'micro', not 'other'" in refused(other, "--output", output)
    changed = _study(tmp_path, MICRO.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"), "changed.yaml")
    assert "holds a run of study 'micro' with other settings" in refused(changed, "--output", output)
    assert "--num-cpus" in refused(path, "--output", output, "--num-cpus", "0")
    missing = _study(tmp_path, MICRO.replace("backbone: {name: provpt_tiny_patch8_32}", "backbone: {name: provpt_tiny_patch8_32, weights: /gone.pth}"), "missing.yaml")
    assert "holds a run of study 'micro' with other settings" in refused(missing, "--output", output)
    assert _tree(output) == before


def test_tables_of_nothing_finished_and_broken_stores_are_refused(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from orchestrator.cli import main as provpt
    from orchestrator.report.frames import ResultsError, from_mlflow, read_parquet
    from orchestrator.store.records import RecordFile
    from orchestrator.store.schema import DISTRIBUTIONS_ARTIFACT, KEY
    from orchestrator.store.tracking import Tracker

    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path))
    path = _study(tmp_path, MICRO)
    output = tmp_path / "out"
    claim_output(load_study(path), output)
    record = RecordFile(output / "records" / "mini_count" / "linear" / "search" / "t1.jsonl")
    record.start("micro/mini_count/linear/search/t1", "r1", {}, {})
    record.end("FAILED", failure_reason="BackboneLoadError: x")
    assert provpt(["tables", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"{output / 'records'}: nothing to tabulate: no trial has finished (1 failed)" in err, err
    assert not (output / "results").exists()

    results = tmp_path / "results"
    results.mkdir()
    for name in ("trials", "epochs", "distributions", "selections"):
        pd.DataFrame({"a": [1]}).to_parquet(results / f"{name}.parquet")
    (results / "epochs.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ResultsError, match=f"{results / 'epochs.parquet'}: not a readable parquet file"):
        read_parquet(results)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "micro")
    run = tracker.run("micro/mini_count/provpt/final/seed0", "seed0", "trial")
    broken = tmp_path / "artifact" / DISTRIBUTIONS_ARTIFACT
    broken.parent.mkdir()
    broken.write_bytes(b"not parquet")
    tracker.client.log_artifact(run.info.run_id, str(broken))
    with pytest.raises(ResultsError) as caught:
        from_mlflow(uri, "micro")
    message = str(caught.value)
    assert message.startswith(f"MLflow run {run.info.run_id} (micro/mini_count/provpt/final/seed0): artifact {DISTRIBUTIONS_ARTIFACT} cannot be read")
    assert run.data.tags[KEY] == "micro/mini_count/provpt/final/seed0" and "/tmp" not in message.split(":")[0]
