"""The results tables from hand-made trials, against numbers worked out by hand here."""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from orchestrator.report.build import build_tables, main, write_report
from orchestrator.report.frames import read_parquet, to_frames, write_parquet
from orchestrator.report.published import MEAN_GROUPS, MEAN_TASKS, load_published
from orchestrator.spec.study import Study
from orchestrator.store.records import RecordedTrial, RecordFile, read_records
from orchestrator.store.schema import TrialTags
from provpt_core import TASKS

SEEDS = [1, 2]
# test accuracy (%) per method, task, seed; absent: no final trial
SCORES = {
    "vpt_deep": {"cifar": {1: 70.0, 2: 72.0}, "dtd": {1: 60.0, 2: 62.0}, "eurosat": {1: 90.0, 2: 94.0}, "clevr_count": {1: 50.0, 2: 40.0}},
    "provpt": {"cifar": {1: 75.0, 2: 73.0}, "dtd": {1: 61.0, 2: 66.0}, "eurosat": {1: 91.0, 2: 93.0}},
    "linear": {"cifar": {1: 65.0}, "dtd": {1: 55.0, 2: 57.0}, "clevr_count": {1: 30.0, 2: 34.0}},
}
TASK_NAMES = ["cifar", "dtd", "eurosat", "clevr_count"]


def _study(**extra) -> Study:
    methods = [
        {"name": "vpt_deep"},
        {"name": "provpt"},
        {"name": "linear"},
        {"name": "vpt_shallow", "search": {"train.lr": {"low": 0.1, "high": 1.0}}},
    ]
    return Study.model_validate(
        {"name": "fixture", "tasks": TASK_NAMES, "methods": methods, "final": {"seeds": SEEDS}, "search": {"trials": 2}, **extra}
    )


def _trial(method, task, phase, seed, status, test=None, wall=None, epochs=2, params=100_000, name=None) -> RecordedTrial:
    spec = next(s for s in TASKS if s.name == task)
    key = f"fixture/{task}/{method}/{phase}/{name or f'seed{seed}'}"
    tags = {"study": "fixture", "task": task, "group": spec.group, "method": method, "phase": phase, "seed": str(seed),
            "gpu_fraction": "0.5", "cpus": "1.0", "searched": "{}"}
    summary = {} if test is None else {"test_acc": test / 100, "final_val_acc": 0.5, "best_val_acc": 0.6,
                                        "trainable_params": float(params), "wall_seconds": wall}
    return RecordedTrial(
        key, f"run-{key}", status, tags, {"train": {"lr": 0.5, "seed": seed}, "method": {"name": method}},
        summary, {e: {"train_loss": 1.0 / e, "epoch_seconds": 360.0} for e in range(1, epochs + 1)},
    )


def _fixture_trials() -> list[RecordedTrial]:
    trials = []
    for method, tasks in SCORES.items():
        for task, seeds in tasks.items():
            trials += [_trial(method, task, "final", s, "FINISHED", acc, wall=1800.0) for s, acc in seeds.items()]
    trials += [_trial("provpt", "clevr_count", "final", s, "FAILED") for s in SEEDS]  # diverged: 2 epochs of 360 s
    trials.append(_trial("vpt_shallow", "cifar", "search", 0, "RUNNING", name="t0"))
    return trials


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet")
    write_parquet(to_frames(_fixture_trials()), folder)  # through the parquet files, as a user would
    return build_tables(_study(), read_parquet(folder))[0]


def test_task_cells_mean_std_and_missing_states(tables):
    table = tables["vtab1k"]
    cifar = table.cell("VPT-deep", "cifar")
    assert cifar.value == pytest.approx(71.0) and cifar.std == pytest.approx(math.sqrt(2))  # stdev(70, 72)
    assert cifar.text() == "71.0 ± 1.4"
    partial = table.cell("Linear", "cifar")
    assert partial.value == 65.0 and partial.std is None and partial.text() == "65.0 (1/2 seeds)"
    assert table.cell("PRO-VPT", "clevr_count").text() == "failed"
    assert table.cell("Linear", "eurosat").text() == "missing"
    assert table.cell("VPT-shallow", "cifar").text() == "running"
    assert table.cell("VPT-shallow", "dtd").text() == "missing"


