"""Decode-once cache: build time per task, and a training epoch fed from the cache against one
that decodes every image again, in one run.

    python bench/data_cache.py                                   # the mini benchmark
    python bench/data_cache.py --source-size 384                 # its images re-saved as 384 px JPEGs
    python bench/data_cache.py --root VTAB --tasks dtd,eurosat --resolution 224 --backbone vit_base_patch16_224

Both epochs run the same trainer (vpt_deep on the tiny ViT by default, one thread), so their
difference is the data path alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from provpt_core import Trainer, TrialConfig  # noqa: E402
from provpt_core.data import DataConfig, load_data, resolve_tasks  # noqa: E402
from provpt_core.data.formats import decode, read_split, task_folder  # noqa: E402
from provpt_core.data.loading import benchmark_root  # noqa: E402


def decoding_epoch(trainer: Trainer, paths: list[Path], labels: torch.Tensor, size: int) -> float:
    """One epoch that decodes each image from its file, as a per-epoch data loader would."""
    start = time.perf_counter()
    trainer.model.train()
    order = torch.randperm(len(paths), generator=trainer.shuffle)
    batch_size = trainer.config.train.batch_size
    for first in range(0, len(paths), batch_size):
        rows = order[first : first + batch_size].tolist()
        images = torch.stack([torch.from_numpy(decode(paths[i], size)).permute(2, 0, 1) for i in rows])
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(trainer._forward(images, train=True).float(), labels[rows])
        loss.backward()
        trainer.optimizer.step()
    return time.perf_counter() - start


def enlarged_copy(root: Path, task: str, size: int, out: Path) -> Path:
    """The task's folder with every image re-saved as a size x size JPEG, like VTAB-1k's photos."""
    from PIL import Image

    source, target = root / task, out / task
    for split_file in source.glob("*.txt"):
        target.mkdir(parents=True, exist_ok=True)
        (target / split_file.name).write_bytes(split_file.read_bytes())
    for image in source.rglob("*.jpg"):
        (target / image.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(image) as small:
            small.convert("RGB").resize((size, size), Image.BICUBIC).save(target / image.relative_to(source), quality=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="benchmark root (default: the mini benchmark)")
    parser.add_argument("--tasks", default="mini")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--backbone", default="provpt_tiny_patch8_32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--source-size", type=int, help="re-save the images as N x N JPEGs first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.mkdtemp(prefix="provpt-bench-cache-"))
    sources = f"{args.source_size}px JPEG sources" if args.source_size else "sources as stored"
    print(f"cache {cache}; {sources}; backbone {args.backbone} @ {args.resolution}px; {args.threads} thread(s)")
    print(f"{'task':16s} {'cache build (s)':>16s} {'images':>7s} {'epoch cached (s)':>17s} "
          f"{'epoch decoding (s)':>19s} {'ratio':>6s}")
    for spec in resolve_tasks(args.tasks.split(",")):
        data_config = DataConfig(task=spec.name, root=args.root, phase="final", cache_dir=str(cache))
        root = benchmark_root(data_config)  # the mini benchmark is generated here, outside the timing
        if args.source_size:
            root = enlarged_copy(root, spec.name, args.source_size, cache / f"source-{args.source_size}px")
            data_config = DataConfig(task=spec.name, root=str(root), phase="final", cache_dir=str(cache))
        start = time.perf_counter()
        data = load_data(data_config, resolution=args.resolution)
        build = time.perf_counter() - start
        config = TrialConfig.from_dict(
            {
                "backbone": {"name": args.backbone, "weights": "random", "img_size": args.resolution},
                "method": {"name": "vpt_deep", "num_prompts": 2},
                "train": {"epochs": 1, "lr": 0.05, "threads": args.threads, "device": "cpu"},
            }
        )
        trainer = Trainer(config, data)
        trainer._train_epoch()  # warm-up
        start = time.perf_counter()
        trainer._train_epoch()
        cached = time.perf_counter() - start
        folder = task_folder(spec, root)
        samples = read_split(spec, folder, spec.final_splits[0])
        paths = [s.path for s in samples]
        decoded = decoding_epoch(trainer, paths, torch.tensor([s.label for s in samples]), args.resolution)
        images = len(data.train) + len(data.test)
        print(f"{spec.name:16s} {build:16.2f} {images:7d} {cached:17.2f} {decoded:19.2f} {decoded / cached:6.2f}")


if __name__ == "__main__":
    main()
