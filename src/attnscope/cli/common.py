"""The options the commands share, each declared once, as decorators that hand the command one value per group.

    @model_options()      --checkpoint/--model, --weights, --num-classes, --model-opt  →  source: ModelSource
    @output_options(cmd)  --out, --overwrite                                          →  output: Output
    @compute_options()    --device, --threads, --quiet (threads set before the body)  →  compute: Compute
    @seed_option()        --seed                                                      →  seed: int
    @explain_options()    --methods, --layer, --method-opt, --targets, --explain-batch  →  how: How
    @images_options()     --images, --n, --data-seed, --size/--resize/--crop/--pad    →  images: ImageChoice
    @stream_options()     --stream, --shard-size, --workers, --resume                 →  streaming: StreamChoice

(the last two in `cli/inputs.py`; `explain`'s prompts, `text_options` → prompts: Prompts, in `cli/texts.py`).
A new flag of a group is one option here and one field of the value it
builds: every command with the group gets it. Renamed options keep their old spelling as a hidden alias
where it kept its meaning (CHANGELOG).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from attnscope import outdir
from attnscope.cli.options import COUNT, DEVICE, SEED, method_options, parse_list, parse_settings
from attnscope.errors import InputError

Spec = tuple[tuple[str, ...], dict[str, Any]]


def group(name: str, specs: list[Spec], build: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Add the options `specs` to a command; their values reach it as one keyword `name` = build(**values)."""
    keys = [click.Option(list(decls), **attrs).name for decls, attrs in specs]

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{k: kwargs.pop(k) for k in keys})
            return command(*args, **kwargs)

        for decls, attrs in reversed(specs):
            if attrs.get("required") and attrs.get("default", 0) is None:  # click >= 8.3 reads default=None as
                attrs = {k: v for k, v in attrs.items() if k != "default"}  # a given default: required unenforced
            wrapper = click.option(*decls, **attrs)(wrapper)
        return wrapper

    return decorate


# -- the model -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from (`--checkpoint/--model`), with its weights file, classes and builder options."""

    source: str
    weights: str | None = None
    num_classes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    given: tuple[str, ...] = ()  # the --model-opt texts as given (what a streamed run records)
    classes: str | None = None  # --classes: a file of class names, one a line, or a named list ("imagenet")

    def load(self) -> tuple[Any, dict[str, Any]]:
        """(model in eval mode, its header or spec with "source"), from any source `models.sources.build` takes;
        with the class names of `--classes` where given."""
        from attnscope.models import sources, with_class_names

        model, info = sources.build(self.source, self.weights, self.num_classes, self.options)
        return (model if self.classes is None else with_class_names(model, self.classes)), info

    def recorded(self) -> dict[str, Any]:
        """What a streamed run records of the model beyond its source: only what was given, so that a run
        folder of the previous version, which recorded none of it, resumes."""
        given = {"weights": self.weights, "model_opts": list(self.given) or None, "num_classes": self.num_classes,
                 "classes": self.classes}
        return {k: v for k, v in given.items() if v is not None}


def model_options(help: str = "Run folder or checkpoint file of a trained classifier; or a registered name "
                                "(efficientnet_lite0, smallcnn), any torchvision classifier (swin_t), timm:NAME or "
                                "module.path:factory for your own code.") -> Callable[[Callable], Callable]:
    specs: list[Spec] = [
        (("--checkpoint", "--model", "checkpoint"), dict(required=True, metavar="SOURCE", help=help)),
        (("--weights",), dict(default=None, help="Local weights file (.safetensors, or .pt/.pth read with "
                                                 "weights_only) for a model given by name.")),
        (("--num-classes",), dict(default=None, type=COUNT, help="Classes of a model given by name (default: read "
                                                               "from the weights' head).")),
        (("--model-opt", "model_opts"), dict(multiple=True, metavar="KEY=VALUE", help="A keyword argument of the "
                                             "model's builder or factory, e.g. depth=2 (values as JSON).")),
        (("--classes",), dict(default=None, metavar="FILE|imagenet|digits", help="The model's class names (a file, "
                                                                                 "one a line), for --targets NAME "
                                                                                 "and the labels of pictures.")),
    ]

    def build(checkpoint: str, weights: str | None, num_classes: int | None, model_opts: tuple[str, ...],
              classes: str | None):
        return ModelSource(checkpoint, weights, num_classes, parse_settings(model_opts, "--model-opt"), model_opts,
                           classes)

    return group("source", specs, build)