def test_group_means_and_both_averages(tables):
    table = tables["vtab1k"]
    natural = table.cell("VPT-deep", "group:Natural")
    assert natural.value == pytest.approx((71 + 61) / 2)
    assert natural.std == pytest.approx(abs((70 + 60) / 2 - (72 + 62) / 2) / math.sqrt(2))
    assert table.cell("VPT-deep", "group:Structured").value == pytest.approx(45.0)
    groups = table.cell("VPT-deep", MEAN_GROUPS)
    assert groups.value == pytest.approx((66 + 92 + 45) / 3)
    seed1, seed2 = (65 + 90 + 50) / 3, (67 + 94 + 40) / 3  # the mean of group means, per seed
    assert groups.std == pytest.approx(abs(seed1 - seed2) / math.sqrt(2))
    tasks = table.cell("VPT-deep", MEAN_TASKS)
    assert tasks.value == pytest.approx((71 + 61 + 92 + 45) / 4)
    assert tasks.std == pytest.approx(abs((70 + 60 + 90 + 50) / 4 - (72 + 62 + 94 + 40) / 4) / math.sqrt(2))
    titles = {c.id: c.title for c in table.columns}
    assert titles[MEAN_GROUPS] == "Mean of 3 groups" and titles[MEAN_TASKS] == "Mean of 4 tasks"
    assert titles["group:Natural"] == "Natural (2)"
    # a mean over a task with no result is not a number
    assert table.cell("PRO-VPT", MEAN_TASKS).text() == "incomplete (3/4 tasks)"
    assert table.cell("PRO-VPT", "group:Natural").value == pytest.approx((74 + 63.5) / 2)
    assert table.cell("VPT-deep", "params").value == pytest.approx(0.1)


def test_published_numbers_beside_ours_with_differences(tables):
    table = tables["vtab1k"]
    published = {(r["method"], r["task"]): float(r["value"]) for r in _published_rows()}
    row = next(r for r in table.rows if r.label.startswith("VPT-deep: published ["))
    assert "secondary-consistent" in row.label
    assert row.cells["cifar"].value == published[("vpt_deep", "cifar")]
    delta = next(r for r in table.rows if r.label == "VPT-deep: ours − published")
    assert delta.cells["cifar"].value == pytest.approx(71.0 - published[("vpt_deep", "cifar")])
    # the paper's group means cover all 7 natural tasks; ours cover 2: not comparable
    assert row.cells["group:Natural"].state == "n/a"
    # PRO-VPT's re-run of VPT-deep is a second reference of the vpt_deep row; it has no cifar number
    rerun = next(r for r in table.rows if r.label.startswith("VPT-deep: published (as re-run by provpt)"))
    assert rerun.cells["cifar"].text() == "n/s"
    # a method with no sourced number on a benchmark says so
    shallow = next(r for r in table.rows if r.label.startswith("VPT-shallow: published"))
    assert shallow.cells["cifar"].value == published[("vpt_shallow", "cifar")]
    delta = next(r for r in table.rows if r.label == "VPT-shallow: ours − published")
    assert delta.cells["cifar"].text() == "running"


def test_published_aggregates_on_the_full_benchmark(tmp_path):
    vtab = [s for s in TASKS if s.benchmark == "vtab1k"]
    scores = {s.name: 40.0 + 2 * i for i, s in enumerate(vtab)}
    trials = [_trial("vpt_deep", name, "final", 1, "FINISHED", acc, wall=60.0) for name, acc in scores.items()]
    study = Study.model_validate({"name": "fixture", "tasks": ["vtab1k"], "methods": [{"name": "vpt_deep"}], "final": {"seeds": [1]}})
    table = build_tables(study, to_frames(trials))[0]["vtab1k"]
    natural = [scores[s.name] for s in vtab if s.group == "Natural"]
    group_means = [sum(v) / len(v) for g in ("Natural", "Specialized", "Structured") for v in [[scores[s.name] for s in vtab if s.group == g]]]
    published = {r["task"]: float(r["value"]) for r in _published_rows() if r["method"] == "vpt_deep"}
    delta = next(r for r in table.rows if r.label == "VPT-deep: ours − published")
    assert delta.cells["group:Natural"].value == pytest.approx(sum(natural) / 7 - published["group:natural"])
    assert delta.cells[MEAN_GROUPS].value == pytest.approx(sum(group_means) / 3 - published["mean_of_groups"])
    assert delta.cells[MEAN_TASKS].value == pytest.approx(sum(scores.values()) / 19 - published["mean_of_19"])
    assert [c.title for c in table.columns][-3:] == ["Mean of 3 groups", "Mean of 19 tasks", "Params (M)"]


