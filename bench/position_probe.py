"""Where does the backbone keep a sprite's position: in the CLS feature or in the patch tokens?

    python bench/position_probe.py [--images 3000] [--backbone provpt_tiny_patch8_32] [--weights FILE]

Prints the held-out R^2 of a ridge regression of a sprite's centre on the backbone's final CLS
feature, its mean patch token and all of its patch tokens (provpt_core.probe). A backbone that
behaves like a VTAB one has R^2(CLS) well below R^2(patch tokens).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from provpt_core.backbone import BackboneConfig, load_backbone  # noqa: E402
from provpt_core.probe import position_r2  # noqa: E402

LABELS = {"cls": "the CLS feature", "mean_patch": "the mean patch token", "patch_tokens": "all patch tokens"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--backbone", default="provpt_tiny_patch8_32")
    parser.add_argument("--weights", default="pretrained", help="pretrained, random, or a weight file")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    backbone = load_backbone(BackboneConfig(args.backbone, args.weights))
    scores = position_r2(backbone, args.images, args.seed)
    print(f"backbone {args.backbone} ({args.weights}); {args.images} scenes, ridge fitted on two thirds, scored on the rest")
    for name, label in LABELS.items():
        print(f"position R^2 from {label + ':':<24} {scores[name]:.3f}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
