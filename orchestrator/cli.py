"""provpt: one command for everything a study needs.

    provpt run STUDY.yaml [--output DIR] [--num-cpus N] [--verbose]   run (or resume) a study
    provpt plan STUDY.yaml [--output DIR]                             its plan, recipes and cost; starts nothing
    provpt tables STUDY.yaml|OUTPUT [--from-mlflow URI] ...           parquet, paper tables, figures
    provpt verify --benchmark vtab1k|fgvc|mini ROOT                   check a benchmark root
    provpt fetch MODEL [MODEL ...]                                    backbone weights into the hub cache
    provpt data manifest|compare|prepare ...                          what a data root holds; a root from images
    provpt submit STUDY.yaml [--address URL] [--output DIR] ...       the study as a Ray job on a cluster
    provpt slurm STUDY.yaml [--nodes N] [--cpus-per-node C] ...      the study as a SLURM job with its own Ray

`provpt COMMAND --help` tells each command's options. `python -m orchestrator COMMAND` is the
same command; `python -m orchestrator.run` is `provpt run` (what `ray job submit` runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def _run(argv: list[str]) -> int:
    from orchestrator.execution.driver import main

    return main(argv, prog="provpt run")


def _plan(argv: list[str]) -> int:
    from orchestrator.execution.driver import main

    return main([*argv, "--dry-run"], prog="provpt plan")


def _tables(argv: list[str]) -> int:
    from orchestrator.report.build import main

    return main(argv, prog="provpt tables")


def _verify(argv: list[str]) -> int:
    """Check a benchmark root before anything is scheduled: one row per task (ok, missing
    folder, missing split file, wrong count, label out of range, missing or unreadable image),
    then every problem with its file and line. Exits 1 if anything is wrong."""
    from provpt_core import format_reports, resolve_tasks, verify

    parser = argparse.ArgumentParser(prog="provpt verify", description=_verify.__doc__)
    parser.add_argument("--benchmark", choices=["vtab1k", "fgvc", "mini"], required=True)
    parser.add_argument("--tasks", help="comma-separated task names (default: all of the benchmark)")
    parser.add_argument("--no-decode", action="store_true", help="check that images exist, without decoding them")
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    try:
        specs = resolve_tasks(args.tasks.split(",") if args.tasks else [args.benchmark])
    except KeyError as err:
        parser.error(err.args[0])
    foreign = [s.name for s in specs if s.benchmark != args.benchmark]
    if foreign:
        parser.error(f"--tasks: {', '.join(foreign)} not in benchmark {args.benchmark}")
    if not args.root.is_dir():
        print(f"{args.root}: not a folder", file=sys.stderr)
        return 1
    reports = verify(specs, args.root, decode_images=not args.no_decode)
    print(format_reports(reports))
    bad = [r.spec.name for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} of {len(reports)} tasks ok" + (f"; problems in {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def _submit(argv: list[str]) -> int:
    from orchestrator.execution.submit import main

    return main(argv)


def _data(argv: list[str]) -> int:
    from orchestrator.report.data import main

    return main(argv)


def _slurm(argv: list[str]) -> int:
    from orchestrator.execution.slurm import main

    return main(argv)


def _fetch(argv: list[str]) -> int:
    """Download hub weights into the local cache (needs network), once per cluster."""
    from provpt_core import fetch_weights

    parser = argparse.ArgumentParser(prog="provpt fetch", description=_fetch.__doc__)
    parser.add_argument("names", nargs="+", help="timm model names")
    for name in parser.parse_args(argv).names:
        print(f"{name}: {fetch_weights(name)}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "plan": _plan,
    "tables": _tables,
    "verify": _verify,
    "fetch": _fetch,
    "data": _data,
    "submit": _submit,
    "slurm": _slurm,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"provpt: unknown command '{command}'; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[command](rest)


if __name__ == "__main__":
    sys.exit(main())
