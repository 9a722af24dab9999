"""What one `explain` call shares between its methods: the shared pass (`Pass`) and reruns (`Oracle`).

`shared_pass` runs the shared forward (+ backward) once, for the union of what the methods read (the
plan's needs), at one point of `explain.plan`; the `Pass` it returns hands each method its inputs by
name, one row per (image, target), image-major.
`Oracle` is the one object a method gets when it must run the model again (Score-CAM,
Ablation-CAM, occlusion, IG, SmoothGrad): scores and input gradients of other inputs, and the
output when the chosen layer's output is replaced; the target and token layout are bound in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import budget, engine, progress, split
from attnscope.explain.attention import AttentionLayer, explicit_attention
from attnscope.explain.layers import LayerSpec, Reading, reading
from attnscope.explain.method import INPUTS
from attnscope.explain.rewrites import rewritten
from attnscope.explain.targets import Target, TargetSpec
from attnscope.explain.tokens import TokenLayout
from attnscope.explain.windowed import TokenGraph, per_row, token_graph
from attnscope.modules import as_nhwc, unwrap


def classifier(model: nn.Module) -> nn.Linear | None:
    """The linear layer a CAM reads: `model.cam_classifier` if declared, else the last nn.Linear."""
    declared = getattr(model, "cam_classifier", None)
    if declared is not None:
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The 2-D layers with a bias (FullGrad): nn.Conv2d with a bias, affine nn.BatchNorm2d, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if (isinstance(m, nn.Conv2d) and m.bias is not None) or (isinstance(m, nn.BatchNorm2d) and m.affine)]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias a layer adds (C,): a convolution's own; BatchNorm's β − μ·γ/√(σ² + ε) with its running statistics."""
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None:
            raise NotApplicableError("FullGrad reads BatchNorm's running statistics; this BatchNorm2d keeps none")
        return module.bias - module.running_mean * module.weight / torch.sqrt(module.running_var + module.eps)
    return module.bias


