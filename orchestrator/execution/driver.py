"""provpt run STUDY.yaml [--output DIR] [--dry-run]   (or python -m orchestrator.run)

Runs every pipeline (task x method) of a study: Optuna search on Ray Tune, selection, final
seeds, all tracked in MLflow. Without a Ray address a local Ray starts in-process; inside
`ray job submit` (RAY_ADDRESS set) the cluster runs the trials. Re-running the same command
resumes: finished trials are not run again and no MLflow run is duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.spec.study import Study, StudyError, load_study, redact
from orchestrator.store.schema import DATA_MANIFEST, RESULTS_ARTIFACTS, STUDY, STUDY_ARTIFACT

if TYPE_CHECKING:
    from orchestrator.spec.plan import Pipeline

PIPELINES_FILE = "pipelines.json"  # each pipeline's outcome: its selection and final test scores

WORKER_NICENESS = "RAY_worker_niceness"

# Environment of the study task (where Tune's controller runs) and its trials.
STUDY_TASK_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the working dir; every path is absolute anyway
    "TUNE_GLOBAL_CHECKPOINT_S": "600",  # a resume reads records, MLflow and Optuna, not Tune's state
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # MLflow holds the results; no CSV/JSON/TB copies
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # an epoch without evaluation reports no val score
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
    # Ray starts workers at niceness 15: beside any busy process on the machine a trial then gets
    # a few percent of a core (an epoch 50x slower, measured). Trials compete as equals instead.
    WORKER_NICENESS: "0",
}


def main(argv: list[str] | None = None, prog: str = "provpt run") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("study", type=Path)
    parser.add_argument("--output", type=Path, help="where everything goes (default: the study's output)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its cost, start nothing")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show the trials' own output")
    args = parser.parse_args(argv)
    if args.num_cpus is not None and args.num_cpus < 1:
        parser.error(f"--num-cpus: expected a whole number of CPUs >= 1 for the local Ray, got {args.num_cpus}")
    try:
        study = load_study(args.study)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from orchestrator.spec.plan import format_plan, make_plan  # the core: after the study file is checked

    output = study.output_dir(args.output)
    pipelines = make_plan(study)
    tracking_uri = study.tracking_uri(output)
    if args.dry_run:
        print(format_plan(study, pipelines, str(output), redact(tracking_uri)))
        return 0
    try:
        check_job_output(study, args.output, Path.cwd())
        check_output(study, output, "--output" if args.output is not None else "output")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = [f"error: {args.study}: {p}" for p in preflight(study, pipelines)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    try:
        manifest = data_manifest(pipelines, output)
    except StudyError as err:
        print(f"error: {args.study}: {err}", file=sys.stderr)
        return 2
    claim_output(study, output)
    if not (output / DATA_MANIFEST).exists():
        (output / DATA_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return run_study(study, pipelines, output, tracking_uri, args.num_cpus, args.verbose)


def data_manifest(pipelines: list[Pipeline], output: Path) -> dict[str, Any]:
    """The manifest of the data the study reads (its warnings printed: re-encoded lossless
    tasks); refused when the output folder holds one of other data, since a resumed study
    would mix results of two datasets."""
    from provpt_core import compare_manifests, study_manifest

    manifest = study_manifest([p.base.data for p in pipelines])
    for name, task in manifest["tasks"].items():
        for warning in task["warnings"]:
            print(f"warning: data: {name} {warning}", file=sys.stderr)
    started = output / DATA_MANIFEST
    if started.is_file():
        differences = compare_manifests(json.loads(started.read_text()), manifest, ("when the study started", "now"))
        if differences:
            raise StudyError(
                f"the data changed since this study started ({started}): {'; '.join(differences)}; its finished "
                "trials would mix with results on other data: restore the data, or give a new --output"
            )
    return manifest


def preflight(study: Study, pipelines: list[Pipeline]) -> list[str]:
    """Everything that can be checked before Ray starts, one sentence per problem naming the
    study's field: each backbone built from its weights
    (once per distinct backbone), each task's data (once per task and root), the tracking
    store's driver and the GPUs a local Ray would have."""
    from provpt_core import check, format_reports

    problems: dict[str, None] = {}  # ordered, each sentence once
    reports = {}
    checked, built = set(), set()
    for pipeline in pipelines:
        config, spec = pipeline.base, pipeline.task
        key = (spec.name, repr(config.backbone), config.data.root)
        if key in checked:
            continue
        checked.add(key)
        if spec.benchmark != "mini" and config.data.root is None:
            problems[f"data.roots.{spec.benchmark}: task {spec.name} needs the {spec.benchmark} root folder"] = None
            continue
        found = check(config, decode_images=study.data.check_images, backbone=repr(config.backbone) not in built)
        built.add(repr(config.backbone))
        users = sorted({p.method.key for p in pipelines if repr(p.base.backbone) == repr(config.backbone)})
        problems.update(dict.fromkeys(
            f"{p} (used by {', '.join(users)})" if p.startswith("backbone:") else p for p in found.problems
        ))
        if found.data is not None:
            reports.setdefault((spec.name, config.data.root), found.data)
    if any(not r.ok for r in reports.values()):
        problems[format_reports(list(reports.values()))] = None
    problems.update(dict.fromkeys(_tracking_problems(study)))
    if study.resources.gpu > 0 and not os.environ.get("RAY_ADDRESS"):
        import torch

        if torch.cuda.device_count() == 0:
            problems[
                f"resources.gpu: each trial asks for {study.resources.gpu:g} GPU, but this machine has none "
                "and the local Ray would wait for one forever; set resources.gpu: 0 to train on CPUs, or submit "
                "the study to a Ray cluster with GPUs"
            ] = None
    return list(problems)


