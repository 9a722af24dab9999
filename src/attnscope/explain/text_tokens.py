"""The relevance of each prompt token for a dual encoder's image–text score: `explain_tokens` → `TokenMap`s.

For image b and prompt k the score is s_bk = scale · cos(f(x_b), g(t_k)) (+ bias), g read at one token of
the text (CLIP's end-of-text token). With e_k the prompt's token embeddings (L, D):

- `inputxgrad`: Σ_D e ⊙ ∂s/∂e (gradient × input on the embeddings);
- `ig`: Integrated Gradients from the zero embedding (Sundararajan et al., ICML 2017), Σ_D, `steps` points
  (Riemann midpoints); the token scores sum to s(e) − s(0) up to the quadrature error;
- `attention`: the last text layer's attention from the read-out token to every token, heads averaged;
- `chefer-mm`: Chefer et al.'s rule on the text tower (ICCV 2021; the CLIP notebook's `R_text`): the
  read-out token's row of Π_l (I + E_h[(∇A_l ⊙ A_l)⁺]) from `start_layer`;
- `attnlrp`: Σ_D e ⊙ ∂s/∂e under AttnLRP's rules on the text tower (Achtibat et al., ICML 2024).

The image embeddings are computed once without gradients; the K·B gradients come from one batched backward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError
from attnscope.explain import engine
from attnscope.explain.attention import explicit_attention
from attnscope.explain.crossmodal import relevance
from attnscope.explain.options import positive_int
from attnscope.explain.rewrites import rewritten
from attnscope.explain.text import DualEncoder, Text, describe, dual_encoder
from attnscope.modules import unwrap

TOKEN_METHODS = ("inputxgrad", "ig", "attention", "chefer-mm", "attnlrp")


@dataclass(frozen=True, eq=False)
class TokenMap:
    """Relevance of each prompt token for each image: `values` (B, K, L), `tokens` the K prompts' L tokens,
    `mask` (K, L) true at real tokens (not padding), `scores` (B, K) the explained image–text scores."""

    values: torch.Tensor
    method: str
    tokens: list[list[str]]
    mask: torch.Tensor
    scores: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def words(self, b: int, k: int) -> list[tuple[str, float]]:
        """(token, relevance) of prompt k for image b, padding left out."""
        keep = self.mask[k].tolist()
        return [(w, float(v)) for w, v, m in zip(self.tokens[k], self.values[b, k].tolist(), keep, strict=True) if m]


def explain_tokens(model: nn.Module, images: torch.Tensor, text: Text, methods: str | Sequence[str] = ("inputxgrad",),
                   options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, TokenMap]:
    """A `TokenMap` per method: the relevance of each token of `text`'s prompts for each image's score with it."""
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in TOKEN_METHODS]
    if unknown or not names:
        raise InputError(f"token methods must be among {', '.join(TOKEN_METHODS)}, got {names}")
    found = dual_encoder(model, text.tokenizer)
    if found is None or found.text_forward is None:
        raise InputError(f"{type(unwrap(model)).__name__} is not a dual encoder whose text tower attnscope can "
                         f"open; it knows {describe()}")
    options = {k: dict(v) for k, v in (options or {}).items()}
    if set(options) - set(names):
        raise InputError(f"options given for {sorted(set(options) - set(names))}, not among the methods asked for")
    with engine.model_guard(found.model):
        with torch.no_grad():
            image = found.proj(found.pool(found.norm(found.tokens(images))))  # (B, E)
        ids = found.text_ids(list(text.texts))  # (K, L)
        scorer = _Scorer(found, F.normalize(image, dim=-1), ids, text.score == "cosine")
        out = {}
        for name in names:
            values, scores = _METHODS[name](scorer, **options.get(name, {}))  # (K, B, L), (K, B)
            out[name] = TokenMap(values.transpose(0, 1).detach(), name, found.words(ids), _mask(found, ids),
                                 scores.T.detach(), {"texts": list(text.texts), **options.get(name, {})})
    return out


class _Scorer:
    """Prompt embeddings (K, L, D) → scores (K, B) with the B images, through the model's text tower."""

    def __init__(self, found: DualEncoder, images: torch.Tensor, ids: torch.Tensor, cosine: bool) -> None:
        self.found, self.images, self.ids = found, images, ids
        self.scale = torch.ones(()) if cosine else found.scale().detach()
        self.bias = 0.0 if cosine else found.bias()
        with torch.no_grad():
            self.embedded = found.text_embed(ids)  # (K, L, D)

    def __call__(self, e: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        text = self.found.text_forward(e, self.ids if ids is None else ids)  # (M, E)
        return self.scale * F.normalize(text, dim=-1) @ self.images.T + self.bias  # (M, B)

    def gradients(self, e: torch.Tensor, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂s_kb/∂e_k (K·B rows, L, D) prompt-major, s (K, B)) in one batched backward."""
        e = e.detach().requires_grad_()
        with torch.enable_grad():
            scores = self(e, ids)
            (grad,) = engine.row_grads(scores, [e], retain=False)
        return grad, scores.detach()


def _rows(e: torch.Tensor, b: int) -> torch.Tensor:
    return e.repeat_interleave(b, 0)  # (K·B, L, D): row k·B + b


def _inputxgrad(scorer: _Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    grad, scores = scorer.gradients(scorer.embedded)
    b = scores.shape[1]
    return (_rows(scorer.embedded, b) * grad).sum(-1).view(*scores.shape, -1), scores


def _ig(scorer: _Scorer, steps: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    positive_int("steps", steps, at_most=4096)
    e, k = scorer.embedded, scorer.embedded.shape[0]
    b = scorer.images.shape[0]
    total = torch.zeros(k * b, *e.shape[1:], dtype=e.dtype, device=e.device)
    for j in range(steps):  # midpoints α_j = (j + ½) / steps on the path 0 → e
        grad, _ = scorer.gradients(e * (j + 0.5) / steps)
        total += grad
    with torch.no_grad():
        scores = scorer(e)
    return (_rows(e, b) * total / steps).sum(-1).view(k, b, -1), scores


def _with_attention(scorer: _Scorer) -> tuple[list, list, torch.Tensor]:
    """Every text-tower attention (K, heads, L, L) and ∂s/∂A (K·B rows), forward order; and the scores (K, B)."""
    with ExitStack() as stack:
        layers = stack.enter_context(explicit_attention(scorer.found.text_tower))
        seen: list[tuple[int, torch.Tensor]] = []
        stack.enter_context(engine.recording_each([a.probe for a in layers], seen))
        with torch.enable_grad():
            scores = scorer(scorer.embedded.detach().requires_grad_())
            attn = [t for _, t in seen]
            grads = engine.row_grads(scores, attn, retain=False)
    return [a.detach() for a in attn], grads, scores.detach()


def _read_row(scorer: _Scorer, r: torch.Tensor, b: int) -> torch.Tensor:
    """Rows (K·B, L, L) → the read-out token's row (K, B, L)."""
    at = scorer.found.read_at(scorer.ids).repeat_interleave(b)  # (K·B,)
    return r[torch.arange(len(r), device=r.device), at].view(-1, b, r.shape[-1])


def _attention(scorer: _Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    attn, _, scores = _with_attention(scorer)
    b = scores.shape[1]
    return _read_row(scorer, attn[-1].mean(dim=1).repeat_interleave(b, 0), b), scores


def _chefer(scorer: _Scorer, start_layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    attn, grads, scores = _with_attention(scorer)
    b = scores.shape[1]
    r, _ = relevance([("image", a.repeat_interleave(b, 0), g) for a, g in zip(attn, grads, strict=True)], start_layer)
    return _read_row(scorer, r, b), scores


def _attnlrp(scorer: _Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    with rewritten(scorer.found.text_tower, "attnlrp"):
        return _inputxgrad(scorer)


def _mask(found: DualEncoder, ids: torch.Tensor) -> torch.Tensor:
    """(K, L) true up to and including the read-out token (what the text tower reads)."""
    at = found.read_at(ids)  # (K,)
    return torch.arange(ids.shape[1], device=ids.device)[None] <= at[:, None]


_METHODS = {"inputxgrad": _inputxgrad, "ig": _ig, "attention": _attention, "chefer-mm": _chefer, "attnlrp": _attnlrp}
