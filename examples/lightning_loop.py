"""Attention during training with PyTorch Lightning: `AttentionTrackerCallback` and a guidance loss in a module.

The same task as `own_loop.py` (decoy ClutteredDigits, `ats.guide.cam`), written as a LightningModule and
a LightningDataModule; the callback takes its probe from the datamodule's validation images, records every
N steps and every epoch, and sends the measures to the trainer's logger (here a CSV file).

    PYTHONPATH=src python examples/lightning_loop.py --out runs/lightning_loop
    attnscope report runs/lightning_loop --overwrite                            # (also written at the end)
"""

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

import attnscope as ats
from attnscope.integrations.lightning import AttentionTrackerCallback


class Digits(pl.LightningDataModule):
    def __init__(self, n: int, n_val: int, size: int, batch_size: int) -> None:
        super().__init__()
        shape = {"size": size, **({} if size >= 64 else {"digit_size": [10, 16]})}
        self.train = [s for s in ats.data.ClutteredDigits("train", n, decoy=True, **shape)]
        self.val = ats.data.ClutteredDigits("test", n_val, decoy=True, **shape)
        self.batch_size = batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=256)


class Classifier(pl.LightningModule):
    def __init__(self, widths: list[int], guide_weight: float) -> None:
        super().__init__()
        self.net, self.guide_weight = ats.models.get("smallcnn", num_classes=10, widths=widths), guide_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        penalty, logits = ats.guide.cam(self.net, batch.image, batch.label, allowed=batch.box)
        loss = F.cross_entropy(logits, batch.label) + self.guide_weight * penalty
        self.log_dict({"train_loss": loss, "guide": penalty}, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("test_acc", (self(batch.image).argmax(1) == batch.label).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=5e-4)


p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="runs/lightning_loop")
p.add_argument("--n", type=int, default=4000)
p.add_argument("--n-val", type=int, default=1000)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--size", type=int, default=64)
p.add_argument("--widths", default="16,32,64,128")
p.add_argument("--probe", type=int, default=64)
p.add_argument("--every", type=int, default=20, help="also record every N optimizer steps")
p.add_argument("--guide-weight", type=float, default=1.0)
args = p.parse_args()

pl.seed_everything(0)
tracking = AttentionTrackerCallback(("gradcam", "saliency"), probe=args.probe, folder=args.out,
                                    every_n_steps=args.every)
trainer = pl.Trainer(accelerator="cpu", max_epochs=args.epochs, callbacks=[tracking], default_root_dir=args.out,
                     logger=pl.loggers.CSVLogger(args.out, name="logs"), enable_checkpointing=False,
                     log_every_n_steps=1, enable_model_summary=False)
trainer.fit(Classifier([int(w) for w in args.widths.split(",")], args.guide_weight),
            datamodule=Digits(args.n, args.n_val, args.size, args.batch_size))
print(f"wrote {ats.report.build(args.out, title='Lightning loop')}")
