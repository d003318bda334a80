"""The results figures (PNG and PDF): where each method put its prompts, how PRO-VPT moved
them over a trial, and validation curves.

- ``distribution_<method>``: final trials (task, seed) x blocks, the prompts per block at the
  end, so the spread between seeds of a task can be seen beside the spread between tasks (the
  ``placement`` table puts numbers on both);
- ``trace_<task>_<method>``: blocks x epochs, one final trial's distribution after every
  relocation (the lowest finished seed);
  both on one discrete colour scale (a colour per prompt count, the same in every figure), and
  none for a method whose placement never changed (VPT-deep: nothing to see);
- ``val_curves_<benchmark>``: per task, each method's selected search trial's val accuracy per
  epoch (the trial the pipeline recorded as selected, `Results.selections`);
- ``ablation`` (an ablation study): per task, each variant's mean test accuracy ± std over seeds;
- the analyses (`report.analyses`): ``timing_<method>`` (branch epoch x target block, the test
  gain over the unmoved run), ``fidelity_<method>`` (each prompt's score against the measured
  loss drop of removing it), ``rewards`` (the mean relocation reward per epoch).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from orchestrator.report.analyses import branch_gains, fidelity_frame, relocation_rewards
from orchestrator.report.frames import Results, finished_finals
from orchestrator.report.tables import final_distributions
from orchestrator.spec.study import Study

FORMATS = ("png", "pdf")
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}  # same data, same bytes


def write_figures(study: Study, results: Results, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    every_epoch = final_distributions(results, every_epoch=True)
    last = final_distributions(results)
    most = int(every_epoch["count"].max()) if len(every_epoch) else 0
    for method, part in every_epoch.groupby("method", sort=False):
        if part.groupby("block")["count"].nunique().max() == 1:  # one placement everywhere, always
            continue
        files += _distribution_heatmap(study, method, last[last["method"] == method], folder, most)
        files += _traces(study, method, part, folder, most)
    for benchmark in dict.fromkeys(s.benchmark for s in study.task_specs):
        files += _val_curves(study, benchmark, results.selections, results.epochs, folder)
    if study.ablation is not None:
        files += _ablation_bars(study, results.trials, folder)
    files += _timing_heatmaps(study, branch_gains(results), folder)
    files += _fidelity_scatter(study, fidelity_frame(results), folder)
    files += _reward_curves(study, results, folder)
    return files


def _save(figure, folder: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = folder / f"{stem}.{fmt}"
        figure.savefig(path, metadata=METADATA[fmt], dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def save_png(figure, path: Path) -> None:
    figure.savefig(path, metadata=METADATA["png"], dpi=150, bbox_inches="tight")
    plt.close(figure)


def count_colours(most: int) -> dict:
    """imshow's colour arguments for prompt counts 0..most: one discrete colour per count."""
    from matplotlib.colors import BoundaryNorm

    cmap = plt.get_cmap("viridis", most + 1)
    return {"cmap": cmap, "norm": BoundaryNorm(np.arange(-0.5, most + 1.5), cmap.N)}


