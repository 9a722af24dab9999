"""Learn To Pay Attention (Jetley, Lord, Lee & Torr, ICLR 2018): trainable attention for classification.

A VGG-style backbone of conv stages; the output of the last stage, max-pooled to 1×1, goes through a
fully connected layer to give the global feature g. Attention estimators sit on the stages before
the last (att3: the three stages before it, e.g. 32×32, 16×16 and 8×8 for 64 px input; att2: the
two latest of those). Each estimator scores every position i of its stage's local features l_i:

    pc:  c_i = ⟨u, l_i + g⟩   (u: a bias-free 1×1 convolution to one channel)
    dp:  c_i = ⟨l_i, g⟩
    softmax:  a = softmax_i(c),   g_a = Σ_i a_i l_i
    sigmoid:  a = σ(c),           g_a = Σ_i a_i l_i / Σ_i a_i

and the classifier sees only the g_a: `concat` feeds [g_a^1, ..., g_a^S] to one linear layer,
`indep` gives each g_a^s its own linear classifier and sums their log-probabilities.

Where l_i and g differ in width, one is projected: "g-down" maps g to the stage's width with a
linear layer (as the authors' Torch code for CUB does), "l-up" maps l to g's width with a bias-free
1×1 convolution and attends over the projected features (the authors' `upprojecting` models and
SaoYan's PyTorch `ProjectorBlock`). What this follows, and where it departs:

- Estimators read the stages *before* their max-pool (SaoYan's `AttnVGG_before`), the global
  feature comes from a fully connected layer after the last stage (the paper; the authors' code
  max-pools to 1×1 and applies `nn.Linear`), and u has no bias (SaoYan's `LinearAttentionBlock`).
- Sigmoid: SaoYan's re-implementation averages a_i l_i over positions (divides by the number of
  positions); here the sum is divided by Σ_i a_i, so g_a is a weighted average of the l_i.
- `indep`: the authors' `pred-ensemble` models add the classifiers' raw scores and train with
  cross-entropy; summing log-probabilities differs from that sum only by a per-image constant
  (Σ_s log softmax(z_s) = Σ_s z_s − Σ_s logsumexp(z_s)), so softmax and cross-entropy over the
  returned logits are exactly those of the authors' model, and the plain training loop is right.
- The head is one linear layer (the paper; SaoYan). `head_norm=True` adds the BatchNorm + ReLU
  that the authors' Torch heads put on each g_a (they also add dropout 0.5; use `dropout` for g).

Worth knowing: under softmax, ⟨u, g⟩ is the same at every position and cancels, so `pc` softmax
attention does not depend on g at all; no gradient reaches g, the global layer or the last stage
(they only matter for `dp` or `sigmoid`). This holds for the paper's equations and both reference
codes; it is kept, not "fixed", and pinned in the tests.

`forward(x, return_attention=True)` returns `(logits, {stage name: a (B, h, w)})`; this is the
protocol `attnscope.explain`'s `ltpa` method reads (the model marks itself `attention_kind = "ltpa"`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError
from attnscope.models.registry import check_fields, register

CHOICES = {
    "compatibility": ("pc", "dp", "dp-scaled"),
    "global_pool": ("max", "avg"),
    "normalisation": ("softmax", "sigmoid"),
    "head": ("concat", "indep"),
    "projection": ("g-down", "l-up"),
}


@dataclass(frozen=True)
class LTPAConfig:
    num_classes: int = 10
    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128, 128)  # one stage per width; each after the first halves H, W
    convs_per_stage: int = 1
    estimators: int = 3  # attention on this many stages just before the last (2: att2, 3: att3)
    global_dim: int = 128  # width of g
    compatibility: str = "pc"  # "pc": ⟨u, l + g⟩, "dp": ⟨l, g⟩; not in the paper: "dp-scaled" ⟨l, g⟩ / √D
    global_pool: str = "max"  # how the last stage is pooled before the global layer; not in the paper: "avg"
    normalisation: str = "softmax"  # "softmax" or "sigmoid"
    head: str = "concat"  # "concat" or "indep"
    projection: str = "g-down"  # where widths differ: "g-down" (g → width of l) or "l-up" (l → width of g)
    dropout: float = 0.0  # before the global fully connected layer
    head_norm: bool = False  # BatchNorm + ReLU on each g_a before the classifier (the authors' Torch `vgg_match`)

    def __post_init__(self) -> None:
        check_fields(self, positive=("num_classes", "in_channels", "widths", "convs_per_stage", "global_dim"),
                     probability=("dropout",))
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"LTPA {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 1 <= self.estimators <= len(self.widths) - 1:
            raise InputError(
                f"LTPA needs 1 <= estimators <= len(widths) - 1 = {len(self.widths) - 1}, got {self.estimators}"
            )


class Estimator(nn.Module):
    """One attention estimator: local features l (B, C, h, w) and g (B, G) → (a (B, h, w), g_a (B, D))."""

    def __init__(self, local_dim: int, global_dim: int, config: LTPAConfig) -> None:
        super().__init__()
        self.normalisation, self.compatibility = config.normalisation, config.compatibility
        up = config.projection == "l-up" and local_dim != global_dim
        down = config.projection == "g-down" and local_dim != global_dim
        self.project_l = nn.Conv2d(local_dim, global_dim, 1, bias=False) if up else None
        self.project_g = nn.Linear(global_dim, local_dim, bias=False) if down else None
        self.dim = global_dim if up else local_dim  # width of the features attended over, D
        self.u = nn.Conv2d(self.dim, 1, 1, bias=False) if config.compatibility == "pc" else None
        self.scale = self.dim ** -0.5 if config.compatibility == "dp-scaled" else 1.0

    def forward(self, local: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.project_l is not None:
            local = self.project_l(local)  # (B, D, h, w)
        if self.project_g is not None:
            g = self.project_g(g)  # (B, D)
        c = compatibility(local, g, self.u, self.scale)  # (B, h, w)
        return attend(local, c, self.normalisation)


def compatibility(local: torch.Tensor, g: torch.Tensor, u: nn.Conv2d | None, scale: float = 1.0) -> torch.Tensor:
    """c_i = ⟨u, l_i + g⟩ if `u` is given ("pc"), else scale · ⟨l_i, g⟩ ("dp": 1, "dp-scaled": 1/√D);
    l (B, D, h, w), g (B, D) → (B, h, w)."""
    if u is None:
        return scale * torch.einsum("bdhw,bd->bhw", local, g)
    return u(local + g[:, :, None, None])[:, 0]


def attend(local: torch.Tensor, c: torch.Tensor, normalisation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention a (B, h, w) from scores c and the attended feature g_a = Σ_i a_i l_i (B, D)."""
    b, h, w = c.shape
    if normalisation == "softmax":
        a = c.flatten(1).softmax(dim=1).view(b, h, w)  # sums to 1 over positions
        weights = a
    else:
        a = torch.sigmoid(c)  # (B, h, w) in (0, 1)
        # a_i / Σ_j a_j as softmax(log σ(c)): the same weights, but finite even where every a_i underflows to 0
        weights = F.logsigmoid(c).flatten(1).softmax(dim=1).view(b, h, w)
    g_a = torch.einsum("bhw,bdhw->bd", weights, local)  # (B, D)
    return a, g_a


