import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import make_fgvc_task, make_vtab_task, write_image
from provpt_core.data import DataConfig, crop_batch, get_task, load_data, resolve_tasks
from provpt_core.data import cache as cache_module
from provpt_core.data.formats import DataFormatError, decode, read_split
from provpt_core.data.tasks import TASKS
from provpt_core.data.verify import format_reports, verify_task

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ registry
def test_registry_holds_vtab1k_fgvc_and_mini():
    vtab = [t for t in TASKS if t.benchmark == "vtab1k"]
    assert len(vtab) == 19
    assert [len([t for t in vtab if t.group == g]) for g in ("Natural", "Specialized", "Structured")] == [7, 4, 8]
    assert sum(t.split_sizes["test"] for t in vtab) == 10000 + 6084 + 1880 + 6149 + 3669 + 26032 + 21750 + 32768 + \
        5400 + 6300 + 42670 + 15000 + 15000 + 22735 + 711 + 73728 + 73728 + 12150 + 12150
    assert len([t for t in TASKS if t.benchmark == "fgvc"]) == 5
    assert len([t for t in TASKS if t.benchmark == "mini"]) >= 4


def test_selectors_aliases_and_unknown_names():
    assert [t.name for t in resolve_tasks(["vtab1k:specialized"])] == [
        "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"]
    assert [t.name for t in resolve_tasks(["pcam", "cifar100", "clevr_distance", "dtd", "dtd"])] == [
        "patch_camelyon", "cifar", "clevr_dist", "dtd"]
    assert len(resolve_tasks(["vtab1k", "fgvc"])) == 24
    with pytest.raises(KeyError, match="unknown task 'dtdd'; did you mean dtd"):
        resolve_tasks(["dtdd"])
    assert get_task("CUB").name == "cub200" and get_task("stanford_cars").resize == "squash_crop"


# ------------------------------------------------------------------ formats
def test_vtab_lists_tolerate_crlf_blank_lines_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "dtd"
    write_image(folder / "images" / "my image.png", 0)
    (folder / "train800.txt").write_bytes(b"images/my image.png 3\r\n\r\n  \r\nimages/my image.png 46\r\n")
    samples = read_split(get_task("dtd"), folder, "train800")
    assert [(s.path.name, s.label, s.line) for s in samples] == [("my image.png", 3, 1), ("my image.png", 46, 4)]


def test_bad_vtab_line_names_file_and_line(tmp_path):
    folder = tmp_path / "dtd"
    folder.mkdir()
    (folder / "train800.txt").write_text("images/a.png 1\nimages/b.png seven\n")
    with pytest.raises(DataFormatError, match=r"train800\.txt:2: expected '<image path> <integer label>'"):
        read_split(get_task("dtd"), folder, "train800")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "RGB"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    expected = write_image(tmp_path / f"x{suffix}", 7, mode=mode)
    decoded = decode(tmp_path / f"x{suffix}", 12)
    assert decoded.shape == (12, 12, 3) and decoded.dtype == np.uint8
    tolerance = 40 if mode == "CMYK" else 0  # JPEG is lossy
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= tolerance


def test_fgvc_json_class_ids_are_remapped_by_sorting(tmp_path):
    make_fgvc_task(tmp_path, "stanford_dogs", {"train": 6, "val": 3, "test": 3}, class_ids=[40, 7, 1000])
    spec = get_task("stanford_dogs")
    samples = read_split(spec, tmp_path / "StanfordDogs", "train")
    assert [s.label for s in samples] == [1, 0, 2, 1, 0, 2]
    assert all(s.path.is_file() and "Images" in s.path.parts for s in samples)


# ------------------------------------------------------------------ verification: each problem, its message
def _report(root, task="kitti"):
    report = verify_task(get_task(task), root)
    return report, format_reports([report])


def test_a_complete_root_is_ok(tmp_path):
    make_vtab_task(tmp_path, "kitti", line_end="\r\n")
    report, table = _report(tmp_path)
    assert report.ok and report.counts == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}
    assert table.splitlines()[1].split() == ["kitti", "kitti", "800", "200", "1000", "711", "ok"]


def test_missing_task_folder(tmp_path):
    report, table = _report(tmp_path)
    assert report.status == "missing folder"
    assert f"looked for {tmp_path / 'kitti'}, {tmp_path / 'kitti_dist'}" in table


