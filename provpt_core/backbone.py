"""The frozen ViT backbone: a timm model name plus where its weights come from.

Weights come from one of three places, chosen by `BackboneConfig.weights`:

- ``"pretrained"``: the pretrained weights of the timm name. A model whose pretrained config
  names a file (the bundled tiny ViT) reads that file; a hub model reads the local Hugging Face
  cache only. A cluster fetches hub weights once (``provpt fetch NAME``)
  instead of every trial downloading them; a cache miss is one clear error, never a retry loop.
- a path to a local file: Google's ``.npz`` ViT checkpoints, ``.safetensors``, or ``.pth``
  (read with ``weights_only=True``).
- ``"random"``: timm's random init from seed ``RANDOM_INIT_SEED`` (tests, and the ablation "no
  pretraining"): the same backbone in every trial, drawing nothing from the trial's RNG.

The returned model is in eval mode with no gradients: the backbone's dropout stays off all
the time, as in the reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg, load_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from provpt_core import tiny_vit  # noqa: F401  (registers the bundled tiny ViT names with timm)
from provpt_core.backbone_config import PRETRAINED, RANDOM, BackboneConfig

RANDOM_INIT_SEED = 0
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class BackboneLoadError(RuntimeError):
    """The backbone's weights cannot be found or read; the message says what to do."""


def load_backbone(config: BackboneConfig) -> VisionTransformer:
    """A frozen timm VisionTransformer without classifier head, in eval mode."""
    if not timm.is_model(config.name.split(".")[0]):
        raise BackboneLoadError(
            f"backbone '{config.name}': not a timm model name (see timm.list_models('vit_*'))"
        )
    weights = weight_file(config)
    kwargs = {"num_classes": 0}
    if config.img_size is not None:
        kwargs["img_size"] = config.img_size
    with torch.random.fork_rng(devices=[]):  # building draws from no trial's random stream
        torch.manual_seed(RANDOM_INIT_SEED)
        model = timm.create_model(config.name, pretrained=False, **kwargs)
    if not isinstance(model, VisionTransformer):
        raise BackboneLoadError(
            f"backbone '{config.name}': a {type(model).__name__}, but prompts need a timm "
            "VisionTransformer"
        )
    if model.cls_token is None or model.global_pool != "token":
        # the prompted model reads the final CLS token; on a pooled backbone it would train
        # on a prompt or an unpooled token without a word
        raise BackboneLoadError(
            f"backbone '{config.name}': its features are pooled with global_pool={model.global_pool!r}"
            f"{' and it has no class token' if model.cls_token is None else ''}; prompt methods read the "
            "final CLS token: use a ViT with a class token and global_pool 'token'"
        )
    if weights is not None:
        _load_file(model, config.name, weights)
    for block in model.blocks:
        block.attn.fused_attn = True
    model.requires_grad_(False)
    return model.eval()


def backbone_depth(name: str) -> int:
    """The number of blocks of timm model `name`, without weights or memory (meta device)."""
    if not timm.is_model(name.split(".")[0]):
        raise BackboneLoadError(f"backbone '{name}': not a timm model name (see timm.list_models('vit_*'))")
    with torch.device("meta"):
        return len(timm.create_model(name, pretrained=False, num_classes=0).blocks)


def weight_file(config: BackboneConfig) -> Path | None:
    """The file to read weights from, checked before any model is built."""
    if config.weights == RANDOM:
        return None
    if config.weights == PRETRAINED:
        path = _pretrained_file(config.name)
    else:
        path = Path(config.weights).expanduser()
    if not path.is_file():
        raise BackboneLoadError(f"backbone '{config.name}': weight file {path} does not exist")
    return path


def _pretrained_file(name: str) -> Path:
    pretrained = get_pretrained_cfg(name)
    if pretrained is not None and pretrained.file:
        return Path(pretrained.file)
    return _cached_hub_file(name)


def _cached_hub_file(name: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    repo = _hub_repo(name)
    for filename in _HUB_FILENAMES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    raise BackboneLoadError(
        f"backbone '{name}': pretrained weights are not in the local hub cache ({cache}); run "
        f"'provpt fetch {name}' on a machine with network access, or set "
        "backbone.weights to a local .npz/.safetensors/.pth file"
    )


def _hub_repo(name: str) -> str:
    pretrained = get_pretrained_cfg(name)
    if pretrained is None or not pretrained.hf_hub_id:
        raise BackboneLoadError(
            f"backbone '{name}': timm knows no hub weights for this name; give a local weight "
            "file in backbone.weights or use weights: random"
        )
    repo = pretrained.hf_hub_id
    return repo + name if repo.endswith("/") else repo


def _load_file(model: VisionTransformer, name: str, path: Path) -> None:
    try:
        if path.suffix == ".npz":
            model.load_pretrained(str(path))
            return
        state = checkpoint_filter_fn(load_state_dict(str(path), weights_only=True), model)
    except Exception as err:  # any reader failure becomes one line that names the file
        raise BackboneLoadError(
            f"backbone '{name}': cannot read weight file {path}: {type(err).__name__}: {err}"
        ) from err
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise BackboneLoadError(
            f"backbone '{name}': weight file {path} does not fit the model: {err}".splitlines()[0]
        ) from err
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise BackboneLoadError(
            f"backbone '{name}': weight file {path} does not fit the model: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def fetch(name: str) -> Path:
    """Download the hub weights of `name` into the local cache (needs network)."""
    from huggingface_hub import hf_hub_download

    repo = _hub_repo(name)
    return Path(hf_hub_download(repo, _HUB_FILENAMES[0]))
