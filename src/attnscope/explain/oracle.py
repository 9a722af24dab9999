"""`Oracle`: the one object a method gets when it must run the model again (Score-CAM, Ablation-CAM, occlusion,
IG, SmoothGrad, LRP, …): scores and input gradients of other inputs, and the output when the chosen layer's output
is replaced; the call's target and token layout are bound in it (`explain.context.Pass` makes it).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import budget, engine, progress, split
from attnscope.explain.attention import explicit_attention
from attnscope.explain.layers import Reading
from attnscope.explain.rewrites import rewritten
from attnscope.explain.targets import Target
from attnscope.modules import as_nhwc, unwrap


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
