"""How good the dry-run's cost estimate is: `provpt plan`'s trial-hours per method beside the
trial-hours a finished run of the same study measured (the cost table: each trial's wall time).

    python bench/estimate.py OUTPUT_FOLDER        # e.g. outputs/quickstart after `provpt run studies/quickstart.yaml`

Prints, per method and in total, the estimate, the measurement and their ratio (the issue's
target: within 2x either way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.report.build import load_target
from orchestrator.report.coverage import trial_hours
from orchestrator.report.frames import from_output, to_frames
from orchestrator.spec.plan import PHASES, make_plan, planned_trials, trial_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="a finished study's output folder")
    args = parser.parse_args()
    study, output = load_target(args.output)
    estimated: dict[str, float] = {}
    for pipeline in make_plan(study):
        seconds = sum(planned_trials(study, pipeline.method, p) * trial_seconds(study, pipeline, p) for p in PHASES)
        estimated[pipeline.method.key] = estimated.get(pipeline.method.key, 0.0) + seconds / 3600
    results = to_frames(*from_output(output))
    measured = trial_hours(results.trials, results.epochs).groupby("method")["trial_h"].sum()
    print(f"study {study.name} ({output}): {len(results.trials)} trials recorded")
    print(f"{'method':16s} {'estimate h':>11s} {'measured h':>11s} {'ratio':>7s}")
    for method, hours in [*estimated.items(), ("total", sum(estimated.values()))]:
        real = float(measured.sum() if method == "total" else measured.get(method, 0.0))
        ratio = f"{hours / real:7.2f}" if real > 0 else "    n/a"
        print(f"{method:16s} {hours:11.4f} {real:11.4f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
