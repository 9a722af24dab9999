"""Text-conditioned maps of dual encoders (CLIP, SigLIP): `explain(model, images, methods, targets=Text([...]))`.

The K prompts are encoded once, without gradients; the image tower is bound to their embeddings
(`ImageScores`: images → the K image–text scores) and explained as a classifier of K classes with
K targets per image: one forward of the image tower, the K gradients from one batched backward, maps
(B, K, H, W). Every image method applies (Grad-CAM on the tower's tokens, raw attention, rollout,
gradient-weighted rollout, Chefer's rule `chefer-mm`, LeGrad, AttnLRP, IG, ...).

The other direction: `explain_tokens(model, images, Text([...]), methods)` gives, for every image and
prompt, the relevance of each prompt token for their score (a `TokenMap` (B, K, L)): gradient × input and
IG on the token embeddings, raw attention and Chefer's rule on the text tower (the row of the token the
text is read at), AttnLRP.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.modules import unwrap


@dataclass(frozen=True)
class Text:
    """Explain the image–text score of each of `texts` (K prompts) for every image: maps (B, K, H, W).

    `tokenizer`: for models that do not carry their words (Hugging Face, open_clip): a callable or a Hugging
    Face tokenizer. `score`: "similarity" (the model's logit: scaled cosine, plus SigLIP's bias) or "cosine".
    """

    texts: Sequence[str]
    tokenizer: Any = None
    score: str = "similarity"

    def __post_init__(self) -> None:
        texts = self.texts
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts or not all(
                isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"Text needs a list of non-empty prompts, got {texts!r:.80}")
        if self.score not in ("similarity", "cosine"):
            raise InputError(f"Text score must be 'similarity' or 'cosine', got {self.score!r}")


@dataclass(frozen=True)
class DualEncoder:
    """How attnscope runs one dual encoder's image tower and text tower.

    `tower`: the module whose forward runs the image trunk (its attention is the image's); `tokens(x)` → the
    trunk's tokens (B, T, D) before the final norm; `norm`, `pool` (tokens → (B, D)), `proj` (→ (B, E)) finish
    the image embedding; `prefix`: tokens before the patch grid. `encode(texts)` → text embeddings (K, E);
    `text_ids`, `text_tokens` and `text_forward(embeds, ids)` → (K, E) open the text tower for `explain_tokens`.
    """

    model: nn.Module
    tower: nn.Module
    tokens: Callable[[torch.Tensor], torch.Tensor]
    norm: nn.Module
    pool: Callable[[torch.Tensor], torch.Tensor]
    proj: nn.Module
    encode: Callable[[Sequence[str]], torch.Tensor]
    scale: Callable[[], torch.Tensor]
    bias: Callable[[], torch.Tensor | float] = lambda: 0.0
    text_ids: Callable[[Sequence[str]], torch.Tensor] | None = None
    text_embed: nn.Module | None = None
    text_tower: nn.Module | None = None
    text_forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    read_at: Callable[[torch.Tensor], torch.Tensor] | None = None  # ids (K, L) → (K,) the token a text is read at
    words: Callable[[torch.Tensor], list[list[str]]] | None = None  # ids (K, L) → the tokens as text
    prefix: int = 1
    cls: int | None = 0  # the CLS token's index, None for a tower pooled otherwise (SigLIP's attention pooling)


DUAL_ENCODERS: list[Callable[[nn.Module, Any], DualEncoder | None]] = []


def dual_encoder(model: nn.Module, tokenizer: Any = None) -> DualEncoder | None:
    """The `DualEncoder` of `model` from the first adapter that knows it, or None."""
    for adapter in DUAL_ENCODERS:
        found = adapter(unwrap(model), tokenizer)
        if found is not None:
            return found
    return None


def _clip_tiny(model: nn.Module, _tokenizer: Any) -> DualEncoder | None:
    """attnscope's `clip-tiny` (and anything with its protocol: attention_kind = "dual-encoder")."""
    if getattr(model, "attention_kind", None) != "dual-encoder":
        return None
    vocab = model.vocab
    return DualEncoder(
        model, model.visual, lambda x: model.visual(x, final_norm=False), model.visual.norm, lambda t: t[:, 0],
        model.visual_proj, lambda texts: model.encode_text(model.tokenize(texts)), lambda: model.logit_scale.exp(),
        text_ids=model.tokenize, text_embed=model.text.embed, text_tower=model.text,
        text_forward=model.encode_text_embedded, read_at=model.text_positions,
        words=lambda ids: [[vocab.itos[int(i)] for i in row] for row in ids],
        prefix=model.visual.num_prefix_tokens)


DUAL_ENCODERS.append(_clip_tiny)


class SimilarityHead(nn.Module):
    """Pooled image features (N, D) → scores (N, K) against K fixed text embeddings: scale · cos (+ bias)."""

    def __init__(self, proj: nn.Module, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | float,
                 cosine: bool) -> None:
        super().__init__()
        self.proj = proj
        self.register_buffer("texts", F.normalize(texts.detach(), dim=-1), persistent=False)  # (K, E)
        self.register_buffer("scale", torch.ones(()) if cosine else torch.as_tensor(scale).detach(), persistent=False)
        self.register_buffer("bias", torch.zeros(()) if cosine else torch.as_tensor(bias).detach(), persistent=False)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.proj(pooled), dim=-1) @ self.texts.T + self.bias