def test_published_parameter_counts_and_derived_means_on_the_full_benchmark():
    vtab = [s for s in TASKS if s.benchmark == "vtab1k"]
    trials = [_trial("davpt", s.name, "final", 1, "FINISHED", 50.0, wall=60.0, params=250_000) for s in vtab]
    study = Study.model_validate({"name": "fixture", "tasks": ["vtab1k"], "methods": [{"name": "davpt"}], "final": {"seeds": [1]}})
    table = build_tables(study, to_frames(trials))[0]["vtab1k"]
    rows = {(r["task"]): r for r in _published_rows() if r["method"] == "davpt" and r["benchmark"] == "vtab1k"}
    published = next(r for r in table.rows if r.label.startswith("DA-VPT: published ["))
    assert published.cells["params"].value == float(rows["params"]["value"]) == 0.21
    assert "derived" in published.label and rows["mean_of_19"]["grade"] == "derived"
    delta = next(r for r in table.rows if r.label == "DA-VPT: ours − published")
    assert delta.cells["params"].state == "n/a"  # ours count the head, the paper's do not
    assert delta.cells[MEAN_TASKS].value == pytest.approx(50.0 - float(rows["mean_of_19"]["value"]))


def test_comparison_with_the_baseline(tables):
    from scipy.stats import wilcoxon

    compare = tables["compare_vtab1k"]
    diffs = [((75 - 70) + (73 - 72)) / 2, ((61 - 60) + (66 - 62)) / 2, ((91 - 90) + (93 - 94)) / 2]
    for task, diff in zip(["cifar", "dtd", "eurosat"], diffs):
        assert compare.cell("PRO-VPT", task).value == pytest.approx(diff)
    assert compare.cell("PRO-VPT", "clevr_count").text() == "missing"
    assert compare.cell("PRO-VPT", "wins").text() == "2/1/0"
    assert compare.cell("PRO-VPT", "p").value == pytest.approx(wilcoxon(diffs).pvalue)
    assert compare.cell("Linear", "cifar").value == pytest.approx(65 - 70)  # seed 1 only: the shared one
    assert not any(r.label.endswith("†") for r in tables["vtab1k"].rows)  # 2 tasks cannot be significant


def test_coverage_and_cost(tables):
    coverage = tables["coverage"]
    assert coverage.cell("vpt_deep final seed 1", "cifar").text() == "done"
    assert coverage.cell("provpt final seed 2", "clevr_count").text() == "failed"
    assert coverage.cell("linear final seed 2", "cifar").text() == "missing"
    assert coverage.cell("vpt_shallow search", "cifar").text() == "1 running, 1 missing"
    assert coverage.cell("vpt_shallow search", "dtd").text() == "2/2 missing"
    cost = tables["cost"]
    assert cost.cell("VPT-deep", "cifar").text() == "1 (0.5)"  # two finished trials of 1800 s at half a GPU
    assert cost.cell("PRO-VPT", "clevr_count").text() == "0.4 (0.2)"  # two failed trials: 2 epochs of 360 s each
    assert "Cost of this table: " in tables["vtab1k"].notes[-1]


