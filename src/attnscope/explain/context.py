"""What one `explain` call shares between its methods: the shared pass (`Pass`) and reruns (`Oracle`).

`shared_pass` runs the shared forward (+ backward) once, for the union of what the methods read (the
plan's needs), at one point of `explain.plan`; the `Pass` it returns hands each method its inputs by
name, one row per (image, target), image-major; `own_pass` makes the `Pass` of a call whose one method's own
forward stood in for the shared pass (`OwnPass`). `Oracle` (`explain.oracle`, re-exported here) is the one
object a method gets when it must run the model again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnscope.errors import NotApplicableError
from attnscope.explain import engine
from attnscope.explain.attention import AttentionLayer, explicit_attention
from attnscope.explain.layers import LayerSpec, Reading, reading
from attnscope.explain.method import INPUTS
from attnscope.explain.oracle import Oracle
from attnscope.explain.targets import Target, TargetSpec
from attnscope.explain.tokens import TokenLayout
from attnscope.explain.windowed import TokenGraph, per_row, token_graph
from attnscope.modules import unwrap


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