# The Python package of each SQL tracking store's default driver, and how to install it.
_TRACKING_DRIVERS = {"postgresql": ("psycopg2", "pip install -e '.[server]'"), "mysql": ("pymysql", "pip install pymysql")}


def _tracking_problems(study: Study) -> list[str]:
    """An SQL tracking store whose driver is missing fails inside MLflow after Ray started."""
    import importlib.util
    from urllib.parse import urlsplit

    if study.tracking.uri is None:
        return []
    scheme = urlsplit(study.tracking.uri).scheme
    dialect, _, driver = scheme.partition("+")
    module, install = _TRACKING_DRIVERS.get(dialect, (None, None))
    if driver:  # an explicit driver, e.g. postgresql+psycopg2
        module, install = driver, f"pip install {driver}"
    if module is None or importlib.util.find_spec(module) is not None:
        return []
    return [f"tracking.uri: a {scheme}:// store needs the Python package {module}, which is not installed: {install}"]


def check_cluster_gpus(study: Study, resources: dict[str, float], address: str) -> str | None:
    """A study asking for GPUs on a cluster with none would wait forever: refused instead."""
    gpus = resources.get("GPU", 0)
    if study.resources.gpu > 0 and gpus < study.resources.gpu:
        return (
            f"error: resources.gpu: each trial asks for {study.resources.gpu:g} GPU, but the Ray cluster at "
            f"{address} has {gpus:g}; this run does not wait for GPU nodes to join: start them (or set "
            "resources.gpu: 0) and run the same command again"
        )
    return None


def check_job_output(study: Study, given: Path | None, cwd: Path) -> None:
    """Inside `ray job submit --working-dir`, the driver runs in Ray's temporary copy of the
    working dir, which Ray deletes: a relative output there would take every result with it."""
    if "working_dir_files" not in cwd.parts:
        return
    relative = given if given is not None else Path(study.output or Path("outputs") / study.name)
    if relative.expanduser().is_absolute():
        return
    where = "--output" if given is not None else "output"
    raise StudyError(
        f"{where} {relative}: a relative path inside a Ray job resolves into Ray's temporary copy of the "
        f"working dir ({cwd}), which Ray deletes; give an absolute path on a filesystem every node sees: "
        f"--output /shared/provpt/{study.name}, or pass PROVPT_OUTPUT to the job (the shipped studies write "
        "to ${PROVPT_OUTPUT:-outputs}/<name>): ray job submit --runtime-env-json "
        "'{\"env_vars\": {\"PROVPT_OUTPUT\": \"/shared/provpt\"}}' ..."
    )