def test_written_report_files_and_formats(tmp_path):
    report = write_report(_study(), to_frames(_fixture_trials()), tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in report.files}
    for stem in ("vtab1k", "compare_vtab1k"):
        assert {f"tables/{stem}.md", f"tables/{stem}.tex", f"tables/{stem}.csv"} <= names
    assert {"trials.parquet", "epochs.parquet", "distributions.parquet", "tables/coverage.md"} <= names
    markdown = (tmp_path / "tables" / "vtab1k.md").read_text()
    assert "| VPT-deep | 71.0 ± 1.4 |" in markdown and "| failed |" in markdown
    latex = (tmp_path / "tables" / "vtab1k.tex").read_text()
    assert r"71.0 $\pm$ 1.4" in latex and "VPT-deep" in latex
    long = pd.read_csv(tmp_path / "tables" / "vtab1k.csv")
    cell = long[(long["method"] == "vpt_deep") & (long["kind"] == "ours") & (long["column"] == MEAN_TASKS)].iloc[0]
    assert cell["value"] == pytest.approx(67.25) and cell["kind"] == "ours"


def test_trials_parquet_is_typed(tmp_path):
    write_parquet(to_frames(_fixture_trials()), tmp_path)
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "trials.parquet")
    assert str(schema.field("seed").type) == "int64" and str(schema.field("test_acc").type) == "double"
    assert str(schema.field("config.train.lr").type) == "double" and str(schema.field("config.method.name").type) == "string"
    assert schema.metadata[b"provpt.schema"] == b"provpt.results/2"
    epochs = pd.read_parquet(tmp_path / "epochs.parquet")
    assert len(epochs) == 2 * len(_fixture_trials()) and set(epochs.columns) == {"trial", "epoch", "train_loss", "epoch_seconds"}


def test_records_round_trip_and_tolerate_a_cut_last_line(tmp_path):
    record = RecordFile(tmp_path / "records" / "t" / "m" / "final" / "seed1.jsonl")
    record.start("s/t/m/final/seed1", "run1", {"seed": 1, "task": "t"}, {"train": {"lr": 0.1}})
    record.epoch(1, {"train_loss": 0.5, "val_acc": None})
    record.start("s/t/m/final/seed1", "run1", {"seed": 1, "task": "other"}, {"train": {"lr": 0.1}})  # a retry
    record.epoch(1, {"train_loss": 0.7})  # the retried epoch: its last value counts
    record.end("FINISHED", {"test_acc": 0.9, "wall_seconds": None}, distributions=[{"epoch": 0, "block": 0, "count": 1}])
    with open(record.path, "a") as handle:
        handle.write('{"event": "ep')  # a writer killed mid-line
    (result,) = read_records(tmp_path)
    assert result.epochs == {1: {"train_loss": 0.7}} and result.tags["task"] == "t"
    assert result.status == "FINISHED" and result.summary == {"test_acc": 0.9} and result.distributions == [(0, 0, 1)]
    record.path.write_text('{"event": "epoch"}\n' + record.path.read_text())
    with pytest.raises(ValueError, match="seed1.jsonl:1: expected a 'start' line"):
        read_records(tmp_path)


TAGS = TrialTags("s", "t", "Natural", "m", "final", 1, "h", "v", "r", "n", "{}", 0.0, 1.0)


def test_a_trial_killed_between_its_two_writes_reads_the_same_from_both_stores(tmp_path):
    from orchestrator.execution.trainable import ResultWriter
    from orchestrator.report.frames import from_mlflow, from_output
    from orchestrator.store.tracking import Tracker
    from provpt_core import TrialConfig

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s", artifact_location=(tmp_path / "artifacts").as_uri())
    key = "s/t/m/final/seed1"
    run_id = tracker.run(key, "t/m/final/seed1", "trial", tags={"seed": 1}).info.run_id
    record = RecordFile(tmp_path / "records" / "t" / "m" / "final" / "seed1.jsonl")
    first = ResultWriter(tracker, run_id, record)
    first.start(key, TAGS.as_dict(), TrialConfig())
    first.epoch(1, {"epoch": 1, "train_loss": 0.9})
    record.epoch(2, {"train_loss": 0.8})  # killed after the record's write, before MLflow's
    retry = ResultWriter(tracker, run_id, record)  # restored from the epoch-1 checkpoint
    retry.start(key, TAGS.as_dict(), TrialConfig())
    retry.epoch(2, {"epoch": 2, "train_loss": 0.6})
    retry.failed("stopped here")
    (from_records,) = from_output(tmp_path).trials
    (from_tracking,) = from_mlflow(tracker.uri, "s").trials
    assert from_records.epochs == from_tracking.epochs == {1: {"train_loss": 0.9}, 2: {"train_loss": 0.6}}
    assert from_records.status == from_tracking.status == "FAILED"


