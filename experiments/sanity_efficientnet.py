"""Adebayo et al.'s sanity checks (NeurIPS 2018) on a real ImageNet model: EfficientNet-Lite0 on photos.

1. cascading and independent model-parameter randomisation of EfficientNet-Lite0 (ImageNet weights,
   `attnscope.models.get("efficientnet_lite0")`) on the 9 annotated objects of the `photos` data
   (scikit-image's bundled photos at 224 px), blocks at name depth 3 (the classifier, the head's
   BatchNorm and 1×1 conv, the seven stages of inverted-residual blocks, the stem's BatchNorm and conv);
2. the data test, within a CPU budget: no ImageNet here, so only the classifier is retrained. Crops of the
   bundled scikit-image photos are labelled with the pretrained model's own top-1 class ("true" labels:
   what the network was trained to say); one head is fitted to those labels and one to a random permutation
   of them (the backbone frozen and shared), and their maps are compared (also the original head's with the
   permuted head's). This randomises what the head learnt, not the features: a weaker test than the paper's.

Maps explain each model's predicted class (the paper's choice, the library's default). Every test writes its
tidy table (JSON) to `--results` when it finishes and is skipped when that file is there; figures (similarity
against depth as the paper's Fig. 4, map grids as its Fig. 2) go to `--out`.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/sanity_efficientnet.py --out runs/sanity_lite0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnscope import fileio, models, sanity
from attnscope.data.photos import Photos
from attnscope.explain import Explainer
from attnscope.report import figures
from attnscope.report import sanity as sanity_report

METHODS = ("saliency", "gradcam", "guided-backprop", "guided-gradcam", "ig", "smoothgrad", "lrp")
# scikit-image photos that ship with it (no download): the sources of the data test's crops
CROP_SOURCES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "horse", "hubble_deep_field",
                "immunohistochemistry", "moon", "page", "text", "clock", "grass", "gravel", "brick", "retina",
                "colorwheel", "cell", "stereo_motorcycle")


class CappedReLU(nn.Module):
    """ReLU6 written as min(ReLU(x), 6): the same forward, but through an `nn.ReLU`, which is what attnscope's
    guided-backprop rewrite acts on; the backward is then ReLU6's guided rule 1[0 < x < 6] · max(R, 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x).clamp(max=6.0)


def relu6_as_relu(model: nn.Module) -> int:
    """Replace every nn.ReLU6 of `model` by `CappedReLU` in place; how many were replaced."""
    found = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.ReLU6)]
    for parent, name in found:
        setattr(parent, name, CappedReLU())
    return len(found)


def photos() -> tuple[torch.Tensor, list[str]]:
    """The 9 annotated photo objects at 224 px (B, 3, 224, 224) and their names."""
    ds = Photos(224)
    return torch.stack([ds[i].image for i in range(len(ds))]), [ds[i].name for i in range(len(ds))]


def options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {"ig": {"steps": args.ig_steps}, "smoothgrad": {"n": args.smoothgrad_n}}


