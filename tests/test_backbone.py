import socket

import pytest
import torch
from safetensors.torch import save_file

from npz_writer import write_google_vit_npz
from provpt_core.backbone import BackboneConfig, BackboneLoadError, load_backbone
from provpt_core.tiny_vit import TINY_VIT_NAME


@pytest.fixture(scope="module")
def source():
    """A backbone whose weights differ from the random init (which is the same in every trial)."""
    model = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    return model


def test_random_init_draws_nothing_from_the_trial_stream_and_is_the_same_every_time():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(6)
    assert _same_weights(first, load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random")))


def test_backbone_is_frozen_and_in_eval_mode(source):
    assert not source.training
    assert not any(p.requires_grad for p in source.parameters())
    assert all(block.attn.fused_attn for block in source.blocks)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".npz"])
def test_local_weight_files_load_exactly(source, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    elif suffix == ".pth":
        torch.save({"model": source.state_dict()}, path)
    else:
        write_google_vit_npz(source, path)
    loaded = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))
    assert _same_weights(loaded, source)
    random = load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights="random"))
    assert not _same_weights(random, source)


def test_pth_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": object()}, path)
    with pytest.raises(BackboneLoadError, match=f"cannot read weight file {path}"):
        load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))


def test_truncated_and_missing_files_give_one_clear_line(source, tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BackboneLoadError, match=f"'{TINY_VIT_NAME}': cannot read weight file {path}"):
        load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))
    with pytest.raises(BackboneLoadError, match="does not exist"):
        load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(tmp_path / "none.npz")))


def test_weights_of_another_model_are_refused(tmp_path):
    other = load_backbone(BackboneConfig(name="vit_tiny_patch16_224", weights="random"))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    with pytest.raises(BackboneLoadError, match="does not fit the model"):
        load_backbone(BackboneConfig(name=TINY_VIT_NAME, weights=str(path)))


def test_hub_name_without_cached_weights_fails_without_network_and_gives_advice(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("a cache miss must not try the network (it retries for ~48 s)")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(BackboneLoadError) as caught:
        load_backbone(BackboneConfig(name="vit_base_patch16_224.orig_in21k", weights="pretrained"))
    message = str(caught.value)
    assert "vit_base_patch16_224.orig_in21k" in message and "provpt fetch" in message
    assert str(tmp_path) in message and "\n" not in message


def test_unknown_model_name():
    with pytest.raises(BackboneLoadError, match="not a timm model name"):
        load_backbone(BackboneConfig(name="vit_imaginary_patch3", weights="random"))


def test_hub_name_loads_from_the_local_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    name = "vit_tiny_patch16_224.augreg_in21k"
    torch.manual_seed(2)
    reference = load_backbone(BackboneConfig(name=name, weights="random"))
    repo = tmp_path / "models--timm--vit_tiny_patch16_224.augreg_in21k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = load_backbone(BackboneConfig(name=name, weights="pretrained"))
    assert _same_weights(loaded, reference)


@pytest.mark.parametrize("name, says", [("vit_base_patch16_gap_224", "global_pool='avg' and it has no class token")])
def test_a_backbone_without_a_class_token_is_refused(name, says):
    with pytest.raises(BackboneLoadError) as caught:
        load_backbone(BackboneConfig(name=name, weights="random"))
    assert f"backbone '{name}': its features are pooled with {says}" in str(caught.value)
    assert "use a ViT with a class token" in str(caught.value)
