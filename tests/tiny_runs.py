"""Tiny tracked training runs shared by the tracker, guidance and report tests (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# 32 px decoy ClutteredDigits, a 2-block SmallCNN: 3 steps per epoch of 32 images.
TINY: dict[str, Any] = dict(
    model="smallcnn", data="clutter-decoy", n=96, n_test=16, epochs=3, batch_size=32, quiet=True,
    model_cfg={"widths": [4, 8]}, data_cfg={"size": 32, "digit_size": [10, 16]},
)
METHODS = ("cam", "gradcam", "saliency")


def tiny_config(out: Path, **changes: Any):
    from attnscope.train import TrainConfig

    return TrainConfig(**{**TINY, "out": str(out), **changes})


def tracked_run(out: Path, every: int | None = 2, probe: int = 8, methods=METHODS, until_epoch: int | None = None,
                **changes: Any):
    """Train the tiny run with a tracker; returns (run, tracker)."""
    from attnscope.track import FitTracker
    from attnscope.train import fit

    tracker = FitTracker(list(methods), probe=probe, every=every)
    return fit(tiny_config(out, **changes), callbacks=(tracker,), until_epoch=until_epoch), tracker


# Markup in every field a report reads: it must come out as text, never as an element or a handler.
HOSTILE = "\"'><img src=x onerror=alert(1)></script><script>alert(2)</script><svg onload=alert(3)>"


def _probe(p: int, size: int = 16, regions: tuple[str, ...] = ("box",)):
    import torch

    from attnscope.track.store import Probe

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[2, 3, 10, 12]] * p)
    return Probe(torch.rand(p, 3, size, size, generator=g), torch.arange(p) % 10, {r: boxes for r in regions})


def hostile_run(out: Path) -> Path:
    """A run folder written by hand with `HOSTILE` in every name and text a report shows."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    from attnscope import fileio
    from attnscope.track.store import TrackStore

    x = HOSTILE
    fileio.write_json(out / "config.json", {x: x, "model": x, "data": x, "guide": x, "out": x,
                                            "classes": [f"{x}{i}" for i in range(10)], "nested": {x: [x]}})
    rows = [{"epoch": e, "test_acc": 0.5, "lr": float("nan") if e == 2 else 0.1, x: 0.3, "note": x} for e in (1, 2, 3)]
    fileio.write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    settings = {"methods": [x, "saliency"], "split": x, "targets": x}
    store = TrackStore.create(out / "track", settings, _probe(4, regions=(x,)))
    g = torch.Generator().manual_seed(1)
    for step in (0, 1):
        maps = {x: torch.randn(4, 16, 16, generator=g), "saliency": torch.rand(4, 16, 16, generator=g)}
        if step:
            maps["saliency"][1] = 0.0  # an all-zero map at the last snapshot: flagged in the report
        store.add({"step": step, "epoch": step, "kind": "epoch" if step else x,
                   "measures": {f"{x}/energy_box@box": 0.5, x: 0.2, "saliency/entropy": float("nan")}},
                  maps, torch.arange(4))
    fileio.write_json(out / "sanity" / "cascading.json", {"meta": {"test": x}, "steps": [x, "fc"], "rows": [
        {"method": m, "block": b, "metric": x, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
        for m in (x, "gradcam") for b in (x, "fc")]})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "sanity" / "cascading_maps_0.png")
    fileio.write_json(out / "bench" / "leaderboard.json", {"rows": [{"method": x, "kind": x, x: 0.5},
                                                                    {"method": "ig", "kind": "gradient", x: x}]})
    fileio.write_json(out / "summary.json", {"methods": {x: {"pointing": 0.5, x: x}}})
    (out / "captions" / "attention").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(out / "captions" / "attention" / "a.png")
    fileio.write_json(out / "captions" / "captions.json", {"images": [
        {"image": x, "caption": x, "words": [x], "references": [x, x], "strip": "attention/a.png"}]})
    return out


def scaled_run(out: Path, epochs: int = 50, methods: int = 6, probe: int = 64, size: int = 64, noisy: int = 8) -> Path:
    """A tracked run of `epochs` epochs, `methods` map keys and `probe` images, written directly into a store
    without training. Maps: a blob around the box; the first `noisy` images (those a report shows) with noise
    as strong as saliency's, signed for every other key; the rest smooth, so the store is quick to write."""
    import json

    import torch

    from attnscope import fileio
    from attnscope.track.store import TrackStore

    names = ["gradcam", "saliency", "ig", "guided-backprop", "inputxgrad", "cam", "smoothgrad", "occlusion"][:methods]
    pr = _probe(probe, size)
    store = TrackStore.create(out / "track", {"methods": names, "split": "test", "targets": "label"}, pr,
                              steps_per_epoch=10)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    for e in range(epochs + 1):
        width = 2.0 + size / 8 * (1 - e / epochs)
        blob = torch.exp(-((xx - 6) ** 2 + (yy - 7) ** 2) / (2 * width**2))  # (H, W)
        maps = {}
        for k, n in enumerate(names):
            m = blob.expand(probe, size, size).clone() - (k % 2) * 0.1
            m[:noisy] += (0.3 if k % 2 else 0.05) * torch.randn(noisy, size, size, generator=g)
            maps[n] = m
        measures = {f"{n}/{m}": float(torch.rand(1, generator=g)) for n in names
                    for m in ("pointing@box", "energy_box@box", "entropy", "change")}
        store.add({"step": e * 10, "epoch": e, "kind": "epoch", "measures": {**measures, "probe_acc": e / epochs}},
                  maps, pr.labels)
    rows = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "lr": 1e-3 * (1 - e / epochs),
             "train_acc": 1 - 1 / e, "test_acc": 1 - 1.1 / e} for e in range(1, epochs + 1)]
    fileio.write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    fileio.write_json(out / "config.json", {"model": "smallcnn", "data": "clutter", "epochs": epochs, "out": str(out)})
    return out


