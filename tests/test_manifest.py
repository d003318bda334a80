"""Data you can trust: a root prepared losslessly from an image folder, the data manifest, and
the comparison that names a re-encoded copy, a swapped split and a missing class."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main
from provpt_core import build_manifest, compare_manifests, get_task, prepare_image_folder, verify
from provpt_core.data.prepare import PrepareError

KITTI = get_task("kitti")  # lossless at its source (PNG), 4 classes, 1000 + 711 images
CLASSES = ("close", "far", "mid", "none")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """An image folder: one sub-folder per class, RGB PNGs of random pixels, unequal classes."""
    folder = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for label, (name, count) in enumerate(zip(CLASSES, (700, 500, 300, 260))):
        (folder / name).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (6 + label, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"img{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def root(source, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtab")
    prepare_image_folder(source, KITTI, root, seed=3)
    return root


def _lines(folder: Path, split: str) -> list[tuple[str, int]]:
    return [(path, int(label)) for path, label in (line.rsplit(" ", 1) for line in (folder / f"{split}.txt").read_text().splitlines())]


def test_a_prepared_root_passes_verify_bit_exact_and_stratified(source, root):
    (report,) = verify([KITTI], root)
    assert report.ok, report.problems
    folder = root / "kitti"
    splits = {split: _lines(folder, split) for split in KITTI.split_sizes}
    assert {split: len(lines) for split, lines in splits.items()} == KITTI.split_sizes
    assert sorted(splits["train800val200"]) == sorted(splits["train800"] + splits["val200"])
    assert not {p for p, _ in splits["test"]} & {p for p, _ in splits["train800val200"]}
    assert not {p for p, _ in splits["train800"]} & {p for p, _ in splits["val200"]}
    for path, label in splits["train800"][:50] + splits["test"][:50]:
        original = source / CLASSES[label] / Path(path).with_suffix(".png").name
        assert np.array_equal(np.asarray(Image.open(folder / path)), np.asarray(Image.open(original)))
    shares = Counter(label for _, label in splits["train800val200"])
    assert [shares[c] for c in range(4)] == [398, 284, 170, 148]  # 1000 of 1760 images, class by class


def test_prepare_refuses_what_it_cannot_do_before_writing(source, root, tmp_path):
    with pytest.raises(PrepareError, match="4 class folders, task cifar has 100 classes"):
        prepare_image_folder(source, get_task("cifar"), tmp_path)
    with pytest.raises(PrepareError, match="exists and is not empty"):
        prepare_image_folder(source, KITTI, root)
    with pytest.raises(PrepareError, match="not a folder"):
        prepare_image_folder(tmp_path / "absent", KITTI, tmp_path)
    assert not any(tmp_path.iterdir())


def _variant(root: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(root, copy)
    return copy


def test_the_comparison_names_a_reencoded_copy_a_swapped_split_and_a_missing_class(root, tmp_path):
    original = build_manifest([KITTI], {"vtab1k": root})
    assert not original["tasks"]["kitti"]["warnings"] and not original["tasks"]["kitti"]["problems"]

    jpeg = _variant(root, tmp_path, "jpeg")  # every image re-encoded as JPEG, as the common release did
    folder = jpeg / "kitti"
    for split in KITTI.split_sizes:
        lines = _lines(folder, split)
        for path, _ in lines:
            png = folder / path
            if png.exists():
                Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
                png.unlink()
        (folder / f"{split}.txt").write_text("".join(f"{Path(p).with_suffix('.jpg').as_posix()} {c}\n" for p, c in lines))
    reencoded = build_manifest([KITTI], {"vtab1k": jpeg})
    assert any("800 of 800 images are lossy (JPEG) but the task's source is lossless" in w for w in reencoded["tasks"]["kitti"]["warnings"])

    swapped = _variant(root, tmp_path, "swapped")  # train800 and val200 exchanged
    train, val = swapped / "kitti" / "train800.txt", swapped / "kitti" / "val200.txt"
    text = train.read_text()
    train.write_text(val.read_text())
    val.write_text(text)

    pruned = _variant(root, tmp_path, "pruned")  # class 3 gone from the test split
    test = pruned / "kitti" / "test.txt"
    test.write_text("".join(f"{p} {c}\n" for p, c in _lines(pruned / "kitti", "test") if c != 3))

    differences = {
        name: compare_manifests(original, build_manifest([KITTI], {"vtab1k": variant}), ("original", name))
        for name, variant in (("jpeg", jpeg), ("swapped", swapped), ("pruned", pruned))
    }
    assert all(f"kitti {split}: image formats {n} PNG original, {n} JPEG jpeg (re-encoded?)" in differences["jpeg"]
               for split, n in KITTI.split_sizes.items())
    assert differences["swapped"] == [
        "kitti train800: original holds what swapped calls val200 (swapped splits)",
        "kitti val200: original holds what swapped calls train800 (swapped splits)",
    ]
    assert "kitti test: class 3 missing pruned (present original)" in differences["pruned"]
    assert all(d.startswith("kitti test:") for d in differences["pruned"])
    assert compare_manifests(original, build_manifest([KITTI], {"vtab1k": root})) == []


def test_the_manifest_is_cached_by_what_the_files_are(root, tmp_path):
    from provpt_core.data.manifest import task_manifest

    cache = tmp_path / "cache"
    first = task_manifest(KITTI, root, cache)
    assert len(list((cache / "manifests").iterdir())) == 1 and task_manifest(KITTI, root, cache) == first
    changed = _variant(root, tmp_path, "changed")
    image = changed / "kitti" / _lines(changed / "kitti", "test")[0][0]
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(image)  # one test image's pixels
    again = task_manifest(KITTI, changed, cache)
    assert again["splits"]["test"]["sha256"] != first["splits"]["test"]["sha256"]
    assert again["splits"]["train800"]["sha256"] == first["splits"]["train800"]["sha256"]


def test_data_commands_prepare_manifest_and_compare(source, root, tmp_path, capsys):
    assert main(["data", "prepare", "--task", "kitti", "--from-folder", str(source), "--seed", "3", str(tmp_path / "prepared")]) == 0
    assert "train800 800, val200 200, train800val200 1000, test 711" in capsys.readouterr().out
    for name, target in (("a", root), ("b", tmp_path / "prepared")):
        assert main(["data", "manifest", "--benchmark", "vtab1k", "--tasks", "kitti", str(target), "--out", str(tmp_path / f"{name}.json")]) == 0
    capsys.readouterr()
    assert main(["data", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0  # same seed: same data
    assert capsys.readouterr().out.startswith("the same data (sha256 ")
    assert main(["data", "prepare", "--task", "kitti", "--from-folder", str(source), "--seed", "4", str(tmp_path / "other")]) == 0
    assert main(["data", "manifest", "--benchmark", "vtab1k", "--tasks", "kitti", str(tmp_path / "other"), "--out", str(tmp_path / "c.json")]) == 0
    capsys.readouterr()
    assert main(["data", "compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 1
    assert "kitti train800: same counts and formats, other images or labels (content hash differs)" in capsys.readouterr().out
    assert main(["data", "compare", str(tmp_path / "a.json"), str(tmp_path)]) == 2
    assert "no data manifest" in capsys.readouterr().err


def test_a_study_refuses_to_resume_on_changed_data_and_its_tables_say_which(root, tmp_path, monkeypatch):
    from orchestrator.execution.driver import data_manifest
    from orchestrator.report.data import data_notes
    from orchestrator.spec.plan import make_plan
    from orchestrator.spec.study import Study, StudyError

    monkeypatch.setenv("PROVPT_CACHE", str(tmp_path / "cache"))
    data = _variant(root, tmp_path, "data")
    study = Study.model_validate({"name": "s", "tasks": ["kitti"], "methods": [{"name": "linear"}], "data": {"roots": {"vtab1k": str(data)}}})
    output = tmp_path / "out"
    output.mkdir()
    manifest = data_manifest(make_plan(study), output)
    (output / "data_manifest.json").write_text(json.dumps(manifest))
    assert data_manifest(make_plan(study), output) == manifest  # the same data: resumes
    (data / "kitti" / "val200.txt").write_text("".join(f"{p} {c}\n" for p, c in _lines(data / "kitti", "val200")[:-1]))
    with pytest.raises(StudyError, match=r"the data changed since this study started .*kitti val200: 200 images when the study started, 199 now"):
        data_manifest(make_plan(study), output)

    other = tmp_path / "other"
    other.mkdir()
    (other / "data_manifest.json").write_text(json.dumps(build_manifest([KITTI], {"vtab1k": data})))
    notes = data_notes(output, other)
    assert notes[0].startswith(f"Data: manifest sha256 {manifest['sha256'][:12]}")
    assert notes[1] == f"Data differs from {other}: kitti val200: 200 images here, 199 {other}."
    assert data_notes(output, output)[1] == f"Same data as {output}."
