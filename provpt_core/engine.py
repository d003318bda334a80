"""fit(): the epoch loop of one trial, its evaluation, and its complete, restorable state.

The `Trainer` owns everything a trial trains: model, optimizer, scheduler, the method's own
state (e.g. PRO-VPT's allocator with its buffer and optimizer), the RNG states and the epoch.
`state_dict()` holds all of it, so a run interrupted after any epoch and restored continues
exactly as if it had never stopped (bitwise on CPU).

Whoever runs a trial (a script, a Ray Tune trainable) plugs in through callbacks; the engine
imports nothing of theirs.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from provpt_core import checkpoint
from provpt_core.backbone import load_backbone
from provpt_core.data import DataSplits, Normalizer, crop_batch, load_data
from provpt_core.device import autocast_dtype, resolve_device
from provpt_core.methods import create_method
from provpt_core.optim import lr_factor, make_optimizer
from provpt_core.trial import TrialConfig
from provpt_core.warm import WarmCache


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Callback:
    """Hooks for whoever runs a trial. Set `trainer.should_stop = True` to stop after an epoch."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_relocation(self, trainer: Trainer, event: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None: ...


@dataclass
class FitResult:
    """What a trial produced."""

    epochs_completed: int
    finished: bool  # all configured epochs ran
    history: list[dict[str, float]]  # per-epoch metrics
    final_val_acc: float | None
    best_val_acc: float | None
    test_acc: float | None
    # the "as published" readout (eval.late_test_from): best test accuracy of the late epochs
    best_late_test_acc: float | None
    distribution: list[int] | None  # prompts per block at the end
    initial_distribution: list[int] | None = None  # prompts per block at the start
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # e.g. "relocation"
    artifacts: dict[str, torch.Tensor] = field(default_factory=dict)  # the method's export, e.g. prompts
    trainable_params: int = 0
    wall_seconds: float = 0.0


def fit(
    config: TrialConfig,
    data: DataSplits | None = None,
    callbacks: Sequence[Callback] = (),
    resume_from: str | Path | None = None,
    branch_from: str | Path | None = None,
    warm: WarmCache | None = None,
) -> FitResult:
    """Train one trial; continue from a checkpoint file when `resume_from` is given.

    `branch_from`: a checkpoint of the same trial without this config's scripted moves
    (`method.moves`), none of which is due before the checkpoint's epoch: training goes on from
    there with the moves, a branch of that run that costs only the remaining epochs.
    Without `data`, the splits of `config.data` are loaded (decoded once into the cache).
    `warm`: a worker's cache of backbones and splits (`provpt_core.warm`), for many trials in
    one process; the result is the same without it.
    """
    if resume_from is not None and branch_from is not None:
        raise ValueError("fit: give resume_from or branch_from, not both")
    trainer = Trainer(config, data, callbacks, warm)
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
    if branch_from is not None:
        trainer.load_checkpoint(branch_from, branch=True)
    return trainer.fit()