# The command-line form of a tiny 32 px SmallCNN run (add --out and --epochs): seconds per epoch.
TINY_ARGS = ["--n", "64", "--n-test", "32", "--batch-size", "32", "--quiet", "--model-opt", "widths=[4,8]",
             "--data-opt", "size=32", "--data-opt", "digit_size=[10,16]"]


def full_run(out: Path) -> Path:
    """A run folder with every section a report shows, made by the library the way the commands make them: the
    demo's photo part (EfficientNet-Lite0, Grad-CAM only; when the `pretrained` extra is there), a tracked tiny
    run, a demo summary with its labelled grid, a sanity check with its map grid, a leaderboard of every group."""
    import torch

    from attnscope import data, fileio
    from attnscope.cli import demo_photos
    from attnscope.evaluate import Settings, leaderboard
    from attnscope.report import figures
    from attnscope.report import sanity as sanity_files
    from attnscope.report.labels import probabilities, row_labels
    from attnscope.sanity import Comparison, model_randomization

    run, _ = tracked_run(out)
    if demo_photos.available() is None:
        demo_photos.run_photos(out / "photos", quiet=True, methods=("gradcam",))
    test = data.get("clutter-decoy", "test", 4, size=32, digit_size=(10, 16))
    x = torch.stack([s.image for s in test])
    y, boxes = torch.tensor([s.label for s in test]), torch.stack([s.box for s in test])
    model = run.model.eval()
    board = leaderboard(model, x, y, boxes, how=("gradcam", "saliency"), metrics="all",
                        settings=Settings(calibration=("random",), keep_maps=True))
    fileio.write_json(out / "bench" / "leaderboard.json", {"rows": board.rows})
    fileio.write_json(out / "summary.json", {"probe_images": 4, "methods": {
        r["method"]: {"pointing": r["pointing"], "energy_in_box": r["energy_box"], "ms_per_image": r["ms_per_image"]}
        for r in board.rows}, "skipped": {"rise": "4,000 masked passes per image"},
        "commands": {"rise": f"attnscope explain --checkpoint {out} --images clutter --methods rise --out runs/rise"}})
    with torch.no_grad():
        probs = probabilities(model(x))
    figures.save_png(out / "grid.png", figures.grid(x, board.maps, boxes, zoom=4, rows=row_labels(y, None, probs, y)))
    randomised = model_randomization(model, x[:2], ("gradcam", "saliency"), comparison=Comparison(keep=1))
    sanity_files.write(randomised, out / "sanity")
    image_text_parts(out)
    return out


def image_text_parts(out: Path) -> None:
    """What the image–text commands add to a report, made by those commands on tiny models trained for one
    epoch: `explain --text` of a clip-tiny (the prompt tokens, out/text) and `caption --methods` of a
    captioner-tiny (per-word strips, out/captions)."""
    from attnscope.cli import main

    scenes = ["--data", "scenes", "--data-opt", "size=48", "--data-opt", "digit_size=[10,14]"]
    small = ["--model-opt", "image_size=48", "--model-opt", "dim=16", "--model-opt", "depth=1", "--model-opt",
             "heads=2"]
    train = ["--n", "16", "--n-test", "8", "--epochs", "1", "--batch-size", "8", "--quiet"]
    main(["train", "--model", "clip-tiny", *scenes, *small, "--model-opt", "text_dim=16", "--model-opt",
          "embed_dim=8", *train, "--out", str(out / "models" / "clip")])
    main(["explain", "--model", str(out / "models" / "clip"), "--images", "scenes", "--size", "48", "--n", "2",
          "--text", "a red three", "--text", "a blue seven left of a green two", "--methods", "gradcam",
          "--token-methods", "inputxgrad,chefer-mm", "--out", str(out / "text"), "--quiet"])
    main(["train", "--model", "captioner-tiny", *scenes, *small, "--model-opt", "decoder_depth=1", *train,
          "--out", str(out / "models" / "captioner")])
    main(["caption", "--checkpoint", str(out / "models" / "captioner"), "--images", "scenes", "--n", "2",
          "--methods", "alpha,gradcam", "--out", str(out / "captions"), "--quiet"])
