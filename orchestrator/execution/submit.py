"""provpt submit STUDY.yaml: the study as a Ray job on a cluster, with what the job needs to
keep its results.

A Ray job's driver runs in Ray's temporary copy of the working dir and does not see the
submitting shell's environment. This command checks the study here first (nothing is
submitted for a study that would be refused), then runs ``ray job submit`` with the working
dir, an absolute output folder, and the values of every ``${VAR}`` the study reads (plus any
``--env NAME``) in ``--runtime-env-json``. Options it does not know (``--no-wait``,
``--submission-id ID``, ...) go to ``ray job submit`` as given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from orchestrator.spec.study import StudyError, load_study, redact
from orchestrator.spec.validation import environment_names


def job_command(
    study_file: Path, output: Path, address: str, working_dir: Path, env_vars: dict[str, str], python: str, ray_args: list[str]
) -> list[str]:
    """The `ray job submit` command line; `study_file` relative to `working_dir`."""
    ray = Path(sys.executable).with_name("ray")
    return [
        str(ray) if ray.exists() else "ray", "job", "submit", "--address", address, "--working-dir", str(working_dir),
        "--runtime-env-json", json.dumps({"env_vars": env_vars}), *ray_args, "--",
        python, "-m", "orchestrator.run", study_file.as_posix(), "--output", str(output),
    ]


def main(argv: list[str] | None = None, prog: str = "provpt submit") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("study", type=Path)
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265",
                        help="the Ray dashboard of the cluster (default: $RAY_ADDRESS, else http://127.0.0.1:8265)")
    parser.add_argument("--output", type=Path, help="the output folder, on a filesystem every node sees (default: the study's, made absolute here)")
    parser.add_argument("--working-dir", type=Path, default=Path("."), help="the project folder shipped to the job (default: .)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME", help="pass this environment variable too (repeatable)")
    parser.add_argument("--python", default="python", help="the Python the job runs on the head node (default: python)")
    parser.add_argument("--dry-run", action="store_true", help="print the ray job submit command, submit nothing")
    args, ray_args = parser.parse_known_args(argv)
    try:
        study = load_study(args.study)
        names = environment_names(args.study)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    working_dir = args.working_dir.resolve()
    try:
        study_file = args.study.resolve().relative_to(working_dir)
    except ValueError:  # not shipped with the job: the head node must see the same path
        study_file = args.study.resolve()
        print(f"note: {args.study} is outside --working-dir {working_dir}; the head node reads it at {study_file}")
    missing = [name for name in args.env if name not in os.environ]
    if missing:
        parser.error(f"--env: {', '.join(missing)} not set in this shell")
    env_vars = {name: os.environ[name] for name in [*names, *args.env] if name in os.environ}
    output = study.output_dir(args.output)  # absolute: resolved here, not in Ray's copy
    command = job_command(study_file, output, args.address, working_dir, env_vars, args.python, ray_args)
    shown = [redact(part) if part.startswith(("postgresql", "mysql", "http")) else part for part in command]
    secret = {name: redact(value) for name, value in env_vars.items()}
    shown[shown.index("--runtime-env-json") + 1] = json.dumps({"env_vars": secret})
    print(f"study {study.name}: output {output} (must be on a filesystem every node sees); "
          f"passing {', '.join(env_vars) or 'no environment variables'}")
    print(shlex.join(shown), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(command).returncode
