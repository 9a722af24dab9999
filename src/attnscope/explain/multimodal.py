"""Per-token maps of image captioners: `explain(captioner, images, methods, targets=Caption(...))` → `SequenceMap`s.

A caption of T tokens is explained as T targets of one image: the captioner is bound to the caption
(`TeacherForced`: images → the T scores of the caption's tokens, each given the tokens before it), and
`explain` runs as for K classes per image — one forward, and the T gradients from one batched backward
(the K-targets mechanism of `explain.engine`). Every method applies unchanged (Grad-CAM on the vision
tower per token, IG, AttnLRP, ...), and two read the attention across modalities:

- `cross-attention`: the cross-attention weights of the decoder position that predicts token t, over the
  image tokens, heads fused, in one layer (the last by default);
- `chefer-mm`: Chefer et al.'s generic rule for bi-modal and encoder–decoder transformers (ICCV 2021,
  eqs. 6–11): relevance matrices R^{ii} (image), R^{tt} (text), R^{ti} (text → image) start at I, I, 0 and
  are updated layer by layer in forward order with Ā = E_h[(∇A ⊙ A)⁺]: an image self-attention
  R^{ii} += Ā R^{ii}; a text self-attention R^{tt} += Ā R^{tt}, R^{ti} += Ā R^{ti}; a cross-attention
  R^{ti} += (R̂^{tt})ᵀ Ā R̂^{ii}, with R̂ = (R − I) row-normalised + I (eqs. 8–9). The map of token t is
  R^{ti}[t] at the image's patches. On a dual encoder (no cross-attention) it is the image tower's
  R^{ii}[CLS] from `start_layer` on — the CLIP rule of the authors' notebook.

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
from attnscope.explain.method import Result, register_method
from attnscope.explain.tokens import TokenLayout, detect_layout
from attnscope.explain.transformer import HEAD_FUSIONS
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


def bound_target(model: nn.Module, targets: Any, methods: Any) -> bool:
    """Whether `explain` binds the model to texts or captions: `Text` / `Caption` targets, or a captioner explained
    without targets by a method that reads the shared pass (it then explains the caption it generates)."""
    from attnscope.explain.text import Text

    if isinstance(targets, (Text, Caption)):
        return True
    names = [methods] if isinstance(methods, str) else methods
    if targets is not None or not isinstance(model, nn.Module) or isinstance(unwrap(model), TeacherForced) \
            or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return False
    return captioner(model) is not None and any(_uses_pass(name) for name in names)


def _uses_pass(name: str) -> bool:
    from attnscope.explain.spec import method_spec

    return method_spec(name).uses_pass


def explain_bound(how: Any, model: nn.Module, images: torch.Tensor, targets: Any) -> Explanation:
    """What `explain` does for text or caption targets (see `bound_target`), as the `Explainer` `how` says;
    generative methods (`sat`) run on the model itself and join the result."""
    from attnscope.explain.text import Text, explain_texts

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError("images must be a float tensor (B, C, H, W)")
    if isinstance(targets, Text):
        return explain_texts(how, model, images, targets)
    spec = targets if isinstance(targets, Caption) else Caption()
    free = tuple(n for n in how.methods if not _uses_pass(n))
    bound = tuple(n for n in how.methods if _uses_pass(n))
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


# --- Chefer et al.'s generic rule and raw cross-attention -------------------------------------------------


def avg_heads(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Ā = E_h[(∇A ⊙ A)⁺] (Chefer et al., ICCV 2021, eq. 5): (N, heads, Tq, Tk) → (N, Tq, Tk)."""
    return (grad * attn).clamp_min(0).mean(dim=1)


def normalized_residual(r: torch.Tensor) -> torch.Tensor:
    """R̂ = R̄ + I with R̄ = R − I, each row divided by its sum (eqs. 8–9); (N, T, T). A zero row becomes NaN, as in
    the authors' code, and `cross_rule` sets what it touches to 0."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    bar = r - eye
    return bar / bar.sum(dim=-1, keepdim=True) + eye


def cross_rule(r_tt: torch.Tensor, r_ii: torch.Tensor, a_ti: torch.Tensor) -> torch.Tensor:
    """The addition to R^{ti} of a cross-attention Ā (N, Tt, Ti): (R̂^{tt})ᵀ Ā R̂^{ii} (eq. 10), NaN → 0."""
    out = normalized_residual(r_tt).transpose(-2, -1) @ a_ti @ normalized_residual(r_ii)
    return torch.nan_to_num(out, nan=0.0)


def relevance(layers: Sequence[tuple[str, torch.Tensor, torch.Tensor]], start_layer: int = 0
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
            r_ti = (0 if r_ti is None else r_ti) + cross_rule(r_tt, r_ii, a)
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
              classes: torch.Tensor, images: torch.Tensor, model: nn.Module, *, start_layer: int = 0) -> torch.Tensor:
    """Chefer et al.'s generic rule (ICCV 2021; module docstring): R^{ti}[t] at the patches for a captioner,
    the image tower's R^{ii}[CLS] for a dual encoder; `start_layer` skips earlier image self-attention layers."""
    names = list(attention_maps)
    kinds = roles(names, attention_maps, model)
    layers = [(k, attention_maps[n], attention_map_grads[n]) for n, k in zip(names, kinds, strict=True)]
    size = tuple(images.shape[-2:])
    spot = _image_tokens(model, size)
    if spot is not None:  # decoder-only: the self-attention rule over the language model's sequence
        r_tt, _ = relevance([("image", a, g) for role, a, g in layers if role == "text"])  # the self rule
        return _token_rows(r_tt[torch.arange(len(r_tt), device=r_tt.device), classes.to(r_tt.device) + spot.offset],
                           spot)
    r_ii, r_ti = relevance(layers, start_layer)
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
