"""Training on permuted labels until the network has memorised them (the data randomisation test).

Uses `fit` unchanged: it trains one epoch at a time (`until_epoch`, then `resume`) and stops as
soon as the accuracy on the training set, measured in eval mode after the epoch, reaches the target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attnscope.train.config import TrainConfig
from attnscope.train.loop import Run, fit


class FitAccuracy:
    """Callback: accuracy on the training set in eval mode after each epoch, recorded as `fit_acc`."""

    def on_epoch_end(self, run: Run) -> dict[str, Any]:
        metrics = run.task.evaluate(run.model, run.train_data, run.device, run.config.batch_size)
        return {"fit_acc": metrics["test_acc"]}


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
    config = permuted_config(config, label_seed)
    run: Run | None = None
    for epoch in range(1, config.epochs + 1):
        run = fit(dataclasses.replace(config, resume=epoch > 1), callbacks=(FitAccuracy(),), until_epoch=epoch)
        if run.history[-1]["fit_acc"] >= target_acc:
            return run, True
    assert run is not None
    return run, False
