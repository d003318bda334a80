"""The results figures (PNG and PDF): where each method put its prompts, how PRO-VPT moved
them over a trial, and validation curves.

- ``distribution_<method>``: final trials (task, seed) x blocks, the prompts per block at the
  end, so the spread between seeds of a task can be seen beside the spread between tasks (the
  ``placement`` table puts numbers on both);
- ``trace_<task>_<method>``: blocks x epochs, one final trial's distribution after every
  relocation (the lowest finished seed);
- ``val_curves_<benchmark>``: per task, each method's selected search trial's val accuracy per
  epoch (the trial the pipeline recorded as selected, `Results.selections`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from orchestrator.report.frames import Results
from orchestrator.report.tables import final_distributions
from orchestrator.spec.study import Study

FORMATS = ("png", "pdf")
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}  # same data, same bytes


def write_figures(study: Study, results: Results, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    every_epoch = final_distributions(results, every_epoch=True)
    last = final_distributions(results)
    for method, part in every_epoch.groupby("method", sort=False):
        files += _distribution_heatmap(study, method, last[last["method"] == method], folder)
        files += _traces(method, part, folder)
    for benchmark in dict.fromkeys(s.benchmark for s in study.task_specs):
        files += _val_curves(study, benchmark, results.selections, results.epochs, folder)
    return files


def _save(figure, folder: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = folder / f"{stem}.{fmt}"
        figure.savefig(path, metadata=METADATA[fmt], dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def _distribution_heatmap(study: Study, method: str, last: pd.DataFrame, folder: Path) -> list[Path]:
    order = {s.name: i for i, s in enumerate(study.task_specs)}
    grid = last.pivot_table(index=["task", "seed"], columns="block", values="count", aggfunc="first").fillna(0)
    grid = grid.sort_index(key=lambda level: level.map(order) if level.name == "task" else level)
    blocks = int(grid.columns.max()) + 1
    grid = grid.reindex(columns=range(blocks), fill_value=0)
    figure, axes = plt.subplots(figsize=(0.5 * blocks + 2.5, 0.22 * len(grid) + 1.5))
    image = axes.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    axes.set_xticks(range(blocks), [str(b + 1) for b in range(blocks)])
    axes.set_yticks(range(len(grid)), [f"{task} s{int(seed)}" for task, seed in grid.index], fontsize=7)
    tasks = grid.index.get_level_values("task")
    for row in range(1, len(grid)):
        if tasks[row] != tasks[row - 1]:
            axes.axhline(row - 0.5, color="white", linewidth=1.5)
    axes.set_xlabel("block")
    axes.set_title(f"{method}: prompts per block at the end of each final trial (task, seed)")
    figure.colorbar(image, ax=axes, label="prompts")
    return _save(figure, folder, f"distribution_{method}")


def _traces(method: str, part: pd.DataFrame, folder: Path) -> list[Path]:
    paths = []
    for task, mine in part.groupby("task", sort=True):
        trial = mine.sort_values("seed")["trial"].iloc[0]
        one = mine[mine["trial"] == trial]
        grid = one.pivot_table(index="block", columns="epoch", values="count", aggfunc="first").fillna(0)
        figure, axes = plt.subplots(figsize=(min(12, 0.15 * grid.shape[1] + 3), 3.5))
        image = axes.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
        epochs = [int(e) for e in grid.columns]
        step = max(1, len(epochs) // 10)
        axes.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
        axes.set_yticks(range(grid.shape[0]), [str(int(b) + 1) for b in grid.index])
        axes.set_xlabel("epoch (after relocation)")
        axes.set_ylabel("block")
        axes.set_title(f"{task} / {method}: prompts per block ({trial.rsplit('/', 1)[1]})")
        figure.colorbar(image, ax=axes, label="prompts")
        paths += _save(figure, folder, f"trace_{task}_{method}")
    return paths


def _val_curves(study: Study, benchmark: str, selections: pd.DataFrame, epochs: pd.DataFrame, folder: Path) -> list[Path]:
    if "val_acc" not in epochs:
        return []
    tasks = [s.name for s in study.task_specs if s.benchmark == benchmark]
    selected = {(row.task, row.method): row.trial for row in selections.itertuples(index=False) if not pd.isna(row.trial)}
    columns = min(4, len(tasks))
    rows = -(-len(tasks) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    drawn = False
    for axes, task in zip(grid.flat, tasks):
        for entry in study.methods:
            best = selected.get((task, entry.key))
            if best is None:
                continue
            curve = epochs[(epochs["trial"] == best) & epochs["val_acc"].notna()]
            if len(curve) > 1:
                axes.plot(curve["epoch"], 100 * curve["val_acc"].astype(float), label=entry.key)
                drawn = True
        axes.set_title(task, fontsize=9)
        axes.set_xlabel("epoch", fontsize=8)
        axes.set_ylabel("val %", fontsize=8)
    for axes in list(grid.flat)[len(tasks):]:
        axes.axis("off")
    if not drawn:  # no search trial scored val more than once
        plt.close(figure)
        return []
    legend = {label: line for axes in grid.flat for line, label in zip(*axes.get_legend_handles_labels())}
    figure.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), frameon=False)
    figure.suptitle(f"val accuracy of each method's selected search trial ({benchmark})")
    figure.tight_layout(rect=(0, 0.06, 1, 0.96))
    return _save(figure, folder, f"val_curves_{benchmark}")
