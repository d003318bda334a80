"""A trial's pre-flight: what can fail before any compute is spent, checked from its config.

`check` builds the backbone from its weight file (a name timm does not know, a missing,
unreadable or ill-fitting file each fail here) and checks the task's data (every split file, every count,
every label; the images' existence, and their decoding when asked). The mini benchmark is
generated on first use, here rather than in the first trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provpt_core.backbone import BackboneLoadError, load_backbone
from provpt_core.data.loading import DataFormatError, benchmark_root
from provpt_core.data.verify import TaskReport, verify_task
from provpt_core.trial import TrialConfig


@dataclass
class Preflight:
    """What a trial config's pre-flight found: problems (one sentence each, naming the field or
    file) and the data report of its task (None when the data root is not known)."""

    problems: list[str] = field(default_factory=list)
    data: TaskReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and (self.data is None or self.data.ok)


def check(config: TrialConfig, decode_images: bool = False, backbone: bool = True) -> Preflight:
    """The pre-flight of one trial config: its backbone (built and loaded, then dropped;
    `backbone=False` skips it, e.g. when another config with the same backbone passed) and its
    task's data."""
    found = Preflight()
    if backbone:
        try:
            load_backbone(config.backbone)
        except BackboneLoadError as err:
            found.problems.append(f"backbone: {err}")
    try:
        root = benchmark_root(config.data)
    except DataFormatError as err:
        found.problems.append(str(err))
        return found
    found.data = verify_task(config.data.spec, root, decode_images=decode_images)
    return found
