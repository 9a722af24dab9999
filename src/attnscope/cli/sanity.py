"""`attnscope sanity`: model parameter and data randomisation tests (Adebayo et al., NeurIPS 2018) of
a trained model's maps; writes the tidy table, the similarity-vs-depth plot and map grids.

Everything is built in a temporary folder that is renamed to `--out` at the end (`attnscope.outdir`),
so a failed or killed run leaves no half-written output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attnscope import console, outdir
from attnscope.cli import cli
from attnscope.cli.explain_stream import stream_options
from attnscope.cli.options import load_model, method_options, parse_list, read_run_config, record_final_out
from attnscope.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch

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
    import torch

    from attnscope import data as datasets

    if n < 1:
        raise InputError(f"--images must be >= 1, got {n}")
    info = header.get("info", {})
    name = data or info.get("data")
    if name is None:
        raise InputError("the checkpoint does not record its data set; pass --data (e.g. --data clutter)")
    cfg = dict(info.get("data_cfg", {})) if data is None else {}
    if not isinstance(name, str) or not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: the checkpoint's info.data must be a name and info.data_cfg an object")
    seed = read_run_config(source).get("data_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CheckpointError(f"{Path(source) / 'config.json'}: data_seed must be an integer, got {seed!r}")
    dataset = datasets.get(name, "test", n, seed=seed, **cfg)
    samples = [dataset[i] for i in range(n)]
    first = samples[0]
    if not (isinstance(first[0], torch.Tensor) and isinstance(first[1], int)):
        raise InputError(f"data set {name!r} does not give (image, label) samples; sanity checks need a classifier")
    has_box, has_mask = (all(isinstance(getattr(s, k, None), torch.Tensor) for s in samples) for k in ("box", "mask"))
    return Probe(  # boxes without masks (the photos) serve the box columns; the mask columns are then left out
        images=torch.stack([s[0] for s in samples]),
        labels=torch.tensor([s[1] for s in samples]),
        boxes=torch.stack([s.box for s in samples]) if has_box else None,
        masks=torch.stack([s.mask for s in samples]) if has_mask else None,
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
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier `attnscope sanity` output.")
@click.option("--test", "tests", default="cascading", show_default=True,
              help="Tests to run, comma-separated: cascading, independent, data, smprt, emprt, random-logit.")
@stream_options("explain", "Run the tests shard by shard over all of --images (bounded memory), resumable, split "
                "across the processes of torchrun (not --test data).")
@click.option("--data", default=None, help="Data set of the images (default: the checkpoint's).")
@click.option("--blocks", default="layer", show_default=True,
              help="'layer' (each conv/norm/linear), a module-name depth (2: SmallCNN's conv blocks) or names.")
@click.option("--init", default="default", show_default=True, type=click.Choice(["default", "trunc-normal"]),
              help="Re-initialisation: each module's reset_parameters, or N(0, 0.01²) truncated.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the re-initialisation.")
@click.option("--targets", default="predicted", show_default=True, type=click.Choice(["predicted", "label"]),
              help="Explain each model's predicted class (the paper's) or the true label.")
@click.option("--metrics", default=None, help="Similarities, comma-separated [default: spearman_abs, "
              "spearman_signed, ssim, hog_pearson, hog_spearman; HOG left out under 48 px, with a note].")
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
def sanity_command(checkpoint, methods, out, overwrite, tests, images, n, stream, shard_size, workers, resume, data,
                   blocks, init, seed, targets, metrics, method_opt, batch_size, keep, channels_last, order, samples,
                   noise_level, bins, permuted_n, permuted_epochs, target_acc, permuted_run, quiet) -> None:
    """Randomisation sanity checks of CHECKPOINT's maps: cascading / independent parameter
    randomisation and label randomisation (Adebayo et al. 2018); the repaired tests sMPRT and
    eMPRT (Hedström et al. 2023) and the random-logit test (Sixt et al. 2020)."""
    from attnscope.cli.bench_stream import count
    from attnscope.cli.explain_stream import stream_images
    from attnscope.explain import Explainer
    from attnscope.report import sanity as report
    from attnscope.sanity import Comparison, Randomisation, data_randomization

    tests = parse_list(tests, "--test")
    for t in tests:
        if t not in TESTS:
            raise InputError(f"unknown test {t!r}; choose from {', '.join(TESTS)}")
    methods = parse_list(methods, "--methods")
    metrics = None if metrics is None else parse_list(metrics, "--metrics")
    _check_numbers(keep=keep, batch_size=batch_size, permuted_n=permuted_n, permuted_epochs=permuted_epochs,
                   target_acc=target_acc)
    stream = stream_images(stream, images, n, resume, shard_size, workers)
    if stream and "data" in tests:
        raise InputError("--test data trains a model on permuted labels and compares it on a fixed probe; "
                         "it does not stream: run it without --stream")
    n_images = None if stream else count(images, "--images", 32)
    final = Path(out)
    if not stream:
        outdir.check(final, "sanity", overwrite)
    model, header = load_model(checkpoint)
    common = dict(how=Explainer(methods, options=method_options(method_opt) or None, batch_size=batch_size),
                  metrics=metrics)
    every = _runners(model, common, Randomisation(_blocks(blocks), None, init, seed, channels_last=channels_last),
                     targets, order, samples, noise_level, bins, quiet or stream)  # a stream's bar counts images
    runners = {test: every[test] for test in tests if test in every}
    if stream:
        from attnscope.cli.sanity_stream import sanity_stream

        settings = {"checkpoint": str(checkpoint), "images": images, "n": n, "methods": methods, "metrics": metrics,
                    "blocks": blocks, "init": init, "seed": seed, "targets": targets, "options": list(method_opt),
                    "batch_size": batch_size, "order": order, "samples": samples, "noise_level": noise_level,
                    "bins": bins, "channels_last": channels_last}
        return sanity_stream(model, header, checkpoint, runners, images, n, final, overwrite, resume, shard_size,
                             workers, keep, settings, quiet)
    probe = load_probe(checkpoint, header, data, n_images)
    with outdir.building(final, "sanity", overwrite) as partial:

        def data_test(images, labels, index, keep):
            permuted, info = _permuted_model(checkpoint, header, probe, partial, final, permuted_run, permuted_n,
                                             permuted_epochs, target_acc, seed, quiet)
            return data_randomization(model, permuted, images, common["how"], labels if targets == "label" else None,
                                      Comparison(common["metrics"], keep=keep), info)

        runners["data"] = data_test
        for test in tests:
            result = runners[test](probe.images, probe.labels, None, keep)
            result.meta.update(checkpoint=str(checkpoint), data=probe.data)
            paths = [final / p.relative_to(partial) for p in report.write(result, partial, prefix=test)]
            show(test, result, paths)
    click.echo(f"wrote {final}/")


def show(test: str, result, paths: list[Path]) -> None:
    """A test's notes, its table of the first metric and the files written."""
    for note in result.meta.get("notes", []):
        console.console.print(f"note: {note}", markup=False, highlight=False)
    _print(result, result.meta["metrics"][0])
    click.echo(f"{test}: {', '.join(str(p) for p in paths[:3])} and {len(paths) - 3} map grid(s)")


