"""DA-VPT (CVPR 2025, "Distribution-Aware VPT"): VPT-deep whose prompts are tied to classes.

Classes are mapped to the prompts of the guided blocks by cosine k-means of their mean CLS
features: the frozen model's before training, then (from `remap_from_epoch` on) the current
model's, collected during each epoch, warm-started from the previous centroids. With fewer
classes than a guided block's prompts, the guided blocks get one prompt per class. The loss
adds Proxy-Anchor terms in which a guided block's prompts are the proxies:
CE + beta * L(mean patch token, prompts) + lam * L(CLS embedding, prompts), averaged over the
guided blocks, each pulling an image's embedding toward its class's prompt and pushing it
from the others. DA-VPT+ also trains bias sets of the backbone.

The defaults follow the authors' released code where it differs from the paper's text; each
difference is a config field whose other value gives the paper's version (or this project's
earlier one):

  what                         code (default)                 paper / earlier
  patch embedding              guided block's input tokens    its output tokens
  CLS embedding                query of the block-input CLS   block-output CLS
  Proxy-Anchor pull            mean over all proxies          over proxies with positives (eq. 4)
  proxies (unit-normalised)    scaled to proxy_length: 1 by   unit length
                               default, 1-60 in their configs
  several guided blocks        losses averaged                summed
  guided block's prompts       guided_num_prompts (10)        num_prompts
  initial mapping              10 images per class, layer     all images, l2 norm, k-means++,
                               norm, random seeds, empty      empty clusters refilled
                               clusters kept
  re-mapping                   after each epoch >= 1          (every epoch, from the start)
  prompts, head                xavier/8, dropout 0;           VPT's uniform, dropout 0.1;
                               N(0, 0.02), bias 0             kaiming, -log 99
  DA-VPT+ trained biases       bias_set authors (66,048 on    bias_set kv (the paper)
                               ViT-B/16; 56,832 without key)

The authors' training recipe (AdamW, batch 32 with a class-balanced sampler, per-step cosine,
gradient-value clipping, fp16, their best late-epoch test readout) belongs to the trial's train
and eval config, not to the method: it is the `davpt` recipe of `provpt_core.recipes`, which a
study selects with `recipe: published`.

beta and lam default to 0.1, not to their code's 0 (which turns the method into VPT-deep):
every released config of theirs sets them (0.01-1), and studies search them.
"""

from provpt_core.methods.davpt.mapping import cosine_kmeans, sample_per_class
from provpt_core.methods.davpt.method import (
    DAVPT,
    DAVPTConfig,
    DAVPTPlus,
    DAVPTPlusConfig,
    KeyValueBias,
    xavier_prompt_bound,
)
from provpt_core.methods.davpt.metric import proxy_anchor_loss

__all__ = [
    "DAVPT",
    "DAVPTConfig",
    "DAVPTPlus",
    "DAVPTPlusConfig",
    "KeyValueBias",
    "cosine_kmeans",
    "proxy_anchor_loss",
    "sample_per_class",
    "xavier_prompt_bound",
]
