"""Per-token maps of image captioners: `explain(captioner, images, methods, targets=Caption(...))` → `SequenceMap`s.

A caption of T tokens is explained as T targets of one image: the captioner is bound to the caption
(`TeacherForced`: images → the T scores of the caption's tokens, each given the tokens before it), and
`explain` runs as for K classes per image — one forward, and the T gradients from one batched backward
(the K-targets mechanism of `explain.engine`). Every method applies unchanged (Grad-CAM on the vision
tower per token, IG, AttnLRP, ...), and three read the attention across modalities (`explain.crossmodal`):

- `cross-attention`: the cross-attention weights of the decoder position that predicts token t, over the
  image tokens, heads fused, in one layer (the last by default);
- `chefer-mm`: Chefer et al.'s generic rule for bi-modal and encoder–decoder transformers (ICCV 2021,
  eqs. 6–11): relevance matrices R^{ii} (image), R^{tt} (text), R^{ti} (text → image) start at I, I, 0 and
  are updated layer by layer in forward order with Ā = E_h[(∇A ⊙ A)⁺]: an image self-attention
  R^{ii} += Ā R^{ii}; a text self-attention R^{tt} += Ā R^{tt}, R^{ti} += Ā R^{ti}; a cross-attention
  R^{ti} += (R̂^{tt})ᵀ Ā R̂^{ii}, with R̂ = (R − I) row-normalised + I (eqs. 8–9). The map of token t is
  R^{ti}[t] at the image's patches. On a dual encoder (no cross-attention) it is the image tower's
  R^{ii}[CLS] from `start_layer` on — the CLIP rule of the authors' notebook;
- `alpha`: the captioner's own attention α_t per token (SAT's; captioner-tiny's last cross-attention).

Each image is explained in its own call (a bound captioner reads one caption), so the maps of a batch
equal those of its images one by one by construction; the `SequenceMap`s are padded to the longest caption.
`Caption(None)` explains the caption the model generates (greedy); a captioner explained without targets too.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.engine import model_guard
from attnscope.explain.layers import Layer
from attnscope.maps import AttentionMap, Explanation, SequenceMap
from attnscope.modules import unwrap

SCORES = ("logit", "logprob")


@dataclass(frozen=True)
class Caption:
    """Explain each token of a caption per image: `captions` (one per image, or None: the model's own, greedy).

    `score`: what each token's map explains — its "logit" (as Chefer et al.'s one-hot of the output) or its
    "logprob" (log p(token | image, tokens before it), what a counterfactual drop measures).
    `tokenizer`: for captioners that do not carry their words (Hugging Face models), a tokenizer.
    `last`: explain only the last word of each given caption (no end token is added): one map per image,
    (B, H, W), and `logits` (B, V) the scores of every word at that step — e.g. "a red three" for "three".
    """

    captions: Sequence[str] | None = None
    score: str = "logit"
    tokenizer: Any = None
    max_len: int | None = None
    last: bool = False

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"Caption score must be one of {SCORES}, got {self.score!r}")
        if self.captions is not None and (isinstance(self.captions, str) or not all(
                isinstance(c, str) and c.strip() for c in self.captions)):
            raise InputError(f"Caption captions must be a list of non-empty strings (one per image), got "
                             f"{self.captions!r:.80}")
        if self.last and self.captions is None:
            raise InputError("Caption(last=True) explains the last word of given captions: pass captions")


@dataclass(frozen=True)
class ImageTokens:
    """Where a decoder-only VLM's image tokens sit in its sequence: from position `start`, a `grid` (h, w) of them
    in raster order; `offset` is the position whose output predicts the caption's first token."""

    start: int
    grid: tuple[int, int]
    offset: int

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Captioner:
    """How attnscope runs one captioner: teacher-forced logits, greedy ids, its words and image tokens.

    `forced(images (N, C, H, W), ids (N, T + 1))` → logits (N, T, V) of ids[:, 1:]; `generate(images, max_len)` →
    ids (B, T + 1) from the start token (after <end>: padding); `encode(text)` → ids from the start token to the
    end token; `cam_layer`: the dotted name (in the model) whose tokens Grad-CAM reads, or a `Layer` of it;
    `prefix`: tokens before the patch grid there and among the cross-attention's keys; `image_tokens(size)`:
    for a decoder-only model (no cross-attention), where the image tokens of an image of `size` (H, W) sit.
    """

    model: nn.Module
    forced: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generate: Callable[[torch.Tensor, int | None], torch.Tensor]
    encode: Callable[[str], list[int]]
    vocabulary: tuple[str, ...]
    end_id: int
    pad_id: int
    cam_layer: Any = None
    prefix: int = 0
    image_tokens: Callable[[tuple[int, int]], ImageTokens] | None = None


