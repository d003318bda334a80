"""provpt slurm STUDY.yaml: the study as a SLURM batch job that runs its own Ray cluster.

This command checks the study here first (nothing is submitted for a study that would be
refused), then runs ``sbatch`` with provpt's template (``provpt.sbatch`` beside this module):
a Ray head on the job's first node, a Ray worker on each other node, the study on that cluster,
and every Ray process stopped when the job ends. The output folder is made absolute and
created here (it must be on a filesystem every node sees; the job's log is written there as
slurm-JOBID.log); the job runs in this folder with this shell's environment (``--export=ALL``),
which carries every ``${VAR}`` the study reads. Options it does not know (``--account A``,
``--qos Q``, ``--mem 64G``, ...) go to ``sbatch`` as given, after its own: they win.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator.execution.driver import check_output
from orchestrator.spec.study import Study, StudyError, load_study
from orchestrator.spec.validation import environment_names

TEMPLATE = Path(__file__).with_name("provpt.sbatch")


def sbatch_command(
    template: Path, study_file: Path, output: Path, nodes: int, cpus: int, gpus: int,
    time_limit: str | None, partition: str | None, job_name: str, sbatch_args: list[str],
) -> list[str]:
    """The `sbatch` command line: one task per node, holding all its CPUs and GPUs for Ray."""
    command = [
        "sbatch", f"--job-name={job_name}", f"--nodes={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
        f"--output={output / 'slurm-%j.log'}", f"--chdir={Path.cwd()}", "--export=ALL",
    ]
    if gpus:
        command.append(f"--gpus-per-node={gpus}")
    if time_limit:
        command.append(f"--time={time_limit}")
    if partition:
        command.append(f"--partition={partition}")
    return [*command, *sbatch_args, str(template), str(study_file), str(output)]


def default_cpus(study: Study) -> int:
    """Enough for one search's trials at once (`resources.cpu` x `search.concurrency`)."""
    return max(1, math.ceil(study.resources.cpu * study.search.concurrency))


def default_gpus(study: Study) -> int:
    return math.ceil(study.resources.gpu * study.search.concurrency)


def main(argv: list[str] | None = None, prog: str = "provpt slurm") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("study", type=Path)
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the job, one Ray node each (default: 1)")
    parser.add_argument("--cpus-per-node", type=int,
                        help="CPUs per node for Ray (default: the study's resources.cpu x search.concurrency)")
    parser.add_argument("--gpus-per-node", type=int,
                        help="GPUs per node for Ray (default: the study's resources.gpu x search.concurrency, rounded up)")
    parser.add_argument("--time", help="the job's time limit, e.g. 12:00:00 (default: the partition's)")
    parser.add_argument("--partition", help="the SLURM partition (default: the cluster's default)")
    parser.add_argument("--output", type=Path,
                        help="the output folder, on a filesystem every node sees (default: the study's, made absolute here)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python with provpt installed, the same path on every node (default: this one)")
    parser.add_argument("--template", type=Path, default=TEMPLATE,
                        help=f"the batch script (default: {TEMPLATE}; copy it to add a site's module loads)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch command, submit nothing")
    args, sbatch_args = parser.parse_known_args(argv)
    for name in ("nodes", "cpus_per_node"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a whole number >= 1, got {getattr(args, name)}")
    if args.gpus_per_node is not None and args.gpus_per_node < 0:
        parser.error(f"--gpus-per-node: expected a whole number >= 0, got {args.gpus_per_node}")
    if not args.template.is_file():
        parser.error(f"--template {args.template}: no such file")
    try:
        study = load_study(args.study)
        names = environment_names(args.study)
        output = study.output_dir(args.output)  # absolute: the job runs on another node
        check_output(study, output, "--output" if args.output is not None else "output")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cpus = args.cpus_per_node or default_cpus(study)
    gpus = default_gpus(study) if args.gpus_per_node is None else args.gpus_per_node
    if study.resources.gpu > 0 and gpus == 0:
        print(f"error: resources.gpu: each trial asks for {study.resources.gpu:g} GPU, but --gpus-per-node is 0: "
              "the job's Ray would wait for one forever; give --gpus-per-node, or set resources.gpu: 0", file=sys.stderr)
        return 2
    study_file = args.study.resolve()
    command = sbatch_command(args.template.resolve(), study_file, output, args.nodes, cpus, gpus, args.time,
                             args.partition, f"provpt-{study.name}", sbatch_args)
    passed = [name for name in names if name in os.environ]
    print(f"study {study.name}: {args.nodes} nodes x {cpus} CPUs, {gpus} GPUs; output {output} (must be on a "
          f"filesystem every node sees); the study file is read at {study_file}; passing "
          f"{', '.join(passed) or 'no environment variables'}")
    print(shlex.join([f"PROVPT_PYTHON={args.python}", *command]), flush=True)
    if args.dry_run:
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found: run provpt slurm on a machine that submits SLURM jobs (a login node)", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)  # sbatch opens the job's log there before the job runs
    done = subprocess.run(command, env={**os.environ, "PROVPT_PYTHON": args.python}, capture_output=True, text=True)
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    submitted = re.search(r"Submitted batch job (\d+)", done.stdout)
    if done.returncode == 0 and submitted:
        print(f"log: {output / f'slurm-{submitted.group(1)}.log'}")
    return done.returncode