def randomisation(args: argparse.Namespace, mode: str, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """One model-parameter randomisation test; its figures go to `--out`."""
    how = Explainer(args.methods, options=options(args), batch_size=args.batch_size)
    result = sanity.model_randomization(model, x, how, mode=mode, progress=True,
                                        randomisation=sanity.Randomisation(blocks=3, seed=args.seed),
                                        comparison=sanity.Comparison(keep=args.keep))
    sanity_report.write(result, Path(args.out) / mode, prefix=mode)
    for i in range(min(args.keep, len(x))):
        figures.save_png(Path(args.out) / mode / f"abs_maps_{i}.png", abs_grid(result.images[i], result.maps, i))
    return {"meta": result.meta, "steps": result.steps, "rows": result.rows()}


def abs_grid(image: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], index: int, tile: int = 112) -> np.ndarray:
    """The paper's Fig. 2 layout: rows = methods, columns = the image, the trained map and each step; every
    map drawn as |map| clipped at its 99th percentile and min–max normalised, in grey."""
    from PIL import Image, ImageDraw

    cols, label_w, label_h = list(maps), 110, 14
    methods = list(maps[cols[0]])
    canvas = np.full((label_h + len(methods) * (tile + 2), label_w + (len(cols) + 1) * (tile + 2), 3), 255, np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for j, name in enumerate(["image", *cols]):
        draw.text((label_w + j * (tile + 2) + 1, 1), name.replace("net.", "")[-18:], fill=(0, 0, 0))
    for i, method in enumerate(methods):
        draw.text((2, label_h + i * (tile + 2) + tile // 2 - 5), method, fill=(0, 0, 0))
    canvas = np.asarray(pil).copy()
    photo = np.asarray(Image.fromarray(figures.to_rgb(image)).resize((tile, tile), Image.BILINEAR))
    for i, method in enumerate(methods):
        y = label_h + i * (tile + 2)
        canvas[y : y + tile, label_w : label_w + tile] = photo
        for j, name in enumerate(cols, 1):
            m = maps[name][method][index].abs()
            m = m.clamp(max=float(m.flatten().quantile(0.99)))  # a few pixels would otherwise set the scale
            m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
            grey = Image.fromarray((255 * m.numpy()).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
            x0 = label_w + j * (tile + 2)
            canvas[y : y + tile, x0 : x0 + tile] = np.asarray(grey)[..., None]
    return canvas


def crops(n: int, seed: int) -> torch.Tensor:
    """`n` random crops (a quarter to all of the shorter side, random aspect 3:4–4:3, flipped at random) of the
    bundled photos, at 224 px (n, 3, 224, 224)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    sources = []
    for name in CROP_SOURCES:
        a = getattr(skimage.data, name)()
        a = np.asarray(a[0] if isinstance(a, tuple) else a)  # stereo_motorcycle: (left, right, disparity)
        a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
        sources.append(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255)
    out = []
    for _ in range(n):
        img = sources[int(rng.integers(len(sources)))]
        h, w = img.shape[1:]
        side = float(rng.uniform(0.25, 1.0)) * min(h, w)
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        ch, cw = min(h, int(side / np.sqrt(aspect))), min(w, int(side * np.sqrt(aspect)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[None, :, y : y + ch, x : x + cw]
        crop = F.interpolate(crop, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)[0]
        out.append(crop.flip(2) if rng.random() < 0.5 else crop)
    return torch.stack(out).clamp(0, 1)


@torch.no_grad()
def pooled_features(model: nn.Module, x: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's inputs (N, 1280) and the pretrained model's top-1 classes (N,) for images `x`."""
    feats, classes = [], []
    for start in range(0, len(x), batch):
        xb = (x[start : start + batch] - model.mean) / model.std
        f = model.net.forward_head(model.net.forward_features(xb), pre_logits=True)  # (b, 1280)
        feats.append(f)
        classes.append(model.net.classifier(f).argmax(1))
    return torch.cat(feats), torch.cat(classes)


def fit_head(features: torch.Tensor, labels: torch.Tensor, seed: int, target_acc: float, max_epochs: int
             ) -> tuple[nn.Linear, dict[str, float]]:
    """A freshly initialised 1280 → 1000 linear head fitted (Adam, full batch) until its training accuracy on
    `labels` reaches `target_acc` (or `max_epochs`)."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], 1000)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    acc, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007
        loss = F.cross_entropy(head(features), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = float((head(features).argmax(1) == labels).float().mean())
        if acc >= target_acc:
            break
    return head, {"train_acc": acc, "epochs": epoch}


def with_head(model: nn.Module, head: nn.Linear) -> nn.Module:
    """A copy of `model` whose classifier is `head` (the backbone's weights shared by value)."""
    import copy

    other = copy.deepcopy(model)
    other.net.classifier = copy.deepcopy(head)
    return other.eval()


def data_test(args: argparse.Namespace, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Heads fitted to the model's own labels and to permuted ones; maps of the three models compared."""
    c = crops(args.crops, args.seed)
    features, labels = pooled_features(model, c)
    permuted = labels[torch.from_numpy(np.random.default_rng(args.seed).permutation(len(labels)))]
    true_head, true_info = fit_head(features, labels, args.seed, 1.0, args.head_epochs)
    perm_head, perm_info = fit_head(features, permuted, args.seed, args.target_acc, args.head_epochs)
    true_model, perm_model = with_head(model, true_head), with_head(model, perm_head)
    info = {"crops": args.crops, "distinct_labels": int(labels.unique().numel()),
            "agreement_true_permuted_labels": float((labels == permuted).float().mean()),
            "true_head": true_info, "permuted_head": perm_info}
    out: dict[str, Any] = {"info": info}
    for name, reference in (("true-head", true_model), ("original", model)):
        how = Explainer(args.methods, options=options(args), batch_size=args.batch_size)
        result = sanity.data_randomization(reference, perm_model, x, how, comparison=sanity.Comparison(keep=args.keep),
                                           info=info)
        sanity_report.write(result, Path(args.out) / f"data-{name}", prefix="data")
        out[name] = {"meta": result.meta, "rows": result.rows()}
    return out


def summary(results: dict[str, Any], metric: str = "spearman_abs") -> str:
    """Markdown tables of `metric` (mean over images) per method and step, for each finished test."""
    lines = []
    for test, r in results.items():
        parts = [("", r)] if "rows" in r else [(f" ({k})", v) for k, v in r.items()
                                               if isinstance(v, dict) and "rows" in v]
        for suffix, part in parts:
            rows = [row for row in part["rows"] if row["metric"] == metric]
            steps = list(dict.fromkeys(row["block"] for row in rows))
            methods = list(dict.fromkeys(row["method"] for row in rows))
            cell = {(row["method"], row["block"]): row["mean"] for row in rows}
            lines += [f"**{test}{suffix}**, {metric}", "", "| step | " + " | ".join(methods) + " |",
                      "| --- " * (len(methods) + 1) + "|"]
            lines += [f"| {s} | " + " | ".join(f"{cell[(m, s)]:.2f}" for m in methods) + " |" for s in steps]
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/sanity_lite0")
    p.add_argument("--results", default="experiments/results/sanity_efficientnet")
    p.add_argument("--tests", nargs="+", default=["cascading", "independent", "data"],
                   choices=["cascading", "independent", "data"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--ig-steps", type=int, default=16)
    p.add_argument("--smoothgrad-n", type=int, default=16)
    p.add_argument("--keep", type=int, default=9, help="images whose maps are drawn")
    p.add_argument("--crops", type=int, default=1000, help="data test: training crops for the heads")
    p.add_argument("--target-acc", type=float, default=0.95)
    p.add_argument("--head-epochs", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=None, help="images per explain call (memory)")
    p.add_argument("--images", type=int, default=None, help="only the first N photos (a smoke run)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = models.get("efficientnet_lite0").eval()
    x, names = photos()
    x = x[: args.images]
    with torch.no_grad():
        before = model(x)
        replaced = relu6_as_relu(model)  # EfficientNet-Lite's ReLU6s: Guided Backprop's rewrite needs nn.ReLU
        assert torch.equal(before, model(x)) and replaced == 33, replaced
    results_dir = Path(args.results)
    for test in args.tests:
        path = results_dir / f"{test}.json"
        if path.exists():
            continue
        record = data_test(args, model, x) if test == "data" else randomisation(args, test, model, x)
        fileio.write_json(path, {"command": vars(args), "photos": names[: len(x)], **record})
        print(f"{test} done", flush=True)
    done = {t: json.loads((results_dir / f"{t}.json").read_text()) for t in args.tests
            if (results_dir / f"{t}.json").exists()}
    text = summary(done) + "\n" + summary(done, "spearman_signed") + "\n" + summary(done, "ssim")
    fileio.write_text(results_dir / "table.md", text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