def test_short_split(tmp_path):
    make_vtab_task(tmp_path, "kitti", sizes={"val200": 199})
    report, table = _report(tmp_path)
    assert report.status == "wrong count"
    assert f"{tmp_path / 'kitti' / 'val200.txt'} lists 199 images, expected 200" in table
    assert "199/200" in table.splitlines()[1]


def _replace_line(path, index, new):
    lines = path.read_text().splitlines()
    lines[index] = new(lines[index])
    path.write_text("\n".join(lines) + "\n")


def test_label_out_of_range(tmp_path):
    folder = make_vtab_task(tmp_path, "kitti")
    _replace_line(folder / "test.txt", 6, lambda line: line.rsplit(" ", 1)[0] + " 4")
    report, table = _report(tmp_path)
    assert report.status == "label out of range"
    assert f"{folder / 'test.txt'}:7: label 4 outside [0, 4)" in table


def test_truncated_image(tmp_path):
    folder = make_vtab_task(tmp_path, "kitti")
    image = folder / "images" / "test" / "000003.png"
    image.write_bytes(image.read_bytes()[:60])
    report, table = _report(tmp_path)
    assert report.status == "unreadable image"
    assert f"{folder / 'test.txt'}:4: cannot read image {image}" in table


def test_truncated_jpeg(tmp_path):
    folder = make_vtab_task(tmp_path, "kitti")
    image = folder / "images" / "val200" / "000000.png"
    write_image(image.with_suffix(".jpg"), 0, size=64)
    image.with_suffix(".jpg").write_bytes(image.with_suffix(".jpg").read_bytes()[:400])
    _replace_line(folder / "val200.txt", 0, lambda line: line.replace(".png", ".jpg"))
    report, table = _report(tmp_path)
    assert report.status == "unreadable image"
    assert f"val200.txt:1: cannot read image {image.with_suffix('.jpg')}" in table
    assert "truncated" in table


def test_list_names_a_missing_image(tmp_path):
    folder = make_vtab_task(tmp_path, "kitti")
    _replace_line(folder / "train800.txt", 9, lambda line: "images/train800/nope.png 1")
    report, table = _report(tmp_path)
    assert report.status == "missing image"
    assert f"train800.txt:10: image {folder / 'images' / 'train800' / 'nope.png'} does not exist" in table


def test_empty_split_file(tmp_path):
    make_vtab_task(tmp_path, "kitti", sizes={"train800": 0})
    report, table = _report(tmp_path)
    assert report.status == "empty split"
    assert "train800.txt lists no images (expected 800)" in table


def test_missing_split_file(tmp_path):
    folder = make_vtab_task(tmp_path, "kitti")
    (folder / "train800val200.txt").unlink()
    report, table = _report(tmp_path)
    assert report.status == "missing split file" and "train800val200.txt does not exist" in table


