"""Data the engine trains on: decoded uint8 image tensors per split, normalised on the device.

The task registry and the data config load with the package; the loading code (and torch)
when first used.
"""

from provpt_core.data.config import DataConfig
from provpt_core.data.tasks import TASKS, TaskSpec, get_task, resolve_tasks
from provpt_core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "load_data": "provpt_core.data.loading",
        "DataSplits": "provpt_core.data.splits",
        "ImageSet": "provpt_core.data.splits",
        "Normalizer": "provpt_core.data.splits",
        "crop_batch": "provpt_core.data.splits",
    },
)

__all__ = [
    "TASKS",
    "DataConfig",
    "DataSplits",
    "ImageSet",
    "Normalizer",
    "TaskSpec",
    "crop_batch",
    "get_task",
    "load_data",
    "resolve_tasks",
]
