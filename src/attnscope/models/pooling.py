"""Pooling baselines for LTPA: what its attention adds over a CNN that pools differently.

LTPA's pc-softmax estimators ignore g (docs/ltpa.md), so against a global-average-pooled CNN it differs in
*how the last features are pooled* as much as in attention. These models take the same convolutional
blocks as SmallCNN and change only that:

- `pooling-cnn` with `pool="max"`: global max pooling (GMP) + linear;
- `pooling-cnn` with `pool="attention"`: one learned attention pooling head on the last feature map,
  a = softmax_i(⟨u, l_i⟩), logits = W Σ_i a_i l_i + b — LTPA's pc-softmax estimator alone, without g
  (Ilse et al., ICML 2018, "Attention-based deep multiple instance learning", in its simplest form);
- `ltpa-nog`: LTPA whose estimators score c_i = ⟨u, l_i⟩ (g replaced by 0 and the global layer dropped):
  for pc-softmax the same function class as LTPA, since ⟨u, g⟩ cancels in the softmax.

The attention models declare `attention_kind = "ltpa"` and return their maps from
`forward(x, return_attention=True)`, so `explain(model, x, "ltpa")` reads them; their attention modules are
listed in `estimators` (each takes the attended features first and returns (a, Σ_i a_i l_i)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.models import register
from attnscope.models.ltpa import LTPA, LTPAConfig
from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig

POOLS = ("avg", "max", "attention")


@dataclass(frozen=True)
class PoolingCNNConfig(SmallCNNConfig):
    pool: str = "max"  # "avg" (SmallCNN), "max" (GMP) or "attention" (one attention pooling head)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in POOLS:
            raise InputError(f"pooling-cnn pool must be one of {POOLS}, got {self.pool!r}")


class AttentionPool(nn.Module):
    """a = softmax over positions of ⟨u, l_i⟩ (u a bias-free 1×1 conv); returns (a (B, h, w), Σ_i a_i l_i (B, C))."""

    normalisation = "softmax"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.u = nn.Conv2d(dim, 1, 1, bias=False)

    def forward(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = local.shape
        a = self.u(local).flatten(1).softmax(dim=1).view(b, h, w)  # (B, h, w), sums to 1
        return a, torch.einsum("bhw,bchw->bc", a, local)


class PoolingCNN(SmallCNN):
    """SmallCNN's blocks → global average, global max, or attention pooling → dropout → `fc`."""

    def __init__(self, config: PoolingCNNConfig) -> None:
        super().__init__(config)
        width = config.widths[-1]
        if config.pool == "max":
            self.pool = nn.AdaptiveMaxPool2d(1)
        if config.pool == "attention":
            del self.pool
            self.estimators = nn.ModuleList([AttentionPool(width)])
            self.attention_kind = "ltpa"  # explain's `ltpa` reads forward(x, return_attention=True)
            self.attention_normalisation = "softmax"

    @property
    def layer_names(self) -> list[str]:
        """The attended block (the keys of the attention maps)."""
        return [f"features.{len(self.config.widths) - 1}"]

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        a = self.features(x)  # (B, C, h, w)
        if self.config.pool != "attention":
            logits = self.fc(self.dropout(self.pool(a).flatten(1)))
            if return_attention:
                raise InputError(f"pooling-cnn with pool={self.config.pool!r} has no attention to return")
            return logits
        weights, pooled = self.estimators[0](a)  # (B, h, w), (B, C)
        logits = self.fc(self.dropout(pooled))  # (B, K)
        return (logits, {self.layer_names[0]: weights}) if return_attention else logits


class LTPANoG(LTPA):
    """LTPA with c_i = ⟨u, l_i⟩: the estimators get g = 0 and there is no global layer (pc compatibility only)."""

    def __init__(self, config: LTPAConfig) -> None:
        if config.compatibility != "pc":
            raise InputError(f"ltpa-nog needs compatibility='pc' (dot products with g = 0 are 0), got "
                             f"{config.compatibility!r}")
        super().__init__(config)
        del self.global_fc, self.global_pool, self.stages[len(self.stages) - 1]  # the last stage fed only g
        self.cam_layer = f"stages.{len(self.stages) - 1}"

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        locals_ = []
        for stage in self.stages:
            x = stage(x)
            locals_.append(x)
        zero = x.new_zeros(x.shape[0], self.config.global_dim)
        maps, feats = {}, []
        for name, i, estimator in zip(self.layer_names, self.attended, self.estimators, strict=True):
            maps[name], g_a = estimator(locals_[i], zero)
            feats.append(g_a)
        feats = [norm(f) for norm, f in zip(self.head_norms, feats, strict=True)]
        if self.config.head == "concat":
            logits = self.classifier(torch.cat(feats, dim=1))
        else:
            logits = sum(fc(f).log_softmax(1) for fc, f in zip(self.classifiers, feats, strict=True))
        return (logits, maps) if return_attention else logits


@register("pooling-cnn")
def pooling_cnn(**cfg) -> PoolingCNN:
    """SmallCNN with global max pooling or one attention pooling head; options: `SmallCNNConfig`'s and `pool`."""
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    return PoolingCNN(PoolingCNNConfig(**cfg))


@register("ltpa-nog")
def ltpa_nog(**cfg) -> LTPANoG:
    """LTPA without g (c_i = ⟨u, l_i⟩); options are the fields of `LTPAConfig` (pc compatibility)."""
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    return LTPANoG(LTPAConfig(**cfg))