def _runners(model, common: dict[str, Any], randomised: Any, targets: str, order: str, samples: int,
             noise_level: float, bins: int, quiet: bool) -> dict[str, Any]:
    """Test name → fn(images, labels, data-set index, images to keep) -> SanityResult, for the tests that work
    image by image (the data test needs its probe: `sanity_command` adds it)."""
    import dataclasses

    from attnscope.sanity import Comparison, emprt, model_randomization, random_logit, smprt

    progress, how = not quiet, common["how"]
    ordered = randomised if order == "auto" else dataclasses.replace(randomised, order=order)

    def each(images, labels, index, keep, metrics=common["metrics"]) -> dict[str, Any]:
        return {"targets": labels if targets == "label" else None, "comparison": Comparison(metrics, keep=keep),
                "index": index, "progress": progress}

    return {
        "cascading": lambda x, y, i, k: model_randomization(model, x, how, mode="cascading", randomisation=ordered,
                                                            **each(x, y, i, k)),
        "independent": lambda x, y, i, k: model_randomization(model, x, how, mode="independent",
                                                              randomisation=randomised, **each(x, y, i, k)),
        "smprt": lambda x, y, i, k: smprt(model, x, how, samples=samples, sigma=noise_level, randomisation=ordered,
                                          **each(x, y, i, k)),
        "emprt": lambda x, y, i, k: emprt(model, x, how, bins=bins, randomisation=randomised,
                                          **each(x, y, i, k, None)),
        "random-logit": lambda x, y, i, k: random_logit(model, x, how, seed=randomised.seed, **each(x, y, i, k)),
    }


def _check_numbers(keep: int, batch_size: int | None, permuted_n: int, permuted_epochs: int,
                   target_acc: float) -> None:
    """Refuse counts and rates that would be silently cut or never reached, before any work."""
    checks = [
        (keep >= 0, f"--keep must be >= 0 images, got {keep}"),
        (batch_size is None or batch_size >= 1, f"--batch-size must be >= 1, got {batch_size}"),
        (permuted_n >= 1 and permuted_epochs >= 1,
         f"--permuted-n and --permuted-epochs must be >= 1, got {permuted_n}, {permuted_epochs}"),
        (0 < target_acc <= 1, f"--target-acc must be in (0, 1], got {target_acc}"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def _permuted_model(checkpoint: str, header: dict[str, Any], probe: Probe, out: Path, final: Path,
                    reuse: str | None, n: int, epochs: int, target_acc: float, seed: int, quiet: bool):
    """The same architecture trained on permuted labels (reused from `reuse`, else trained into out/, which
    becomes `final`)."""
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
    record_final_out(out / "permuted-run", final / "permuted-run")
    last = run.history[-1]
    if not reached:
        console.console.print(f"[yellow]warning: the permuted-label model reached training accuracy "
                              f"{last['fit_acc']:.3f} < {target_acc} after {last['epoch']} epochs[/yellow]")
    info = {"permuted_run": str(final / "permuted-run"), "fit_acc": last["fit_acc"], "test_acc": last["test_acc"],
            "epochs": last["epoch"], "reached_target": reached, "target_acc": target_acc, "n": n}
    return run.model.eval(), info


def _print(result, metric: str) -> None:
    console.table(*terminal_table(result.rows(), result.steps, metric, result.meta))


def terminal_table(rows: list[dict[str, Any]], steps: list[str], metric: str, meta: dict[str, Any]):
    """(title, columns, cells) of one metric's means, blocks × methods, as `console.table` prints it."""
    rows = [r for r in rows if r["metric"] == metric]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["method"], r["block"]): r["mean"] for r in rows}
    table = [[s, *[cells.get((m, s)) for m in methods]] for s in steps]
    return f"{meta.get('test')}: {metric} (mean over {meta.get('images')} images)", ["randomised", *methods], table