def check_output(study: Study, output: Path, where: str = "output") -> None:
    """The output folder belongs to one study: a re-run with other settings would mix results.
    Checked before anything is written there; `where` names the setting it came from."""
    if output.exists() and not output.is_dir():
        raise StudyError(f"{where} {output}: is a file; expected a folder (new, or this study's earlier output)")
    record = output / STUDY_ARTIFACT
    if not record.exists():
        return
    settings = _settings(study)
    if record.read_text() == settings:
        return
    try:
        theirs = json.loads(record.read_text()).get("name", "?")
    except ValueError:
        theirs = "?"
    if theirs != study.name:
        raise StudyError(
            f"output {output} holds study '{theirs}', not '{study.name}'; give this study another --output "
            "(or its own output: field)"
        )
    raise StudyError(
        f"output {output} holds a run of study '{study.name}' with other settings; resume it with the same "
        "study file, or give another --output"
    )


def claim_output(study: Study, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / STUDY_ARTIFACT).write_text(_settings(study))


def _settings(study: Study) -> str:
    dump = study.model_dump(mode="json")
    if dump["tracking"]["uri"]:
        dump["tracking"]["uri"] = redact(dump["tracking"]["uri"])
    return json.dumps(dump, indent=2, sort_keys=True)


def run_study(study: Study, pipelines: list[Pipeline], output: Path, tracking_uri: str, num_cpus: int | None, verbose: bool) -> int:
    import optuna
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from orchestrator.execution.progress import PROGRESS_ACTOR, Progress, ProgressPrinter
    from orchestrator.execution.study_task import run_study_trials
    from orchestrator.execution.tuning import PipelineJob
    from orchestrator.spec.plan import PHASES, planned_trials
    from orchestrator.store.tracking import Tracker, code_version

    started_here = not (os.environ.get("RAY_ADDRESS") or ray.is_initialized())
    if started_here:
        os.environ.setdefault(WORKER_NICENESS, STUDY_TASK_ENV[WORKER_NICENESS])  # the local Ray's workers inherit it
        temp = Path(os.environ.get("PROVPT_RAY_TMP", Path(tempfile.gettempdir()) / f"provpt-ray-{os.getuid()}"))
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(temp), log_to_driver=verbose)
    else:
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=verbose, ignore_reinit_error=True)
    refused = None if started_here else check_cluster_gpus(study, ray.cluster_resources(), os.environ.get("RAY_ADDRESS", "?"))
    if refused:
        print(refused, file=sys.stderr)
        return 2
    print(f"study {study.name}: {len(pipelines)} pipelines on Ray {ray.cluster_resources().get('CPU', 0):g} CPUs, "
          f"{ray.cluster_resources().get('GPU', 0):g} GPUs; output {output}", flush=True)
    artifacts = (output / "artifacts").as_uri() if study.tracking.uri is None else None
    tracker = Tracker(tracking_uri, study.name, artifact_location=artifacts)
    study_run = tracker.run(study.name, study.name, STUDY, tags={"study": study.name, "code_version": code_version()})
    tracker.client.log_text(study_run.info.run_id, (output / STUDY_ARTIFACT).read_text(), STUDY_ARTIFACT)
    tracker.client.log_text(study_run.info.run_id, (output / DATA_MANIFEST).read_text(), DATA_MANIFEST)
    optuna_storage = f"sqlite:///{output / 'optuna.db'}"
    optuna.storages.RDBStorage(optuna_storage)  # create the schema once, before pipelines race to
    actor_name = f"{PROGRESS_ACTOR}-{study.name}-{os.getpid()}"
    # The control plane (progress board, pipelines and the Tune controller) stays on the
    # driver's node: losing a worker node then costs only the trials it ran, which Tune retries.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = Progress.options(name=actor_name, scheduling_strategy=here).remote()
    resources = ray.cluster_resources()
    limit = study.max_concurrent_pipelines or default_pipeline_limit(study, resources)
    jobs = [
        PipelineJob(pipeline, study, str(output), tracking_uri, study_run.info.run_id, optuna_storage, order)
        for order, pipeline in enumerate(pipelines)
    ]
    slots = max(1, int(trial_slots(study, resources)))
    env = {**STUDY_TASK_ENV, "TUNE_MAX_PENDING_TRIALS_PG": str(slots)}
    printer = ProgressPrinter(sum(planned_trials(study, p.method, phase) for p in pipelines for phase in PHASES))
    start = time.monotonic()
    task = run_study_trials.options(runtime_env={"env_vars": env}, scheduling_strategy=here).remote(jobs, limit, slots, actor_name)
    try:
        while True:
            ready, _ = ray.wait([task], timeout=2.0)
            printer.update(ray.get(board.snapshot.remote()))
            if ready:
                break
        try:
            outcomes = ray.get(task)
        except Exception as err:  # the control plane itself failed: every pipeline with it
            outcomes = [{"pipeline": p.key, "failed": f"{type(err).__name__}: {err}"} for p in pipelines]
    except KeyboardInterrupt:
        printer.close()
        print("\ninterrupted: stopping the running pipelines ...", file=sys.stderr, flush=True)
        try:
            ray.cancel(task, force=True, recursive=True)
        except Exception:  # Ray itself may be going down with the same Ctrl-C
            pass
        stopped = tracker.close_running("interrupted (Ctrl-C): resumes when the same command runs again")
        if started_here:
            ray.shutdown()
        print(f"interrupted: {stopped} runs marked KILLED in MLflow, finished trials kept; re-run the same "
              "command to resume", file=sys.stderr, flush=True)
        return 130
    printer.close()
    failed = [o for o in outcomes if "failed" in o]
    (output / PIPELINES_FILE).write_text(json.dumps(outcomes, indent=2, default=str))
    tracker.log(study_run.info.run_id, tags={"failed_pipelines": len(failed)})
    _print_outcomes(outcomes, output, tracking_uri, time.monotonic() - start)
    ray.kill(board)
    if started_here:
        ray.shutdown()
    write_tables(study, output, tracker, study_run.info.run_id)
    tracker.finish(study_run.info.run_id, failed_reason=f"{len(failed)} pipelines failed" if failed else None)
    return 1 if failed else 0


