"""The progress board: where every pipeline stands, sent by the study's Tune experiment, printed by the driver
(`ProgressPrinter`): a line per pipeline when its counts change, each distinct trial error once,
and the study's overall progress with an ETA, as a bar on a terminal (tqdm) and as plain lines
otherwise (a Ray job's log)."""

from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

import ray

PROGRESS_ACTOR = "provpt-progress"


@ray.remote(num_cpus=0)
class Progress:
    """Where every pipeline stands (`exchange.Exchange.snapshot`, sent by the study task); the driver prints it."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}

    def set(self, state: dict[str, dict[str, Any]]) -> None:
        self.state = state

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.state


def error_cause(trace: str) -> str:
    """The exception line of a trial's error trace (Tune's error.txt, or a TuneError's text),
    without module paths: e.g. "BackboneLoadError: backbone 'x': cannot read weight file ..."."""
    lines = [line.strip() for line in str(trace).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b[^ ]*:", line)]
    cause = causes[-1] if causes else (lines[-1] if lines else "unknown error")
    head, sep, rest = cause.partition(":")
    return f"{head.rsplit('.', 1)[-1]}{sep}{rest}"[:500]


class ProgressPrinter:
    """What the driver prints of the board. The overall line counts every planned trial of the
    study (search, final and branch phases): ended (finished, stopped or failed) of planned,
    running, failed, elapsed, and an ETA from the rate at which trials ended in this run (a
    resumed study's restored trials do not count towards the rate). On a terminal it is a tqdm
    bar; otherwise a plain line when a trial ends, at most every `every` seconds."""

    def __init__(self, planned: int, stream: TextIO = sys.stdout, every: float = 30.0) -> None:
        self.planned, self.stream, self.every = planned, stream, every
        self.start = time.monotonic()
        self.lines: dict[str, str] = {}
        self.errors: set[str] = set()
        self.baseline: int | None = None  # trials ended before this run's first report
        self.printed = (-1, 0.0)  # the ended count and time of the last overall line
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=planned, unit="trial", file=stream, dynamic_ncols=True, desc="trials")

    def update(self, state: dict[str, dict[str, Any]]) -> None:
        for pipeline, entry in sorted(state.items()):
            for cause in entry.get("errors", {}):
                if cause not in self.errors:  # each distinct cause once, whichever pipeline hits it
                    self.errors.add(cause)
                    self._print(f"[{pipeline}] a trial failed: {cause}")
            if "phase" in entry:
                line = _pipeline_line(pipeline, entry["phase"], entry["phases"][entry["phase"]])
                if self.lines.get(pipeline) != line:
                    self.lines[pipeline] = line
                    self._print(line)
        self._overall(state)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _overall(self, state: dict[str, dict[str, Any]]) -> None:
        phases = [counts for entry in state.values() for counts in entry.get("phases", {}).values()]
        ended = sum(c["ended"] for c in phases)
        running = sum(c["running"] for c in phases)
        failed = sum(c["failed"] for c in phases)
        if self.baseline is None:
            self.baseline = ended
        elapsed = time.monotonic() - self.start
        status = f"{running} running, {failed} failed, {_minutes(elapsed)} elapsed, ETA {self._eta(ended, elapsed)}"
        if self.bar is not None:
            self.bar.n = ended
            self.bar.set_postfix_str(status, refresh=True)
            return
        last_ended, last_time = self.printed
        if ended != last_ended and (time.monotonic() - last_time >= self.every or ended == self.planned or last_ended < 0):
            self.printed = (ended, time.monotonic())
            self._print(f"progress: {ended}/{self.planned} trials ended, {status}")

    def _eta(self, ended: int, elapsed: float) -> str:
        rate = (ended - (self.baseline or 0)) / elapsed if elapsed > 0 else 0.0
        if ended >= self.planned:
            return "0 min"
        return _minutes((self.planned - ended) / rate) if rate > 0 else "unknown (no trial has ended yet)"

    def _print(self, line: str) -> None:
        text = f"{time.monotonic() - self.start:7.0f}s {line}"
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def _pipeline_line(pipeline: str, phase: str, counts: dict[str, Any]) -> str:
    best = counts.get("best_val") if phase == "search" else None
    return (
        f"[{pipeline}] {phase}: {counts['ended'] - counts['failed']}/{counts['total']} done, {counts['running']} running, "
        f"{counts['failed']} failed" + (f", best val {best:.3f}" if best is not None else "")
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