def _count_bar(figure, image, axes, most: int) -> None:
    step = max(1, -(-(most + 1) // 12))
    figure.colorbar(image, ax=axes, label="prompts", ticks=range(0, most + 1, step))


def _distribution_heatmap(study: Study, method: str, last: pd.DataFrame, folder: Path, most: int) -> list[Path]:
    order = {s.name: i for i, s in enumerate(study.task_specs)}
    grid = last.pivot_table(index=["task", "seed"], columns="block", values="count", aggfunc="first").fillna(0)
    grid = grid.sort_index(key=lambda level: level.map(order) if level.name == "task" else level)
    blocks = int(grid.columns.max()) + 1
    grid = grid.reindex(columns=range(blocks), fill_value=0)
    figure, axes = plt.subplots(figsize=(0.5 * blocks + 2.5, 0.22 * len(grid) + 1.5))
    image = axes.imshow(grid.to_numpy(dtype=float), aspect="auto", **count_colours(most))
    axes.set_xticks(range(blocks), [str(b + 1) for b in range(blocks)])
    axes.set_yticks(range(len(grid)), [f"{task} s{int(seed)}" for task, seed in grid.index], fontsize=7)
    tasks = grid.index.get_level_values("task")
    for row in range(1, len(grid)):
        if tasks[row] != tasks[row - 1]:
            axes.axhline(row - 0.5, color="white", linewidth=1.5)
    axes.set_xlabel("block")
    axes.set_title(f"{study.display(method)}: prompts per block at the end of each final trial (task, seed)")
    _count_bar(figure, image, axes, most)
    return _save(figure, folder, f"distribution_{method}")


def _traces(study: Study, method: str, part: pd.DataFrame, folder: Path, most: int) -> list[Path]:
    paths = []
    for task, mine in part.groupby("task", sort=True):
        trial = mine.sort_values("seed")["trial"].iloc[0]
        title = f"{task} / {study.display(method)}: prompts per block ({trial.rsplit('/', 1)[1]})"
        paths += _save(trace_figure(mine[mine["trial"] == trial], title, most), folder, f"trace_{task}_{method}")
    return paths


def trace_figure(rows: pd.DataFrame, title: str, most: int | None = None):
    """One trial's distribution history (epoch, block, count rows) as blocks x epochs; `most`:
    the largest count of the colour scale (default: this trial's)."""
    most = int(rows["count"].max()) if most is None else most
    grid = rows.pivot_table(index="block", columns="epoch", values="count", aggfunc="first").fillna(0)
    figure, axes = plt.subplots(figsize=(min(12, 0.15 * grid.shape[1] + 3), 3.5))
    image = axes.imshow(grid.to_numpy(dtype=float), aspect="auto", origin="lower", **count_colours(most))
    epochs = [int(e) for e in grid.columns]
    step = max(1, len(epochs) // 10)
    axes.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    axes.set_yticks(range(grid.shape[0]), [str(int(b) + 1) for b in grid.index])
    axes.set_xlabel("epoch (after relocation)")
    axes.set_ylabel("block")
    axes.set_title(title)
    _count_bar(figure, image, axes, most)
    return figure


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
                axes.plot(curve["epoch"], 100 * curve["val_acc"].astype(float), label=entry.display)
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


def _ablation_bars(study: Study, trials: pd.DataFrame, folder: Path) -> list[Path]:
    finals = finished_finals(trials)
    finals = finals[finals["test_acc"].notna()]
    if finals.empty:
        return []
    tasks = [s.name for s in study.task_specs]
    variants = [e.key for e in study.methods]
    width = 0.8 / len(variants)
    figure, axes = plt.subplots(figsize=(1.2 * len(tasks) * max(1, len(variants) / 3) + 2, 3.5))
    for i, variant in enumerate(variants):
        scores = finals[finals["method"] == variant].groupby("task")["test_acc"].agg(["mean", "std"]).reindex(tasks)
        positions = np.arange(len(tasks)) + (i - (len(variants) - 1) / 2) * width
        axes.bar(positions, 100 * scores["mean"].astype(float), width, yerr=100 * scores["std"].astype(float).fillna(0), label=study.display(variant), capsize=2)
    axes.set_xticks(range(len(tasks)), tasks, fontsize=8)
    axes.set_ylabel("test top-1 % (mean ± std over seeds)")
    axes.set_title(f"Ablation: {study.ablation.factor}")
    axes.legend(fontsize=7, ncol=min(4, len(variants)), frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return _save(figure, folder, "ablation")


def _timing_heatmaps(study: Study, gains: pd.DataFrame, folder: Path) -> list[Path]:
    paths = []
    for method, mine in gains.groupby("method", sort=False):
        grid = mine.pivot_table(index="epoch", columns="target", values="gain", aggfunc="mean")
        limit = float(np.nanmax(np.abs(grid.to_numpy(dtype=float)))) or 1.0
        figure, axes = plt.subplots(figsize=(0.55 * grid.shape[1] + 2.5, 0.5 * grid.shape[0] + 1.6))
        image = axes.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        axes.set_xticks(range(grid.shape[1]), [str(int(t)) for t in grid.columns])
        axes.set_yticks(range(grid.shape[0]), [str(int(e)) for e in grid.index])
        for row, epoch in enumerate(grid.index):
            best = int(np.nanargmax(grid.loc[epoch].to_numpy(dtype=float)))
            axes.scatter([best], [row], marker="*", color="black", s=40)
        axes.set_xlabel("target block (0-based, as in branches.targets)")
        axes.set_ylabel("branch epoch")
        axes.set_title(f"{study.display(method)}: test gain (points) of a move at each epoch, over the unmoved run; * best")
        figure.colorbar(image, ax=axes, label="gain (points)")
        paths += _save(figure, folder, f"timing_{method}")
    return paths


def _fidelity_scatter(study: Study, frame: pd.DataFrame, folder: Path) -> list[Path]:
    paths = []
    for method, mine in frame.groupby("method", sort=False):
        figure, grid = plt.subplots(1, 2, figsize=(8.5, 3.6))
        epochs = sorted(mine["epoch"].unique())
        colours = plt.cm.viridis(np.linspace(0, 1, len(epochs)))
        for axes, removal in zip(grid, ("dropped", "zeroed")):
            for colour, epoch in zip(colours, epochs):
                part = mine[mine["epoch"] == epoch]
                axes.scatter(part["taylor"].astype(float), -part[f"loss_change_{removal}"].astype(float), s=8, color=colour, label=f"epoch {epoch}")
            axes.axhline(0, color="grey", linewidth=0.5)
            axes.axvline(0, color="grey", linewidth=0.5)
            axes.set_xlabel("Taylor score <dL/dp, p>")
            axes.set_ylabel(f"loss drop when {removal}")
            axes.set_title(f"prompt {removal}", fontsize=9)
        grid[0].legend(fontsize=7, frameon=False)
        figure.suptitle(f"{study.display(method)}: idleness score vs the measured effect of removing each prompt (final trials)")
        figure.tight_layout()
        paths += _save(figure, folder, f"fidelity_{method}")
    return paths


def _reward_curves(study: Study, results: Results, folder: Path) -> list[Path]:
    rewards = relocation_rewards(results)
    if rewards.empty:
        return []
    figure, axes = plt.subplots(figsize=(6, 3.4))
    for entry in study.methods:
        curve = rewards[rewards["method"] == entry.key].groupby("epoch")["reward"].mean()
        if len(curve):
            axes.plot(curve.index.astype(int), curve.to_numpy(dtype=float), marker="o", markersize=3, label=entry.display)
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set_xlabel("epoch")
    axes.set_ylabel("relocation reward (mean over final trials)")
    axes.set_title("Reward of the allocator's choices per epoch")
    axes.legend(fontsize=8, frameon=False)
    return _save(figure, folder, "rewards")
