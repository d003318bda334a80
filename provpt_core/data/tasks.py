"""The task registry: VTAB-1k's 19 tasks, FGVC's 5 datasets and the mini benchmark.

A study names tasks by name, by a common alias (``cifar100``, ``pcam``, ``clevr_distance``),
or by a selector: ``vtab1k``, ``vtab1k:natural`` / ``:specialized`` / ``:structured``,
``fgvc``, ``mini``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

VTAB_SPLITS = {"train800": 800, "val200": 200, "train800val200": 1000}
Resize = Literal["squash", "squash_crop"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: Literal["vtab1k", "fgvc", "mini"]
    group: str  # VTAB-1k: Natural / Specialized / Structured
    num_classes: int
    split_sizes: dict[str, int]  # expected images per split
    aliases: tuple[str, ...] = ()
    folder: str = ""  # folder under the benchmark root ("" : the task name)
    image_folder: str = ""  # FGVC: image paths are relative to this folder of the task folder
    mean: tuple[float, float, float] = HALF
    std: tuple[float, float, float] = HALF
    # squash: resize to resolution x resolution (VTAB-1k, no augmentation).
    # squash_crop: resize to resolution * 256 / 224, then crop to resolution (random crop and
    # horizontal flip when training, centre crop when evaluating), as VPT does on FGVC.
    resize: Resize = "squash"
    search_splits: tuple[str, str] = ("train800", "val200")  # (fit on, score on) when searching
    final_splits: tuple[str, str] = ("train800val200", "test")  # (fit on, score on) when final
    split_format: Literal["vtab_list", "fgvc_json"] = "vtab_list"
    # the source's images are lossless (PNG in TFDS): JPEG files of such a task were re-encoded,
    # which changes the pixels (the data manifest warns; the common VTAB-1k release did this)
    lossless_source: bool = False
    folders: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        # where to look for the task under a root: its folder, its name, its aliases
        object.__setattr__(self, "folders", tuple(dict.fromkeys([self.folder or self.name, self.name, *self.aliases])))


def _vtab(name: str, group: str, classes: int, test: int, *aliases: str, lossless: bool = False) -> TaskSpec:
    return TaskSpec(name, "vtab1k", group, classes, {**VTAB_SPLITS, "test": test}, aliases, lossless_source=lossless)


def _fgvc(name: str, folder: str, images: str, classes: int, sizes: tuple[int, int, int], *aliases: str) -> TaskSpec:
    return TaskSpec(
        name,
        "fgvc",
        "FGVC",
        classes,
        dict(zip(("train", "val", "test"), sizes)),
        aliases,
        folder=folder,
        image_folder=images,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize="squash_crop",
        search_splits=("train", "val"),
        final_splits=("train", "test"),
        split_format="fgvc_json",
    )


def _mini(name: str, group: str, classes: int, test: int) -> TaskSpec:
    return TaskSpec(name, "mini", group, classes, {**VTAB_SPLITS, "test": test})


# lossless=True: TFDS stores the source images as PNG (CIFAR, SVHN, PCam, CLEVR, KITTI,
# dSprites, smallNORB); the photo collections (Caltech, DTD, Flowers, Pets, SUN, EuroSAT,
# RESISC, Retinopathy) and DMLab are JPEG at their source.
TASKS: tuple[TaskSpec, ...] = (
    _vtab("cifar", "Natural", 100, 10000, "cifar100", "cifar_100", lossless=True),
    _vtab("caltech101", "Natural", 102, 6084, "caltech"),
    _vtab("dtd", "Natural", 47, 1880),
    _vtab("oxford_flowers102", "Natural", 102, 6149, "flowers102", "oxford_flowers_102"),
    _vtab("oxford_iiit_pet", "Natural", 37, 3669, "pets", "oxford_pet"),
    _vtab("svhn", "Natural", 10, 26032, "svhn_cropped", lossless=True),
    _vtab("sun397", "Natural", 397, 21750, "sun"),
    _vtab("patch_camelyon", "Specialized", 2, 32768, "pcam", "camelyon", lossless=True),
    _vtab("eurosat", "Specialized", 10, 5400),
    _vtab("resisc45", "Specialized", 45, 6300, "resisc"),
    _vtab("diabetic_retinopathy", "Specialized", 5, 42670, "retinopathy", "diabetic_retinopathy_detection"),
    _vtab("clevr_count", "Structured", 8, 15000, "clevr_count_all", lossless=True),
    _vtab("clevr_dist", "Structured", 6, 15000, "clevr_distance", "clevr_closest_object_distance", lossless=True),
    _vtab("dmlab", "Structured", 6, 22735),
    _vtab("kitti", "Structured", 4, 711, "kitti_dist", "kitti_closest_vehicle_distance", lossless=True),
    _vtab("dsprites_loc", "Structured", 16, 73728, "dsprites_location", "dsprites_label_x_position", lossless=True),
    _vtab("dsprites_ori", "Structured", 16, 73728, "dsprites_orientation", "dsprites_label_orientation", lossless=True),
    _vtab("smallnorb_azi", "Structured", 18, 12150, "smallnorb_azimuth", "smallnorb_label_azimuth", lossless=True),
    _vtab("smallnorb_ele", "Structured", 9, 12150, "smallnorb_elevation", "smallnorb_label_elevation", lossless=True),
    _fgvc("cub200", "CUB_200_2011", "images", 200, (5394, 600, 5794), "cub", "cub_200_2011"),
    _fgvc("nabirds", "nabirds", "images", 555, (21536, 2393, 24633), "nabird"),
    _fgvc("oxford_flowers", "OxfordFlower", "", 102, (1020, 1020, 6149), "flowers", "oxfordflowers"),
    _fgvc("stanford_dogs", "StanfordDogs", "Images", 120, (10800, 1200, 8580), "dogs", "stanforddogs"),
    _fgvc("stanford_cars", "StanfordCars", "", 196, (7329, 815, 8041), "cars", "stanfordcars"),
    _mini("mini_digits", "Natural", 10, 797),
    _mini("mini_texture", "Specialized", 8, 1000),
    _mini("mini_count", "Structured", 6, 1000),
    _mini("mini_loc", "Structured", 8, 1000),
    _mini("mini_ori", "Structured", 4, 1000),
    _mini("mini_dist", "Structured", 4, 1000),
)

VTAB_GROUPS = ("Natural", "Specialized", "Structured")
_BY_NAME = {spec.name: spec for spec in TASKS}
_BY_ALIAS = {alias: spec for spec in TASKS for alias in spec.aliases}


def get_task(name: str) -> TaskSpec:
    """The task called `name` (or one of its aliases)."""
    key = name.strip().lower()
    spec = _BY_NAME.get(key) or _BY_ALIAS.get(key)
    if spec is None:
        known = sorted([*_BY_NAME, *_BY_ALIAS, *selectors()])
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; expected one of {', '.join(sorted(_BY_NAME))}"
        raise KeyError(f"unknown task '{name}'{hint}")
    return spec


def selectors() -> list[str]:
    return ["vtab1k", *(f"vtab1k:{g.lower()}" for g in VTAB_GROUPS), "fgvc", "mini"]


def resolve_tasks(names: Iterable[str]) -> list[TaskSpec]:
    """Task specs for names, aliases and selectors, in order, each task once; an entry may list
    several, separated by commas (one ``${TASKS}`` variable can then name a few)."""
    found: dict[str, TaskSpec] = {}
    for name in (part for entry in names for part in entry.split(",")):
        key = name.strip().lower()
        benchmark, _, group = key.partition(":")
        if benchmark in ("vtab1k", "fgvc", "mini") and (not group or benchmark == "vtab1k"):
            members = [s for s in TASKS if s.benchmark == benchmark and (not group or s.group.lower() == group)]
            if not members:
                raise KeyError(f"unknown task selector '{name}'; expected one of {', '.join(selectors())}")
        else:
            members = [get_task(name)]
        for spec in members:
            found.setdefault(spec.name, spec)
    return list(found.values())