class ImageScores(nn.Module):
    """A dual encoder's image tower bound to K texts: images (N, C, H, W) → scores (N, K).

    forward = head(pool(norm(tokens(x)))); `norm` and `head` are children under those names, so LeGrad
    reads every layer's tokens the way the tower reads its last (`explain.legrad.readout`).
    """

    text_target = True

    def __init__(self, found: DualEncoder, texts: torch.Tensor, cosine: bool, tokenizer: Any = None) -> None:
        super().__init__()
        self.tower, self.norm, self.found = found.tower, found.norm, found
        self.head = SimilarityHead(found.proj, texts, found.scale(), found.bias(), cosine)
        self.num_prefix_tokens = found.prefix
        self.cosine, self.tokenizer = cosine, tokenizer

    def __deepcopy__(self, memo: dict) -> ImageScores:
        """A copy bound to a copy of the whole dual encoder (its adapter's functions read the copy, not this model),
        so that what a sanity check re-initialises in the copy is what the copy runs."""
        model = copy.deepcopy(self.found.model, memo)
        found = dual_encoder(model, self.tokenizer)
        twin = ImageScores(found, self.head.texts.clone(), self.cosine, self.tokenizer)
        twin.head.scale.copy_(self.head.scale)
        twin.head.bias.copy_(self.head.bias)
        twin.train(self.training)
        return twin

    @property
    def cls_token(self) -> torch.Tensor | None:
        """A marker that the tower's first token is CLS (what `explain.tokens` reads of a model), or None."""
        return torch.zeros(()) if self.found.cls is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.found.pool(self.norm(self.found.tokens(images))))


def text_embeddings(found: DualEncoder, texts: Sequence[str]) -> torch.Tensor:
    """The K texts' embeddings (K, E), in eval mode and without gradients (the model left as found)."""
    from attnscope.explain.engine import model_guard

    with model_guard(found.model), torch.no_grad():
        return found.encode(list(texts))


def explain_texts(how: Any, model: nn.Module, images: torch.Tensor, spec: Text) -> Any:
    """`how` on the bound image tower with target k = text k for every image: maps (B, K, H, W)."""
    found = dual_encoder(model, spec.tokenizer)
    if found is None:
        raise NotApplicableError(f"{type(unwrap(model)).__name__} is not a dual encoder attnscope knows: Text "
                                 f"targets read {describe()}")
    bound = ImageScores(found, text_embeddings(found, spec.texts), spec.score == "cosine", spec.tokenizer)
    k = len(spec.texts)
    out = how.replace(targets=None)(bound, images, torch.arange(k, device=images.device).expand(images.shape[0], k))
    for _, amap in out.items():
        amap.meta["texts"] = list(spec.texts)
    return out


def describe() -> str:
    """What kinds of dual encoders the adapters know (for messages)."""
    return ("attnscope's clip-tiny (attention_kind = 'dual-encoder'), and transformers' CLIPModel and SiglipModel, "
            "open_clip's CLIP")


def bind(model: nn.Module, text: Text, batch: int) -> tuple[ImageScores, torch.Tensor]:
    """`model`'s image tower bound to `text`'s prompts and the targets (batch, K) that explain each prompt: what
    `explain` does for `Text` targets, as a model any consumer of maps takes (e.g. `ats.sanity.model_randomization
    (bound, images, methods, targets=targets)` randomises the image tower's blocks)."""
    found = dual_encoder(model, text.tokenizer)
    if found is None:
        raise NotApplicableError(f"{type(unwrap(model)).__name__} is not a dual encoder attnscope knows: {describe()}")
    bound = ImageScores(found, text_embeddings(found, text.texts), text.score == "cosine", text.tokenizer)
    k = len(text.texts)
    return bound, torch.arange(k, device=bound.head.texts.device).expand(batch, k)
