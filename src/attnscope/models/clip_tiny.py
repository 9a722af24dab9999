"""`clip-tiny`: a CLIP-style dual encoder (Radford et al., ICML 2021) small enough to train on a CPU in minutes.

A ViT image tower (conv stem, CLS token; `VisionTower`) and a causal text transformer (`TextTower`) map
an image and a text to embeddings whose scaled cosine similarity is the image–text score:

    s(x, t) = exp(τ) · ⟨f(x) / |f(x)|, g(t) / |g(t)|⟩,  f(x) = W_v · LN(tokens(x))[CLS],  g(t) = W_t · LN(h(t))[EOT]

as in CLIP, the text read at its end-of-text token (`<end>` here) and τ learnt. The words are those of the
vocabulary in the config (DigitScenes' by default when trained here), so `tokenize` encodes prompts like
"a red three" (digits are read as their number words: "a red 3" is "a red three"). Trained by
`attnscope train --model clip-tiny --data scenes` with the symmetric InfoNCE loss (`train.multimodal`).

The dual-encoder protocol attnscope's text targets read (`attnscope.explain.text`): `attention_kind =
"dual-encoder"`, `encode_image`, `encode_text`, `tokenize`, `logit_scale`, and the image tower split as
`visual` (tokens) → `visual_norm` is inside `visual` → `visual_proj` on the CLS token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import InputError
from attnscope.models.registry import check_fields, register
from attnscope.models.sat_encoder import _load_part
from attnscope.models.tiny_transformer import TextTower, VisionTower, init_weights
from attnscope.vocab import Vocabulary, tokenize

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # DigitScenes' words


@dataclass(frozen=True)
class ClipTinyConfig:
    vocab: dict[str, Any] | None = None  # Vocabulary.to_json(); the trainer passes the data's
    image_size: int = 64
    patch_size: int = 8  # an 8 × 8 grid of patch tokens at 64 px
    dim: int = 64  # image tower width
    depth: int = 3
    heads: int = 4
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    embed_dim: int = 64  # the joint embedding
    mlp_ratio: float = 2.0
    stem: str = "conv"  # "conv" (Xiao et al. 2021) or "smallcnn": a hybrid ViT on SmallCNN's feature map
    stem_widths: tuple[int, ...] = (16, 32, 64, 128)  # smallcnn stem: one block per width (8×8 at 64 px)
    freeze_stem: bool = False  # the stem's CNN is not trained (e.g. a pretrained SmallCNN, `stem_weights=`)
    max_len: int = 24  # tokens per text, <start> and <end> included
    temperature: float = 0.07  # initial τ = log(1 / temperature), as CLIP

    def __post_init__(self) -> None:
        check_fields(self, positive=("image_size", "patch_size", "dim", "depth", "heads", "text_dim", "text_depth",
                                     "text_heads", "embed_dim", "max_len"))
        if not 0 < self.temperature < 1:
            raise InputError(f"ClipTinyConfig.temperature must be in (0, 1), got {self.temperature!r}")


def encode_texts(vocab: Vocabulary, texts: Sequence[str], max_len: int) -> torch.Tensor:
    """Texts → ids (K, L): `<start>` words `<end>`, right-padded; digits are read as number words."""
    if isinstance(texts, str) or not len(texts) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise InputError(f"texts must be a non-empty list of non-empty strings, got {texts!r:.80}")
    encoded = []
    for text in texts:
        words = [DIGIT_WORDS[int(w)] if w.isdigit() and len(w) == 1 else w for w in tokenize(text)]
        ids = vocab.encode(words)
        if len(ids) > max_len:
            raise InputError(f"{text!r} has {len(ids) - 2} words; this model reads at most {max_len - 2}")
        encoded.append(ids)
    ids = torch.full((len(encoded), max(map(len, encoded))), vocab.pad_id, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
    return ids  # (K, L)


class ClipTiny(nn.Module):
    """`forward(images, ids)` → logits per image (B, K); `encode_image`, `encode_text`, `tokenize`."""

    attention_kind = "dual-encoder"

    def __init__(self, config: ClipTinyConfig, stem_weights: str | None = None) -> None:
        super().__init__()
        if config.vocab is None:
            raise InputError("clip-tiny needs a vocabulary: vocab=Vocabulary.to_json() (the trainer passes the data's)")
        self.config = config
        self.vocab = Vocabulary.from_json(config.vocab)
        self.visual = VisionTower(config.image_size, config.patch_size, config.dim, config.depth, config.heads,
                                  config.mlp_ratio, cls=True, stem=config.stem, stem_widths=config.stem_widths,
                                  freeze_stem=config.freeze_stem)
        self.visual_proj = nn.Linear(config.dim, config.embed_dim, bias=False)
        self.text = TextTower(len(self.vocab), config.max_len, config.text_dim, config.text_depth, config.text_heads,
                              config.mlp_ratio)
        self.text_proj = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.temperature)))
        init_weights(self)
        if stem_weights is not None:  # after the initialisation, which would overwrite them
            _load_part(self.visual.patch_embed[0], stem_weights, "features.", "smallcnn")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Ids (K, L) of `texts` for `encode_text`."""
        return encode_texts(self.vocab, texts, self.config.max_len).to(self.logit_scale.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, E), not normalised: W_v · LN(tokens)[CLS]."""
        return self.visual_proj(self.visual(images)[:, 0])

    def text_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """(K,) the position of each text's `<end>` token, where the text is read (CLIP's EOT)."""
        is_end = ids == self.vocab.end_id
        if not bool(is_end.any(dim=1).all()):
            raise InputError("every text needs its <end> token (encode texts with tokenize)")
        return is_end.float().argmax(dim=1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text embeddings (K, E), not normalised: W_t · LN(h)[EOT]."""
        return self.encode_text_embedded(self.text.embed(ids), ids)

    def encode_text_embedded(self, embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """`encode_text` from token embeddings (K, L, D) (the text's ids still say where each ends)."""
        states = self.text.forward_embedded(embedded)  # (K, L, D)
        return self.text_proj(states[torch.arange(len(ids), device=ids.device), self.text_positions(ids)])

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """exp(τ) · cos(f(x_b), g(t_k)): logits per image (B, K)."""
        return similarity(self.encode_image(images), self.encode_text(ids), self.logit_scale)


def similarity(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(τ) · cosine similarity of every image embedding (B, E) with every text embedding (K, E): (B, K)."""
    return logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


@register("clip-tiny")
def clip_tiny(**cfg: Any) -> ClipTiny:
    """A tiny CLIP; options are the fields of `ClipTinyConfig` (the trainer passes `vocab`), and `stem_weights`:
    a SmallCNN checkpoint whose `features` start a "smallcnn" stem."""
    cfg.pop("num_classes", None)
    weights = cfg.pop("stem_weights", None)
    if "stem_widths" in cfg:
        cfg["stem_widths"] = tuple(cfg["stem_widths"])
    return ClipTiny(ClipTinyConfig(**cfg), weights)


clip_tiny.task = "contrastive"  # what `attnscope train` trains it with (`train.multimodal`)
