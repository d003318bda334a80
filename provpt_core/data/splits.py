"""Decoded splits as uint8 tensors; batches are slices, normalisation happens on the device.

VTAB-1k uses no augmentation, so every image is decoded and resized once; a whole training
split of 1000 images at 224 px is 150 MB of uint8 and lives on the GPU for the whole trial.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch


@dataclass
class ImageSet:
    """One split: uint8 images [N, 3, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images: expected a uint8 tensor [N, 3, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels: expected shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()


class Normalizer:
    """uint8 [B, 3, H, W] -> float, (x / 255 - mean) / std, on the images' device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std


@dataclass
class DataSplits:
    """What one trial trains and evaluates on."""

    train: ImageSet
    num_classes: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    val: ImageSet | None = None
    test: ImageSet | None = None
    name: str = ""
    # Images are stored larger and cropped to this size on the device: a random crop and
    # horizontal flip per training image, the centre crop for evaluation (FGVC). None: as stored.
    crop: int | None = None

    def __post_init__(self) -> None:
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if split is None:
                continue
            bad = split.labels[(split.labels < 0) | (split.labels >= self.num_classes)]
            if len(bad):
                raise ValueError(
                    f"{self.name or 'data'} {split_name}: label {int(bad[0])} outside "
                    f"[0, {self.num_classes})"
                )


def crop_batch(images: torch.Tensor, size: int, train: bool, generator: torch.Generator) -> torch.Tensor:
    """Crop a [B, 3, H, W] batch to size x size: random crop + flip when training, else centre."""
    batch, _, height, width = images.shape
    if not train:
        top, left = (height - size) // 2, (width - size) // 2
        return images[:, :, top : top + size, left : left + size]
    tops = torch.randint(height - size + 1, (batch,), generator=generator)
    lefts = torch.randint(width - size + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    steps = torch.arange(size)
    rows = (tops[:, None] + steps).to(images.device)
    cols = lefts[:, None] + steps
    cols = torch.where(flips[:, None], cols.flip(1), cols).to(images.device)
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    return images[index, channel, rows[:, None, :, None], cols[:, None, None, :]]