CAPTIONERS: list[Callable[[nn.Module, Any], Captioner | None]] = []  # adapters, tried in order


def captioner(model: nn.Module, tokenizer: Any = None) -> Captioner | None:
    """The `Captioner` of `model` from the first adapter that knows it, or None."""
    for adapter in CAPTIONERS:
        found = adapter(unwrap(model), tokenizer)
        if found is not None:
            return found
    return None


def _protocol(model: nn.Module, _tokenizer: Any) -> Captioner | None:
    """attnscope's own captioners (Show, Attend and Tell, captioner-tiny): `forward(images, ids)`, `caption`."""
    if getattr(model, "attention_kind", None) != "sat":
        return None
    vocab = model.vocab

    def generate(images: torch.Tensor, max_len: int | None) -> torch.Tensor:
        tokens = model.caption(images, max_len=max_len).tokens  # (B, T) after <start>
        start = torch.full((len(tokens), 1), vocab.start_id, dtype=torch.long, device=tokens.device)
        return torch.cat([start, tokens], dim=1)

    return Captioner(model, lambda x, ids: model(x, ids, sample=False).logits, generate, vocab.encode,
                     tuple(vocab.itos), vocab.end_id, vocab.pad_id, getattr(model, "cam_layer", None) or
                     _sat_layer(model), int(getattr(model, "num_prefix_tokens", 0)))


def _sat_layer(model: nn.Module) -> str | None:
    return "encoder.body" if isinstance(getattr(getattr(model, "encoder", None), "body", None), nn.Module) else None


CAPTIONERS.append(_protocol)


class TeacherForced(nn.Module):
    """`captioner` bound to one caption: images (N, C, H, W) → the scores (N, T) of its T tokens.

    Column t is token t + 1 of `ids` given the image and tokens ≤ t: its logit, or its log-probability.
    The captioner is the child `model`, so its layers keep their names under "model.".
    """

    def __init__(self, found: Captioner, ids: torch.Tensor, score: str, tokenizer: Any = None) -> None:
        super().__init__()
        self.model, self.found, self.score, self.tokenizer = found.model, found, score, tokenizer
        self.register_buffer("ids", ids[None], persistent=False)  # (1, T + 1)
        self.num_prefix_tokens = found.prefix
        if isinstance(found.cam_layer, str):
            self.cam_layer = f"model.{found.cam_layer}"

    def __deepcopy__(self, memo: dict) -> TeacherForced:
        """A copy bound to a copy of the captioner (its adapter's functions read the copy, not this model)."""
        model = copy.deepcopy(self.found.model, memo)
        twin = TeacherForced(captioner(model, self.tokenizer), self.ids[0].clone(), self.score, self.tokenizer)
        twin.train(self.training)
        return twin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ids = self.ids.expand(images.shape[0], -1)  # (N, T + 1)
        logits = self.found.forced(images, ids)  # (N, T, V)
        if self.score == "logprob":
            logits = logits.log_softmax(dim=-1)
        return logits.gather(2, ids[:, 1:, None])[..., 0]  # (N, T)


