"""A small learnable image task made on the fly, for tests and benchmarks of the core.

Class c is a bright square at one of a few positions with a class-dependent colour, on noise:
enough structure that a frozen random ViT plus prompts can learn it, and no files needed.
"""

from __future__ import annotations

import torch

from provpt_core.data.splits import DataSplits, ImageSet


def synthetic_image_set(n: int, num_classes: int, size: int, generator: torch.Generator) -> ImageSet:
    labels = torch.randint(num_classes, (n,), generator=generator)
    images = torch.randint(0, 96, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    side = size // 4
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label % 9, 3)
        top = row * (size - side) // 2
        left = col * (size - side) // 2
        colour = torch.tensor([255 if (label >> bit) & 1 else 128 for bit in range(3)], dtype=torch.uint8)
        images[i, :, top : top + side, left : left + side] = colour.view(3, 1, 1)
    return ImageSet(images, labels)


def synthetic_splits(
    num_classes: int = 4,
    train: int = 128,
    val: int = 64,
    test: int = 64,
    size: int = 32,
    seed: int = 0,
) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)
    return DataSplits(
        train=synthetic_image_set(train, num_classes, size, generator),
        val=synthetic_image_set(val, num_classes, size, generator) if val else None,
        test=synthetic_image_set(test, num_classes, size, generator) if test else None,
        num_classes=num_classes,
        name="synthetic",
    )
