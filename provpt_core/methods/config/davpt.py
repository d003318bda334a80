"""DA-VPT's and DA-VPT+'s configs (methods/davpt/, whose docstring says what each option is)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from provpt_core.config import check
from provpt_core.methods.config.base import register_config
from provpt_core.methods.config.vpt import VPTDeepConfig

KMeansNorm = Literal["layer", "l2", "none"]
KMeansInit = Literal["random", "kmeans++"]
EmptyClusters = Literal["keep", "refill"]
PullAverage = Literal["all_proxies", "with_positives"]


@register_config("davpt", "DA-VPT")
@dataclass
class DAVPTConfig(VPTDeepConfig):
    # --- Prompts and head, initialised as in the authors' code rather than VPT's recipe.
    dropout: float = 0.0  # their prompt_drop_rate (VPT: 0.1)
    # xavier_div8: xavier-uniform on their [blocks, prompts, dim] tensors, / 8;
    # vpt_uniform: VPT's uniform +-init_range
    prompt_init: Literal["xavier_div8", "vpt_uniform"] = "xavier_div8"
    # trunc_normal: weight N(0, 0.02) truncated, bias 0; vpt: kaiming weight, bias head_bias
    head_init: Literal["trunc_normal", "vpt"] = "trunc_normal"

    # --- The guided blocks: their prompts are the proxies of the metric loss.
    guided_blocks: list[int] = field(default_factory=lambda: [-1])  # negative: from the last block
    # Prompts of a guided block (their proxy_prompt_len), at most one per class; null: num_prompts.
    guided_num_prompts: int | None = 10
    # Several guided blocks: their losses averaged (code) or summed.
    guided_reduction: Literal["mean", "sum"] = "mean"

    # --- The loss: CE + beta * L(patch embedding, proxies) + lam * L(CLS embedding, proxies).
    # Their code defaults both weights to 0 (off) and every released config sets 0.01-1 per
    # task; our studies search them, and 0.1 lies inside that range.
    beta: float = 0.1
    lam: float = 0.1
    # Mean patch token of the guided block's input (code) or of its output (paper).
    patch_embedding: Literal["block_input", "block_output"] = "block_input"
    # The query projection of the block-input CLS token (code: q of attn.qkv(norm1(x))), or
    # the block-output CLS token (paper; the final CLS for the last block).
    cls_embedding: Literal["input_query", "block_output"] = "input_query"
    proxy_scale: float = 32.0  # Proxy-Anchor's alpha
    proxy_margin: float = 0.1  # Proxy-Anchor's delta
    # Their loss_vpt_scale_ratio (1-60 in their configs): the unit-normalised proxies are
    # scaled to this length, so it acts as alpha * length and delta / length.
    proxy_length: float = 1.0
    # The pull term averaged over all proxies (code) or those with positives in the batch (paper).
    pull_average: PullAverage = "all_proxies"

    # --- The class -> proxy mapping: cosine k-means of class-mean CLS features.
    # The initial one from the frozen model's features of this many images per class; null: all.
    mapping_images_per_class: int | None = 10
    kmeans_norm: KMeansNorm = "layer"  # the authors' kmeans_norm; earlier: l2
    kmeans_init: KMeansInit = "random"  # random distinct classes as seeds; earlier: kmeans++
    kmeans_empty: EmptyClusters = "keep"  # an empty cluster keeps its centroid; earlier: refill
    kmeans_iterations: int = 20
    # Re-map after every epoch from this (0-based) epoch on, from the class means of the
    # current model collected during that epoch; 0: never (their dynamic_kmeans: 0 by default,
    # 1 or 10 in their configs).
    remap_from_epoch: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.guided_blocks), "guided_blocks", "at least one block", self.guided_blocks)
        guided = self.num_prompts if self.guided_num_prompts is None else self.guided_num_prompts
        check(
            guided >= 1,
            "guided_num_prompts",
            "an integer >= 1 (or null with num_prompts >= 1)",
            self.guided_num_prompts,
        )
        check(self.beta >= 0 and self.lam >= 0, "beta", "weights >= 0 (beta and lam)", (self.beta, self.lam))
        check(self.proxy_scale > 0, "proxy_scale", "a number > 0", self.proxy_scale)
        check(self.proxy_length > 0, "proxy_length", "a number > 0", self.proxy_length)
        check(
            self.mapping_images_per_class is None or self.mapping_images_per_class >= 1,
            "mapping_images_per_class",
            "null or an integer >= 1",
            self.mapping_images_per_class,
        )
        check(self.kmeans_iterations >= 1, "kmeans_iterations", "an integer >= 1", self.kmeans_iterations)
        check(self.remap_from_epoch >= 0, "remap_from_epoch", "an integer >= 0", self.remap_from_epoch)


@register_config("davpt_plus", "DA-VPT+")
@dataclass
class DAVPTPlusConfig(DAVPTConfig):
    # authors: what their released code unfreezes, per block the attention key and value
    # biases, the attention-projection, fc2 and norm2 biases and norm1 (weight and bias), plus
    # the CLS token and the patch-embedding bias; kv: the attention key and value biases only
    # (the paper's text).
    bias_set: Literal["authors", "kv"] = "authors"
    # Their bias_k switch. A key bias adds the same q.b_k to all of a query's logits, which the
    # softmax cancels: it never changes an output and its gradient is zero (up to rounding),
    # but it counts among the trained parameters.
    train_key_bias: bool = True
