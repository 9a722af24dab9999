"""The part of a model after one of its layers, as a module of that layer's output (torch.fx).

Ablation-CAM asks for the model's output when the chosen layer outputs C ablated copies of its
activations: only the layers after it need to run, on the activations the shared pass already has.
`tail_after` traces the model symbolically (no data runs), cuts the graph at the layer's call and
keeps it only when everything after the cut reads nothing from before it but parameters and
constants; otherwise it says why, and the caller runs the model from its input instead. The trace is
done once per model, layer and module structure (`budget.structure`: a replaced submodule or parameter
traces again; weights updated in place are read by the cached tail as they are, since it holds the
model's own modules) and forgotten with the model.
"""

from __future__ import annotations

import operator
import weakref

import torch
from torch import fx, nn

from attnscope.explain.budget import structure

_TAILS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[fx.GraphModule | None, str]]] = \
    weakref.WeakKeyDictionary()


class _Tracer(fx.Tracer):
    """fx's tracer that keeps the chosen layer as one call (its output is where the graph is cut)."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


def _after(graph: fx.Graph, cut: fx.Node) -> list[fx.Node]:
    """The nodes that depend on `cut`, in graph order."""
    below = {cut}
    for node in graph.nodes:
        if any(a in below for a in node.all_input_nodes):
            below.add(node)
    return [n for n in graph.nodes if n in below and n is not cut]


def tail_after(model: nn.Module, layer: str) -> tuple[fx.GraphModule | None, str]:
    """(the layers of `model` after `layer`, as a module of the layer's output; "") or (None, why not); cached."""
    known = _TAILS.setdefault(model, {})
    key = (layer, structure(model))
    if key not in known:
        for stale in [k for k in known if k[1] != key[1]]:  # a model whose structure changed keeps no stale tail
            del known[stale]
        known[key] = _trace_tail(model, layer)
    return known[key]


def _trace_tail(model: nn.Module, layer: str) -> tuple[fx.GraphModule | None, str]:
    try:
        graph = _Tracer(layer).trace(model)
    except Exception as e:  # noqa: BLE001 — symbolic tracing, nothing ran: any failure means "not traceable"
        return None, f"the model does not trace with torch.fx ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        return None, f"the layer {layer!r} is called {len(calls)} times in the traced graph"
    cut = calls[0]
    after = _after(graph, cut)
    kept = set(after) | {cut}
    for node in after:
        before = [a for a in node.all_input_nodes if a not in kept and a.op != "get_attr"]
        if before:
            return None, f"the layers after {layer!r} also read {before[0].name!r} from before it"
    if not after or after[-1].op != "output":
        return None, f"the model's output does not depend on {layer!r}"
    tail = fx.Graph()
    env = {cut: tail.placeholder("layer_output")}
    for node in graph.nodes:
        used = node.op == "get_attr" and any(u in kept for u in node.users)
        if used or node in kept and node is not cut:
            env[node] = tail.node_copy(node, lambda a: env[a])
    return fx.GraphModule(model, tail), ""


_FOLDED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = weakref.WeakKeyDictionary()


def folded(model: nn.Module) -> nn.Module | None:
    """A copy of `model` (eval mode) with each BatchNorm folded into the convolution before it, for forwards
    without gradients: W' = W γ/σ, b' = (b − μ) γ/σ + β where the convolution's output feeds nothing else —
    torch.fx's `fuse` where the model traces, else each Conv2d → BatchNorm2d pair inside an `nn.Sequential`
    (`fold_sequential`: models with Python control flow, e.g. LTPA). The same function to float rounding (3e-7 of
    the logits on resnet18), 8–11 % less CPU on resnet18 (no separate normalisation pass); its 2 × 2 max-pools are
    `PairMax` (the same values, no indices). None when the model is
    in training mode, carries forward hooks (they would not see the copy's passes), or has nothing to fold. Made
    once per model and module structure, and folded again into the same copy when a parameter or buffer changed in
    place (`_version`: a training step), so what is cached per copy (its memory estimate) stays; forgotten with the
    model."""
    if model.training or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    versions = tuple(t._version for t in model.parameters()) + tuple(t._version for t in model.buffers())
    key = (structure(model), versions)
    known = _FOLDED.get(model)
    if known is None or known[0] != key:
        copy = _fold(model)
        if known is not None and known[0][0] == key[0] and _refolded(known[1], copy):
            copy = known[1]
        _FOLDED[model] = known = (key, copy)
    return known[1]


_UNTRACEABLE: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()  # model → its structure


def _fold(model: nn.Module) -> nn.Module | None:
    copy = None
    if _UNTRACEABLE.get(model) != structure(model):  # a failed trace (15 ms on LTPA) is not tried again
        try:
            from torch.fx.experimental.optimization import fuse

            copy = relu_in_place(fuse(model))
        except Exception:  # noqa: BLE001 — symbolic tracing: any failure means "not traceable"
            _UNTRACEABLE[model] = structure(model)
    if copy is None:
        copy = fold_sequential(model)
    if copy is not None:
        pairwise_pools(copy)
        for p in copy.parameters():
            p.requires_grad_(False)
    return copy


@torch.no_grad()
def _refolded(old: nn.Module | None, new: nn.Module | None) -> bool:
    """Copies `new`'s folded values into `old` where both have the same tensors by name and shape; whether it did."""
    if old is None or new is None:
        return False
    a, b = old.state_dict(keep_vars=True), new.state_dict(keep_vars=True)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape or a[k].dtype != b[k].dtype for k in a):
        return False
    for k, t in a.items():
        t.copy_(b[k])
    return True


