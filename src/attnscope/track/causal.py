"""Faithfulness measures of a tracker snapshot: do the maps rank regions as the model needs them, does the
model use its own attention, and does a ViT grow attention sinks?

    tracker = AttentionTracker(folder, probe, methods=("attention", "rollout", "gradcam"),
                               causal=CausalMeasures(grid=4, parts=parts_from(dataset, 64)))

Per snapshot, besides the maps' own measures (`measures.py`), with the model in eval mode and no gradients:

    {map}/blankout_rho      Spearman ρ per image between the map summed over the cells of a grid × grid
                            partition and the target logit's drop when each cell is blanked to 0
                            (Abnar & Zuidema, ACL 2020's blank-out reference), mean over the images
    blankout/pointing@{r}   the blank-out reference as a map (each cell's drop over its pixels): does the
    blankout/energy_box@{r} cell the model needs most lie in region r; share of its positive drop there
    parts/drop@{part}       with `parts` (exact counterfactuals of a generated probe): the target logit's
                            mean drop when the part is removed (e.g. the digit, the decoy)
    parts/top@{part}        the share of probe images (with two parts or more) whose most needed part it is
    {map}/parts_rho         Spearman over an image's parts between map mass and drop (3 parts or more)
    {map}/parts_top         whether the part with most mass is the one whose removal costs most
    own/gap@{kind}          models with their own attention pooling (LTPA-like `estimators`): mean drop of
                            the target logit when the attention weights are replaced — "uniform" 1/N, or
                            "permuted" across positions — Wiegreffe & Pinter's (EMNLP 2019) test of use
    own/acc@{kind}          the probe accuracy under that substitution (beside probe_acc)
    sinks/prefix_share      ViTs: share of the last layer's CLS attention (heads averaged) on CLS and
                            registers; sinks/background_share on patches off the probe's "box"
    sinks/norm_outliers     share of patch tokens at the last block's output with a norm > 2 × the
                            image's median (Darcet et al., ICLR 2024: high-norm tokens that registers absorb)

Everything is batched: the blank-out reference is one pass over P · grid² images in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import budget, nhwc, runner, split
from attnscope.metrics import causal, energy_in_box, pointing_game
from attnscope.modules import device_of
from attnscope.track.replay import Upstream

SUBSTITUTIONS = ("uniform", "permuted")


@dataclass(frozen=True)
class Parts:
    """A probe's exact counterfactuals: the images without part k (P, K, C, H, W), the pixels part k draws
    (P, K, H, W) bool, whether it is there (P, K) bool, and the parts' names."""

    removed: torch.Tensor
    regions: torch.Tensor
    present: torch.Tensor
    names: tuple[str, ...]


def parts_from(dataset: Any, n: int) -> Parts:
    """The first `n` images of a generated data set without each of their parts: ClutteredDigits' `PARTS`
    ("digit", "fragments", and "decoy" with a decoy) through `without(i, part)`."""
    names = tuple(p for p in getattr(dataset, "PARTS", ()) if p != "decoy" or getattr(dataset, "decoy", False))
    if not names or not hasattr(dataset, "without"):
        raise InputError(f"{type(dataset).__name__} cannot draw its images without their parts (it needs PARTS "
                         "and without(i, part), as ClutteredDigits has)")
    removed, regions = [], []
    for i in range(n):
        image = dataset[i][0]
        gone = torch.stack([dataset.without(i, p) for p in names])  # (K, C, H, W)
        removed.append(gone)
        regions.append((gone - image[None]).abs().sum(1) > 0)  # (K, H, W) the pixels each part draws
    regions_t = torch.stack(regions)
    return Parts(torch.stack(removed), regions_t, regions_t.flatten(2).any(2), names)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients for the block; every module's training flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag


def logit_scorer(model: nn.Module, targets: torch.Tensor, batch_size: int | None = None,
                 channels_last: bool | str = "auto", fold_batchnorm: bool = False):
    """`f(x, source)`: the logit of the source image's target class, in chunks (call inside `evaluating`); in NHWC
    layout where `channels_last` says so ("auto": the model declares `prefers_channels_last`; the same logits to
    float rounding; the study's faithfulness measures took 1.3-1.4 × less CPU on SmallCNN and LTPA, bench/README.md).
    `batch_size`: inputs per forward; None: the chunk a short probe measures fastest within the memory budget
    (`explain.budget.forward_chunk`, once per process and architecture; `budget.fixed_chunks` for the budget's).
    `fold_batchnorm`: through a copy with BatchNorm folded into the convolutions (`explain.split.folded`; the same
    logits to float rounding) where the model has one to fold."""
    return scorer(chunked(model, batch_size, channels_last, fold_batchnorm)[1], targets, device_of(model))


