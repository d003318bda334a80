"""How fast a bad study file is refused: `provpt run BAD.yaml`, wall time from the command to its
error, as a user sees it (a fresh process each time: interpreter, imports, checks).

    python bench/reject.py [--repeat 3]

Writes a few bad variants of tests/studies/micro.yaml and prints each one's median time and
its message: file mistakes (YAML syntax, a repeated key, a misspelled field, a wrong type, a bad
range), checked with YAML and pydantic only, and trial-config mistakes (an unknown method field,
an unknown task), checked against the core's config registries, which load without torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROVPT = Path(sys.executable).with_name("provpt")

FILE_MISTAKES = {
    "yaml syntax": ("tasks: [mini_count, mini_loc]", "tasks: [mini_count, mini_loc"),
    "repeated key": ("checkpoint_every: 1", "checkpoint_every: 1\ncheckpoint_every: 2"),
    "misspelled field": ("search: {trials", "search: {trails"),
    "boolean as integer": ("concurrency: 2", "concurrency: yes"),
    "duplicate seeds": ("seeds: [0, 1]", "seeds: [1, 1]"),
    "log range with step": ("{low: 0.05, high: 0.5, log: true}", "{low: 0.05, high: 0.5, log: true, step: 0.1}"),
}
CORE_MISTAKES = {
    "unknown method field": ("config: {num_prompts: 1}", "config: {num_promts: 1}"),
    "unknown task": ("tasks: [mini_count, mini_loc]", "tasks: [mini_count, mini_lco]"),
}


def time_refusal(path: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([str(PROVPT), "run", str(path)], capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        raise SystemExit(f"{path}: was accepted; the bench expects a refusal")
    return seconds, done.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per bad file (the median is printed)")
    args = parser.parse_args()
    micro = (REPO / "tests" / "studies" / "micro.yaml").read_text()
    work = Path(tempfile.mkdtemp(prefix="provpt-bench-reject-"))
    env = {**os.environ, "PROVPT_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    print(f"provpt run BAD.yaml, median of {args.repeat} fresh processes each, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for title, mistakes in (("file mistakes", FILE_MISTAKES), ("trial-config mistakes", CORE_MISTAKES)):
        medians = []
        print(f"\n{title}")
        for name, (old, new) in mistakes.items():
            assert old in micro, old
            path = work / f"{name.replace(' ', '_')}.yaml"
            path.write_text(micro.replace(old, new, 1))
            runs = [time_refusal(path, env) for _ in range(args.repeat)]
            median = statistics.median(seconds for seconds, _ in runs)
            medians.append(median)
            message = runs[0][1].replace(str(work) + "/", "")
            print(f"  {name:24s} {median:5.2f} s   {message[:110]}")
        print(f"  median over these files: {statistics.median(medians):.2f} s")


if __name__ == "__main__":
    main()
