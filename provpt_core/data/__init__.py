"""Data the engine trains on: decoded uint8 image tensors per split, normalised on the device."""

from provpt_core.data.splits import DataSplits, ImageSet, Normalizer

__all__ = ["DataSplits", "ImageSet", "Normalizer"]
