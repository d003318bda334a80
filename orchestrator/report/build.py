"""provpt tables STUDY.yaml | OUTPUT_FOLDER [--from-mlflow URI]

Turns a study's trials into tables for a paper, under ``<output>/results``:
``trials/epochs/distributions/selections.parquet`` (schema in `report.frames`); in ``tables/``
one table per benchmark (VTAB-1k with its group means and both averages, FGVC, the mini
benchmark) with the published numbers and our difference to them, the ablation table of an
ablation study, the paper's analyses (adjustment timing, idleness fidelity, relocation rewards), the comparison with a baseline (Wilcoxon signed-rank across tasks), what each
pipeline selected, the coverage (what is done, running, failed or missing) and the cost, each
in Markdown, LaTeX and CSV; and the figures in ``figures/`` (PNG and PDF). Read from the output
folder's records by default, or from an MLflow tracking server: both give the same tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from orchestrator.report.analyses import fidelity_table, reward_table, timing_tables
from orchestrator.report.data import data_notes
from orchestrator.report.coverage import STATES, cost_note, cost_table, coverage, trial_hours
from orchestrator.report.frames import Recorded, Results, ResultsError, from_mlflow, from_output, to_frames, write_parquet
from orchestrator.report.model import Column, Table
from orchestrator.report.published import MEAN_GROUPS, MEAN_TASKS, PARAMS, PublishedNumber, load_published
from orchestrator.report.render import write_table, write_text
from orchestrator.report.scores import Scores, three_figures
from orchestrator.report.statistics import compare
from orchestrator.report.tables import ablation_table, benchmark_table, placement_table, selection_table
from orchestrator.spec.study import Study, StudyError, load_study, redact
from orchestrator.store.schema import STUDY_ARTIFACT


@dataclass
class Report:
    tables: dict[str, Table]
    coverage: pd.DataFrame
    files: list[Path]


def build_tables(study: Study, results: Results, baseline: str | None = None, published: list[PublishedNumber] | None = None) -> tuple[dict[str, Table], pd.DataFrame]:
    """Every table of a study's results (nothing written)."""
    published = load_published() if published is None else published
    scores = Scores(results.trials, study)
    readout = Scores(results.trials, study, "best_late_test_acc")
    methods = [m.key for m in study.methods]
    baseline = baseline or ("vpt_deep" if "vpt_deep" in methods else methods[0])
    if baseline not in methods:
        raise StudyError(f"--baseline: '{baseline}' is not a method of study {study.name} ({', '.join(methods)})")
    tables: dict[str, Table] = {}
    benchmarks = list(dict.fromkeys(s.benchmark for s in study.task_specs))
    for benchmark in benchmarks:
        comparison, flags = compare(study, scores, baseline, benchmark)
        tables[benchmark] = benchmark_table(study, scores, benchmark, published, flags, readout)
        if len(methods) > 1:
            tables[comparison.name] = comparison
    if study.ablation is not None:
        tables["ablation"] = ablation_table(study, scores)
    hours = trial_hours(results.trials, results.epochs)
    for benchmark in benchmarks:
        cost_note(tables[benchmark], hours)
    placement = placement_table(study, results)
    if placement is not None:
        tables["placement"] = placement
    tables.update(timing_tables(study, results))
    for analysis in (fidelity_table(results), reward_table(study, results)):
        if analysis is not None:
            tables[analysis.name] = analysis
    tables["selections"] = selection_table(study, results.selections)
    tables["cost"] = cost_table(study, hours)
    for table in tables.values():
        display_names(study, table)
        precision(study, table)
    tables["coverage"], frame = coverage(study, results.trials)  # names trials as their runs do
    return tables, frame


def precision(study: Study, table: Table) -> None:
    """One rule for accuracies, as the papers print them: a task's column (ours, published, the
    difference, its ±) to one decimal, a mean's column to two; parameters in M, or in K when
    every count of ours is under 10,000, to three significant figures."""
    tasks = {s.name for s in study.task_specs}
    for column in table.columns:
        if column.id == PARAMS:
            _params_unit(table, column)
        elif column.id in tasks or column.id in (MEAN_GROUPS, MEAN_TASKS) or column.id.startswith("group:"):
            for row in table.rows:
                row.cells[column.id].digits = 1 if column.id in tasks else 2