def explain_captions(how: Any, model: nn.Module, images: torch.Tensor, spec: Caption) -> Explanation:
    """`how` on every token of each image's caption: one call per image on the bound captioner (module doc)."""
    found = captioner(model, spec.tokenizer)
    if found is None:
        raise NotApplicableError(f"{type(unwrap(model)).__name__} is not a captioner attnscope knows: "
                                 f"Caption targets read {describe()}")
    if spec.captions is not None and len(spec.captions) != images.shape[0]:
        raise InputError(f"Caption holds {len(spec.captions)} captions for {images.shape[0]} images; "
                         "give one per image")
    ids = _caption_ids(found, images, spec)
    how = how.replace(targets=None, batch_size=None)
    auto = isinstance(how.layer, str) and how.layer == "auto"
    if isinstance(found.cam_layer, Layer) and auto:
        how = how.replace(layer=dataclasses.replace(found.cam_layer, at=f"model.{found.cam_layer.at}"))
    layered = [s.name for s in how.specs if getattr(s, "needs", frozenset()) & {"layer"}]
    if found.cam_layer is None and auto and layered:
        raise NotApplicableError(f"{', '.join(layered)} read(s) a layer of the vision tower, and attnscope knows none "
                                 f"of {type(found.model).__name__} it can read as a patch grid; pass layer=")
    if spec.last:
        return _last_words(how, found, images, ids, spec)
    parts = []
    for b, row in enumerate(ids):
        bound = TeacherForced(found, row, spec.score, spec.tokenizer)
        steps = torch.arange(len(row) - 1, device=images.device)[None]  # (1, T): target t is token t + 1
        out = how(bound, images[b : b + 1], steps)
        parts.append({name: _as_sequence(amap, row, found) for name, amap in out.items()} | {"": out.logits})
    return _joined(parts, ids)


def _last_words(how: Any, found: Captioner, images: torch.Tensor, ids: list[torch.Tensor], spec: Caption
                ) -> Explanation:
    """One map per image (B, H, W): the last word of its caption (`Caption(last=True)`); logits (B, V) there."""
    maps: dict[str, list[AttentionMap]] = {}
    logits = []
    for b, row in enumerate(ids):
        row = row[:-1]  # without the end token: the caption's last word is the last target
        if len(row) < 2:
            raise InputError(f"caption {b} has no word to explain")
        bound = TeacherForced(found, row, spec.score, spec.tokenizer)
        out = how(bound, images[b : b + 1], torch.tensor([len(row) - 2], device=images.device))
        for name, amap in out.items():
            maps.setdefault(name, []).append(amap)
        with model_guard(found.model), torch.no_grad():
            logits.append(found.forced(images[b : b + 1], row[None])[:, -1])  # (1, V) at the explained step
    targets = torch.stack([r[-2] for r in ids]).to(images.device)  # the word each map explains
    joined = {n: replace(AttentionMap.cat(parts), targets=targets) for n, parts in maps.items()}
    return Explanation(joined, torch.cat(logits), targets)


def bound_target(model: nn.Module, targets: Any, uses_pass: Sequence[bool]) -> bool:
    """Whether `explain` binds the model to texts or captions: `Text` / `Caption` targets, or a captioner explained
    without targets by a method that reads the shared pass (`uses_pass`: of each method; it then explains the
    caption it generates)."""
    from attnscope.explain.text import Text

    if isinstance(targets, (Text, Caption)):
        return True
    if targets is not None or not isinstance(model, nn.Module) or isinstance(unwrap(model), TeacherForced):
        return False
    return captioner(model) is not None and any(uses_pass)


