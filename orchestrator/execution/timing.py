"""Where a trial's time goes, for the benchmarks (`bench/big_study.py`).

With ``PROVPT_TRIAL_TIMINGS=<file>`` in the environment, every trial appends one JSON line:
its key, when it started, its seconds in all and by part (tracking: the MLflow run and the
record; backbone and data: loading them, or copying the backbone out of the worker's cache;
checkpoint: saving and handing checkpoints to Tune; training: the epochs; the rest of the
trial function is evaluation and Tune's reporting), whether it was the first trial of its
worker process and how old that process was when it started it. Without the variable nothing
is measured beyond a few clock reads.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

TIMINGS_ENV = "PROVPT_TRIAL_TIMINGS"
_trials_in_process = 0


class TrialClock:
    """Seconds per part of one trial."""

    def __init__(self) -> None:
        global _trials_in_process
        self.started = time.time()
        self.first_in_process = _trials_in_process == 0
        _trials_in_process += 1
        self.process_age = _process_age(self.started)
        self.parts: dict[str, float] = defaultdict(float)
        self._start = time.perf_counter()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] += seconds

    def write(self, key: str) -> None:
        """Append this trial's line to $PROVPT_TRIAL_TIMINGS, if set."""
        path = os.environ.get(TIMINGS_ENV)
        if not path:
            return
        line: dict[str, Any] = {
            "trial": key,
            "started": self.started,
            "seconds": time.perf_counter() - self._start,
            "parts": dict(self.parts),
            "first_in_process": self.first_in_process,
            "process_age": self.process_age,
            "pid": os.getpid(),
        }
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def _process_age(now: float) -> float | None:
    """Seconds since this process started (Linux /proc); None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime"))
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return now - (boot + ticks / os.sysconf("SC_CLK_TCK"))