def test_verify_command_exit_codes(tmp_path):
    make_vtab_task(tmp_path, "kitti")
    command = [sys.executable, "-m", "orchestrator", "verify", "--benchmark", "vtab1k"]
    ok = subprocess.run([*command, "--tasks", "kitti", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "1 of 1 tasks ok" in ok.stdout
    bad = subprocess.run([*command, "--tasks", "kitti,dtd", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and "problems in dtd" in bad.stdout and "dtd: missing folder" in bad.stdout


def test_preflight_checks_weights_and_data_from_the_trial_config(tmp_path, shared_cache):
    from provpt_core import TrialConfig, check

    make_vtab_task(tmp_path / "vtab", "kitti")
    good = TrialConfig.from_dict(
        {"backbone": {"name": "provpt_tiny_patch8_32"}, "data": {"task": "kitti", "root": str(tmp_path / "vtab")}}
    )
    found = check(good)
    assert found.ok and found.problems == [] and found.data.status == "ok"
    missing = good.override({"backbone.weights": str(tmp_path / "nope.safetensors"), "data.task": "dtd"})
    found = check(missing)
    assert not found.ok and found.problems[0].startswith("backbone: ") and "nope.safetensors" in found.problems[0]
    assert found.data.status == "missing folder"
    no_root = good.override({"data.root": None})
    assert check(no_root).problems == ["data.root: task 'kitti' needs the folder of the vtab1k benchmark"]
    mini = good.override({"data.root": None, "data.task": "mini_count", "data.cache_dir": str(shared_cache)})
    found = check(mini)  # the mini benchmark is generated on first use (by the pre-flight, if first)
    assert found.ok and found.data.folder.is_relative_to(shared_cache)


# ------------------------------------------------------------------ the decode-once cache
def test_load_data_decodes_once_and_rebuilds_when_a_source_changes(tmp_path, monkeypatch):
    make_vtab_task(tmp_path / "vtab", "kitti")
    calls = []
    real = cache_module.decode
    monkeypatch.setattr(cache_module, "decode", lambda path, size: calls.append(path) or real(path, size))
    config = DataConfig(task="kitti", root=str(tmp_path / "vtab"), cache_dir=str(tmp_path / "cache"))
    first = load_data(config, resolution=16)
    assert len(calls) == 800 + 200 and first.train.images.shape == (800, 3, 16, 16)
    assert first.val is not None and first.test is None and len(first.val) == 200
    assert isinstance(first.train.images.numpy().base, np.memmap) or first.train.images.numpy().base is not None
    again = load_data(config, resolution=16)
    assert len(calls) == 1000  # nothing decoded the second time
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.val.labels, first.val.labels)

    image = tmp_path / "vtab" / "kitti" / "images" / "val200" / "000002.png"
    write_image(image, seed=99)
    os.utime(image, ns=(1, 10**18))
    changed = load_data(config, resolution=16)
    assert len(calls) == 1000 + 200  # only the split that names the changed image is rebuilt
    assert not torch.equal(changed.val.images, first.val.images)
    cached = sorted(p.name for p in (tmp_path / "cache" / "decoded" / "kitti").glob("*.npy"))
    assert len(cached) == 4  # stale caches removed; images + labels for two splits
    assert not list((tmp_path / "cache").rglob("*.partial*"))


def test_final_phase_fits_on_train800val200_and_scores_test(tmp_path):
    make_vtab_task(tmp_path, "kitti")
    data = load_data(DataConfig(task="kitti", root=str(tmp_path), phase="final", cache_dir=str(tmp_path / "c")), 8)
    assert len(data.train) == 1000 and len(data.test) == 711 and data.val is None
    assert data.mean == (0.5, 0.5, 0.5) and data.num_classes == 4


def test_load_data_refuses_a_short_split_before_decoding(tmp_path):
    make_vtab_task(tmp_path, "kitti", sizes={"train800": 700})
    with pytest.raises(DataFormatError, match=r"train800\.txt: lists 700 images, expected 800"):
        load_data(DataConfig(task="kitti", root=str(tmp_path), cache_dir=str(tmp_path / "c")), 8)
    assert not (tmp_path / "c" / "decoded").exists()


def test_concurrent_builders_share_one_complete_cache(tmp_path):
    make_vtab_task(tmp_path / "vtab", "kitti")
    script = (
        "import sys, hashlib; from provpt_core.data import DataConfig, load_data;"
        f"d = load_data(DataConfig(task='kitti', root='{tmp_path / 'vtab'}', phase='final', "
        f"cache_dir='{tmp_path / 'cache'}'), 24);"
        "print(hashlib.sha256(d.test.images.numpy().tobytes()).hexdigest())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len({out.strip() for out, _ in outputs}) == 1
    builds = sum(err.count("kitti/test: 711 images at 24px cached") for _, err in outputs)
    assert builds == 1


def test_fgvc_images_are_cropped_on_the_device(tmp_path):
    make_fgvc_task(tmp_path, "oxford_flowers", {"train": 1020, "val": 1020, "test": 6149}, class_ids=list(range(102)))
    data = load_data(DataConfig(task="oxford_flowers", root=str(tmp_path), cache_dir=str(tmp_path / "c")), 28)
    assert data.train.images.shape[-1] == 32 and data.crop == 28
    assert data.mean == pytest.approx((0.485, 0.456, 0.406))


def test_crop_batch():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    centre = crop_batch(images, 4, train=False, generator=torch.Generator())
    assert torch.equal(centre, images[:, :, 1:5, 1:5])
    generator = torch.Generator().manual_seed(0)
    crops = [crop_batch(images, 4, train=True, generator=generator) for _ in range(40)]
    for crop in crops:
        assert crop.shape == (2, 3, 4, 4)
        for b in range(2):  # every crop is a (possibly mirrored) window of its own image
            windows = [images[b, :, t : t + 4, l : l + 4] for t in range(3) for l in range(3)]
            assert any(torch.equal(crop[b], w) or torch.equal(crop[b], w.flip(-1)) for w in windows)
    assert any(not torch.equal(a, crops[0]) for a in crops[1:])
    again = torch.Generator().manual_seed(0)
    assert torch.equal(crop_batch(images, 4, train=True, generator=again), crops[0])
