"""`attnscope demo`: train SmallCNN on ClutteredDigits while tracking two methods' maps, explain a probe
set with every post-hoc method, score the maps against the digits' boxes, and write `runs/demo/`
with its `report.html`.

The folder is built under a temporary name and renamed at the end, so a failed or interrupted
demo never leaves a half-written `runs/demo/`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import torch

from attnscope import console, fileio
from attnscope.cli import cli

# The demo's training settings (README: measured accuracy and wall time on 2 CPU cores).
DEMO_TRAIN = dict(model="smallcnn", data="clutter", n=8000, n_test=2000, epochs=6, batch_size=64, lr=3e-3)
POST_HOC = ("cam", "gradient", "perturbation")
TRACKED = ("gradcam", "saliency")  # recorded at every epoch end during the demo's training


@cli.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Folder to (re)write.")
@click.option("--probe", default=16, show_default=True, type=int, help="Test images to explain.")
@click.option("--epochs", default=DEMO_TRAIN["epochs"], show_default=True, type=int)
@click.option("--n", "n", default=DEMO_TRAIN["n"], show_default=True, type=int, help="Training samples.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", is_flag=True)
def demo_command(out: str, probe: int, epochs: int, n: int, seed: int, quiet: bool) -> None:
    """Train, explain, score and draw on the built-in ClutteredDigits, in a few minutes on a CPU."""
    final = Path(out)
    with fileio.atomic_dir(final) as partial:
        summary = run_demo(partial, probe=probe, epochs=epochs, n=n, seed=seed, quiet=quiet)
        config = json.loads((partial / "config.json").read_text())
        fileio.write_json(partial / "config.json", {**config, "out": str(final)})  # where the run now lives
    _print_summary(summary)
    click.echo(f"wrote {final}/ (report.html, grid.png, summary.json, summary.md, model.safetensors, "
               "maps.safetensors, track/)")


def run_demo(out: Path, probe: int, epochs: int, n: int, seed: int, quiet: bool) -> dict[str, Any]:
    """The demo's steps; returns the summary it writes."""
    from attnscope import data
    from attnscope.track import FitTracker
    from attnscope.train import TrainConfig, fit

    started = time.perf_counter()
    config = TrainConfig(**{**DEMO_TRAIN, "epochs": epochs, "n": n}, seed=seed, out=str(out), quiet=quiet)
    run = fit(config, callbacks=(FitTracker(TRACKED, probe=probe),))
    train_s = time.perf_counter() - started

    test = data.get("clutter", "test", config.n_test, seed=config.data_seed)
    samples = [test[i] for i in range(probe)]
    images = torch.stack([s.image for s in samples])  # (P, 3, H, W)
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])  # (P, 4)
    fileio.save_tensors(out / "probe.safetensors", {"images": images, "labels": labels, "boxes": boxes})

    maps, timing = explain_all(run.model, images, labels, quiet)
    scores = score_maps(maps, boxes)
    fileio.save_tensors(out / "maps.safetensors", {k: v for k, v in maps.items()}, {"targets": "labels"})

    from attnscope.report import figures

    figures.save_png(out / "grid.png", figures.grid(images[:8], {k: v[:8] for k, v in maps.items()}, boxes[:8]))
    summary = {
        "model": "smallcnn",
        "data": "clutter (64 px)",
        "train": config.to_dict(),
        "test_acc": run.history[-1]["test_acc"],
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.perf_counter() - started, 1),
        "probe_images": probe,
        "methods": {k: {**scores[k], "ms_per_image": round(1000 * timing.get(k, 0.0) / probe, 2)} for k in scores},
    }
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", _markdown(summary))
    from attnscope.report import build

    build(out, title="attnscope demo")
    summary["total_wall_s"] = round(time.perf_counter() - started, 1)  # with the report
    fileio.write_json(out / "summary.json", summary)
    return summary


def explain_all(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, quiet: bool):
    """Every applicable post-hoc method on the probe images, for the true class; plus a random map."""
    from attnscope.explain import explain, list_methods
    from attnscope.registry import METHODS

    names = [m for m, kind in list_methods().items() if kind in POST_HOC and METHODS.get(m).applies(model) is None]
    maps: dict[str, torch.Tensor] = {}
    timing: dict[str, float] = {}
    with console.progress(len(names), "explain", not quiet) as bar:
        for name in names:
            t = time.perf_counter()
            for key, amap in explain(model, images, (name,), targets=labels).items():
                maps[key] = amap.values
            timing[name] = time.perf_counter() - t
            bar.advance(1, method=name)
    noise = torch.Generator().manual_seed(0)
    maps["random (calibration)"] = torch.rand(images.shape[0], *images.shape[-2:], generator=noise)
    return maps, timing


def score_maps(maps: dict[str, torch.Tensor], boxes: torch.Tensor) -> dict[str, dict[str, float]]:
    """Mean pointing game and energy in box of each method's maps."""
    from attnscope.metrics import energy_in_box, pointing_game

    return {
        k: {"pointing": float(pointing_game(v, boxes).mean()), "energy_in_box": float(energy_in_box(v, boxes).mean())}
        for k, v in maps.items()
    }


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# attnscope demo",
        "",
        f"SmallCNN on ClutteredDigits (64 px): test accuracy **{summary['test_acc']:.4f}**, "
        f"training {summary['train_wall_s']} s, total {summary['total_wall_s']} s.",
        "",
        f"Maps for the true class of {summary['probe_images']} test images, scored against the digit's box:",
        "",
        "| method | pointing game | energy in box | ms / image |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in summary["methods"].items():
        lines.append(f"| {name} | {s['pointing']:.3f} | {s['energy_in_box']:.3f} | {s['ms_per_image']} |")
    return "\n".join(lines) + "\n"


def _print_summary(summary: dict[str, Any]) -> None:
    rows = [(k, v["pointing"], v["energy_in_box"], v["ms_per_image"]) for k, v in summary["methods"].items()]
    console.table(
        f"demo: test accuracy {summary['test_acc']:.4f}, {summary['total_wall_s']} s",
        ["method", "pointing game", "energy in box", "ms / image"],
        rows,
    )
