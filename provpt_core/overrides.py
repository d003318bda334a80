"""Overrides of a trial config as plain nested dicts: the one place for dotted paths.

`merge` lays one config dict over another; `apply` writes ``{"train.lr": 0.1}``-style values
into a copy; `lookup` reads a dotted path; `flatten` turns a nested dict into dotted keys (for
MLflow params and parquet columns). The service and the core share these.
"""

from __future__ import annotations

import copy
import json
from typing import Any


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s values in, mappings merged key by key (shares their values:
    copy what must stay untouched)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            # a method override naming another method replaces the base's method whole
            if key == "method" and value.get("name", merged[key].get("name")) != merged[key].get("name"):
                merged[key] = value
            else:
                merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with every dotted-path value written into it."""
    trial = copy.deepcopy(base)
    for path, value in values.items():
        node = trial
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return trial


def lookup(trial: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; None where the path does not exist."""
    node: Any = trial
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists stay whole (as JSON, keys sorted: one text per value)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple)) else value
    return out
