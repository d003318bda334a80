"""python -m orchestrator.data verify --benchmark vtab1k|fgvc [--tasks a,b,...] ROOT

Checks a benchmark root before anything is scheduled: one table row per task (ok, missing
folder, missing split file, wrong count, label out of range, missing or unreadable image),
then every problem with its file and line. Exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provpt_core.data.tasks import resolve_tasks
from provpt_core.data.verify import format_reports, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.data", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="check a benchmark root")
    check.add_argument("--benchmark", choices=["vtab1k", "fgvc", "mini"], required=True)
    check.add_argument("--tasks", help="comma-separated task names (default: all of the benchmark)")
    check.add_argument("--no-decode", action="store_true", help="check that images exist, without decoding them")
    check.add_argument("root", type=Path)
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


if __name__ == "__main__":
    sys.exit(main())
