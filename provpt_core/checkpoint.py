"""A trial's checkpoint on disk: its format, the atomic write, and the check that a checkpoint
belongs to the trial config that reads it (or, for a branch, to that config without its
scripted moves)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically: a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, partial)
    os.replace(partial, path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_belongs(state: dict[str, Any], config: dict[str, Any], branch: bool = False) -> None:
    """Refuse a checkpoint of another format or another trial config, naming what differs."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r}; this version reads {CHECKPOINT_FORMAT}")
    mine, theirs = config, state["config"]
    if branch:
        moves = mine["method"].get("moves") or []
        early = [m for m in moves if m["epoch"] < state["epoch"]]
        if early:
            raise ValueError(f"branch: the move {early[0]} is due before the checkpoint's epoch {state['epoch']}")
        mine, theirs = _without_moves(mine), _without_moves(theirs)
    if theirs != mine:
        differing = _differences(theirs, mine)
        raise ValueError(f"checkpoint was written by another trial config; differing fields: {differing[:5]}")


def _without_moves(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "method": {k: v for k, v in config["method"].items() if k != "moves"}}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]
