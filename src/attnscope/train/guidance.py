"""Attention guidance: a differentiable penalty on attention outside an allowed region, added to the loss.

A guide is `fn(model, x, y, outside) -> (logits, penalty)`: it runs the model's forward pass itself
(so the penalty and the classification loss share it) and returns the logits (B, K) and a scalar
penalty that autograd carries into the model's parameters. `outside` (B, H, W) is 1 where the
model should not look, 0 elsewhere: outside the digit's box or mask (clutter and the decoy patch
alike), or only the decoy patch (region "not-decoy", as Ross et al. annotate Decoy MNIST).
Guides and regions are found by name (`GUIDES`, `REGIONS`); the loss is CE + λ · penalty.

The maps come from `explain(..., differentiable=True)`: the same Grad-CAM, saliency and LTPA
code as every other caller, with the graph kept (`create_graph=True`) so that training can push
the attention itself, and the logits of that one forward pass returned for the task's loss.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import explain
from attnscope.explain.engine import model_guard
from attnscope.explain.layers import resolve_layer
from attnscope.metrics import box_masks
from attnscope.modules import unwrap
from attnscope.registry import METHODS, Registry
from attnscope.train.config import TrainConfig

GuideFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GuideSpec:
    """A registered guide: its function, default weight λ, and `applies(model)` → None or why not."""

    name: str
    fn: GuideFn
    weight: float
    applies: Callable[[nn.Module], str | None]


GUIDES: Registry[GuideSpec] = Registry("guide")
REGIONS: Registry[Callable[[Any, tuple[int, int]], torch.Tensor]] = Registry("guidance region")


def register_guide(name: str, weight: float, applies: Callable[[nn.Module], str | None] | None = None):
    """Decorator registering `fn(model, x, y, outside) -> (logits, penalty)` as guide `name` with default λ."""

    def add(fn: GuideFn) -> GuideFn:
        GUIDES.register(name, GuideSpec(name, fn, weight, applies or (lambda model: None)))
        return fn

    return add


@REGIONS.register("box")
def _box(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    return box_masks(_field(batch, "box"), size)


@REGIONS.register("mask")
def _mask(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    return _field(batch, "mask").bool()


@REGIONS.register("not-decoy")
def _not_decoy(batch: Any, size: tuple[int, int]) -> torch.Tensor:
    """Everything but the decoy patch: Ross et al.'s annotation A marks only the known shortcut."""
    boxes = _field(batch, "decoy_box")  # (B, 4), -1 where a sample has no decoy
    if (boxes < 0).any():
        raise InputError("guide region 'not-decoy' needs data with a decoy patch in every image (clutter-decoy)")
    return ~box_masks(boxes, size)


class Guidance:
    """The guide a `TrainConfig` asks for, bound to its weight and allowed region."""

    def __init__(self, name: str, weight: float | None, region: str) -> None:
        self.spec, self.region = GUIDES.get(name), REGIONS.get(region)
        self.weight = self.spec.weight if weight is None else float(weight)
        self._checked: set[int] = set()

    def check(self, batch: Any) -> None:
        """Raise now, before a run is written, if `batch` (e.g. one training sample) lacks the region."""
        self.region(batch, tuple(batch[0].shape[-2:]))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K) and the penalty of one batch; `batch` supplies the allowed region."""
        if id(model) not in self._checked:
            reason = self.spec.applies(unwrap(model))
            if reason is not None:
                usable = [g for g in GUIDES if GUIDES.get(g).applies(unwrap(model)) is None]
                raise NotApplicableError(f"guide {self.spec.name!r} does not apply to this model: {reason}. "
                                         f"Guides that do: {', '.join(usable)}")
            self._checked.add(id(model))
        outside = (~self.region(batch, tuple(x.shape[-2:])).to(x.device)).float()  # (B, H, W)
        return self.spec.fn(model, x, y, outside)


def build(config: TrainConfig) -> Guidance | None:
    """The config's guidance, or None when it asks for none."""
    return Guidance(config.guide, config.guide_weight, config.guide_region) if config.guide else None


@register_guide("rrr", weight=10.0)
def rrr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, outside: torch.Tensor):
    """Right for the Right Reasons (Ross et al., IJCAI 2017): Σ_cij (A_ij · ∂/∂x_cij Σ_k log p_k)².

    A = `outside`; the sum runs over the colour channels and pixels of an image, then the mean is
    taken over the batch (so λ does not depend on the batch size). Needs double backpropagation:
    the input gradient of Σ_k log p_k is explain's differentiable saliency, reduced by Σ_c g².
    """
    log_p = lambda logits: F.log_softmax(logits, dim=1).sum(dim=1)
    found = explain(model, x, "saliency", targets=log_p, differentiable=True,
                    options={"saliency": {"reduce": "square-sum"}})  # Σ_c g_cij² (B, H, W)
    return found.logits, (outside.square() * found["saliency"].values).sum(dim=(1, 2)).mean()


@register_guide("cam", weight=1.0)
def gradcam_mass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, outside: torch.Tensor):
    """Share of Grad-CAM mass outside the region: Σ A ⊙ M / Σ M, M = ReLU(Σ_k α_k F_k), α_k = mean ∂y_c/∂F_k.

    F is the model's CAM layer ("auto"), c the true class, M upsampled to the input. For a global
    average pool + linear head M is ReLU(CAM) / hw, so this is also the CAM penalty. In [0, 1].
    """
    _, layer = _cam_layer(model, x)
    found = explain(model, x, "gradcam", targets=y, layer=layer, differentiable=True)
    return found.logits, _mass_outside(found["gradcam"].values, outside)


def _gives_attention(model: nn.Module) -> str | None:
    return METHODS.get("own-attention").applies(model)


@register_guide("ltpa", weight=1.0, applies=_gives_attention)
def attention_mass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, outside: torch.Tensor):
    """Share of the model's own attention outside the region, averaged over its attention maps.

    For models whose `forward(x, return_attention=True)` returns `(logits, maps)` (LTPA's per-stage
    maps, or any model's): explain's differentiable `own-attention/<name>` maps, one per map.
    """
    found = explain(model, x, "own-attention", differentiable=True)
    shares = [_mass_outside(m.values, outside) for key, m in found.items() if key.startswith("own-attention/")]
    return found.logits, torch.stack(shares).mean()


def _mass_outside(maps: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of Σ outside ⊙ M⁺ / Σ M⁺ for (B, H, W) maps; 0 for a map without mass."""
    pos = maps.clamp_min(0)
    total = pos.flatten(1).sum(1)
    share = (pos * outside).flatten(1).sum(1) / total.clamp_min(1e-12)
    return share.mean()


_CAM_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {image shape: (name, module)}


def _cam_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The CAM layer, traced once per model and image shape in eval mode (no batch-norm statistics move)."""
    found = _CAM_LAYERS.setdefault(unwrap(model), {})
    key = tuple(x.shape[1:])
    if key not in found:
        with model_guard(model), torch.no_grad():
            found[key] = resolve_layer(unwrap(model), "auto", x[:1])
    return found[key]


def _field(batch: Any, name: str) -> torch.Tensor:
    value = getattr(batch, name, None)
    if not isinstance(value, torch.Tensor):
        raise InputError(f"attention guidance needs data with a ground-truth {name!r} per image; "
                         f"this data set's samples have none")
    return value
