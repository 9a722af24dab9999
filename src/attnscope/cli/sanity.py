"""`attnscope sanity`: model parameter and data randomisation tests (Adebayo et al., NeurIPS 2018) and the
repaired tests of a trained model's maps; writes the tidy table, the similarity-vs-depth plot and map grids.

One body for both runs: each test is a function of (images, labels, data-set indices, images to keep)
(`_runners`). In memory it runs once on all the images, in a temporary folder renamed to `--out` at the end
(`attnscope.outdir`); with `--stream` it runs shard by shard (`stream.sanity_dataset`), resumable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attnscope.cli import cli
from attnscope.cli.common import (
    Compute,
    How,
    ModelSource,
    Output,
    compute_options,
    explain_options,
    model_options,
    output_options,
    seed_option,
)
from attnscope.cli.inputs import (
    ImageChoice,
    StreamChoice,
    TestImages,
    checkpoint_images,
    images_options,
    stream_options,
    world_of,
)
from attnscope.cli.options import parse_list
from attnscope.errors import InputError

if TYPE_CHECKING:
    from attnscope.data.inputs import Inputs

TESTS = ("cascading", "independent", "data", "smprt", "emprt", "random-logit")


@cli.command("sanity")
@model_options()
@explain_options(methods="gradcam,saliency,guided-backprop,ig", targets="predicted", batch_size=None,
                 methods_help="Methods to test, comma-separated.")
@output_options("sanity", help="Folder for the tables, plots and map grids.")
@click.option("--test", "tests", default="cascading", show_default=True,
              help="Tests to run, comma-separated: cascading, independent, data, smprt, emprt, random-logit.")
@images_options(required=False, n=None, data_seed=None, fit=False,
                help="Test images: a count of the checkpoint's [32], a folder, an image or a data set (--n).")
@click.option("--data", default=None, help="Data set of --images N (default: the checkpoint's).")
@stream_options("Run the tests shard by shard over all of --images (bounded memory), resumable, split across "
                "the processes of torchrun (not --test data).")
@click.option("--blocks", default="layer", show_default=True,
              help="'layer' (each conv/norm/linear), a module-name depth (2: SmallCNN's conv blocks) or names.")
@click.option("--init", default="default", show_default=True, type=click.Choice(["default", "trunc-normal"]),
              help="Re-initialisation: each module's reset_parameters, or N(0, 0.01²) truncated.")
@seed_option("Seed of the re-initialisation.")
@click.option("--metrics", default=None, help="Similarities, comma-separated [default: spearman_abs, "
              "spearman_signed, ssim, hog_pearson, hog_spearman; HOG left out under 48 px, with a note].")
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
@compute_options()
def sanity_command(source: ModelSource, how: How, output: Output, tests: str, images: ImageChoice, data: str | None,
                   streaming: StreamChoice, blocks: str, init: str, seed: int, metrics: str | None, keep: int,
                   channels_last: bool, order: str, samples: int, noise_level: float, bins: int, permuted_n: int,
                   permuted_epochs: int, target_acc: float, permuted_run: str | None, compute: Compute) -> None:
    """Randomisation sanity checks of CHECKPOINT's maps: cascading / independent parameter
    randomisation and label randomisation (Adebayo et al. 2018); the repaired tests sMPRT and
    eMPRT (Hedström et al. 2023) and the random-logit test (Sixt et al. 2020)."""
    from attnscope.sanity import Randomisation

    tests = _tests(tests, streaming)
    metrics = None if metrics is None else parse_list(metrics, "--metrics")
    _check_numbers(keep=keep, permuted_n=permuted_n, permuted_epochs=permuted_epochs, target_acc=target_acc)
    if not streaming.on:
        output.check()
    model, header = source.load()
    model.to(compute.torch_device())
    test_images = checkpoint_images(source, header, images, data, streaming.on, how)
    randomised = Randomisation(_blocks(blocks), None, init, seed, channels_last=channels_last)
    every = _runners(model, how, metrics, randomised, order, samples, noise_level, bins,
                     compute.quiet or streaming.on)  # a stream's bar counts images
    runners = {test: every[test] for test in tests if test in every}
    if streaming.on:
        settings = {"checkpoint": source.source, "images": images.source, "n": images.n, "methods": how.methods,
                    "metrics": metrics, "blocks": blocks, "init": init, "seed": seed, "targets": how.targets,
                    "options": list(how.given), "batch_size": how.batch_size, "order": order, "samples": samples,
                    "noise_level": noise_level, "bins": bins, "channels_last": channels_last,
                    "data_seed": test_images.seed, "data_cfg": test_images.config, **how.recorded(),
                    **source.recorded()}
        return _stream(model, test_images, runners, source, output, streaming, keep, settings, compute)
    from attnscope.data.inputs import read_all

    probe = read_all(test_images.dataset)
    with output.building() as partial:
        if "data" in tests:
            permuted = Permuted(permuted_run, permuted_n, permuted_epochs, target_acc, seed, compute)
            runners["data"] = _data_test(model, header, test_images, probe, how, metrics, partial, output.path,
                                         permuted)
        for test in tests:
            result = runners[test](probe.images, probe.labels, None, keep)
            result.meta.update(checkpoint=source.source, data=test_images.name)
            _show(test, result, _written(result, partial, test, output.path))
    click.echo(f"wrote {output.path}/")


def _tests(text: str, streaming: StreamChoice) -> list[str]:
    tests = parse_list(text, "--test")
    for t in tests:
        if t not in TESTS:
            raise InputError(f"unknown test {t!r}; choose from {', '.join(TESTS)}")
    if streaming.on and "data" in tests:
        raise InputError("--test data trains a model on permuted labels and compares it on a fixed probe; "
                         "it does not stream: run it without --stream")
    return tests


def _stream(model, images: TestImages, runners: dict[str, Any], source: ModelSource, output: Output,
            streaming: StreamChoice, keep: int, settings: dict[str, Any], compute: Compute) -> None:
    """The same tests shard by shard over `--images` into `--out` (every process of torchrun calls it)."""
    from attnscope.stream.sanity import sanity_dataset

    with world_of(model) as world:
        results = sanity_dataset(images.dataset, output.path, runners, keep=keep, settings=settings,
                                 meta={"checkpoint": source.source, "data": images.name},
                                 pin=compute.torch_device().type == "cuda",
                                 streaming=streaming.streaming(output.overwrite, compute.progress))
    if not world.main:
        return
    out = output.path
    for test, result in results.items():
        kept = 0 if result.images is None else result.images.shape[0]
        _show(test, result, [out / f"{test}.csv", out / f"{test}.json", out / f"{test}_similarity.png",
                             *[out / f"{test}_maps_{i}.png" for i in range(kept)]])
    click.echo(f"wrote {out}/ ({len(list((out / 'shards').iterdir()))} shards in shards/, manifest.json)")


def _written(result, partial: Path, test: str, final: Path) -> list[Path]:
    """Write a test's table, plot and map grids into `partial`; their paths once it is renamed to `final`."""
    from attnscope.report import sanity as report

    return [final / p.relative_to(partial) for p in report.write(result, partial, prefix=test)]


