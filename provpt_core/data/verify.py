"""Check a benchmark root before any compute: folders, split files, counts, labels, images.

Every problem is reported with the file and line it comes from; nothing is trained on a root
that differs from what the task registry expects.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from provpt_core.data.formats import DataFormatError, Sample, decode, read_split, split_file, task_folder
from provpt_core.data.tasks import TaskSpec

MAX_PROBLEMS_SHOWN = 10


@dataclass
class Problem:
    kind: str  # missing folder, missing split file, empty split, bad split file, wrong count,
    # label out of range, missing image, unreadable image
    detail: str


@dataclass
class TaskReport:
    spec: TaskSpec
    folder: Path | None
    counts: dict[str, int | None] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        kinds = list(dict.fromkeys(p.kind for p in self.problems))
        return ", ".join(kinds)


def verify_task(spec: TaskSpec, root: Path, decode_images: bool = True, workers: int = 8) -> TaskReport:
    folder = task_folder(spec, root)
    report = TaskReport(spec, folder)
    if folder is None:
        looked = ", ".join(str(root / name) for name in spec.folders)
        report.problems.append(Problem("missing folder", f"{spec.name}: no folder (looked for {looked})"))
        return report
    for split, expected in spec.split_sizes.items():
        report.counts[split] = None
        path = split_file(spec, folder, split)
        if not path.is_file():
            report.problems.append(Problem("missing split file", f"{path} does not exist"))
            continue
        try:
            samples = read_split(spec, folder, split)
        except DataFormatError as err:
            report.problems.append(Problem("bad split file", str(err)))
            continue
        report.counts[split] = len(samples)
        if not samples:
            report.problems.append(Problem("empty split", f"{path} lists no images (expected {expected})"))
            continue
        if len(samples) != expected:
            report.problems.append(Problem("wrong count", f"{path} lists {len(samples)} images, expected {expected}"))
        for sample in samples:
            if not 0 <= sample.label < spec.num_classes:
                report.problems.append(
                    Problem(
                        "label out of range",
                        f"{path}:{sample.line}: label {sample.label} outside [0, {spec.num_classes})",
                    )
                )
        report.problems += _image_problems(path, samples, decode_images, workers)
    return report


def _image_problems(path: Path, samples: list[Sample], decode_images: bool, workers: int) -> list[Problem]:
    def check(sample: Sample) -> Problem | None:
        if not sample.path.is_file():
            return Problem("missing image", f"{path}:{sample.line}: image {sample.path} does not exist")
        if decode_images:
            try:
                decode(sample.path, 8)
            except Exception as err:  # any reader failure is reported, not raised
                return Problem(
                    "unreadable image",
                    f"{path}:{sample.line}: cannot read image {sample.path}: {type(err).__name__}: {err}",
                )
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [p for p in pool.map(check, samples) if p is not None]


def verify(specs: Iterable[TaskSpec], root: Path, decode_images: bool = True) -> list[TaskReport]:
    return [verify_task(spec, root, decode_images) for spec in specs]


def format_reports(reports: list[TaskReport]) -> str:
    """A table (task, folder, count per split, status), then every task's problems."""
    splits = list(dict.fromkeys(s for r in reports for s in r.spec.split_sizes))
    header = ["task", "folder", *splits, "status"]
    rows = [
        [
            r.spec.name,
            r.folder.name if r.folder else "-",
            *(_count(r, s) for s in splits),
            r.status,
        ]
        for r in reports
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    for report in reports:
        for problem in report.problems[:MAX_PROBLEMS_SHOWN]:
            lines.append(f"{report.spec.name}: {problem.kind}: {problem.detail}")
        hidden = len(report.problems) - MAX_PROBLEMS_SHOWN
        if hidden > 0:
            lines.append(f"{report.spec.name}: ... and {hidden} more problems")
    return "\n".join(lines)


def _count(report: TaskReport, split: str) -> str:
    if split not in report.spec.split_sizes:
        return ""
    count = report.counts.get(split)
    expected = report.spec.split_sizes[split]
    if count is None:
        return "-"
    return str(count) if count == expected else f"{count}/{expected}"
