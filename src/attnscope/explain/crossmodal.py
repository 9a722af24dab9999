"""Methods that read the attention between words and image tokens: `cross-attention`, `chefer-mm`, `alpha`.

They apply to a captioner bound to its caption (`multimodal.TeacherForced`) and `chefer-mm` also to a dual
encoder's bound image tower (`text.ImageScores`); rows are (image, token) or (image, prompt) pairs, and `classes`
says which token (or prompt) a row explains. The rules are those of Chefer et al. (ICCV 2021), module docstring
of `explain.multimodal`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.method import Result, register_method
from attnscope.explain.multimodal import ImageTokens, TeacherForced, captioner
from attnscope.explain.tokens import TokenLayout, detect_layout
from attnscope.explain.transformer import HEAD_FUSIONS
from attnscope.modules import unwrap

# --- Chefer et al.'s generic rule and raw cross-attention -------------------------------------------------


def avg_heads(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Ā = E_h[(∇A ⊙ A)⁺] (Chefer et al., ICCV 2021, eq. 5): (N, heads, Tq, Tk) → (N, Tq, Tk)."""
    return (grad * attn).clamp_min(0).mean(dim=1)


RESIDUALS = ("safe", "reference")


def normalized_residual(r: torch.Tensor, residual: str = "safe") -> torch.Tensor:
    """R̂ = R̄ + I with R̄ = R − I, each row divided by its sum (eqs. 8–9); (N, T, T).

    A row of R − I that sums to 0 (a position no relevance reached) is 0/0: `residual="reference"` keeps the NaN,
    as the authors' code does, and `cross_rule` then zeroes every entry the NaN reaches — in a causal decoder that
    is every entry, for any token but the last (the positions after it get no gradient); `"safe"` keeps such a row
    at 0 (R̂ row = the identity's)."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    bar = r - eye
    total = bar.sum(dim=-1, keepdim=True)
    if residual == "reference":
        return bar / total + eye
    return torch.where(total != 0, bar / torch.where(total != 0, total, 1), 0) + eye


def cross_rule(r_tt: torch.Tensor, r_ii: torch.Tensor, a_ti: torch.Tensor, residual: str = "safe") -> torch.Tensor:
    """The addition to R^{ti} of a cross-attention Ā (N, Tt, Ti): (R̂^{tt})ᵀ Ā R̂^{ii} (eq. 10), NaN → 0."""
    out = normalized_residual(r_tt, residual).transpose(-2, -1) @ a_ti @ normalized_residual(r_ii, residual)
    return torch.nan_to_num(out, nan=0.0)


def relevance(layers: Sequence[tuple[str, torch.Tensor, torch.Tensor]], start_layer: int = 0, residual: str = "safe"
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(R^{ii}, R^{ti}) after every (role, A, ∇A) in forward order; roles "image", "text", "cross" (module doc).

    `start_layer`: image self-attention layers before it are skipped (negative: from the end; −1 is the last).
    """
    images = [i for i, (role, _, _) in enumerate(layers) if role == "image"]
    skip = set(images[: (start_layer if start_layer >= 0 else max(len(images) + start_layer, 0))])
    r_ii = r_tt = r_ti = None
    for i, (role, attn, grad) in enumerate(layers):
        a = avg_heads(attn, grad)  # (N, Tq, Tk)
        n, tq, tk = a.shape
        if role == "image":
            r_ii = _eye(n, tk, a) if r_ii is None else r_ii
            if i not in skip:
                r_ii = r_ii + a @ r_ii
        elif role == "text":  # R^{ti} is 0 until the first cross-attention, and Ā · 0 = 0
            r_tt = _eye(n, tk, a) if r_tt is None else r_tt
            r_ti = None if r_ti is None else r_ti + a @ r_ti
            r_tt = r_tt + a @ r_tt
        elif role == "cross":
            r_tt = _eye(n, tq, a) if r_tt is None else r_tt
            r_ii = _eye(n, tk, a) if r_ii is None else r_ii
            r_ti = (0 if r_ti is None else r_ti) + cross_rule(r_tt, r_ii, a, residual)
    return r_ii, r_ti