def _show(test: str, result, paths: list[Path]) -> None:
    """A test's notes, its table of the first metric and the files written."""
    from attnscope.report.terminal import print_sanity

    print_sanity(result)
    click.echo(f"{test}: {', '.join(str(p) for p in paths[:3])} and {len(paths) - 3} map grid(s)")


def _runners(model, how: How, metrics: list[str] | None, randomised: Any, order: str, samples: int,
             noise_level: float, bins: int, quiet: bool) -> dict[str, Any]:
    """Test name → fn(images, labels, data-set index, images to keep) -> SanityResult: the body of the command,
    run once in memory or once per shard (the data test needs its probe: `_data_test`)."""
    from attnscope.sanity import Comparison, emprt, model_randomization, random_logit, smprt

    progress, explainer = not quiet, how.explainer()
    ordered = randomised if order == "auto" else dataclasses.replace(randomised, order=order)  # None: the test's

    def each(labels, index, keep, measured=metrics) -> dict[str, Any]:
        return {"targets": how.targets_for(labels), "comparison": Comparison(measured, keep=keep), "index": index,
                "progress": progress}

    return {
        "cascading": lambda x, y, i, k: model_randomization(model, x, explainer, mode="cascading",
                                                            randomisation=ordered, **each(y, i, k)),
        "independent": lambda x, y, i, k: model_randomization(model, x, explainer, mode="independent",
                                                              randomisation=randomised, **each(y, i, k)),
        "smprt": lambda x, y, i, k: smprt(model, x, explainer, samples=samples, sigma=noise_level,
                                          randomisation=ordered, **each(y, i, k)),
        "emprt": lambda x, y, i, k: emprt(model, x, explainer, bins=bins, randomisation=randomised,
                                          **each(y, i, k, None)),
        "random-logit": lambda x, y, i, k: random_logit(model, x, explainer, seed=randomised.seed, **each(y, i, k)),
    }