FRESH = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)  # modules whose output is a tensor they made
ADDS = (operator.add, operator.iadd, torch.add)


def relu_in_place(graph: fx.GraphModule) -> fx.GraphModule:
    """`graph` with each ReLU module computing in place where every call of it takes a tensor that a
    convolution, linear layer, BatchNorm or addition just made and nothing else reads (a ReLU module may be
    called at several places: torchvision's BasicBlock calls its one `relu` twice)."""
    sites: dict[str, list[bool]] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), nn.ReLU):
            source = node.args[0] if node.args else None
            made = isinstance(source, fx.Node) and len(source.users) == 1 and (
                source.op == "call_module" and isinstance(graph.get_submodule(source.target), FRESH)
                or source.op == "call_function" and source.target in ADDS)
            sites.setdefault(node.target, []).append(made)
    for target, safe in sites.items():
        if all(safe):
            graph.get_submodule(target).inplace = True
    return graph


def fold_sequential(model: nn.Module) -> nn.Module | None:
    """A deep copy of `model` (eval mode) in which each Conv2d directly followed by a BatchNorm2d (with running
    statistics) inside an `nn.Sequential` is that convolution with the normalisation folded in
    (`torch.nn.utils.fusion.fuse_conv_bn_eval`) and the BatchNorm an Identity, and each ReLU right after such a
    pair, a Conv2d or a Linear computes in place (its input is a tensor that module made and nothing else reads).
    None when there is no such pair."""
    import copy as copying

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out, pairs = copying.deepcopy(model), 0
    for seq in (m for m in out.modules() if isinstance(m, nn.Sequential)):
        names, fresh = list(seq._modules), False  # fresh: the module before returns a tensor only it made
        for before, name in zip(names, names[1:], strict=False):
            conv, norm = seq._modules[before], seq._modules[name]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats \
                    and norm.running_mean is not None:
                seq._modules[before], seq._modules[name] = fuse_conv_bn_eval(conv, norm), nn.Identity()
                pairs, fresh = pairs + 1, True  # the Identity passes the fused convolution's output on
            elif isinstance(norm, nn.ReLU) and (fresh or isinstance(conv, (nn.Conv2d, nn.Linear))):
                norm.inplace, fresh = True, False
            else:
                fresh = False
    return out if pairs else None


class PairMax(nn.Module):
    """`nn.MaxPool2d(2)` without gradients: the elementwise maximum of the four strided 2 × 2 phases (the same values,
    NaN kept; odd sizes floored). No index tensor is made and no window is scanned: on SmallCNN at 64 px (NHWC),
    12–24 % less CPU per forward, LTPA 6 % (1 machine, not tested)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        return torch.maximum(torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]),
                             torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


def pairwise_pools(model: nn.Module) -> int:
    """Replaces, in place, each `nn.MaxPool2d` of `model` that pools 2 × 2 windows with stride 2 (no padding,
    dilation, ceil mode or indices) by a `PairMax`; for copies run without gradients. Returns how many."""
    def plain(m: nn.Module) -> bool:
        two = lambda v: v in (2, (2, 2))  # noqa: E731
        return (type(m) is nn.MaxPool2d and two(m.kernel_size) and two(m.stride) and m.padding in (0, (0, 0))
                and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and plain(child):
                parent._modules[name], swapped = PairMax(), swapped + 1
    return swapped


def same_output(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two runs of the same computation agree to float rounding (a tail checked against the model)."""
    scale = b.abs().max().clamp_min(1e-12)
    return a.shape == b.shape and bool(((a - b).abs() <= 1e-4 * scale + 1e-6).all())