# -- the output folder -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """`--out` of `command` under the output-folder rules (`attnscope.outdir`), and `--overwrite`."""

    path: Path | None
    overwrite: bool
    command: str

    def check(self) -> bool:
        """Refuse, before any work, an `--out` the command may not write; True when it replaces an output."""
        return outdir.check(self.path, self.command, self.overwrite)

    @contextmanager
    def building(self) -> Iterator[Path]:
        """A temporary folder to write in, renamed to `--out` when the block succeeds."""
        with outdir.building(self.path, self.command, self.overwrite) as partial:
            yield partial


def output_options(command: str, required: bool = True, help: str = "Folder to write.",
                   default: str | None = None) -> Callable[[Callable], Callable]:
    specs: list[Spec] = [
        (("--out",), dict(required=required and default is None, default=default, show_default=default is not None,
                          help=help)),
        (("--overwrite",), dict(is_flag=True, help=f"Replace --out if it holds an earlier `attnscope {command}` "
                                                   "output.")),
    ]
    return group("output", specs, lambda out, overwrite: Output(None if out is None else Path(out), overwrite,
                                                                command))


# -- where and how it computes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """Where a command computes (`--device`), and whether it shows progress (`--quiet`); threads are set."""

    device: str = "auto"
    quiet: bool = False

    def torch_device(self) -> Any:
        """`--device` as a usable `torch.device` ("auto": this process's GPU if there is one, else the CPU)."""
        import torch

        from attnscope.train.distributed import pick_device

        try:
            device = pick_device(self.device)
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError, ValueError) as e:
            raise InputError(f"--device {self.device!r} is not usable here: {str(e).splitlines()[0]}") from None
        return device

    @property
    def progress(self) -> bool:
        return not self.quiet


def idle_cores(cores: int, load: float) -> int:
    """Threads worth starting: the cores that other processes (their 1-minute load average) leave idle, >= 1.

    More threads than idle cores make every thread wait its turn (bench/demo_threads.py: on 2 cores at a
    load average of 9-17, the demo took 24 min with 1 thread and 59 min with 2).
    """
    return max(1, min(cores, round(cores - load)))


def use_threads(threads: int | None, quiet: bool) -> None:
    """Set torch's threads: `--threads`, else OMP_NUM_THREADS if set, else the cores the load leaves idle (said in
    one line when fewer than all). With fewer threads than cores, OpenMP's idle threads sleep instead of spinning
    (OMP_WAIT_POLICY=PASSIVE, unless set): their spinning takes the cores other processes are waiting for."""
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return  # the user's choice; torch follows it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    chosen = threads if threads is not None else idle_cores(cores, load)
    if chosen < cores:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before its import
    import torch

    torch.set_num_threads(chosen)
    if threads is None and chosen < cores and not quiet:
        from attnscope import console

        console.note(f"using {chosen} of {cores} CPU threads: other processes keep the load average at "
                     f"{load:.1f} (set --threads to choose)")


def compute_options(device_help: str = "auto, cpu, cuda, cuda:1 ...") -> Callable[[Callable], Callable]:
    specs: list[Spec] = [
        (("--device",), dict(default="auto", show_default=True, type=DEVICE, help=device_help)),
        (("--threads",), dict(default=None, type=COUNT, help="CPU threads (default: OMP_NUM_THREADS, else the cores "
                                                           "that other processes leave idle).")),
        (("--quiet",), dict(is_flag=True, help="No progress bars.")),
    ]

    def build(device: str, threads: int | None, quiet: bool) -> Compute:
        use_threads(threads, quiet)
        return Compute(device, quiet)

    return group("compute", specs, build)


def seed_option(help: str = "Seed of every random draw.") -> Callable[[Callable], Callable]:
    return group("seed", [(("--seed",), dict(default=0, show_default=True, type=SEED, help=help))], lambda seed: seed)