def scorer(run: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, device: torch.device):
    """`f(x, source)`: the logit of the source image's target class in the outputs `run(x)`, on the CPU."""
    def f(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return run(x.to(device)).gather(1, targets.to(device)[source.to(device)][:, None])[:, 0].cpu()
    return f


Run = Callable[..., torch.Tensor]  # run(x, around=None): outputs of x in chunks, `around` entered after the probe


def chunked(model: nn.Module, batch_size: int | None, channels_last: bool | str = "auto", fold_batchnorm: bool = False,
            keep: str | None = None) -> tuple[nn.Module, Run]:
    """(net, run): `net` the model or its BatchNorm-folded copy (`fold_batchnorm`, where there is one and it has the
    attribute `keep` the caller needs), `run(x, around=None)` its outputs for `x` in `batch_size` chunks (None: the
    probed chunk), NHWC where `channels_last` says so; `around`, a context manager, is entered once the chunk is
    known (the probe's own forwards run outside it) and held over the chunks' forwards."""
    layout = nhwc(model, channels_last)
    copy = split.folded(model) if fold_batchnorm else None
    net = copy if copy is not None and (keep is None or getattr(copy, keep, None) is not None) else model
    run = runner(net, layout)
    kind = f"scorer-{'nhwc' if layout else 'nchw'}{'-folded' if net is not model else ''}"

    def go(x: torch.Tensor, around: AbstractContextManager | None = None) -> torch.Tensor:
        chunk = budget.forward_chunk(net, x, batch_size, run, kind)
        with around if around is not None else nullcontext():
            return run(x, chunk)
    return net, go


class CausalMeasures:
    """The faithfulness measures of a snapshot (module docstring). `grid` must divide the probe's size;
    `images`: blank out only the first N probe images (None: all); `parts`: the probe's counterfactuals;
    `substitution`, `sinks`: measured where the model applies (LTPA-like `estimators`; a ViT's attention);
    `batch_size`: inputs per forward (None: the chunk `logit_scorer`'s probe measures fastest); `fold_batchnorm`:
    the blank-out and part passes through a copy with BatchNorm folded into the convolutions (to float rounding;
    on SmallCNN and LTPA 10–17 % of a forward, bench/README.md)."""

    def __init__(self, grid: int = 4, images: int | None = None, parts: Parts | None = None,
                 substitution: tuple[str, ...] = SUBSTITUTIONS, sinks: bool = True, batch_size: int | None = None,
                 seed: int = 0, fold_batchnorm: bool = True) -> None:
        unknown = set(substitution) - set(SUBSTITUTIONS)
        if unknown:
            raise InputError(f"substitution must be among {SUBSTITUTIONS}, got {sorted(unknown)}")
        self.grid, self.images, self.parts, self.substitution = grid, images, parts, tuple(substitution)
        self.sinks, self.batch_size, self.seed, self.fold_batchnorm = sinks, batch_size, seed, fold_batchnorm

    def with_parts(self, parts: Parts) -> CausalMeasures:
        """The same measures with the probe's counterfactuals `parts`."""
        return CausalMeasures(self.grid, self.images, parts, self.substitution, self.sinks, self.batch_size, self.seed,
                              self.fold_batchnorm)

    @property
    def assembled(self) -> int:
        """Perturbed copies built at a time (the scorer runs them in its own chunks)."""
        return self.batch_size or 256

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CausalMeasures:
        """The measures a store's `settings["causal"]` describes (its parts are drawn again from the data set)."""
        return cls(settings["grid"], settings["images"], None, tuple(settings["substitution"]), settings["sinks"],
                   fold_batchnorm=settings.get("fold_batchnorm", True))

    @property
    def settings(self) -> dict[str, Any]:
        return {"grid": self.grid, "images": self.images, "parts": list(self.parts.names) if self.parts else None,
                "substitution": list(self.substitution), "sinks": self.sinks,
                **({} if self.fold_batchnorm else {"fold_batchnorm": False})}  # stores made before the option match

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 maps: Mapping[str, torch.Tensor], regions: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
        """The measures of `maps` (P, H, W) of `images` (P, C, H, W) for `targets` (P,); `regions`: named boxes."""
        out: dict[str, float | None] = {}
        own = bool(self.substitution) and getattr(model, "estimators", None) is not None
        with evaluating(model):
            net, run = chunked(model, self.batch_size, fold_batchnorm=self.fold_batchnorm,
                               keep="estimators" if own else None)
            device = device_of(model)
            f = scorer(run, targets, device)
            upstream = Upstream(net, list(net.estimators), budget.available(device) // 8) if own else None
            logits = run(images.to(device), upstream.recording() if upstream else None)  # the unperturbed pass,
            base = logits.gather(1, targets.to(device)[:, None])[:, 0].cpu()  # shared by all the references
            out.update(self._blank_out(f, images, maps, regions, base))
            if self.parts is not None:
                out.update(self._parts(f, images, maps, base))
            if own:
                out.update(self._substituted(net, run, upstream, images, targets, base))
            if self.sinks and _is_vit(model):
                out.update(sink_measures(model, images, regions.get("box")))
        return out

    def _blank_out(self, f, images, maps, regions, base) -> dict[str, float | None]:
        n = images.shape[0] if self.images is None else min(self.images, images.shape[0])
        reference = causal.blank_out(f, images[:n], self.grid, batch_size=self.assembled, base=base[:n])  # (n, G)
        out = {f"{k}/blankout_rho": _mean(causal.causal_agreement(m[:n].float(), reference, self.grid))
               for k, m in maps.items()}
        h, w = images.shape[-2:]
        as_map = reference.reshape(n, self.grid, self.grid).repeat_interleave(h // self.grid, 1) \
            .repeat_interleave(w // self.grid, 2).float()  # (n, H, W): each cell's drop over its pixels
        peaked = (as_map.flatten(1).amax(1) > as_map.flatten(1).amin(1)).float()
        for name, boxes in regions.items():
            out[f"blankout/pointing@{name}"] = _mean(pointing_game(as_map, boxes[:n]) * peaked)
            out[f"blankout/energy_box@{name}"] = _mean(energy_in_box(as_map, boxes[:n]))
        return out

    def _parts(self, f, images, maps, base) -> dict[str, float | None]:
        p = self.parts
        if p.removed.shape[0] < images.shape[0] or p.removed.shape[2:] != images.shape[1:]:
            raise InputError(f"parts hold {p.removed.shape[0]} images of {tuple(p.removed.shape[2:])}; the probe has "
                             f"{images.shape[0]} of {tuple(images.shape[1:])}")
        n = images.shape[0]
        present = p.present[:n]
        drops = causal.part_drops(f, images, p.removed[:n], present, self.assembled, base)  # (n, K)
        out = {f"parts/drop@{name}": _mean(drops[:, k]) for k, name in enumerate(p.names)}
        several = present.sum(1) >= 2
        top = drops.nan_to_num(nan=float("-inf")).argmax(1)  # the part the model needs most, per image
        out.update({f"parts/top@{name}": _mean((top[several] == k).double()) for k, name in enumerate(p.names)})
        for key, m in maps.items():
            rho, top = causal.part_agreement(m.float(), p.regions[:n], drops, present)
            out[f"{key}/parts_rho"], out[f"{key}/parts_top"] = _mean(rho), _mean(top)
        return out

    def _substituted(self, net, run, upstream, images, targets, scores) -> dict[str, float | None]:
        """The substitution passes: only the attention modules and what follows them run again (`Upstream`)."""
        x = images.to(device_of(net))
        out = {}
        for kind in self.substitution:
            with substituted_attention(net, kind, self.seed):
                sub = run(x, upstream.replaying()).cpu()
            out[f"own/gap@{kind}"] = _mean(causal.substitution_gap(scores, sub.gather(1, targets[:, None].cpu())[:, 0]))
            out[f"own/acc@{kind}"] = _mean((sub.argmax(1) == targets.cpu()).double())
        return out


@contextmanager
def substituted_attention(model: nn.Module, kind: str, seed: int = 0) -> Iterator[None]:
    """For the block, every attention module in `model.estimators` pools with uniform weights 1/N or with its own
    weights permuted across positions: one fixed permutation per image and module, drawn from `seed`, the module's
    place and the image's place among the rows the module has seen in the block — the same whatever the chunks.

    The protocol (LTPA, `pooling-cnn`): a module takes the attended features (B, D, h, w) first (projected by
    its `project_l` if it has one) and returns (a, Σ_i w_i l_i), w = a under softmax, a / Σ a under sigmoid."""
    if kind not in SUBSTITUTIONS:
        raise InputError(f"substitution must be one of {SUBSTITUTIONS}, got {kind!r}")
    modules = list(getattr(model, "estimators", None) or [])
    if not modules:
        raise NotApplicableError(f"{type(model).__name__} has no attention pooling modules (`estimators`)")
    seen = [0] * len(modules)  # rows each module has pooled in the block: the next row's place

    def permutations(module: nn.Module, b: int, n: int) -> torch.Tensor:
        k = next(i for i, m in enumerate(modules) if m is module)
        first, seen[k] = seen[k], seen[k] + b
        return torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(
            ((seed * 1_000_003 + k) * 1_000_003 + first + i) & (1 << 63) - 1)) for i in range(b)])  # any int seed

    def hook(module: nn.Module, inputs: tuple, output: tuple) -> tuple:
        local = inputs[0]
        project = getattr(module, "project_l", None)
        local = project(local) if project is not None else local  # (B, D, h, w)
        a = output[0]  # (B, h, w)
        b, n = a.shape[0], a[0].numel()
        if kind == "uniform":
            w = torch.full_like(a, 1.0 / n)
        else:
            softmax = getattr(module, "normalisation", "softmax") == "softmax"
            w = a if softmax else a / a.flatten(1).sum(1)[:, None, None]
            order = permutations(module, b, n).to(a.device)
            w = w.flatten(1).gather(1, order).view_as(a)
        return a, torch.einsum("bhw,bdhw->bd", w, local)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _is_vit(model: nn.Module) -> bool:
    from attnscope.explain.attention import attention_modules

    return bool(attention_modules(model))


def sink_measures(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor | None) -> dict[str, float | None]:
    """`sinks/*` of a ViT on `images`: the last layer's CLS attention on extra tokens and on patches off `boxes`
    (P, 4), and the share of outlying patch-token norms at that layer's block output. Call inside `evaluating`."""
    from attnscope.explain.attention import explicit_attention
    from attnscope.explain.tokens import detect_layout

    weights: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    with explicit_attention(model) as layers:
        last = layers[-1]
        block = model.get_submodule(last.name.rsplit(".", 1)[0]) if "." in last.name else last.module
        handles = [last.probe.register_forward_hook(lambda _m, _i, o: weights.append(o)),
                   block.register_forward_hook(lambda _m, _i, o: tokens.append(o[0] if isinstance(o, tuple) else o))]
        try:
            model(images.to(device_of(model)))
        finally:
            for h in handles:
                h.remove()
    a, t = weights[-1].float().cpu(), tokens[-1].float().cpu()  # (P, heads, T, T), (P, T, D)
    layout = detect_layout(model, a.shape[-1], tuple(images.shape[-2:]))
    cls = a.mean(1)[:, layout.cls if layout.cls is not None else 0]  # (P, T)
    out = {"sinks/prefix_share": _mean(causal.prefix_share(cls, layout.prefix)),
           "sinks/norm_outliers": _mean(causal.norm_outliers(t[:, layout.prefix:].norm(dim=-1)))}
    if boxes is not None:
        out["sinks/background_share"] = _mean(causal.background_share(cls, layout.prefix,
                                                                      _off_box(boxes, layout.grid, images.shape[-2:])))
    return out


def _off_box(boxes: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(P, h·w) True for patches that do not overlap the box (x0, y0, x1, y1), x1/y1 exclusive."""
    (gh, gw), (h, w) = grid, size
    ys, xs = torch.arange(gh) * (h // gh), torch.arange(gw) * (w // gw)
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    over_x = (xs[None] < x1) & (xs[None] + w // gw > x0)  # (P, gw)
    over_y = (ys[None] < y1) & (ys[None] + h // gh > y0)  # (P, gh)
    return ~(over_y[:, :, None] & over_x[:, None, :]).reshape(boxes.shape[0], gh * gw)


def _mean(values: torch.Tensor) -> float | None:
    m = float(values.double().nanmean()) if values.numel() else math.nan
    return round(m, 6) if math.isfinite(m) else None