class Oracle:
    """Reruns of the model for one call: its `target` (rows), `source` (row → image) and `images` (B, C, H, W).

    Every rerun is under no_grad except `input_gradients`; inputs run in the layout `channels_last`
    resolves to. `rows` arguments are indices into the call's rows (image-major, K per image).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, target: Target, per_image: int,
                 layer: nn.Module | None, reading: Reading | None, raw: torch.Tensor | None,
                 output: engine.OutputSpec) -> None:
        self.model, self.images, self.target, self.output = model, images, target, output
        self.core = unwrap(model)  # rewrites apply to the module a DDP / DataParallel wrapper holds
        self.per_image = per_image
        self.source = torch.arange(images.shape[0], device=images.device).repeat_interleave(per_image)  # (N,)
        self._layer, self._reading, self._raw = layer, reading, raw
        self._tail: tuple[nn.Module | None, str] | None = None

    def chunk(self, requested: int | None, total: int, grad: bool = False, after_layer: bool = False,
              probe: budget.Probe | None = None) -> int:
        """Inputs per rerun: `requested`, or within the memory budget the chunk `probe` measures fastest
        (`budget.probed_chunk`; refused with the estimate where none fits); `after_layer`: inputs of the layer."""
        after = self._layer if after_layer else None
        shape = tuple(self.images.shape[1:])
        cost = budget.input_cost(self.core, shape, self.images.dtype, after)
        name = None if after is None else next(n for n, m in self.core.named_modules() if m is after)  # 2 loads: 1 key
        key = (shape, self.images.dtype, grad, name)
        return budget.probed_chunk(self.core, cost, self.images.device, requested, total, grad, key, probe)

    def plan(self, setting: bool | str, requested: int | None, total: int,
             probe_for: Callable[[bool], budget.Probe], grad: bool = False) -> tuple[bool, int]:
        """The layout (NHWC?) and chunk of a rerun of `total` inputs: `channels_last` resolved as `channels_last`
        does, except that "auto" on a run the probe measures (`budget.PROBE_MIN` inputs or more, no chunk
        requested, a model with no declared layout) takes the layout whose chunk the probe found faster."""
        nhwc = self.channels_last(setting)
        chunk, per_input = self.chunk_timed(requested, total, grad, probe_for(nhwc))
        if setting != "auto" or nhwc or per_input is None or self.images.shape[1] == 1:
            return nhwc, chunk
        try:
            other, other_time = self.chunk_timed(requested, total, grad, probe_for(True))
        except (RuntimeError, InputError):  # a forward that cannot take NHWC (x.view on a feature map): keep NCHW
            return False, chunk
        return (True, other) if other_time < per_input else (False, chunk)

    def chunk_timed(self, requested: int | None, total: int, grad: bool,
                    probe: budget.Probe) -> tuple[int, float | None]:
        """`chunk`'s chunk and the probe's time per input (None where no probe ran)."""
        shape, dtype = tuple(self.images.shape[1:]), self.images.dtype
        return budget.probed(self.core, budget.input_cost(self.core, shape, dtype), self.images.device, requested,
                             total, grad, (shape, dtype, grad, None), probe)

    def channels_last(self, setting: bool | str) -> bool:
        """"auto": NHWC when the images already are, or the model declares `prefers_channels_last`."""
        if setting == "auto":
            already = self.images.dim() == 4 and self.images.is_contiguous(memory_format=torch.channels_last)
            return bool(already and self.images.shape[1] > 1) or bool(getattr(self.model, "prefers_channels_last",
                                                                              False))
        return bool(setting)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, channels_last: bool | str = "auto", fold: bool = False) -> torch.Tensor:
        """The model's (selected) output for inputs `x` (N, C, H, W), without gradients (in NHWC strides when
        `channels_last`, also for one channel: `as_nhwc`, as `input_gradients`). `fold`: through the model's copy
        with BatchNorm folded into its convolutions where there is one (`split.folded`; to float rounding)."""
        if self.channels_last(channels_last):
            x = as_nhwc(x)
        return self._out(x, split.folded(self.core) if fold else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's (selected) output for inputs `x`, with gradients when they are enabled (optimised inputs)."""
        return self._out(x)

    def _out(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """The (selected) logits of `x` through the model, or through `model` (its folded copy) when given."""
        progress.inputs(x.shape[0])
        run = engine.run_model(self.model if model is None else model, x)
        return engine.logits_of(engine.select_output(run, self.output), x.shape[0])

    def scores(self, x: torch.Tensor, rows: torch.Tensor, channels_last: bool | str = "auto") -> torch.Tensor:
        """The explained score (N,) of inputs `x`, input i explained for row `rows[i]`, without gradients."""
        return self.target.take(rows).score(self.logits(x, channels_last))

    def input_gradients(self, x: torch.Tensor, rows: torch.Tensor, rewrite: str | None = None,
                        channels_last: bool | str = False, **kw: Any) -> torch.Tensor:
        """d score / d x (N, C, H, W) for inputs `x`, input i explained for row `rows[i]`.

        `rewrite`: a registered rewrite (`explain.rewrites`, with options `kw`) applied to the model
        for this one forward + backward — a modified backward such as an LRP composite.
        `channels_last`: the forward + backward in NHWC layout (`channels_last` resolves "auto"), with
        NHWC strides also for one channel (`as_nhwc`); the gradient comes back in NCHW.
        """
        if self.channels_last(channels_last):
            return self.input_gradients(as_nhwc(x), rows, rewrite, False, **kw).contiguous()
        progress.inputs(x.shape[0])
        with ExitStack() as stack:
            if rewrite is not None:
                stack.enter_context(rewritten(self.core, rewrite, **kw))
            cap, _ = engine.capture(self.model, x, self.target.take(rows), frozenset({"input_grad"}),
                                    output=self.output)
        return cap.input_grad

    def attention_gradients(self, x: torch.Tensor, rows: torch.Tensor, rewrite: str | None = None,
                            **kw: Any) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Every attention layer's weights (N, heads, T, T) and d score / d them for inputs `x`, forward order.

        `rewrite`: a registered rewrite that makes the attention explicit itself and yields its
        `AttentionLayer`s (e.g. `attnlrp`); else the plain explicit attention of the shared pass.
        """
        progress.inputs(x.shape[0])
        with ExitStack() as stack:
            if rewrite is None:
                layers = stack.enter_context(explicit_attention(self.core))
            else:
                ((_, layers),) = stack.enter_context(rewritten(self.core, rewrite, **kw))
            cap, _ = engine.capture(self.model, x, self.target.take(rows), frozenset({"attention", "attention_grad"}),
                                    probes=[(a.name, a.probe) for a in layers], output=self.output)
        return cap.probes, cap.probe_grads

    def layer_gradients(self, x: torch.Tensor, rows: torch.Tensor, target: Target | None = None) -> torch.Tensor:
        """d score / d the chosen layer's output (N, C, h, w) for inputs `x`, input i explained for row `rows[i]`.

        `target`: another score of those inputs (a `Target` over them) instead of the call's own.
        A token layer's gradient is read as its patch grid, as the shared pass reads it.
        """
        if self._layer is None:
            raise NotApplicableError("this method reads the chosen layer's gradients, and no layer was chosen")
        progress.inputs(x.shape[0])
        cap, _ = engine.capture(self.model, x, self.target.take(rows) if target is None else target,
                                frozenset({"layer", "layer_grad"}), layer=self._layer, output=self.output)
        grads = cap.gradients
        return grads if self._reading is None or self._reading.layout == "nchw" else self._reading.to_map(grads)

    @torch.no_grad()
    def with_layer_output(self, image: int, outputs: torch.Tensor) -> torch.Tensor:
        """The model's output (N, classes) for image `image` when the chosen layer outputs `outputs` (N, ...).

        `outputs` are feature maps (N, C, h, w), put back in the layer's own layout (channels-last, or
        tokens whose extra tokens keep their values).
        The layers before the chosen one run once, on the one image; the layers after it on the N outputs.
        A model whose later layers also read tensors from before the layer cannot take them batched:
        it raises, and the method's option `tail="repeat"` runs the whole model per output instead.
        """
        if self._layer is None:
            raise NotApplicableError("this method replaces the chosen layer's output, and no layer was chosen")
        if self._reading is not None:
            outputs = self._reading.from_map(outputs, self._raw[image])
        n = outputs.shape[0]
        progress.inputs(n)
        handle = self._layer.register_forward_hook(lambda _m, _i, _o: outputs)
        hint = (f"with {n} outputs of the chosen layer for one image, the model's later layers also read tensors "
                "from before the layer; pass the option tail='repeat' (the whole model per output)")
        try:
            out = engine.select_output(self.model(self.images[image : image + 1]), self.output)
        except RuntimeError as e:  # explained, never retried: the caller chooses tail='repeat'
            raise InputError(f"{hint} ({str(e).splitlines()[0]})") from e
        finally:
            handle.remove()
        if not (isinstance(out, torch.Tensor) and out.shape[0] == n):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"{hint}: it returned {shape}")
        return out

    def layer_tail(self) -> tuple[nn.Module | None, str]:
        """The layers after the chosen one as a module of its output (`explain.split`), or (None, why not)."""
        if self._layer is None:
            raise NotApplicableError("this method replaces the chosen layer's output, and no layer was chosen")
        if self._tail is None:
            name = next(n for n, m in self.core.named_modules() if m is self._layer)
            self._tail = split.tail_after(self.core, name)
        return self._tail

    @torch.no_grad()
    def with_layer_output_tail(self, image: int, outputs: torch.Tensor) -> torch.Tensor:
        """As `with_layer_output`, running only the layers after the chosen one (`layer_tail`) on `outputs`."""
        tail, why = self.layer_tail()
        if tail is None:
            raise NotApplicableError(f"the layers after the chosen one cannot run alone: {why}")
        if self._reading is not None:
            outputs = self._reading.from_map(outputs, self._raw[image])
        progress.inputs(outputs.shape[0])
        return engine.logits_of(engine.select_output(tail(outputs), self.output), outputs.shape[0])

    @torch.no_grad()
    def with_layer_output_repeated(self, image: int, outputs: torch.Tensor) -> torch.Tensor:
        """As `with_layer_output`, running the whole model on the image repeated N times (any model, full cost)."""
        if self._reading is not None:
            outputs = self._reading.from_map(outputs, self._raw[image])
        handle = self._layer.register_forward_hook(lambda _m, _i, _o: outputs)
        try:
            return self._out(self.images[image : image + 1].expand(outputs.shape[0], *self.images.shape[1:]))
        finally:
            handle.remove()


@dataclasses.dataclass(frozen=True)
class OwnPass:
    """A method's own forward standing in for the call's shared pass (`Method.own_pass`): what it captured, the
    target resolved from it, the attention layers it read, and what the method keeps for its backward."""

    capture: engine.Capture
    target: Target
    attention: Sequence[AttentionLayer]
    state: Any


class Pass:
    """The shared pass of one call, run (`shared_pass`): what it captured, read by input name."""

    def __init__(self, model: nn.Module, images: torch.Tensor, needs: frozenset[str], differentiable: bool,
                 output: engine.OutputSpec, capture: engine.Capture | None, target: Target | None,
                 layer: tuple[str, nn.Module] | None, reading: Reading | None = None,
                 raw: torch.Tensor | None = None, attention: Sequence[AttentionLayer] = ()) -> None:
        self.model, self.images, self.needs = model, images, needs
        self.core = unwrap(model)  # a DDP / DataParallel wrapper runs the passes; its module answers questions
        self.differentiable, self.output = differentiable, output
        self.capture, self.target, self.layer = capture, target, layer  # capture and target: None when no pass ran
        self.reading = reading  # how the chosen layer's output reads as (B, C, h, w)
        self._raw = raw  # that layer's output as it is (B, ...)
        self._attention, self._graph = list(attention), None  # the attention layers read; their token graph
        self.own: Any = None  # the method's kept state where its own forward was this pass (`OwnPass.state`)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A per-image tensor (B, ...) as one row per (image, target) (B·K, ...); as it is when no pass runs."""
        k = 1 if self.capture is None else self.capture.rows
        return t if k == 1 else t.repeat_interleave(k, 0)

    def inputs(self, names: Iterable[str]) -> dict[str, Any]:
        """The named inputs of a method (see `method.INPUTS`)."""
        return {name: getattr(self, f"_input_{name}")() for name in names}

    def _input_images(self) -> torch.Tensor:
        return self.rows(self.images)

    def _input_logits(self) -> torch.Tensor:
        return self.rows(self.capture.logits)

    def _input_scores(self) -> torch.Tensor:
        return self.capture.scores

    def _input_classes(self) -> torch.Tensor:
        return self.target.classes

    def _input_acts(self) -> torch.Tensor:
        return self.rows(self.capture.activations)

    def _input_grads(self) -> torch.Tensor:
        return self.capture.gradients

    def _input_layer_name(self) -> str:
        return self.layer[0]

    def _head(self) -> nn.Linear:
        fc = classifier(self.core)
        if fc is None:
            raise NotApplicableError("this method reads the class weights of a linear head, and the model has none")
        if self.target.fn is not None:
            raise NotApplicableError("this method reads the class weights of a linear head; a callable target "
                                     "has no class")
        return fc

    def _input_class_weights(self) -> torch.Tensor:
        weight = self._head().weight
        weight = weight if self.differentiable else weight.detach()
        return weight[self.target.classes.to(weight.device)]  # (N, C)

    def _input_class_bias(self) -> torch.Tensor:
        fc = self._head()
        classes = self.target.classes
        if fc.bias is None:
            return torch.zeros(len(classes), device=classes.device)
        bias = fc.bias if self.differentiable else fc.bias.detach()
        return bias[classes.to(bias.device)]

    def _input_input_grad(self) -> torch.Tensor:
        return self.capture.input_grad

    def _input_guided_grad(self) -> torch.Tensor:
        return self.capture.guided_grad

    def _input_attentions(self) -> tuple[torch.Tensor, ...]:
        return per_row(self.capture.probes, self.images.shape[0], self.capture.rows)

    def _input_attention_grads(self) -> tuple[torch.Tensor, ...]:
        return per_row(self.capture.probe_grads, self.images.shape[0], self.capture.rows, grads=True)

    def _input_token_graph(self) -> TokenGraph:
        if self._graph is None:
            self._graph = token_graph(self.core, self._attention, self.capture, self.images, self.output)
        return self._graph

    def _input_attention_maps(self) -> dict[str, torch.Tensor]:
        return {n: self.rows(a) for n, a in zip(self.capture.probe_names, self.capture.probes, strict=True)}

    def _input_attention_map_grads(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.capture.probe_names, self.capture.probe_grads, strict=True))

    def _input_token_layout(self) -> TokenLayout:
        return self._input_token_graph().layout()

    def _input_own_attention(self) -> dict[str, torch.Tensor]:
        return {k: self.rows(v) for k, v in self.capture.own_attention.items()}

    def _input_bias_grads(self) -> tuple[torch.Tensor, ...]:
        layers = bias_layers(self.core)
        if not layers:
            raise NotApplicableError("this method reads the bias gradients of Conv2d / BatchNorm2d layers, "
                                     "and the model has none with a bias")
        keep = (lambda t: t) if self.differentiable else (lambda t: t.detach())
        return tuple(keep(effective_bias(m))[None, :, None, None] * g
                     for (_, m), g in zip(layers, self.capture.bias_grads, strict=True))

    def _input_model(self) -> nn.Module:
        return self.core

    def _input_own_pass(self) -> Any:
        return self.own

    def _input_oracle(self) -> Oracle:
        layer = None if self.layer is None else self.layer[1]
        return Oracle(self.model, self.images, self.target, self.capture.rows, layer, self.reading,
                      self._raw, self.output)


