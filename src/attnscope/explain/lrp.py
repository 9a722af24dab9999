"""Layer-wise relevance propagation for CNNs through zennit (Bach et al., PLoS ONE 2015; Montavon et al. 2019).

LRP redistributes the explained score y layer by layer, R_in = Σ_out (contribution of in to out /
out) · R_out, with a rule per layer type. zennit — maintained by LRP's authors — implements the
rules as backward hooks, groups them in *composites* and merges BatchNorm into the layer before it
with *canonizers*; attnscope applies a composite for one forward + one backward as the registered
rewrite `lrp` (`explain.rewrites`), so the model is restored exactly afterwards, also on error.

The relevance starts at the output as R = y (the explained score, 0 for every other output), as in
Bach et al.; zennit's examples start from the one-hot vector. All rules are linear in the output
relevance, so ours is y times zennit's, to rounding. zennit is the optional extra `lrp`
(`pip install 'attnscope[lrp]'`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import relevance as relevance_rules
from attnscope.explain.context import Oracle
from attnscope.explain.gradient import reduce_channels
from attnscope.explain.method import register_method
from attnscope.explain.rewrites import register_rewrite
from attnscope.registry import Registry

EXTRA = "lrp needs zennit, the optional extra `lrp`: pip install 'attnscope[lrp]' (or pip install zennit)"


def zennit_module(name: str = "zennit") -> Any:
    """`import zennit.<name>`, or NotApplicableError naming the extra."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise NotApplicableError(EXTRA) from e


def _applies(model: nn.Module) -> str | None:
    try:
        zennit_module()
    except NotApplicableError as e:
        return str(e)
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()):
        return "LRP propagates through nn.Conv2d / nn.Linear layers and this model has none"
    return None


# --- canonizers: which zennit canonizers a model gets --------------------------------------------------------


CANONIZERS: Registry[Callable[[], list]] = Registry("LRP canonizer")
CANONIZERS.register("merge-batchnorm", lambda: [zennit_module("zennit.canonizers").SequentialMergeBatchNorm()])
CANONIZERS.register("resnet", lambda: [zennit_module("zennit.torchvision").ResNetCanonizer()])
CANONIZERS.register("vgg", lambda: [zennit_module("zennit.torchvision").VGGCanonizer()])
CANONIZERS.register("none", lambda: [])


def auto_canonizer(model: nn.Module) -> str:
    """torchvision ResNets get zennit's ResNet canonizer, VGGs its VGG canonizer, anything else BatchNorm merging."""
    from torchvision.models import VGG, ResNet

    if isinstance(model, ResNet):
        return "resnet"
    if isinstance(model, VGG):
        return "vgg"
    return "merge-batchnorm"


# --- composites: the rules, by name ---------------------------------------------------------------------------


def _epsilon_only(epsilon: float, canonizers: list, **_: Any) -> Any:
    """LRP-ε on every convolution and linear layer (ε → 0: LRP-0, which is input × gradient on ReLU nets)."""
    composites, rules, types = (zennit_module(f"zennit.{m}") for m in ("composites", "rules", "types"))
    layer_map = composites.layer_map_base(epsilon) + [(types.Convolution, rules.Epsilon(epsilon=epsilon)),
                                               (types.Linear, rules.Epsilon(epsilon=epsilon))]
    return composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


COMPOSITES: Registry[Callable[..., Any]] = Registry("LRP composite")
COMPOSITES.register("epsilon-plus-flat", lambda epsilon, canonizers, **_: zennit_module(
    "zennit.composites").EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers))
COMPOSITES.register("epsilon-gamma-box", lambda epsilon, canonizers, gamma, low, high, **_: zennit_module(
    "zennit.composites").EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma, canonizers=canonizers))
COMPOSITES.register("epsilon-alpha2-beta1", lambda epsilon, canonizers, **_: zennit_module(
    "zennit.composites").EpsilonAlpha2Beta1(epsilon=epsilon, canonizers=canonizers))
COMPOSITES.register("epsilon", _epsilon_only)


@register_rewrite("lrp", applies=None)
def _composite(_name: str, model: nn.Module, composite: Any) -> tuple[Any, Callable[[], None]]:
    """A zennit composite's canonizers and rules on the whole model, the rules evaluated from the forward's saved
    tensors (`explain.relevance`); undo removes both."""
    return composite, relevance_rules.register(model, composite)


def box_bounds(images: torch.Tensor, low: float | None, high: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The input domain of the z^B rule, (N, C, H, W) each: given numbers, else each image's min and max."""
    lo = images.amin(dim=(1, 2, 3), keepdim=True) if low is None else torch.tensor(float(low))
    hi = images.amax(dim=(1, 2, 3), keepdim=True) if high is None else torch.tensor(float(high))
    lo, hi = lo.to(images).expand_as(images), hi.to(images).expand_as(images)
    if (lo > images).any() or (hi < images).any():
        raise InputError(f"lrp: the images leave the box [low, high] = [{low}, {high}] of the z^B rule")
    return lo.contiguous(), hi.contiguous()


def relevance(oracle: Oracle, images: torch.Tensor, scores: torch.Tensor, composite: Any) -> torch.Tensor:
    """LRP relevance (N, C, H, W) of `images` (one per row) under a zennit `composite`, starting from R = y."""
    rows = torch.arange(images.shape[0], device=images.device)
    per_unit = oracle.input_gradients(images, rows, rewrite="lrp", composite=composite)  # relevance of R_out = 1
    return per_unit * scores.to(per_unit)[:, None, None, None]


@register_method("lrp", "gradient", applies=_applies)
def lrp(images: torch.Tensor, scores: torch.Tensor, oracle: Oracle, *, composite: str = "epsilon-plus-flat",
        canonizer: str = "auto", epsilon: float = 1e-6, gamma: float = 0.25, low: float | None = None,
        high: float | None = None, reduce: str = "sum") -> torch.Tensor:
    """LRP (Bach et al., PLoS ONE 2015) through a zennit composite, R_out = y; the relevance summed over channels.

    composite: "epsilon-plus-flat" (default: flat rule on the first layer, z⁺ on convolutions, ε on linear
    layers), "epsilon-gamma-box" (z^B on the first layer within [low, high] — default each image's min and
    max —, γ on convolutions), "epsilon-alpha2-beta1" (α2β1 on convolutions), "epsilon" (LRP-ε everywhere).
    canonizer: "auto" (ResNet / VGG canonizers for torchvision models, else BatchNorm merged into the
    layer before it), "merge-batchnorm", "resnet", "vgg", "none". One forward + one backward.
    """
    canonizers = CANONIZERS.get(auto_canonizer(oracle.core) if canonizer == "auto" else canonizer)()
    lo, hi = box_bounds(images, low, high) if composite == "epsilon-gamma-box" else (None, None)
    rules = COMPOSITES.get(composite)(epsilon=epsilon, canonizers=canonizers, gamma=gamma, low=lo, high=hi)
    return reduce_channels(relevance(oracle, images, scores, rules), reduce)
