"""`attnscope sanity`: model parameter and data randomisation tests (Adebayo et al., NeurIPS 2018) of
a trained model's maps; writes the tidy table, the similarity-vs-depth plot and map grids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from attnscope import console
from attnscope.cli import cli
from attnscope.cli.options import load_model, method_options, parse_list
from attnscope.errors import InputError

TESTS = ("cascading", "independent", "data", "smprt", "emprt", "random-logit")


@dataclass
class Probe:
    """Test images of the data set a checkpoint was trained on, with their ground truth."""

    images: torch.Tensor  # (N, C, H, W)
    labels: torch.Tensor  # (N,)
    boxes: torch.Tensor | None  # (N, 4)
    masks: torch.Tensor | None  # (N, H, W) bool
    data: str
    data_cfg: dict[str, Any]


def load_probe(source: str, header: dict[str, Any], data: str | None, n: int) -> Probe:
    """`n` test images of `data`, or of the data set the checkpoint records (with its seed, for a run folder)."""
    from attnscope import data as datasets

    info = header.get("info", {})
    name = data or info.get("data")
    if name is None:
        raise InputError("the checkpoint does not record its data set; pass --data (e.g. --data clutter)")
    cfg = dict(info.get("data_cfg", {})) if data is None else {}
    config = Path(source) / "config.json"
    seed = json.loads(config.read_text()).get("data_seed", 0) if config.is_file() else 0
    if n < 1:
        raise InputError(f"--images must be >= 1, got {n}")
    dataset = datasets.get(name, "test", n, seed=seed, **cfg)
    samples = [dataset[i] for i in range(n)]
    first = samples[0]
    if not (isinstance(first[0], torch.Tensor) and isinstance(first[1], int)):
        raise InputError(f"data set {name!r} does not give (image, label) samples; sanity checks need a classifier")
    has_truth = hasattr(first, "box") and hasattr(first, "mask")
    return Probe(
        images=torch.stack([s[0] for s in samples]),
        labels=torch.tensor([s[1] for s in samples]),
        boxes=torch.stack([s.box for s in samples]) if has_truth else None,
        masks=torch.stack([s.mask for s in samples]) if has_truth else None,
        data=name,
        data_cfg=cfg,
    )


def _blocks(text: str) -> str | int | list[str]:
    if text == "layer":
        return text
    if text.isdigit():
        return int(text)
    return parse_list(text, "--blocks")


@cli.command("sanity")
@click.option("--checkpoint", required=True, help="Run folder or checkpoint file of a trained classifier.")
@click.option("--methods", default="gradcam,saliency,guided-backprop,ig", show_default=True,
              help="Methods to test, comma-separated.")
@click.option("--out", required=True, help="Folder for the tables, plots and map grids.")
@click.option("--test", "tests", default="cascading", show_default=True,
              help="Tests to run, comma-separated: cascading, independent, data, smprt, emprt, random-logit.")
@click.option("--images", "n_images", default=32, show_default=True, type=int, help="Test images to explain.")
@click.option("--data", default=None, help="Data set of the images (default: the checkpoint's).")
@click.option("--blocks", default="layer", show_default=True,
              help="'layer' (each conv/norm/linear), a module-name depth (2: SmallCNN's conv blocks) or names.")
@click.option("--init", default="default", show_default=True, type=click.Choice(["default", "trunc-normal"]),
              help="Re-initialisation: each module's reset_parameters, or N(0, 0.01²) truncated.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the re-initialisation.")
@click.option("--targets", default="predicted", show_default=True, type=click.Choice(["predicted", "label"]),
              help="Explain each model's predicted class (the paper's) or the true label.")
@click.option("--metrics", default="spearman_abs,spearman_signed,ssim,hog_pearson,hog_spearman", show_default=True)
@click.option("--method-opt", multiple=True, metavar="METHOD.KEY=VALUE", help="Method option, e.g. ig.steps=16.")
@click.option("--batch-size", default=None, type=int, help="Explain in chunks of this many images.")
@click.option("--keep", default=2, show_default=True, type=int, help="Images whose maps are drawn.")
@click.option("--channels-last", is_flag=True, help="Run the randomised copies in NHWC layout (often faster on CPU).")
@click.option("--order", default="auto", show_default=True, type=click.Choice(["auto", "top-down", "bottom-up"]),
              help="Cascade order; auto: top-down for cascading (Adebayo et al.), bottom-up for smprt (Hedström).")
@click.option("--samples", default=50, show_default=True, type=int, help="sMPRT: noisy copies per image.")
@click.option("--noise-level", default=0.1, show_default=True, type=float,
              help="sMPRT: noise σ as a fraction of each image's value range.")
@click.option("--bins", default=100, show_default=True, type=int, help="eMPRT: histogram bins of the entropy.")
@click.option("--permuted-n", default=512, show_default=True, type=int, help="Data test: training images.")
@click.option("--permuted-epochs", default=150, show_default=True, type=int, help="Data test: most epochs.")
@click.option("--target-acc", default=0.95, show_default=True, type=float, help="Data test: training accuracy.")
@click.option("--permuted-run", default=None, help="Data test: reuse this permuted-label run instead of training.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sanity_command(checkpoint, methods, out, tests, n_images, data, blocks, init, seed, targets, metrics,
                   method_opt, batch_size, keep, channels_last, order, samples, noise_level, bins, permuted_n,
                   permuted_epochs, target_acc, permuted_run, quiet) -> None:
    """Randomisation sanity checks of CHECKPOINT's maps: cascading / independent parameter
    randomisation and label randomisation (Adebayo et al. 2018); the repaired tests sMPRT and
    eMPRT (Hedström et al. 2023) and the random-logit test (Sixt et al. 2020)."""
    from attnscope.report import sanity as report
    from attnscope.sanity import data_randomization, emprt, model_randomization, random_logit, smprt

    tests = parse_list(tests, "--test")
    for t in tests:
        if t not in TESTS:
            raise InputError(f"unknown test {t!r}; choose from {', '.join(TESTS)}")
    methods, metrics = parse_list(methods, "--methods"), parse_list(metrics, "--metrics")
    model, header = load_model(checkpoint)
    probe = load_probe(checkpoint, header, data, n_images)
    common = dict(methods=methods, targets=probe.labels if targets == "label" else None, metrics=metrics,
                  options=method_options(method_opt) or None, batch_size=batch_size, keep=keep)
    randomised = dict(blocks=_blocks(blocks), init=init, seed=seed)

    def data_test():
        permuted, info = _permuted_model(checkpoint, header, probe, Path(out), permuted_run, permuted_n,
                                         permuted_epochs, target_acc, seed, quiet)
        return data_randomization(model, permuted, probe.images, info=info, **common)

    runners = {  # test name → how to run it
        "cascading": lambda: model_randomization(model, probe.images, mode="cascading", progress=not quiet,
                                                 order="top-down" if order == "auto" else order,
                                                 channels_last=channels_last, **randomised, **common),
        "independent": lambda: model_randomization(model, probe.images, mode="independent", progress=not quiet,
                                                   channels_last=channels_last, **randomised, **common),
        "data": data_test,
        "smprt": lambda: smprt(model, probe.images, samples=samples, sigma=noise_level, progress=not quiet,
                               order="bottom-up" if order == "auto" else order, **randomised,
                               **{**common, "batch_size": batch_size or 256}),
        "emprt": lambda: emprt(model, probe.images, bins=bins, progress=not quiet, **randomised,
                               **{k: v for k, v in common.items() if k != "metrics"}),
        "random-logit": lambda: random_logit(model, probe.images, seed=seed, progress=not quiet, **common),
    }
    for test in tests:
        result = runners[test]()
        result.meta.update(checkpoint=str(checkpoint), data=probe.data)
        paths = report.write(result, out, prefix=test)
        _print(result, result.meta["metrics"][0])
        click.echo(f"wrote {', '.join(str(p) for p in paths[:3])} and {len(paths) - 3} map grid(s)")


def _permuted_model(checkpoint: str, header: dict[str, Any], probe: Probe, out: Path, reuse: str | None,
                    n: int, epochs: int, target_acc: float, seed: int, quiet: bool):
    """The same architecture trained on permuted labels (reused from `reuse`, else trained into out/)."""
    from attnscope.models import checkpoint as ckpt
    from attnscope.train import TrainConfig, fit_permuted

    if reuse is not None:
        model, head = ckpt.load(reuse)
        metrics = head.get("info", {}).get("metrics", {})
        return model, {"permuted_run": reuse, "fit_acc": metrics.get("fit_acc"), "test_acc": metrics.get("test_acc")}
    spec = header["model"]
    config = TrainConfig(model=spec["name"], model_cfg=dict(spec.get("config", {})), data=probe.data,
                         data_cfg=probe.data_cfg, out=str(out / "permuted-run"), n=n,
                         n_test=max(256, len(probe.labels)), epochs=epochs, lr=1e-3, weight_decay=0.0,
                         schedule="constant", seed=seed, quiet=quiet)
    run, reached = fit_permuted(config, target_acc)
    last = run.history[-1]
    if not reached:
        console.console.print(f"[yellow]warning: the permuted-label model reached training accuracy "
                              f"{last['fit_acc']:.3f} < {target_acc} after {last['epoch']} epochs[/yellow]")
    info = {"permuted_run": str(out / "permuted-run"), "fit_acc": last["fit_acc"], "test_acc": last["test_acc"],
            "epochs": last["epoch"], "reached_target": reached, "target_acc": target_acc, "n": n}
    return run.model.eval(), info


def _print(result, metric: str) -> None:
    rows = [r for r in result.rows() if r["metric"] == metric]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["method"], r["block"]): r["mean"] for r in rows}
    table = [[s, *[cells[(m, s)] for m in methods]] for s in result.steps]
    console.table(f"{result.meta.get('test')}: {metric} (mean over {result.meta.get('images')} images)",
                  ["randomised", *methods], table)