def explain_bound(how: Any, model: nn.Module, images: torch.Tensor, targets: Any) -> Explanation:
    """What `explain` does for text or caption targets (see `bound_target`), as the `Explainer` `how` says;
    generative methods (`sat`) run on the model itself and join the result."""
    from attnscope.explain.text import Text, explain_texts

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError("images must be a float tensor (B, C, H, W)")
    if isinstance(targets, Text):
        return explain_texts(how, model, images, targets)
    spec = targets if isinstance(targets, Caption) else Caption()
    passes = {name: spec.uses_pass for name, spec in zip(how.methods, how.specs, strict=True)}
    free = tuple(n for n in how.methods if not passes[n])
    bound = tuple(n for n in how.methods if passes[n])
    out = explain_captions(how.replace(methods=bound), model, images, spec) if bound else None
    if not free:
        return out
    if spec.last:
        raise NotApplicableError(f"{', '.join(free)} generate(s) its own caption and cannot explain the last word "
                                 "of a given one; use cross-attention")
    extra = how.replace(methods=free, targets=None)(model, images)
    if out is None:
        return extra
    return Explanation({n: (extra | out)[n] for n in how.methods}, out.logits, out.targets)


def bind(model: nn.Module, caption: str, tokenizer: Any = None, score: str = "logit"
         ) -> tuple[TeacherForced, torch.Tensor]:
    """`model` bound to one `caption` and the targets (1, T) that explain each of its tokens: what `explain` does for
    `Caption` targets, as a model any consumer of maps takes (sanity checks of one image's words)."""
    found = captioner(model, tokenizer)
    if found is None:
        raise NotApplicableError(f"{type(unwrap(model)).__name__} is not a captioner attnscope knows: {describe()}")
    ids = torch.tensor(found.encode(caption), dtype=torch.long)
    return TeacherForced(found, ids, score, tokenizer), torch.arange(len(ids) - 1)[None]


def _caption_ids(found: Captioner, images: torch.Tensor, spec: Caption) -> list[torch.Tensor]:
    """Each image's ids from the start token to the end token (given, or generated greedily)."""
    if spec.captions is None:
        with model_guard(found.model), torch.no_grad():
            generated = found.generate(images, spec.max_len)  # (B, T + 1)
        rows = []
        for row in generated:
            ends = (row == found.end_id).nonzero()
            rows.append(row[: int(ends[0]) + 1] if len(ends) else row[row != found.pad_id])
        return [r.to(images.device) for r in rows]
    return [torch.tensor(found.encode(c), dtype=torch.long, device=images.device) for c in spec.captions]


def _as_sequence(amap: AttentionMap, ids: torch.Tensor, found: Captioner) -> SequenceMap:
    """A (1, T, H, W) map of one image's T tokens as a `SequenceMap` with its words."""
    tokens = ids[1:][None].to(amap.values.device)  # (1, T)
    return SequenceMap(values=amap.values, method=amap.method, targets=tokens, layer=amap.layer, lowres=amap.lowres,
                       meta={**amap.meta, "units": amap.meta.get("units", "relevance per pixel")},
                       mask=torch.ones_like(tokens, dtype=torch.bool), vocabulary=found.vocabulary,
                       end_id=found.end_id)


def _joined(parts: list[dict[str, Any]], ids: list[torch.Tensor]) -> Explanation:
    """The per-image results as one `Explanation`: maps padded to the longest caption; logits (B, T) padded with 0."""
    names = [k for k in parts[0] if k]
    maps = {name: SequenceMap.cat([p[name] for p in parts]) for name in names}
    t = max(len(r) - 1 for r in ids)
    logits = parts[0][""].new_zeros(len(parts), t).detach()
    targets = torch.full((len(parts), t), -1, dtype=torch.long, device=ids[0].device)
    for i, (p, r) in enumerate(zip(parts, ids, strict=True)):
        logits[i, : len(r) - 1] = p[""][0].detach()
        targets[i, : len(r) - 1] = r[1:]
    return Explanation(maps, logits, targets)


def describe() -> str:
    """What kinds of captioners the adapters know (for messages)."""
    return ("attnscope's own (sat, captioner-tiny: attention_kind = 'sat'), and with transformers: "
            "VisionEncoderDecoderModel, BlipForConditionalGeneration, LLaVA- and Qwen2-VL-style models")