def _eye(n: int, t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(t, dtype=like.dtype, device=like.device).expand(n, t, t).clone()


def roles(names: Sequence[str], maps: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """The role of each attention layer: "cross" (queries ≠ keys), "text" (the decoder's, from its module name or
    a causal pattern) or "image"; a model may declare `attention_roles(names)` itself."""
    declared = getattr(model, "attention_roles", None)
    if callable(declared):
        return list(declared(names))
    out = []
    for name in names:
        a = maps[name]
        if a.shape[-1] != a.shape[-2]:
            out.append("cross")
        elif any(part in name.split(".") for part in ("decoder", "text_decoder", "language_model")):
            out.append("text")
        else:
            out.append("image")
    return out


def _cross_names(names: Sequence[str], kinds: Sequence[str]) -> list[str]:
    found = [n for n, k in zip(names, kinds, strict=True) if k == "cross"]
    if not found:
        raise NotApplicableError("this model has no cross-attention from text to image tokens")
    return found


def _image_grid(model: nn.Module, keys: int, size: tuple[int, int]) -> TokenLayout:
    return detect_layout(model, keys, size)


def _image_tokens(model: nn.Module, size: tuple[int, int]) -> ImageTokens | None:
    """A decoder-only VLM's image tokens (bound to a caption), or None for an encoder–decoder."""
    core = unwrap(model)
    found = core.found if isinstance(core, TeacherForced) else None
    return None if found is None or found.image_tokens is None else found.image_tokens(size)


def _token_rows(rows: torch.Tensor, spot: ImageTokens) -> torch.Tensor:
    """Per-row relevance over the sequence (N, T) → over the image tokens as their grid (N, h, w)."""
    return rows[:, spot.start : spot.start + spot.count].reshape(len(rows), *spot.grid)


def _applies(model: nn.Module) -> str | None:
    core = unwrap(model)
    if isinstance(core, TeacherForced) or getattr(core, "attention_kind", None) in ("dual-encoder",) \
            or getattr(core, "text_target", False):
        return None
    found = captioner(core)
    if found is not None and any(isinstance(getattr(m, "fused_attn", None), bool) or
                                 type(m).__name__.endswith("Attention") for m in core.modules()):
        return None
    return ("it reads attention between words and image tokens: a captioner with transformer attention bound to "
            "its caption (targets=Caption(...)), or a dual encoder's image tower bound to texts (targets=Text(...))")


@register_method("cross-attention", "transformer", applies=_applies)
def cross_attention(attention_maps: dict[str, torch.Tensor], classes: torch.Tensor, images: torch.Tensor,
                    model: nn.Module, *, layer_index: int = -1, head_fusion: str = "mean") -> torch.Tensor:
    """Raw cross-attention: A_l[t, image tokens] of the decoder position predicting token t, heads fused
    (mean, max or min); l = the last cross-attention layer by default. A distribution over the image tokens."""
    names = list(attention_maps)
    kinds = roles(names, attention_maps, model)
    spot = _image_tokens(model, tuple(images.shape[-2:]))
    cross = [n for n, k in zip(names, kinds, strict=True) if k == "text"] if spot else _cross_names(names, kinds)
    if not -len(cross) <= layer_index < len(cross):
        raise InputError(f"layer_index {layer_index} is out of range for {len(cross)} cross-attention layers")
    if head_fusion not in HEAD_FUSIONS:
        raise InputError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    a = attention_maps[cross[layer_index]]  # (N, heads, Tq, Tk)
    a = a.mean(dim=1) if head_fusion == "mean" else a.amax(dim=1) if head_fusion == "max" else a.amin(dim=1)
    rows = a[torch.arange(len(a), device=a.device), classes.to(a.device) + (spot.offset if spot else 0)]  # (N, Tk)
    if spot is not None:  # a decoder-only VLM: the attention of the predicting position to the image tokens
        return Result(_token_rows(rows, spot), resize="density")
    return Result(_image_grid(model, rows.shape[-1], tuple(images.shape[-2:])).to_grid(rows), resize="density")


@register_method("chefer-mm", "transformer", applies=_applies)
def chefer_mm(attention_maps: dict[str, torch.Tensor], attention_map_grads: dict[str, torch.Tensor],
              classes: torch.Tensor, images: torch.Tensor, model: nn.Module, *, start_layer: int = 0,
              residual: str = "safe") -> torch.Tensor:
    """Chefer et al.'s generic rule (ICCV 2021; module docstring): R^{ti}[t] at the patches for a captioner,
    the image tower's R^{ii}[CLS] for a dual encoder; `start_layer` skips earlier image self-attention layers;
    `residual`: "safe" or "reference" (the authors' 0/0 in eq. 9, see `normalized_residual`)."""
    if residual not in RESIDUALS:
        raise InputError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    names = list(attention_maps)
    kinds = roles(names, attention_maps, model)
    layers = [(k, attention_maps[n], attention_map_grads[n]) for n, k in zip(names, kinds, strict=True)]
    size = tuple(images.shape[-2:])
    spot = _image_tokens(model, size)
    if spot is not None:  # decoder-only: the self-attention rule over the language model's sequence
        r_tt, _ = relevance([("image", a, g) for role, a, g in layers if role == "text"])  # the self rule
        return _token_rows(r_tt[torch.arange(len(r_tt), device=r_tt.device), classes.to(r_tt.device) + spot.offset],
                           spot)
    r_ii, r_ti = relevance(layers, start_layer, residual)
    if r_ti is not None and not isinstance(unwrap(model), TeacherForced):  # SigLIP's attention-pooling head
        raise NotApplicableError("chefer-mm on an image tower reads the CLS token's row, and this tower's readout "
                                 "is an attention-pooling query; rollout, grad-rollout, chefer and attnlrp apply")
    if r_ti is not None:
        rows = r_ti[torch.arange(len(r_ti), device=r_ti.device), classes.to(r_ti.device)]
        return _image_grid(model, rows.shape[-1], size).to_grid(rows)
    if isinstance(unwrap(model), TeacherForced):
        raise NotApplicableError("chefer-mm found no cross-attention from the words to the image among the attention "
                                 "layers it reads of this captioner")
    layout = _image_grid(model, r_ii.shape[-1], size)
    if layout.cls is None:
        raise NotApplicableError("chefer-mm on an image tower reads the CLS token's row, and this tower has none")
    return layout.to_grid(r_ii[:, layout.cls])


def _has_alpha(model: nn.Module) -> str | None:
    core = unwrap(model)
    found = core.found if isinstance(core, TeacherForced) else captioner(core)
    if found is not None and getattr(found.model, "attention_kind", None) == "sat":
        return None
    return ("it reads the attention a captioner of attnscope's protocol (sat, captioner-tiny) pays while it writes "
            "each word (its forward's `alphas`)")


@register_method("alpha", "intrinsic", applies=_has_alpha)
def alpha(images: torch.Tensor, classes: torch.Tensor, model: nn.Module) -> Result:
    """The captioner's own attention α_t for token t of the bound caption (Show, Attend and Tell's soft attention;
    captioner-tiny's last cross-attention, heads averaged), teacher-forced: what `sat` reads, per token target."""
    core = unwrap(model)
    if not isinstance(core, TeacherForced):
        raise NotApplicableError("alpha explains the tokens of a caption: pass targets=Caption(...)")
    with torch.no_grad():
        out = core.found.model(images, core.ids.expand(len(images), -1), sample=False)
    a = out.alphas[torch.arange(len(images), device=images.device), classes.to(images.device)]  # (N, L)
    return Result(a.reshape(len(a), *out.grid), resize="density")