def test_published_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "published.csv"
    rows = _csv_path().read_text().splitlines()
    bad.write_text("\n".join(rows[:3] + ["vpt_deep,vtab1k,no_such_task,1.0,primary,x"]) + "\n")
    with pytest.raises(ValueError, match=r"published.csv:4: unknown task 'no_such_task'"):
        load_published(bad)
    assert len(load_published()) == len(rows) - 1  # every shipped number maps to a column


def test_command_line_reports_a_folder_without_a_study(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no study.json" in capsys.readouterr().err


def _csv_path():
    from orchestrator.report.published import default_path

    return default_path()


def _published_rows() -> list[dict[str, str]]:
    """The shipped published numbers, read here with the csv module alone."""
    with open(_csv_path(), newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_method_better_on_every_task_is_flagged():
    tasks = ["cifar", "caltech101", "dtd", "svhn", "eurosat", "kitti"]
    trials = []
    for i, task in enumerate(tasks):
        for seed in SEEDS:
            trials.append(_trial("vpt_deep", task, "final", seed, "FINISHED", 50.0 + seed, wall=60.0))
            trials.append(_trial("provpt", task, "final", seed, "FINISHED", 51.0 + i + seed, wall=60.0))
    methods = [{"name": "vpt_deep"}, {"name": "provpt"}]
    study = Study.model_validate({"name": "fixture", "tasks": tasks, "methods": methods, "final": {"seeds": SEEDS}})
    tables = build_tables(study, to_frames(trials))[0]
    assert tables["compare_vtab1k"].cell("PRO-VPT", "p").value == pytest.approx(2 / 2**6)  # exact: all 6 signs agree
    labels = [r.label for r in tables["vtab1k"].rows if r.kind == "ours"]
    assert labels == ["VPT-deep", "PRO-VPT†"]
    assert any("Wilcoxon signed-rank, p < 0.05" in note for note in tables["vtab1k"].notes)


def test_ablation_table_rows_are_the_varied_factor():
    methods = [
        {"name": "provpt", "label": f"provpt_{allocator}", "config": {"relocation": {"allocator": allocator}}}
        for allocator in ("ppo", "random")
    ]
    trials = [
        _trial(f"provpt_{allocator}", task, "final", seed, "FINISHED", base + seed, wall=60.0)
        for allocator, base in (("ppo", 60.0), ("random", 50.0))
        for task in ("cifar", "eurosat")
        for seed in SEEDS
    ]
    study = Study.model_validate(
        {"name": "fixture", "tasks": ["cifar", "eurosat"], "methods": methods, "final": {"seeds": SEEDS},
         "ablation": {"factor": "allocator", "field": "method.relocation.allocator", "claim": "PPO allocates best"}}
    )
    ablation = build_tables(study, to_frames(trials))[0]["ablation"]
    assert [r.label for r in ablation.rows] == ["allocator=ppo", "allocator=random"]
    assert ablation.cell("allocator=random", MEAN_TASKS).value == pytest.approx(51.5)
    assert ablation.cell("allocator=ppo", "cifar").text() == "61.5 ± 0.7"
    assert ablation.title.startswith("Ablation: allocator")
    assert ablation.notes == ["Published: PPO allocates best."]


def test_figures_are_written_for_recorded_distributions(tmp_path):
    trials = _fixture_trials()
    for trial in trials:
        if trial.tags["method"] == "provpt" and trial.status == "FINISHED":
            trial.distributions = [(0, b, 1) for b in range(12)] + [(1, b, 2 if b == 3 else 1 - (b == 0)) for b in range(12)]
        if trial.tags["method"] == "vpt_deep" and trial.status == "FINISHED":  # a placement that cannot move
            trial.distributions = [(e, b, 1) for e in (0, 1) for b in range(12)]
    files = {p.name for p in write_report(_study(), to_frames(trials), tmp_path).files}
    assert {"distribution_provpt.png", "distribution_provpt.pdf", "trace_cifar_provpt.png", "trace_eurosat_provpt.pdf"} <= files
    assert not any("vpt_deep" in name for name in files)  # nothing to see in a constant placement
    again = tmp_path / "again"
    write_report(_study(), to_frames(trials), again)
    assert (again / "figures" / "trace_cifar_provpt.pdf").read_bytes() == (tmp_path / "figures" / "trace_cifar_provpt.pdf").read_bytes()


def test_fgvc_table_has_the_five_datasets_and_their_mean():
    fgvc = [s.name for s in TASKS if s.benchmark == "fgvc"]
    scores = {name: 70.0 + 3 * i for i, name in enumerate(fgvc)}
    trials = [_trial("linear", name, "final", 1, "FINISHED", acc, wall=60.0) for name, acc in scores.items()]
    study = Study.model_validate({"name": "fixture", "tasks": ["fgvc"], "methods": [{"name": "linear"}], "final": {"seeds": [1]}})
    table = build_tables(study, to_frames(trials))[0]["fgvc"]
    assert [c.title for c in table.columns] == [*fgvc, "Mean of 5 tasks", "Params (M)"]
    published = {r["task"]: float(r["value"]) for r in _published_rows() if r["method"] == "linear" and r["benchmark"] == "fgvc"}
    delta = next(r for r in table.rows if r.label == "Linear: ours − published")
    assert delta.cells[MEAN_TASKS].value == pytest.approx(sum(scores.values()) / 5 - published["mean"])
    assert delta.cells["cub200"].value == pytest.approx(scores["cub200"] - published["cub"])  # the paper's alias
    assert next(r for r in table.rows if r.kind == "published").label == "Linear: published [primary]"


def test_the_as_published_readout_is_a_labelled_row_beside_ours():
    trials = []
    for seed, (last, late) in enumerate([(0.60, 0.66), (0.62, 0.70)], 1):
        trial = _trial("davpt", "cifar", "final", seed, "FINISHED", 100 * last, wall=60.0)
        trial.summary["best_late_test_acc"] = late
        trials.append(trial)
    trials.append(_trial("vpt_deep", "cifar", "final", 1, "FINISHED", 50.0, wall=60.0))
    study = Study.model_validate(
        {"name": "fixture", "tasks": ["cifar"], "methods": [{"name": "davpt"}, {"name": "vpt_deep"}], "final": {"seeds": [1, 2]}}
    )
    table = build_tables(study, to_frames(trials))[0]["vtab1k"]
    ours = next(r for r in table.rows if r.kind == "ours" and r.method == "davpt")
    readout = next(r for r in table.rows if r.kind == "readout")
    assert ours.cells["cifar"].value == pytest.approx(61.0)  # the last epoch's test: what we compare
    assert readout.method == "davpt" and "as published" in readout.label
    assert readout.cells["cifar"].value == pytest.approx(68.0)
    assert not any(r.kind == "readout" and r.method == "vpt_deep" for r in table.rows)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_lora_and_adapter_rows_stand_beside_their_published_numbers(method):
    vtab = [s for s in TASKS if s.benchmark == "vtab1k"]
    scores = {s.name: 50.0 + i for i, s in enumerate(vtab)}
    trials = [_trial(method, name, "final", 1, "FINISHED", acc, wall=60.0) for name, acc in scores.items()]
    study = Study.model_validate({"name": "fixture", "tasks": ["vtab1k"], "methods": [{"name": method}], "final": {"seeds": [1]}})
    table = build_tables(study, to_frames(trials))[0]["vtab1k"]
    rows = {r["task"]: float(r["value"]) for r in _published_rows() if r["method"] == method}
    display = {"lora": "LoRA", "adapter": "Adapter"}[method]
    published = next(r for r in table.rows if r.label.startswith(f"{display}: published ["))
    assert published.cells["group:Structured"].value == rows["group:structured"]
    assert published.cells["params"].value == rows["params"]
    delta = next(r for r in table.rows if r.label == f"{display}: ours − published")
    structured = [scores[s.name] for s in vtab if s.group == "Structured"]
    assert delta.cells["group:Structured"].value == pytest.approx(sum(structured) / 8 - rows["group:structured"])
    assert published.cells["cifar"].text() == "n/s"  # no per-task number was sourced


def test_a_selection_reads_the_same_from_both_stores_and_is_tabled(tmp_path):
    from orchestrator.report.frames import from_mlflow, from_output
    from orchestrator.store.records import write_selection
    from orchestrator.store.schema import PIPELINE, SelectionRecord
    from orchestrator.store.tracking import Tracker

    chosen = SelectionRecord("s", "dtd", "vpt_shallow", "s/dtd/vpt_shallow/search/t7", {"train.lr": 0.1234}, 0.712, "best val")
    searched_nothing = SelectionRecord("s", "cifar", "vpt_shallow", None, {}, None, "nothing searched")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s", artifact_location=(tmp_path / "artifacts").as_uri())
    for selection in (chosen, searched_nothing):
        write_selection(tmp_path, selection)
        tags = {"task": selection.task, "method": selection.method, "phase": "final", **selection.tags()}
        tracker.run(f"s/{selection.task}/vpt_shallow/final", "x", PIPELINE, tags=tags)
    tracker.run("s/dtd/vpt_shallow/search", "x", PIPELINE, tags={"task": "dtd", "method": "vpt_shallow"})  # no selection
    from_records, from_tracking = from_output(tmp_path).selections, from_mlflow(tracker.uri, "s").selections
    assert sorted(from_records, key=str) == sorted(from_tracking, key=str) == sorted([chosen, searched_nothing], key=str)
    frames = to_frames([], from_tracking)
    assert frames.selections["trial"].isna().tolist() == [True, False] and frames.selections["trial"][1] == chosen.trial
    table = build_tables(_study(tasks=["cifar", "dtd"]), frames)[0]["selections"]
    assert table.cell("VPT-shallow", "dtd").text() == "train.lr=0.123 (71.2)"
    assert table.cell("VPT-shallow", "cifar").text() == "as configured"
    assert table.cell("PRO-VPT", "dtd").text() == "missing"


def test_placement_table_compares_distributions_within_and_across_tasks():
    trials = _fixture_trials()
    # provpt's final distributions (12 blocks, 12 prompts): cifar seeds at blocks {0: 12} and {0: 10, 1: 2};
    # dtd and eurosat seeds all at {5: 12}.
    placements = {("cifar", 1): {0: 12}, ("cifar", 2): {0: 10, 1: 2}}
    for trial in trials:
        if trial.tags["method"] == "provpt" and trial.status == "FINISHED":
            counts = placements.get((trial.tags["task"], int(trial.tags["seed"])), {5: 12})
            trial.distributions = [(0, b, 1) for b in range(12)] + [(3, b, counts.get(b, 0)) for b in range(12)]
    table = build_tables(_study(), to_frames(trials))[0]["placement"]
    assert [r.label for r in table.rows] == ["PRO-VPT"]  # vpt_deep and linear record no placement
    # within: cifar 4, dtd 0, eurosat 0 -> 4/3; across: 12 cross-task pairs, cifar-vs-other 24 each (8 pairs),
    # dtd-vs-eurosat 0 (4 pairs) -> 192/12
    assert table.cell("PRO-VPT", "within").value == pytest.approx(4 / 3)
    assert table.cell("PRO-VPT", "across").value == pytest.approx(16.0)
    assert table.cell("PRO-VPT", "ratio").value == pytest.approx(12.0)


def test_fidelity_statistics_against_hand_worked_rankings():
    import pandas as pd

    from orchestrator.report.analyses import fidelity_statistics

    # removing prompt 2 lowers the loss most (the truly most idle); the Taylor score ranks it second
    part = pd.DataFrame(
        {
            "taylor": [0.1, 0.2, 0.3, 0.4],
            "method_score": [0.4, 0.3, 0.2, 0.1],
            "loss_change_dropped": [0.3, 0.2, -0.5, 0.1],
            "loss_change_zeroed": [-0.1, -0.2, -0.3, -0.4],
        }
    )
    out = fidelity_statistics(part)
    assert out["spearman_taylor_zeroed"] == pytest.approx(1.0)  # zeroing drops the loss exactly in Taylor's order
    assert out["spearman_taylor_dropped"] == pytest.approx(0.8)  # drops 0.5 > -0.1 > -0.2 > -0.3 vs ranks 3,4,2,1
    assert out["spearman_method_score_dropped"] == pytest.approx(-0.8)
    assert out["rank_taylor"] == 2 and out["rank_method_score"] == 3 and out["prompts"] == 4
    assert out["pearson_taylor_zeroed"] == pytest.approx(1.0)


def test_one_colour_per_prompt_count_in_every_distribution_figure():
    """Counts 0..most map to one colour each, the same in every figure of a study."""
    from orchestrator.report.figures import count_colours

    colours = count_colours(12)
    cmap, norm = colours["cmap"], colours["norm"]
    assert cmap.N == 13 and norm(np.arange(13)).tolist() == list(range(13))
    assert len({tuple(cmap(norm(c))) for c in range(13)}) == 13


def test_one_precision_rule_for_every_accuracy(tables):
    """A task's column to one decimal (ours, published, difference), a mean's column to two."""
    table = tables["vtab1k"]
    tasks = {s for s in TASK_NAMES}
    checked = 0
    for row in table.rows:
        for column in table.columns:
            cell = row.cells[column.id]
            if cell.value is None or column.id == "params":
                continue
            decimals = 1 if column.id in tasks else 2
            assert re.fullmatch(rf"-?\d+\.\d{{{decimals}}}( ± \d+\.\d{{{decimals}}})?( \(\d/\d seeds\))?", cell.text()), (row.label, column.id, cell.text())
            checked += 1
    kinds = {row.kind for row in table.rows if any(c.value is not None for c in row.cells.values())}
    assert checked > 20 and {"ours", "published", "delta"} <= kinds


@pytest.mark.parametrize(("params", "title", "text"), [(520, "Params (K)", "0.520"), (150_000, "Params (M)", "0.150"), (85_800_000, "Params (M)", "85.80")])
def test_parameter_counts_in_the_unit_papers_use(params, title, text):
    trials = [_trial("linear", "cifar", "final", 1, "FINISHED", 50.0, wall=60.0, params=params)]
    study = Study.model_validate({"name": "fixture", "tasks": ["cifar"], "methods": [{"name": "linear"}], "final": {"seeds": [1]}})
    table = build_tables(study, to_frames(trials))[0]["vtab1k"]
    assert next(c.title for c in table.columns if c.id == "params") == title
    assert table.cell("Linear", "params").text() == text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine (Debian: texlive-latex-recommended)")
def test_every_latex_table_compiles_with_its_caption_and_label(tmp_path):
    write_report(_study(), to_frames(_fixture_trials()), tmp_path, figures=False)
    tables = sorted((tmp_path / "tables").glob("*.tex"))
    assert {"vtab1k.tex", "compare_vtab1k.tex"} <= {p.name for p in tables}
    for path in tables:
        source = path.read_text()
        assert "\\caption{" in source and f"\\label{{tab:{path.stem.replace('_', '-')}}}" in source
    document = tmp_path / "paper.tex"
    inputs = "\n".join(f"\\input{{{p.as_posix()}}}\\clearpage" for p in tables)
    document.write_text(
        "\\documentclass{article}\\usepackage{booktabs,graphicx}\\begin{document}\n" + inputs + "\n\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"Output written on paper.pdf ({len(tables)} pages" in done.stdout
    assert "Overfull \\hbox" not in done.stdout  # wide tables are scaled to the line
