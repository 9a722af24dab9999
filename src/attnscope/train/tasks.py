"""What a training step computes, by the kind of data set: "classification" (and later "captioning").

A task knows how to build the model's data-dependent options, batch samples, compute the loss
of a batch and evaluate a model. The loop in `loop.py` knows nothing else about the data.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from attnscope.errors import InputError
from attnscope.guide.losses import check_applies
from attnscope.registry import Registry
from attnscope.train import guidance
from attnscope.train.config import TrainConfig


class Task(Protocol):
    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        """Options the model needs from the data (e.g. `num_classes`)."""

    def collate(self, samples: list[Any]) -> Any:
        """A batch from a list of samples."""

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss of the batch and summable statistics (`count` images, e.g. `correct`)."""

    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> dict[str, float]:
        """Metrics of `model` (already in eval mode) on `dataset`, unprefixed ("loss", "acc"); the loop names
        them `test_*` for the test split."""


TASKS: Registry[type] = Registry("task")


@TASKS.register("classification")
class Classification:
    """Cross-entropy on logits (B, K), plus λ · an attention-guidance penalty if the config asks; accuracy."""

    def __init__(self, config: TrainConfig) -> None:
        if config.task_cfg:  # the captioning task refuses unknown options too: none is silently ignored
            raise InputError(f"classification takes no task options (--task-opt), got {sorted(config.task_cfg)}; "
                             "the loss is set by --guide, --guide-weight and --guide-region")
        self.config = config
        self.guidance = guidance.build(config)

    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        return {"num_classes": dataset.num_classes}

    def collate(self, samples: list[Any]) -> Any:
        return torch.utils.data.default_collate(samples)

    def check(self, dataset: Dataset) -> None:
        """Fail before the run is written if the guidance cannot read its region off this data."""
        if self.guidance is not None and len(dataset):
            self.guidance.check(self.collate([dataset[0]]))

    def check_model(self, model: nn.Module) -> None:
        """Fail before the run is written if the guide does not apply to the model (e.g. ltpa on smallcnn)."""
        if self.guidance is not None:
            check_applies(self.guidance.spec.name, model)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch[0].to(device), batch[1].to(device)  # (B, C, H, W), (B,)
        if self.guidance is None:
            logits = model(x)  # (B, K)
            return F.cross_entropy(logits, y), {"count": len(y), "correct": int((logits.argmax(1) == y).sum())}
        penalty, logits = self.guidance(model, x, y, batch)
        loss = F.cross_entropy(logits, y) + self.guidance.weight * penalty
        stats = {"count": len(y), "correct": int((logits.argmax(1) == y).sum()),
                 "guide": float(penalty.detach()) * len(y)}
        return loss, stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> dict[str, float]:
        loader = DataLoader(dataset, batch_size=max(batch_size, 256), collate_fn=self.collate)
        loss_sum, correct, count = 0.0, 0, 0
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        return {"loss": loss_sum / count, "acc": correct / count}
