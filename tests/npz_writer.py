"""Writes a timm ViT in the layout of Google's original ViT .npz checkpoints (the inverse of
timm's reader), so that the .npz loading path is tested on a file in the real format."""

import numpy as np
import torch


def write_google_vit_npz(model, path) -> None:
    def a(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    dim = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": a(model.patch_embed.proj.weight).transpose(2, 3, 1, 0),
        "embedding/bias": a(model.patch_embed.proj.bias),
        "cls": a(model.cls_token),
        "Transformer/posembed_input/pos_embedding": a(model.pos_embed),
        "Transformer/encoder_norm/scale": a(model.norm.weight),
        "Transformer/encoder_norm/bias": a(model.norm.bias),
    }
    for i, block in enumerate(model.blocks):
        prefix = f"Transformer/encoderblock_{i}/"
        mha = prefix + "MultiHeadDotProductAttention_1/"
        arrays[prefix + "LayerNorm_0/scale"] = a(block.norm1.weight)
        arrays[prefix + "LayerNorm_0/bias"] = a(block.norm1.bias)
        for name, w, b in zip(
            ("query", "key", "value"), block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)
        ):
            arrays[mha + f"{name}/kernel"] = a(w).T.reshape(dim, heads, -1)
            arrays[mha + f"{name}/bias"] = a(b).reshape(heads, -1)
        arrays[mha + "out/kernel"] = a(block.attn.proj.weight).reshape(dim, heads, -1).transpose(1, 2, 0)
        arrays[mha + "out/bias"] = a(block.attn.proj.bias)
        arrays[prefix + "LayerNorm_2/scale"] = a(block.norm2.weight)
        arrays[prefix + "LayerNorm_2/bias"] = a(block.norm2.bias)
        arrays[prefix + "MlpBlock_3/Dense_0/kernel"] = a(block.mlp.fc1.weight).T
        arrays[prefix + "MlpBlock_3/Dense_0/bias"] = a(block.mlp.fc1.bias)
        arrays[prefix + "MlpBlock_3/Dense_1/kernel"] = a(block.mlp.fc2.weight).T
        arrays[prefix + "MlpBlock_3/Dense_1/bias"] = a(block.mlp.fc2.bias)
    np.savez(path, **arrays)