def shared_pass(model: nn.Module, images: torch.Tensor, targets: TargetSpec, needs: frozenset[str],
                layer: tuple[str, nn.Module] | None, layer_spec: LayerSpec = "auto", differentiable: bool = False,
                output: engine.OutputSpec = None) -> Pass:
    """THE shared pass of one call: one forward (+ the backward passes `needs` asks for) by `engine.capture`, for
    the chosen `layer` (resolved by the plan) — with "attention" needed, the attention layers run their
    explicit path for it — then the layer's output read as a feature map (B, C, h, w) (`layers.reading`:
    channels-last, or the patch grid of ViT tokens)."""
    core = unwrap(model)
    with ExitStack() as stack:
        attention = stack.enter_context(explicit_attention(core)) if needs & {"attention", "attention_grad"} else []
        capture, target = engine.capture(
            model, images, targets, needs, layer=None if layer is None else layer[1],
            probes=[(a.name, a.probe) for a in attention],
            biased=[m for _, m in bias_layers(core)] if "bias_grad" in needs else (),
            differentiable=differentiable, output=output)
    if capture.activations is None:
        return Pass(model, images, needs, differentiable, output, capture, target, layer, attention=attention)
    read = reading(core, layer_spec, capture.activations, layer[0], images, layer[1])
    grid = capture if read.layout == "nchw" else dataclasses.replace(
        capture, activations=read.to_map(capture.activations),
        gradients=None if capture.gradients is None else read.to_map(capture.gradients))
    return Pass(model, images, needs, differentiable, output, grid, target, layer, read, capture.activations, attention)


def own_pass(model: nn.Module, images: torch.Tensor, needs: frozenset[str], output: engine.OutputSpec,
             own: OwnPass) -> Pass:
    """The pass of a call whose one method's own forward stood in for the shared pass (`Method.own_pass`)."""
    shared = Pass(model, images, needs, False, output, own.capture, own.target, None, attention=own.attention)
    shared.own = own.state
    return shared


def no_pass(model: nn.Module, images: torch.Tensor, needs: frozenset[str], differentiable: bool = False,
            output: engine.OutputSpec = None) -> Pass:
    """The inputs of a call whose methods read no shared pass (generative ones: `images`, `model`)."""
    return Pass(model, images, needs, differentiable, output, None, None, None)


_missing = sorted(name for name in INPUTS if not hasattr(Pass, f"_input_{name}"))
if _missing:  # every input declared in method.INPUTS must be provided here
    raise ImportError(f"explain.context.Pass provides no input {_missing}")
