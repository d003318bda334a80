"""Data the engine trains on: decoded uint8 image tensors per split, normalised on the device."""

from provpt_core.data.loading import DataConfig, load_data
from provpt_core.data.splits import DataSplits, ImageSet, Normalizer, crop_batch
from provpt_core.data.tasks import TASKS, TaskSpec, get_task, resolve_tasks

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
