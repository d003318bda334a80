"""provpt data: what a benchmark root holds, and a root made from images.

    provpt data manifest --benchmark vtab1k|fgvc|mini ROOT [--tasks a,b] [--out FILE]
    provpt data compare A B          # manifests or study output folders: every difference
    provpt data prepare --task NAME --from-folder SOURCE ROOT [--seed N]

Every study writes its data's manifest to ``<output>/data_manifest.json`` and to its MLflow
run; `compare` says whether two studies ran on the same data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.store.schema import DATA_MANIFEST as MANIFEST_FILE


def read_manifest(target: Path) -> dict[str, Any]:
    """A manifest file, or the manifest in a study's output folder."""
    path = target / MANIFEST_FILE if target.is_dir() else target
    if not path.is_file():
        raise FileNotFoundError(f"{target}: no data manifest ({MANIFEST_FILE} is written by provpt run and provpt data manifest)")
    try:
        manifest = json.loads(path.read_text())
        manifest["tasks"]  # noqa: B018 - the one field every manifest has
    except (ValueError, KeyError, TypeError):
        raise FileNotFoundError(f"{path}: not a data manifest") from None
    return manifest


def data_notes(output: Path, against: Path | None = None) -> list[str]:
    """What a results table says about its data: the manifest's hash and, against another
    study (its output folder or manifest), every difference or that there is none."""
    if not (output / MANIFEST_FILE).is_file():
        return []
    from provpt_core import compare_manifests

    mine = read_manifest(output)
    notes = [f"Data: manifest sha256 {mine['sha256'][:12]} ({MANIFEST_FILE}); a table with another hash ran on other data."]
    if against is not None:
        theirs = read_manifest(against)
        differences = compare_manifests(mine, theirs, ("here", str(against)))
        notes.append(f"Data differs from {against}: {'; '.join(differences)}." if differences else f"Same data as {against}.")
    return notes


def manifest_lines(manifest: dict[str, Any]) -> list[str]:
    """One line per task and split: counts, classes present, formats, sizes, hash; then problems."""
    lines = []
    for name, task in manifest["tasks"].items():
        for split, facts in task["splits"].items():
            width, height = facts["width"], facts["height"]
            size = f"{width.get('min')}-{width.get('max')} x {height.get('min')}-{height.get('max')} px" if width else "-"
            formats = ", ".join(f"{n} {fmt}" for fmt, n in facts["formats"].items())
            lines.append(
                f"{name:22s} {split:15s} {facts['count']:6d} images {len(facts['classes']):4d} classes  {formats:18s} {size:22s} {facts['sha256'][:12]}"
            )
        lines += [f"{name}: problem: {p}" for p in task["problems"]]
        lines += [f"{name}: warning: {w}" for w in task["warnings"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    from provpt_core import PrepareError, build_manifest, compare_manifests, get_task, prepare_image_folder, resolve_tasks

    parser = argparse.ArgumentParser(prog="provpt data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    manifest = commands.add_parser("manifest", help="the manifest of a benchmark root")
    manifest.add_argument("--benchmark", choices=["vtab1k", "fgvc", "mini"], required=True)
    manifest.add_argument("--tasks", help="comma-separated task names (default: all of the benchmark)")
    manifest.add_argument("--out", type=Path, help="write the manifest (JSON) here")
    manifest.add_argument("root", type=Path)
    compare = commands.add_parser("compare", help="every difference between two manifests (or study outputs)")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    prepare = commands.add_parser("prepare", help="an image folder (one sub-folder per class) as a task in VTAB-1k format")
    prepare.add_argument("--task", required=True, help="the task it becomes (its classes and split sizes)")
    prepare.add_argument("--from-folder", type=Path, required=True, metavar="SOURCE")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the stratified splits")
    prepare.add_argument("root", type=Path, help="the benchmark root to write into")
    args = parser.parse_args(argv)

    if args.command == "manifest":
        specs = resolve_tasks(args.tasks.split(",") if args.tasks else [args.benchmark])
        if not args.root.is_dir():
            parser.error(f"{args.root}: not a folder")
        found = build_manifest(specs, {args.benchmark: args.root})
        print("\n".join(manifest_lines(found)))
        if args.out:
            args.out.write_text(json.dumps(found, indent=1, sort_keys=True))
            print(f"manifest: {args.out} (sha256 {found['sha256'][:12]})")
        return 1 if any(t["problems"] for t in found["tasks"].values()) else 0
    if args.command == "compare":
        try:
            a, b = read_manifest(args.a), read_manifest(args.b)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        differences = compare_manifests(a, b, (str(args.a), str(args.b)))
        print("\n".join(differences) if differences else f"the same data (sha256 {a['sha256'][:12]})")
        return 1 if differences else 0
    try:
        spec = get_task(args.task)
        folder = prepare_image_folder(args.from_folder, spec, args.root, args.seed)
    except (KeyError, PrepareError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {len((folder / f'{split}.txt').read_text().splitlines())}" for split in spec.split_sizes)
    print(f"{spec.name}: {folder} ({counts}); check it with: provpt verify --benchmark {spec.benchmark} --tasks {spec.name} {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
