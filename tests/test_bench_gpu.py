"""bench/gpu.py runs end to end without a GPU (--smoke: the tiny ViT on the CPU), so the next
GPU machine can run it as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_smoke_measures_every_method_packing_and_projections(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    methods = {name: (train, evaluation) for name, train, evaluation, _ in figures["methods"]}
    assert set(methods) == {"vpt_shallow", "vpt_deep", "provpt", "vapt", "davpt", "lora", "adapter", "full"}
    assert all(train > 0 and evaluation > 0 for train, evaluation in methods.values())
    assert figures["alone"] > 0 and figures["packed"] > 0 and figures["pack"] == 2
    assert figures["vtab_full_gpu_hours"] > figures["provpt_final_gpu_hours"] > 0
