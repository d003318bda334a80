"""DA-VPT and DA-VPT+: configs and methods (see the package docstring for what each option is)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from provpt_core.methods.config.davpt import DAVPTConfig, DAVPTPlusConfig
from provpt_core.methods.davpt.mapping import cosine_kmeans, sample_per_class
from provpt_core.methods.davpt.metric import proxy_anchor_loss
from provpt_core.methods.registry import register_method
from provpt_core.methods.vpt import VPTDeep, prompted_vit
from provpt_core.model import PromptedViT
from provpt_core.prompts import PromptBank

if TYPE_CHECKING:
    from provpt_core.methods.base import TrainerView


def xavier_prompt_bound(blocks: int, prompts: int, dim: int) -> float:
    """The authors' prompt init bound: xavier-uniform on their [blocks, prompts, dim] tensor
    (fan_in = prompts * dim, fan_out = blocks * dim), divided by 8."""
    return math.sqrt(6.0 / ((prompts + blocks) * dim)) / 8


@torch.no_grad()
def _xavier_div8(bank: PromptBank, blocks: list[int], counts: list[int], dim: int) -> None:
    """Re-draw the prompts of `blocks` (all holding counts[block] prompts) as the authors do."""
    if blocks:
        rows = torch.cat([bank.block_rows(b) for b in blocks])
        bound = xavier_prompt_bound(len(blocks), counts[blocks[0]], dim)
        bank.weight[rows] = torch.empty(len(rows), dim).uniform_(-bound, bound)


def _block_input(args: tuple, output: Any) -> torch.Tensor:
    return args[0]


def _block_output(args: tuple, output: Any) -> torch.Tensor:
    return output


def _cls_query(args: tuple, output: torch.Tensor) -> torch.Tensor:
    """The query part of attn.qkv's output [batch, tokens, 3 * dim] for the CLS token."""
    return output[:, 0, : output.shape[-1] // 3]


@register_method("davpt")
class DAVPT(VPTDeep):
    config_class = DAVPTConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        config, depth, dim = self.config, len(backbone.blocks), backbone.embed_dim
        if any(not -depth <= b < depth for b in config.guided_blocks):
            raise ValueError(
                f"method.guided_blocks: {config.guided_blocks} names a block outside the backbone's {depth}"
            )
        self.guided = sorted({b % depth for b in config.guided_blocks})
        blocks = range(depth) if config.blocks is None else config.blocks
        if any(b >= depth for b in blocks):
            raise ValueError(f"method.blocks: {list(blocks)} names a block >= the backbone's {depth}")
        if not set(self.guided) <= set(blocks):
            raise ValueError(
                f"method.guided_blocks: blocks {self.guided} must be among the prompted method.blocks"
            )
        # One proxy prompt per class when there are fewer classes than guided prompts (the
        # authors then map class c to prompt c and never cluster).
        length = config.num_prompts if config.guided_num_prompts is None else config.guided_num_prompts
        self.one_per_class = num_classes < length
        guided_count = min(length, num_classes)
        counts = [
            guided_count if b in self.guided else config.num_prompts if b in blocks else 0
            for b in range(depth)
        ]
        model = prompted_vit(config, backbone, num_classes, counts, self.insertion)
        if config.prompt_init == "xavier_div8":
            others = [b for b in blocks if b not in self.guided]
            for group in (self.guided, others):
                _xavier_div8(model.prompts, group, counts, dim)
        if config.head_init == "trunc_normal":
            nn.init.trunc_normal_(model.head.weight, std=0.02)
            nn.init.zeros_(model.head.bias)
        return model

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: TrainerView) -> None:
        model, config = trainer.model, self.config
        self.captured: dict[Any, torch.Tensor] = {}
        for block in self.guided:
            module = model.backbone.blocks[block]
            if config.patch_embedding == "block_input":
                module.register_forward_pre_hook(self._capture((block, "input"), _block_input))
            if "block_output" in (config.patch_embedding, config.cls_embedding):
                module.register_forward_hook(self._capture((block, "output"), _block_output))
            if config.cls_embedding == "input_query":
                module.attn.qkv.register_forward_hook(self._capture((block, "cls_query"), _cls_query))
        model.head.register_forward_hook(self._capture("cls", _block_input))
        classes, dim = trainer.num_classes, model.backbone.embed_dim
        self.prompts_per_block = len(model.prompts.block_rows(self.guided[0]))
        self.class_sums = torch.zeros(classes, dim, device=trainer.device)
        self.class_counts = torch.zeros(classes, device=trainer.device)
        self.collecting = False
        self.generator = torch.Generator().manual_seed(trainer.config.train.seed)
        self.centroids: torch.Tensor | None = None
        self.mapping = torch.arange(classes)
        if not self.one_per_class:
            self._initial_mapping(trainer)

    def _capture(self, key, pick):
        """A hook keeping what the loss needs of the latest forward (the backbone's modules
        stay in eval mode, so every forward is kept; the next one replaces it)."""

        def hook(module: nn.Module, args: tuple, output: Any = None) -> None:
            self.captured[key] = pick(args, output)

        return hook

    def _initial_mapping(self, trainer: TrainerView) -> None:
        """k-means of the frozen model's class-mean CLS features, before any training."""
        vit, classes = trainer.model.backbone, trainer.num_classes
        features = trainer.split_features(
            "train", lambda x: vit.forward_head(vit.forward_features(x), pre_logits=True)
        )
        labels = trainer.split_labels("train").to(features.device)
        per_class = self.config.mapping_images_per_class
        if per_class is None:
            draws = torch.ones(len(labels), device=features.device)
        else:
            draws = sample_per_class(labels, classes, per_class, self.generator).to(features.device)
        sums = torch.zeros(classes, features.shape[1], device=features.device).index_add_(
            0, labels, features * draws[:, None]
        )
        counts = torch.zeros(classes, device=features.device).index_add_(0, labels, draws)
        self._remap(sums, counts, initial=True)

    def _remap(self, sums: torch.Tensor, counts: torch.Tensor, initial: bool = False) -> None:
        """Cluster the classes with features; a class without any goes to a random prompt. A
        re-mapping that puts every class on one prompt is dropped, and the next one starts
        from fresh seeds (as the authors' code does)."""
        config, prompts = self.config, self.prompts_per_block
        present = (counts > 0).cpu()
        means = (sums / counts.clamp_min(1)[:, None]).cpu()[present]
        assign, centroids = cosine_kmeans(
            means, prompts, config.kmeans_iterations, self.generator, self.centroids,
            norm=config.kmeans_norm, init=config.kmeans_init, empty=config.kmeans_empty,
        )  # fmt: skip
        mapping = torch.randint(prompts, (len(present),), generator=self.generator)
        mapping[present] = assign
        if initial or len(mapping.unique()) > 1:
            self.mapping, self.centroids = mapping, centroids
        else:
            self.centroids = None

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        start = self.config.remap_from_epoch
        remapping = start > 0 and not self.one_per_class
        if remapping and epoch - 1 >= start:  # the previous epoch collected class means
            self._remap(self.class_sums, self.class_counts)
        self.class_sums.zero_()
        self.class_counts.zero_()
        self.collecting = remapping and epoch >= start

    def training_loss(self, trainer: TrainerView, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = super().training_loss(trainer, logits, labels)
        config, bank = self.config, trainer.model.prompts
        if self.collecting:
            self.class_sums.index_add_(0, labels, self.captured["cls"].detach().float())
            self.class_counts += torch.bincount(labels, minlength=len(self.class_counts))
        assigned = self.mapping.to(labels.device)[labels]
        terms = []
        for block in self.guided:
            rows = bank.block_rows(block)
            proxies = bank.weight.index_select(0, rows)
            term = torch.zeros((), device=logits.device)
            if config.beta:
                term = term + config.beta * self._metric(
                    self._patch_embedding(trainer, block, len(rows)), proxies, assigned
                )
            if config.lam:
                term = term + config.lam * self._metric(self._cls_embedding(block), proxies, assigned)
            terms.append(term)
        guided = torch.stack(terms)
        return loss + (guided.mean() if config.guided_reduction == "mean" else guided.sum())

    def _metric(
        self, embeddings: torch.Tensor, proxies: torch.Tensor, assigned: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        return proxy_anchor_loss(
            embeddings, proxies, assigned, c.proxy_scale, c.proxy_margin, c.proxy_length, c.pull_average
        )

    def _patch_embedding(self, trainer: TrainerView, block: int, prompts: int) -> torch.Tensor:
        """Mean patch token of the guided block's input (tokens: [prefix, prompts, patches])."""
        tokens = self.captured[(block, "input" if self.config.patch_embedding == "block_input" else "output")]
        return tokens[:, trainer.model.backbone.num_prefix_tokens + prompts :].mean(dim=1)

    def _cls_embedding(self, block: int) -> torch.Tensor:
        """The query of the block-input CLS token (q part of attn.qkv(norm1(x))), or the
        block-output CLS token."""
        if self.config.cls_embedding == "input_query":
            return self.captured[(block, "cls_query")]
        return self.captured[(block, "output")][:, 0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping.clone(),
            "centroids": self.centroids,
            "class_sums": self.class_sums.cpu(),
            "class_counts": self.class_counts.cpu(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mapping, self.centroids = state["mapping"], state["centroids"]
        self.class_sums.copy_(state["class_sums"])
        self.class_counts.copy_(state["class_counts"])
        self.generator.set_state(state["generator"])


class KeyValueBias(nn.Module):
    """Trained offsets of one attention's value bias, and key bias if `key` (its query bias
    stays frozen): added to the last 2 * dim (or dim) outputs of its qkv projection."""

    def __init__(self, dim: int, key: bool = True) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros((2 if key else 1) * dim))

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + F.pad(self.offset, (output.shape[-1] - self.offset.shape[0], 0)).to(output.dtype)


@register_method("davpt_plus")
class DAVPTPlus(DAVPT):
    config_class = DAVPTPlusConfig

    def build_model(self, backbone: VisionTransformer, num_classes: int) -> PromptedViT:
        model = super().build_model(backbone, num_classes)
        config = self.config
        model.extras["kv_biases"] = nn.ModuleList(
            KeyValueBias(backbone.embed_dim, config.train_key_bias) for _ in backbone.blocks
        )
        for block, bias in zip(backbone.blocks, model.extras["kv_biases"]):
            block.attn.qkv.register_forward_hook(bias.hook)
            if config.bias_set == "authors":
                for param in (block.attn.proj.bias, block.mlp.fc2.bias, block.norm2.bias):
                    param.requires_grad_(True)
                block.norm1.requires_grad_(True)
        if config.bias_set == "authors":
            backbone.cls_token.requires_grad_(True)
            backbone.patch_embed.proj.bias.requires_grad_(True)
        return model
