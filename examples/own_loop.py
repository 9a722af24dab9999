"""Attention during training in your own PyTorch loop: a tracker, a guidance loss, and the report.

SmallCNN learns decoy ClutteredDigits, where a corner patch's colour gives the label away in the
training split and is random in the test split. `ats.guide.cam` penalises Grad-CAM mass outside the
digit's box; the tracker records Grad-CAM and saliency on 64 training images as the model learns.

    PYTHONPATH=src python examples/own_loop.py --out runs/own_loop               # guided, λ = 1
    PYTHONPATH=src python examples/own_loop.py --out runs/own_loop_plain --guide-weight 0
    attnscope report runs/own_loop --overwrite                                  # (also written at the end)
    PYTHONPATH=src python examples/own_loop.py --out runs/own_loop_faith --faithfulness   # + causal references

With --faithfulness each snapshot also records how faithful the maps are (`ats.track.CausalMeasures`): their rank
correlation with the logit's drop when each cell of a 4 × 4 grid is blanked out, and the logit's drop when the
decoy patch, the digit or the fragments are removed from the probe images (the exact counterfactual).
"""

import argparse

import torch
import torch.nn.functional as F

import attnscope as ats

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="runs/own_loop")
p.add_argument("--n", type=int, default=4000, help="training images")
p.add_argument("--n-test", type=int, default=1000, help="test images, with a random decoy and clean")
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--size", type=int, default=64, help="image size (digits 16-28 px; 10-16 px below 64)")
p.add_argument("--widths", default="16,32,64,128", help="SmallCNN channels per block")
p.add_argument("--probe", type=int, default=64, help="training images the tracker explains")
p.add_argument("--guide-weight", type=float, default=1.0, help="λ of ats.guide.cam; 0: no guidance")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--faithfulness", action="store_true", help="also record blank-out and part-removal references")
args = p.parse_args()

shape = {"size": args.size, **({} if args.size >= 64 else {"digit_size": [10, 16]})}
train = ats.data.ClutteredDigits("train", args.n, decoy=True, **shape)
samples = [train[i] for i in range(len(train))]  # generated once, reused every epoch
tests = {name: ats.data.ClutteredDigits("test", args.n_test, decoy=decoy, **shape)
         for name, decoy in (("test_acc", True), ("clean_test_acc", False))}
tests = {k: (torch.stack([s.image for s in d]), torch.tensor([s.label for s in d])) for k, d in tests.items()}

torch.manual_seed(args.seed)
model = ats.models.get("smallcnn", num_classes=10, widths=[int(w) for w in args.widths.split(",")])
loader = torch.utils.data.DataLoader(samples, batch_size=args.batch_size, shuffle=True)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=args.epochs * len(loader), pct_start=0.2)
causal = ats.track.CausalMeasures(grid=4, parts=ats.track.parts_from(train, args.probe)) if args.faithfulness else None
tracker = ats.track.AttentionTracker(args.out, ats.track.probe_from(train, args.probe), ("gradcam", "saliency"),
                                     every=max(1, len(loader) // 3), causal=causal)

step = 0
tracker.epoch_end(model, epoch=0, step=0)  # the untrained model
for epoch in range(args.epochs):
    for x, y, box, *_ in loader:
        model.train()
        penalty, logits = ats.guide.cam(model, x, y, allowed=box)  # one forward: the logits come with the penalty
        loss = F.cross_entropy(logits, y) + args.guide_weight * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        tracker.log(step=step, loss=loss.item(), guide=penalty.item(), train_acc=(logits.argmax(1) == y).float().mean())
        tracker.step(model, step=step, epoch=step / len(loader))  # records every `every` steps
    model.eval()
    with torch.no_grad():
        accuracy = {k: (model(x).argmax(1) == y).float().mean().item() for k, (x, y) in tests.items()}
    tracker.log(step=step, **accuracy)
    tracker.epoch_end(model, epoch=epoch + 1, step=step)
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    if causal is not None:
        last = tracker.store.snapshots[-1]["measures"]
        print("  faithfulness: " + ", ".join(f"{k} {last[k]:.3f}" for k in ("gradcam/blankout_rho",
              "saliency/blankout_rho", "parts/drop@decoy", "parts/drop@digit") if last.get(k) is not None))
tracker.close()
print(f"wrote {ats.report.build(args.out, title=f'own loop, cam guide λ = {args.guide_weight}')}")
