"""Training on permuted labels until the network has memorised them (the data randomisation test).

Uses `fit` with a callback that measures the accuracy on the training set in eval mode after each
epoch and stops the run as soon as it reaches the target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attnscope.train.config import TrainConfig
from attnscope.train.loop import Run, fit


class FitAccuracy:
    """Callback: accuracy on the training set in eval mode after each epoch, recorded as `fit_acc`;
    stops the run once it reaches `target`."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_epoch_end(self, run: Run) -> dict[str, Any]:
        acc = run.task.evaluate(run.model, run.train_data, run.device, run.config.batch_size)["acc"]
        run.stop = acc >= self.target
        return {"fit_acc": acc}


def permuted_config(config: TrainConfig, label_seed: int = 0) -> TrainConfig:
    """`config` with its data set wrapped in data set "permuted" (training labels permuted)."""
    data_cfg = {"base": config.data, "label_seed": label_seed, **config.data_cfg}
    return dataclasses.replace(config, data="permuted", data_cfg=data_cfg)


def fit_permuted(config: TrainConfig, target_acc: float = 0.95, label_seed: int = 0) -> tuple[Run, bool]:
    """Train `config`'s model on its data with permuted training labels (Adebayo et al. 2018, §5) for at
    most `config.epochs` epochs, stopping once the eval-mode training accuracy reaches `target_acc`.

    Returns the run (its `history` has `fit_acc` and the test accuracy on true labels) and whether
    the target was reached. Use a small `config.n`: memorising noise takes many epochs.
    """
    run = fit(permuted_config(config, label_seed), callbacks=(FitAccuracy(target_acc),))
    return run, run.history[-1]["fit_acc"] >= target_acc