def write_tables(study: Study, output: Path, tracker: Any, run_id: str) -> None:
    """The results tables of the study, from its records, also logged to the study's MLflow run
    (tables as Markdown, HTML and CSV, figures as PNG); a failure here loses no result."""
    from orchestrator.report.build import report_line, write_report
    from orchestrator.report.data import data_notes
    from orchestrator.report.frames import ResultsError, from_output, to_frames

    folder = output / "results"
    try:
        report = write_report(study, to_frames(*from_output(output)), folder, data=data_notes(output))
    except (ResultsError, StudyError, OSError, ValueError) as err:
        print(f"warning: the results tables were not written ({err}); the trials are safe: "
              f"run provpt tables {output}", file=sys.stderr)
        return
    print(report_line(study, report, folder, str(output / "records")))
    shown = [p for p in report.files if p.suffix in (".md", ".html", ".csv", ".png")]
    try:
        for path in shown:
            tracker.client.log_artifact(run_id, str(path), f"{RESULTS_ARTIFACTS}/{path.parent.relative_to(folder).as_posix()}")
    except Exception as err:  # the tables are on disk; the tracking server may be away
        print(f"warning: the results were not logged to MLflow ({type(err).__name__}: {err}); they are in {folder}", file=sys.stderr)


def trial_slots(study: Study, resources: dict[str, float]) -> float:
    """How many trials the cluster runs at once."""
    if study.resources.gpu > 0:
        return resources.get("GPU", 0) / study.resources.gpu
    return resources.get("CPU", 1) / study.resources.cpu


def default_pipeline_limit(study: Study, resources: dict[str, float]) -> int:
    """Enough pipelines at once to fill every trial slot, plus one to fill the gaps while
    another moves between phases; more would only hold memory waiting."""
    return max(2, int(trial_slots(study, resources)) // study.search.concurrency + 1)


def _print_outcomes(outcomes: list[dict[str, Any]], output: Path, tracking_uri: str, seconds: float) -> None:
    print(f"\nfinished in {seconds / 60:.1f} min")
    for outcome in sorted(outcomes, key=lambda o: o["pipeline"]):
        if "failed" in outcome:
            print(f"  {outcome['pipeline']:32s} FAILED: {outcome['failed']}")
            continue
        tests = outcome["test_acc"]
        mean = sum(tests) / len(tests)
        selected = json.dumps(outcome["selected"], sort_keys=True)
        print(f"  {outcome['pipeline']:32s} test {100 * mean:5.1f} over {len(tests)} seeds; selected {selected}")
    shown = redact(tracking_uri)
    print(f"MLflow runs: {shown}  (mlflow ui --workers 1 --backend-store-uri {shown})")
    print(f"Optuna studies: sqlite:///{output / 'optuna.db'}  (optuna-dashboard sqlite:///{output / 'optuna.db'})")
    print(f"pipelines: {output / PIPELINES_FILE}")


if __name__ == "__main__":
    sys.exit(main())