class Trainer:
    def __init__(
        self,
        config: TrialConfig,
        data: DataSplits | None = None,
        callbacks: Sequence[Callback] = (),
        warm: WarmCache | None = None,
    ) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        train = config.train
        if train.threads is not None:
            torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)
        self.autocast_dtype = autocast_dtype(train.precision, self.device)
        self.method = create_method(config.method)
        backbone = warm.backbone(config.backbone) if warm is not None else load_backbone(config.backbone)
        if data is None:
            resolution = backbone.patch_embed.img_size[0]
            data = warm.data(config.data, resolution) if warm is not None else load_data(config.data, resolution=resolution)
        self.data = data
        torch.manual_seed(train.seed)  # after the backbone: a trial draws the same numbers, warm or cold
        self.model = self.method.build_model(backbone, data.num_classes).to(self.device)
        self.initial_distribution = self._distribution()
        self.normalize = Normalizer(data.mean, data.std, self.device)
        # A split that fits the budget lives on the device for the whole trial; a larger one
        # stays in host memory and moves batch by batch.
        budget = train.device_data_mb * 2**20
        self.splits = {
            name: split.to(self.device) if split.nbytes <= budget else split
            for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
            if split is not None
        }
        self.feature_cache: dict[str, torch.Tensor] = {}
        self.optimizer = make_optimizer(self.method.param_groups(self.model), self.model.head.bias, train)
        self.steps_per_epoch = math.ceil(len(data.train.labels) / train.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_factor, train, self.steps_per_epoch)
        )
        # fp16 gradients underflow without loss scaling; a no-op for every other precision
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.autocast_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.shuffle = torch.Generator().manual_seed(train.seed)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.should_stop = False
        self.method.setup(self)

    # ----------------------------------------------------------------- the loop
    def fit(self) -> FitResult:
        start = time.perf_counter()
        if self.method.frozen_features and self.data.crop is None:
            self._cache_features()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        epochs, val_every = self.config.train.epochs, self.config.eval.val_every
        while self.epoch < epochs and not self.should_stop:
            self.method.on_epoch_start(self, self.epoch)
            metrics = self._train_epoch()
            self.epoch += 1
            if "val" in self.splits and (self.epoch == epochs or (val_every and self.epoch % val_every == 0)):
                metrics.update(self.evaluate("val"))
            if self._late_test_due():
                metrics["late_test_acc"] = self.evaluate("test")["test_acc"]
            self.history.append(metrics)
            for callback in self.callbacks:
                callback.on_epoch_end(self, metrics)
        finished = self.epoch == epochs
        test_acc = None
        if finished and self.config.eval.test_at_end and "test" in self.splits:
            # the late-epoch readout scored the last epoch already: the same weights, once
            test_acc = self.history[-1].get("late_test_acc")
            if test_acc is None:
                test_acc = self.evaluate("test")["test_acc"]
        val_accs = [m["val_acc"] for m in self.history if "val_acc" in m]
        late_tests = [m["late_test_acc"] for m in self.history if "late_test_acc" in m]
        result = FitResult(
            epochs_completed=self.epoch,
            finished=finished,
            history=list(self.history),
            final_val_acc=self.history[-1].get("val_acc") if self.history else None,
            best_val_acc=max(val_accs) if val_accs else None,
            test_acc=test_acc,
            best_late_test_acc=max(late_tests) if finished and late_tests else None,
            distribution=self._distribution(),
            initial_distribution=self.initial_distribution,
            events={k: list(v) for k, v in self.events.items()},
            artifacts=self.method.artifacts(self.model) if finished else {},
            trainable_params=self.trainable_params(),
            wall_seconds=time.perf_counter() - start,
        )
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        return result

    def _train_epoch(self) -> dict[str, float]:
        start = time.perf_counter()
        self.model.train()
        train = self.config.train
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        for inputs, labels in self.train_batches():
            self.optimizer.zero_grad(set_to_none=True)
            logits = self._forward(inputs, train=True)
            loss = self.method.training_loss(self, logits, labels)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            if train.grad_clip_value is not None:
                torch.nn.utils.clip_grad_value_(params, train.grad_clip_value)
            self.method.after_backward(self, loss, labels)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if train.schedule_unit == "step":
                self.scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
        if train.schedule_unit == "epoch":
            self.scheduler.step()
        train_loss = float(loss_sum) / seen
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss is {train_loss} in epoch {self.epoch + 1} (lr {lr:g})")
        return {
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            "train_acc": float(correct) / seen,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - start,
        }

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Top-1 accuracy and mean loss on `split` ("val" or "test")."""
        self.model.eval()
        inputs, labels = self._split_inputs(split)
        size = self.config.eval.batch_size
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(labels), size):
            logits = self._forward(inputs[start : start + size].to(self.device)).float()
            batch_labels = labels[start : start + size].to(self.device)
            loss_sum += F.cross_entropy(logits, batch_labels, reduction="sum")
            correct += (logits.argmax(1) == batch_labels).sum()
        return {f"{split}_acc": float(correct) / len(labels), f"{split}_loss": float(loss_sum) / len(labels)}

    # ------------------------------------------------- what methods may call
    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled training batches (inputs, labels) on the device, from the trial's generator."""
        inputs, labels = self._split_inputs("train")
        order = self._epoch_order(labels).to(inputs.device)
        size = self.config.train.batch_size
        for start in range(0, len(labels), size):
            rows = order[start : start + size]
            yield inputs[rows].to(self.device, non_blocking=True), labels[rows].to(self.device)

    def fixed_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `count` training batches in the split's stored order, as model inputs
        without augmentation: for measurements that must draw no random number."""
        split, size = self.splits["train"], self.config.train.batch_size
        return [
            (self._prepare(split.images[i : i + size].to(self.device), train=False), split.labels[i : i + size].to(self.device))
            for i in range(0, min(count * size, len(split.labels)), size)
        ]

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training-mode loss of a batch from `train_batches` (augmentation included)."""
        return self.method.training_loss(self, self._forward(inputs, train=True), labels)

    @torch.no_grad()
    def split_features(
        self, split: str, features: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """`features` (default: the model's CLS feature) of every image of a split, in eval
        mode (centre crop, no dropout), as float32 [n, dim]."""
        self.model.eval()
        features = features or self.model.features
        images, size = self.splits[split].images, self.config.eval.batch_size
        with self._autocast():
            chunks = [
                features(self._prepare(images[i : i + size].to(self.device), train=False))
                for i in range(0, len(images), size)
            ]
        return torch.cat(chunks).float()

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def split_labels(self, split: str) -> torch.Tensor:
        """The labels of a split, in its order (that of `split_features`)."""
        return self.splits[split].labels

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Record an event of the method (e.g. "relocation") and pass it to the callbacks."""
        self.events.setdefault(event, []).append(payload)
        for callback in self.callbacks:
            handler = getattr(callback, f"on_{event}", None)
            if handler is not None:
                handler(self, payload)

    def trainable_params(self) -> int:
        return sum(p.numel() for group in self.optimizer.param_groups for p in group["params"])

    # ------------------------------------------------------------- internals
    def _late_test_due(self) -> bool:
        evaluation = self.config.eval
        start = evaluation.late_test_from
        return start is not None and evaluation.test_at_end and "test" in self.splits and self.epoch >= start

    def _autocast(self) -> torch.autocast:
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def _epoch_order(self, labels: torch.Tensor) -> torch.Tensor:
        """The order of an epoch's training examples: a permutation, or with the class-balanced
        sampler as many draws with replacement, each class equally likely."""
        labels = labels.cpu()
        if self.config.train.sampler == "shuffle":
            return torch.randperm(len(labels), generator=self.shuffle)
        weights = 1.0 / torch.bincount(labels).double()[labels]
        return torch.multinomial(weights, len(labels), replacement=True, generator=self.shuffle)

    def _distribution(self) -> list[int] | None:
        counts = getattr(self.model.prompts, "counts", None)
        return counts() if counts is not None else None

    def _forward(self, inputs: torch.Tensor, train: bool = False) -> torch.Tensor:
        with self._autocast():
            if self.feature_cache:
                return self.model.head(inputs)
            return self.model(self._prepare(inputs, train))

    def _prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 images -> the model's float input: crop (and flip) if the data asks, normalise."""
        if self.data.crop is not None:
            images = crop_batch(images, self.data.crop, train, self.shuffle)
        return self.normalize(images)

    def _split_inputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.splits[split].labels
        if self.feature_cache:
            return self.feature_cache[split], labels
        return self.splits[split].images, labels

    def _cache_features(self) -> None:
        """Backbone features of every split, once: valid when nothing before the head trains."""
        for name in self.splits:
            self.feature_cache[name] = self.split_features(name)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rng": rng,
            "history": list(self.history),
            "events": {k: list(v) for k, v in self.events.items()},
        }

    def load_state_dict(self, state: dict[str, Any], branch: bool = False) -> None:
        """Restore a checkpoint of this trial config; with `branch`, of the same config without
        scripted moves (a branch point, see `fit`)."""
        checkpoint.check_belongs(state, self.config.to_dict(), branch=branch)
        self.model.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"]["torch"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.events = {k: list(v) for k, v in state["events"].items()}

    def save_checkpoint(self, path: str | Path) -> Path:
        return checkpoint.save(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path, branch: bool = False) -> None:
        self.load_state_dict(checkpoint.load(path), branch=branch)