def _params_unit(table: Table, column: Column) -> None:
    cells = [row.cells[column.id] for row in table.rows]
    ours = [row.cells[column.id].value for row in table.rows if row.kind == "ours" and row.cells[column.id].value is not None]
    if ours and max(ours) < 0.01:
        column.title = "Params (K)"
        for cell in cells:
            cell.value = None if cell.value is None else 1000 * cell.value
    for cell in cells:
        if cell.value is not None:
            cell.digits = three_figures(cell.value)


def display_names(study: Study, table: Table) -> None:
    """Rows named by a method key are printed with the method's name as papers write it."""
    for row in table.rows:
        if row.method and row.label.startswith(row.method):
            row.label = study.display(row.method) + row.label[len(row.method):]


def write_report(
    study: Study, results: Results, folder: Path, baseline: str | None = None, figures: bool = True, data: list[str] = ()
) -> Report:
    """Parquet, tables and figures of a study's results under `folder`; `data`: notes on the
    data the study read, under each benchmark table (`report.data.data_notes`)."""
    from orchestrator.report.figures import write_figures

    tables, frame = build_tables(study, results, baseline)
    for benchmark in dict.fromkeys(s.benchmark for s in study.task_specs):
        tables[benchmark].notes += data
    files = list(write_parquet(results, folder).values())
    table_folder = folder / "tables"
    table_folder.mkdir(parents=True, exist_ok=True)
    for table in tables.values():
        files += write_table(table, table_folder, latex=table.name not in ("coverage", "cost", "selections", "placement"))
    coverage_csv = table_folder / "coverage_trials.csv"
    write_text(coverage_csv, frame.to_csv(index=False))
    files.append(coverage_csv)
    if figures:
        files += write_figures(study, results, folder / "figures")
    return Report(tables, frame, files)


def load_target(target: Path) -> tuple[Study, Path]:
    """A study file (its output folder as configured) or an output folder (its study.json)."""
    if target.is_dir():
        record = target / STUDY_ARTIFACT
        if not record.exists():
            raise StudyError(f"{target}: not a study's output folder (no study.json); give the study file instead")
        try:
            study = Study.model_validate(json.loads(record.read_text()))
        except (ValueError, ValidationError) as err:
            raise StudyError(f"{record}: not a study record this version reads ({str(err).splitlines()[0]}); give the study file instead") from None
        return study, target.resolve()
    study = load_study(target)
    return study, study.output_dir()


def main(argv: list[str] | None = None, prog: str = "provpt tables") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("target", type=Path, help="a study file, or a study's output folder")
    parser.add_argument("--from-mlflow", metavar="URI", help="read the trials from this MLflow tracking URI")
    parser.add_argument("--output", type=Path, help="the study's output folder, when a study file is given")
    parser.add_argument("--out", type=Path, help="where the results go (default: <output>/results)")
    parser.add_argument("--baseline", help="the method the others are tested against (default: vpt_deep if run)")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--compare-data", type=Path, metavar="OTHER", help="another study's output folder (or manifest): the tables say whether its data was the same")
    args = parser.parse_args(argv)
    try:
        study, output = load_target(args.target)
        if args.output:
            output = args.output.resolve()
        recorded = from_mlflow(args.from_mlflow, study.name) if args.from_mlflow else from_output(output)
        check_finished(recorded, args.from_mlflow and redact(args.from_mlflow) or str(output / "records"))
        data = data_notes(output, args.compare_data)
        report = write_report(study, to_frames(*recorded), args.out or output / "results", args.baseline, not args.no_figures, data)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (StudyError, ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = redact(args.from_mlflow) if args.from_mlflow else str(output / "records")
    print(report_line(study, report, args.out or output / "results", source))
    return 0


def check_finished(recorded: Recorded, source: str) -> None:
    """Tables of no finished trial would be empty: refused, saying what the store holds."""
    if any(trial.status == "FINISHED" for trial in recorded.trials):
        return
    held = pd.Series([trial.status for trial in recorded.trials], dtype=object).value_counts()
    found = ", ".join(f"{n} {status.lower()}" for status, n in held.items()) or "no trial at all"
    raise ResultsError(f"{source}: nothing to tabulate: no trial has finished ({found}); run the study (provpt run) first")


def report_line(study: Study, report: Report, folder: Path, source: str) -> str:
    counts = report.coverage["state"].value_counts()
    state = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    return (
        f"results of study {study.name} (from {source}): {len(report.coverage)} planned trials: {state}\n"
        f"tables, parquet and figures: {folder} ({len(report.files)} files; tables/{next(iter(report.tables))}.md first)"
    )


if __name__ == "__main__":
    sys.exit(main())