def _stage(c_in: int, width: int, convs: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    for _ in range(convs):
        layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c_in = width
    return nn.Sequential(*layers)


class LTPA(nn.Module):
    """VGG-style stages with attention estimators; see the module docstring for the equations."""

    # Forwards without gradients (perturbation reruns, the tracker's blank-out) go NHWC for this model
    # (channels_last="auto"): the study's faithfulness measures took 1.4 × less CPU at 64 px (bench/README.md).
    prefers_channels_last = True

    attention_kind = "ltpa"  # what `attnscope.explain`'s intrinsic `ltpa` method looks for

    def __init__(self, config: LTPAConfig = LTPAConfig()) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.stages = nn.ModuleList(
            _stage(c_in, w, config.convs_per_stage, pool=i > 0)
            for i, (c_in, w) in enumerate(zip((config.in_channels, *widths[:-1]), widths, strict=True))
        )
        self.cam_layer = f"stages.{len(widths) - 1}"  # what Grad-CAM reads by default: the last stage
        self.global_pool = nn.AdaptiveMaxPool2d(1) if config.global_pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.global_fc = nn.Linear(widths[-1], config.global_dim)
        last = len(widths) - 1
        self.attended = tuple(range(last - config.estimators, last))  # indices of the attended stages
        self.estimators = nn.ModuleList(Estimator(widths[i], config.global_dim, config) for i in self.attended)
        dims = [e.dim for e in self.estimators]
        norm = lambda d: nn.Sequential(nn.BatchNorm1d(d), nn.ReLU()) if config.head_norm else nn.Identity()  # noqa: E731
        self.head_norms = nn.ModuleList(norm(d) for d in dims)
        if config.head == "concat":
            self.classifier = nn.Linear(sum(dims), config.num_classes)
        else:
            self.classifiers = nn.ModuleList(nn.Linear(d, config.num_classes) for d in dims)

    @property
    def attention_normalisation(self) -> str:
        """"softmax" (maps are distributions over positions) or "sigmoid" (gates); read by `explain`."""
        return self.config.normalisation

    @property
    def layer_names(self) -> list[str]:
        """Dotted names of the attended stages, in order: the keys of the attention maps."""
        return [f"stages.{i}" for i in self.attended]

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, K); with `return_attention`, also `{stage name: a (B, h, w)}`."""
        locals_: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)  # (B, C_s, H / 2**s, W / 2**s)
            locals_.append(x)
        g = self.global_fc(self.dropout(self.global_pool(x).flatten(1)))  # (B, G)
        maps, feats = {}, []
        for name, i, estimator in zip(self.layer_names, self.attended, self.estimators, strict=True):
            a, g_a = estimator(locals_[i], g)  # (B, h, w), (B, D)
            maps[name] = a
            feats.append(g_a)
        feats = [norm(f) for norm, f in zip(self.head_norms, feats, strict=True)]
        if self.config.head == "concat":
            logits = self.classifier(torch.cat(feats, dim=1))  # (B, K)
        else:  # Σ_s log p_s: a product of experts; see the module docstring for why cross-entropy fits
            logits = sum(F.log_softmax(fc(f), dim=1) for fc, f in zip(self.classifiers, feats, strict=True))
        return (logits, maps) if return_attention else logits


@register("ltpa")
def ltpa(**cfg) -> LTPA:
    """LTPA; options are the fields of `LTPAConfig`."""
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    return LTPA(LTPAConfig(**cfg))
