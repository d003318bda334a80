"""Decode once: each (task, split, size) becomes a uint8 array file shared by all trials.

The file ``<cache>/decoded/<task>/<split>-<size>px-<fingerprint>.npy`` holds the images as
[N, 3, size, size] uint8, beside ``....labels.npy``. Trials memory-map it, so a node holds one
copy whatever number of trials read it. The fingerprint covers the split file, every image's
size and modification time, the size and this format's version: when a source file changes, a
new cache is built. Building takes a file lock (concurrent trials wait for one builder) and
writes to temporary names that are renamed into place, so nobody reads a partial file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from provpt_core.data.formats import DataFormatError, Sample, decode
from provpt_core.data.splits import ImageSet

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROVPT_CACHE", Path.home() / ".cache" / "provpt")).expanduser()


def fingerprint(split_file: Path, samples: list[Sample], size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{size}:".encode())
    digest.update(split_file.read_bytes())
    for sample in samples:
        try:
            stat = sample.path.stat()
        except OSError:
            raise DataFormatError(
                f"{split_file}:{sample.line}: image {sample.path} does not exist"
            ) from None
        digest.update(f"{sample.path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cached_split(
    task: str,
    split: str,
    split_file: Path,
    samples: list[Sample],
    size: int,
    cache_dir: Path,
    workers: int = 4,
) -> ImageSet:
    """The split as a memory-mapped ImageSet, decoding its images first if no fresh cache exists."""
    folder = cache_dir / "decoded" / task
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{split}-{size}px"
    images_path = folder / f"{stem}-{fingerprint(split_file, samples, size)}.npy"
    labels_path = images_path.with_suffix(".labels.npy")
    if not images_path.exists():
        with open(folder / f"{stem}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not images_path.exists():  # another process may have built it while we waited
                _build(task, split, split_file, samples, size, images_path, labels_path, workers)
                for stale in folder.glob(f"{stem}-*.npy"):
                    if stale.name not in (images_path.name, labels_path.name):
                        stale.unlink(missing_ok=True)
    images = np.load(images_path, mmap_mode="c")  # copy-on-write: writable for torch, never written back
    labels = np.load(labels_path)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


def _build(
    task: str,
    split: str,
    split_file: Path,
    samples: list[Sample],
    size: int,
    images_path: Path,
    labels_path: Path,
    workers: int,
) -> None:
    start = time.perf_counter()
    partial = images_path.with_name(f".{images_path.name}.{os.getpid()}.partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(samples), 3, size, size))

    def decode_one(index: int) -> None:
        sample = samples[index]
        try:
            array[index] = decode(sample.path, size).transpose(2, 0, 1)
        except Exception as err:  # any reader failure names the file and line
            raise DataFormatError(
                f"{split_file}:{sample.line}: cannot read image {sample.path}: {type(err).__name__}: {err}"
            ) from None

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for done, _ in enumerate(pool.map(decode_one, range(len(samples))), start=1):
                if done % 5000 == 0:
                    print(f"[cache] {task}/{split}: {done}/{len(samples)} images decoded", file=sys.stderr, flush=True)
        array.flush()
        labels_partial = labels_path.with_name(f".{labels_path.name}.{os.getpid()}.partial.npy")
        np.save(labels_partial, np.array([s.label for s in samples], dtype=np.int64))
        os.replace(labels_partial, labels_path)
        os.replace(partial, images_path)  # last: the images file's existence means "complete"
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    print(f"[cache] {task}/{split}: {len(samples)} images at {size}px cached in {seconds:.1f} s", file=sys.stderr)
