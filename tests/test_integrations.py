"""The Lightning and Hugging Face Trainer callbacks: a tiny model trained a few steps on CPU, then its store
(snapshots at the right steps, maps equal to explain of the trained model, the loop's scalars) and report."""

from __future__ import annotations

import copy
import csv

import lightning.pytorch as pl  # the dev extra holds lightning and transformers: these tests are never skipped
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from attnscope import data, models
from attnscope.explain import explain
from attnscope.report import build
from attnscope.track import TrackStore, probe_from

SIZE = dict(size=32, digit_size=[10, 16])


def _close_to_explain(store: TrackStore, step: int, model: nn.Module, methods) -> None:
    probe = store.probe()
    expected = explain(copy.deepcopy(model).eval(), probe.images, methods, targets=probe.labels)
    for key, values in store.maps(step).items():
        peak = expected[key].values.abs().flatten(1).amax(1)[:, None, None]
        assert ((values - expected[key].values).abs() <= 2**-11 * peak + 1e-12).all(), key


class Digits(pl.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(data.get("clutter-decoy", "train", 64, **SIZE), batch_size=16)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(data.get("clutter-decoy", "test", 16, **SIZE), batch_size=16)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = models.get("smallcnn", num_classes=10, widths=[4, 8])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def _trainer(tmp_path, *callbacks, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(tmp_path / "logs"),
                      callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


def test_lightning_callback_records_the_store_logs_the_measures_and_resumes(tmp_path):
    from attnscope.integrations.lightning import AttentionTrackerCallback

    pl.seed_everything(0)
    module = Classifier()
    callback = AttentionTrackerCallback(("gradcam", "saliency"), probe=8, folder=tmp_path / "run", every_n_steps=3)
    trainer = _trainer(tmp_path, callback, max_steps=4, default_root_dir=tmp_path)  # one epoch
    trainer.fit(module, datamodule=Digits())
    store = TrackStore.open(tmp_path / "run" / "track")
    assert [(e["step"], e["kind"], e["epoch"]) for e in store.snapshots] == [(0, "epoch", 0), (3, "step", 0.75),
                                                                             (4, "epoch", 1)]
    _close_to_explain(store, 4, module, ("gradcam", "saliency"))
    probe = probe_from(data.get("clutter-decoy", "test", 8, **SIZE), 8)  # the datamodule's validation images
    assert torch.equal(store.probe().images, probe.images) and set(store.probe().regions) == {"box", "decoy"}
    assert "validation" not in store.index["probe"]["source"] and "val data" in store.index["probe"]["source"]
    rows = store.scalars()
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["train_loss"] > 0 for r in rows)
    with open(next((tmp_path / "logs").rglob("metrics.csv")), newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("attnscope/gradcam/energy_box@box")]
    assert [int(r["step"]) for r in logged] == [0, 3, 4]
    assert float(logged[-1]["attnscope/gradcam/energy_box@box"]) == pytest.approx(
        store.snapshots[-1]["measures"]["gradcam/energy_box@box"])
    page = build(tmp_path / "run").read_text()
    assert "train_loss" in page and "of the datamodule" in page

    # Resume from the checkpoint of that epoch for a second one: the store continues where it stopped. (Resumed
    # with max_steps instead of max_epochs, Lightning 2.6 runs one more batch in the finished epoch and ends it again.)
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    callback = AttentionTrackerCallback(("gradcam", "saliency"), probe=8, folder=tmp_path / "run", every_n_steps=3)
    trainer = _trainer(tmp_path, callback, max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=Digits(), ckpt_path=ckpt)
    store = TrackStore.open(tmp_path / "run" / "track")
    assert [(e["step"], e["kind"]) for e in store.snapshots] == [(0, "epoch"), (3, "step"), (4, "epoch"),
                                                                 (6, "step"), (8, "epoch")]
    _close_to_explain(store, 8, module, ("gradcam", "saliency"))


class PixelClassifier(nn.Module):
    """A Hugging Face-style image classifier: forward(pixel_values, labels=None) → {"loss", "logits"}."""

    def __init__(self) -> None:
        super().__init__()
        self.net = models.get("smallcnn", num_classes=10, widths=[4, 8])

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


class PixelDigits(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.digits = data.get("clutter", "train", n, **SIZE)

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.digits[i]
        return {"pixel_values": sample.image, "labels": torch.tensor(sample.label)}


def test_hugging_face_trainer_callback_records_the_same_store(tmp_path):
    from attnscope.integrations.huggingface import AttentionTrackerCallback

    torch.manual_seed(0)
    model = PixelClassifier()
    test = data.get("clutter", "test", 8, **SIZE)
    probe = probe_from(test, 8)
    callback = AttentionTrackerCallback(("gradcam",), probe=(probe.images, probe.labels, probe.regions["box"]),
                                        every_n_steps=2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=4, per_device_train_batch_size=16,
                                          num_train_epochs=2, logging_steps=1, save_strategy="no", report_to=[],
                                          use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=PixelDigits(32), callbacks=[callback]).train()
    store = TrackStore.open(tmp_path / "hf" / "track")
    assert [(e["step"], e["kind"], e["epoch"]) for e in store.snapshots] == [(0, "epoch", 0), (2, "epoch", 1),
                                                                             (4, "epoch", 2)]
    _close_to_explain(store, 4, model, ("gradcam",))
    rows = store.scalars()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in rows if "loss" in r)
    assert "loss" in build(tmp_path / "hf").read_text()
