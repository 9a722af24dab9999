"""Attention-guidance losses: differentiable penalties on attention outside an allowed region.

Each guide is `fn(model, x, targets, allowed) -> GuideLoss(loss, logits)`: it runs the model's forward
pass once through `explain(..., differentiable=True)`, so the penalty and the caller's own loss
share that pass (`logits` keep their graph), and `loss.backward()` reaches the model's parameters.
`allowed` is a box, a mask or a callable (`regions.py`). The caller adds λ · loss to its task loss.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import Explainer, LayerSpec, as_explainer, explain, model_guard, resolve_layer
from attnscope.guide.regions import Allowed, outside
from attnscope.modules import unwrap
from attnscope.registry import METHODS, Registry


class GuideLoss(NamedTuple):
    """A guide's scalar penalty and the logits (B, K) of the forward pass it was computed on."""

    loss: torch.Tensor
    logits: torch.Tensor


GuideFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None, Allowed], GuideLoss]


@dataclass(frozen=True)
class GuideSpec:
    """A registered guide: its function, default weight λ, and `applies(model)` → None or why not."""

    name: str
    fn: GuideFn
    weight: float
    applies: Callable[[nn.Module], str | None]


GUIDES: Registry[GuideSpec] = Registry("guide")


def register_guide(name: str, weight: float, applies: Callable[[nn.Module], str | None] | None = None):
    """Decorator registering `fn(model, x, targets, allowed) -> GuideLoss` as guide `name` with default λ."""

    def add(fn: GuideFn) -> GuideFn:
        GUIDES.register(name, GuideSpec(name, fn, weight, applies or (lambda model: None)))
        return fn

    return add


def check_applies(name: str, model: nn.Module) -> None:
    """Raise `NotApplicableError` naming the guides that do apply when guide `name` does not apply to `model`."""
    core = unwrap(model)
    reason = GUIDES.get(name).applies(core)
    if reason is not None:
        usable = [g for g in GUIDES if GUIDES.get(g).applies(core) is None]
        raise NotApplicableError(f"guide {name!r} does not apply to this model: {reason}. "
                                 f"Guides that do: {', '.join(usable)}")


@register_guide("rrr", weight=10.0)
def rrr(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | None, allowed: Allowed) -> GuideLoss:
    """Right for the Right Reasons (Ross et al., IJCAI 2017): mean_b Σ_cij (A_ij · ∂/∂x_cij Σ_k log p_k)².

    A = 1 − allowed; the sum runs over the colour channels and pixels of an image, the mean over the
    batch (so λ does not depend on the batch size). The penalty does not depend on `targets` (Σ over every
    class; they go to a callable `allowed`). Double backpropagation: the input gradient is explain's
    differentiable saliency, Σ_c g².
    """
    log_p = lambda logits: F.log_softmax(logits, dim=1).sum(dim=1)
    found = explain(model, x, "saliency", targets=log_p, differentiable=True,
                    options={"saliency": {"reduce": "square-sum"}})  # Σ_c g_cij² (B, H, W)
    a = outside(allowed, x, targets)
    return GuideLoss((a.square() * found["saliency"].values).sum(dim=(1, 2)).mean(), found.logits)


@register_guide("cam", weight=1.0)
def cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, allowed: Allowed,
        how: Explainer | str | None = None) -> GuideLoss:
    """Share of Grad-CAM mass outside the allowed region: mean_b Σ A ⊙ M / Σ M, M = ReLU(Σ_k α_k F_k).

    α_k = mean_ij ∂y_c/∂F_k,ij (Selvaraju et al., ICCV 2017), F the model's CAM layer, c = `targets`
    (the true class), M upsampled to the input; A = 1 − allowed. For a global-average-pool + linear
    head M is ReLU(CAM) / hw, so this is also the CAM penalty. In [0, 1]. `how`: another map or layer —
    an `Explainer` of one differentiable method (`Explainer("gradcam", layer="features.3")`,
    `Explainer("layercam")`) or its name; it is explained with `differentiable=True`.
    """
    how = as_explainer(how, ("gradcam",))
    if len(how.methods) != 1:
        raise InputError(f"guide 'cam' reads one map, got the methods {list(how.methods)}")
    how = how.replace(layer=_cam_layer(model, x, how.layer), differentiable=True)
    found = how(model, x, targets)
    return GuideLoss(mass_outside(found[how.methods[0]].values, outside(allowed, x, targets)), found.logits)


def _gives_attention(model: nn.Module) -> str | None:
    return METHODS.get("own-attention").applies(model)


@register_guide("ltpa", weight=1.0, applies=_gives_attention)
def own_attention(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | None, allowed: Allowed) -> GuideLoss:
    """Share of the model's own attention outside the allowed region, averaged over its attention maps.

    For models whose `forward(x, return_attention=True)` returns `(logits, maps)` (LTPA's per-stage
    maps, Jetley et al., ICLR 2018, or any model's): explain's differentiable `own-attention/<name>`
    maps, one share per map. The maps do not depend on `targets` (they go to a callable `allowed`). In [0, 1].
    """
    check_applies("ltpa", model)
    found = explain(model, x, "own-attention", differentiable=True)
    a = outside(allowed, x, targets)
    shares = [mass_outside(m.values, a) for key, m in found.items() if key.startswith("own-attention/")]
    return GuideLoss(torch.stack(shares).mean(), found.logits)


def mass_outside(maps: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of Σ outside ⊙ M⁺ / Σ M⁺ for (B, H, W) maps; 0 for a map without mass."""
    pos = maps.clamp_min(0)
    total = pos.flatten(1).sum(1)
    share = (pos * outside).flatten(1).sum(1) / total.clamp_min(1e-12)
    return share.mean()


_CAM_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {image shape: module}


def _cam_layer(model: nn.Module, x: torch.Tensor, layer: LayerSpec) -> LayerSpec:
    """"auto" → the CAM layer, traced once per model and image shape in eval mode (no batch-norm statistics
    move during the trace); a name or module as given."""
    if layer != "auto":
        return layer
    found = _CAM_LAYERS.setdefault(unwrap(model), {})
    key = tuple(x.shape[1:])
    if key not in found:
        with model_guard(model), torch.no_grad():
            found[key] = resolve_layer(unwrap(model), "auto", x[:1])[1]
    return found[key]