# -- how to explain --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class How:
    """How a command explains: the fields of an `attnscope.Explainer` (layer, options, batch size, ...), its
    methods (None: every method that applies to the model, `bench --methods all`), the `--targets` choice
    ("predicted", "label" or a class index: labels differ per image, so they are given per call) and the
    --method-opt texts as given (what a streamed run records)."""

    methods: tuple[str, ...] | None
    fields: dict[str, Any] = field(default_factory=dict)  # Explainer(methods, **fields)
    targets: str | int = "predicted"
    given: tuple[str, ...] = ()

    def explainer(self, methods: Sequence[str] | None = None) -> Any:
        """The `Explainer` of these settings (of `methods` when the command resolved "all" to names)."""
        from attnscope.explain import Explainer

        return Explainer(tuple(methods or self.methods or ()), **self.fields)

    @property
    def layer(self) -> Any:
        return self.fields.get("layer", "auto")

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        return self.fields.get("options", {})

    @property
    def batch_size(self) -> int | None:
        return self.fields.get("batch_size")

    def for_model(self, model: Any) -> Any:
        """The `Explainer` a consumer of maps takes for `model`: of the methods asked for, else of every method that
        applies to it (None when nothing else was asked either: the consumer's default, the same methods)."""
        if self.methods is not None:
            return self.explainer()
        if all(v in (None, "auto") or v == {} for v in self.fields.values()):
            return None
        from attnscope.evaluate import applicable_methods

        return self.explainer(applicable_methods(model))

    def targets_for(self, labels: Any) -> Any:
        """What `explain` takes as targets for images with these `labels` (None when they have none)."""
        from attnscope.explain.targets import choice_targets

        return choice_targets(self.targets, labels)

    def recorded(self) -> dict[str, Any]:
        """What a streamed `bench`/`sanity` run records of how it explains beyond its earlier settings (only what
        differs from the default, so that a run folder of the previous version resumes)."""
        if self.methods is None:
            return {} if self.layer == "auto" else {"layer": self.layer}
        every = self.explainer().settings()
        return {k: v for k, v in every.items() if k not in ("methods", "options", "batch_size", "targets")
                and not (k == "layer" and v == "auto")}


def explain_options(methods: str | None = "gradcam", targets: str = "predicted", batch_size: int | None = 16,
                    methods_flag: str = "--methods", methods_help: str = "Comma-separated method names.",
                    batch_alias: bool = True) -> Callable[[Callable], Callable]:
    """--methods (or `methods_flag`), --layer, --method-opt (old: --option), --targets, --explain-batch (old:
    --batch-size, where it meant images per explain call) → `how`. methods "all": every applicable method.

    A new explain option is one more option here and its `Explainer` field in `fields` (below)."""
    names = methods_flag.lstrip("-").replace("-", "_")
    specs: list[Spec] = [
        ((methods_flag, names), dict(default=methods, show_default=methods is not None, help=methods_help)),
        (("--layer",), dict(default="auto", show_default=True, help="Layer of the CAM methods (a dotted name).")),
        (("--method-opt", "method_opts"), dict(multiple=True, metavar="METHOD.KEY=VALUE",
                                               help="A method option, e.g. ig.steps=64 or gradcam.relu=false.")),
        (("--option", "old_method_opts"), dict(multiple=True, hidden=True)),
        (("--targets",), dict(default=targets, show_default=True, metavar="predicted|label|INT|NAME",
                              help="The class each map explains: predicted (the model's), label (the data set's), "
                                   "a class index or a class name (of a model that has names; see --classes).")),
        (("--explain-batch",), dict(default=batch_size, show_default=batch_size is not None, type=COUNT,
                                    help="Images per explain call" + (" (default: all at once)."
                                                                      if batch_size is None else "."))),
    ]
    if batch_alias:
        specs.append((("--batch-size", "old_batch_size"), dict(default=None, type=COUNT, hidden=True)))

    def build(layer: str, method_opts: tuple[str, ...], old_method_opts: tuple[str, ...], targets: str,
              explain_batch: int | None, old_batch_size: int | None = None, **listed: str | None) -> How:
        from attnscope.explain.targets import parse_targets

        text = listed[names]
        chosen = None if text is None or text == methods == "all" else tuple(parse_list(text, methods_flag))
        given = (*method_opts, *old_method_opts)
        options = method_options(given)
        for method, opts in options.items():
            if chosen is not None and method not in chosen:
                raise InputError(f"--method-opt {method}.{next(iter(opts))}: {method!r} is not among "
                                 f"{methods_flag} ({', '.join(chosen)})")
        if old_batch_size is not None:
            if explain_batch != batch_size:
                raise InputError("--explain-batch and --batch-size are one option under two names; give one")
            explain_batch = old_batch_size
        if explain_batch is not None and explain_batch < 1:
            raise InputError(f"--explain-batch must be >= 1, got {explain_batch}")
        how = How(chosen, {"layer": layer, "options": options, "batch_size": explain_batch}, parse_targets(targets),
                  given)
        if chosen is not None:
            how.explainer()  # names, options and fields checked now, before any work (close names listed)
        return how

    return group("how", specs, build)