def _check_numbers(keep: int, permuted_n: int, permuted_epochs: int, target_acc: float) -> None:
    """Refuse counts and rates that would be silently cut or never reached, before any work."""
    checks = [
        (keep >= 0, f"--keep must be >= 0 images, got {keep}"),
        (permuted_n >= 1 and permuted_epochs >= 1,
         f"--permuted-n and --permuted-epochs must be >= 1, got {permuted_n}, {permuted_epochs}"),
        (0 < target_acc <= 1, f"--target-acc must be in (0, 1], got {target_acc}"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def _blocks(text: str) -> str | int | list[str]:
    if text == "layer":
        return text
    if text.isdigit():
        return int(text)
    return parse_list(text, "--blocks")


@dataclass(frozen=True)
class Permuted:
    """The data test's permuted-label model: reused from a run, or trained to `target_acc`."""

    run: str | None
    n: int
    epochs: int
    target_acc: float
    seed: int
    compute: Compute


def _data_test(model, header: dict[str, Any], images: TestImages, probe: Inputs, how: How, metrics, out: Path,
               final: Path, permuted: Permuted):
    """The data randomisation test on the probe: the model against the same architecture trained on permuted
    labels (trained when the test runs, into out/permuted-run, which becomes final/permuted-run)."""
    from attnscope.sanity import Comparison, data_randomization

    def run(x, labels, index, keep):
        other, info = _permuted_model(header, images, len(x), out, final, permuted)
        return data_randomization(model, other, x, how.explainer(), how.targets_for(labels),
                                  Comparison(metrics, keep=keep), info)

    return run


def _permuted_model(header: dict[str, Any], images: TestImages, n_test: int, out: Path, final: Path,
                    permuted: Permuted):
    """The same architecture trained on permuted labels (reused from `permuted.run`, else trained into out/)."""
    from attnscope import console
    from attnscope.models import checkpoint as ckpt
    from attnscope.models.runs import record_final_out
    from attnscope.train import TrainConfig, fit_permuted

    if permuted.run is not None:
        model, head = ckpt.load(permuted.run)
        metrics = head.get("info", {}).get("metrics", {})
        return model.to(permuted.compute.torch_device()), {"permuted_run": permuted.run,
                                                           "fit_acc": metrics.get("fit_acc"),
                                                           "test_acc": metrics.get("test_acc")}
    spec = header["model"]
    config = TrainConfig(model=spec["name"], model_cfg=dict(spec.get("config", {})), data=images.name,
                         data_cfg=images.config, out=str(out / "permuted-run"), n=permuted.n,
                         n_test=max(256, n_test), epochs=permuted.epochs, lr=1e-3, weight_decay=0.0,
                         schedule="constant", seed=permuted.seed, quiet=permuted.compute.quiet,
                         device=permuted.compute.device)
    run, reached = fit_permuted(config, permuted.target_acc)
    record_final_out(out / "permuted-run", final / "permuted-run")
    last = run.history[-1]
    if not reached:
        console.console.print(f"[yellow]warning: the permuted-label model reached training accuracy "
                              f"{last['fit_acc']:.3f} < {permuted.target_acc} after {last['epoch']} epochs[/yellow]")
    info = {"permuted_run": str(final / "permuted-run"), "fit_acc": last["fit_acc"], "test_acc": last["test_acc"],
            "epochs": last["epoch"], "reached_target": reached, "target_acc": permuted.target_acc, "n": permuted.n}
    return run.model.eval(), info
