"""provpt: one command for everything a study needs.

    provpt run STUDY.yaml [--output DIR] [--num-cpus N] [--verbose]   run (or resume) a study
    provpt plan STUDY.yaml [--output DIR]                             its plan, recipes and cost; starts nothing
    provpt tables STUDY.yaml|OUTPUT [--from-mlflow URI] ...           parquet, paper tables, figures
    provpt verify --benchmark vtab1k|fgvc|mini ROOT                   check a benchmark root
    provpt fetch MODEL [MODEL ...]                                    backbone weights into the hub cache

`provpt COMMAND --help` tells each command's options. The `python -m orchestrator.run`,
`orchestrator.tables`, `orchestrator.data` and `provpt_core.backbone` entry points stay.
"""

from __future__ import annotations

import sys
from typing import Callable


def _run(argv: list[str]) -> int:
    from orchestrator.run import main

    return main(argv, prog="provpt run")


def _plan(argv: list[str]) -> int:
    from orchestrator.run import main

    return main([*argv, "--dry-run"], prog="provpt plan")


def _tables(argv: list[str]) -> int:
    from orchestrator.tables import main

    return main(argv, prog="provpt tables")


def _verify(argv: list[str]) -> int:
    from orchestrator.data import main

    return main(["verify", *argv])


def _fetch(argv: list[str]) -> int:
    from provpt_core.backbone import main

    return main(["fetch", *argv])


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "plan": _plan,
    "tables": _tables,
    "verify": _verify,
    "fetch": _fetch,
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
