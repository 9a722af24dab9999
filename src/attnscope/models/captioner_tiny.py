"""`captioner-tiny`: a ViT encoder and a transformer decoder with cross-attention, small enough for a CPU.

The encoder is a ViT trunk without CLS (`VisionTower`, conv stem): its L = h·w patch tokens are the
memory every decoder layer reads through cross-attention (Vaswani et al., NeurIPS 2017; the captioner
of e.g. Cornia et al., CVPR 2020, without their memory slots). The decoder is causal: the scores of word
t + 1 come from position t, which has read `<start>` and words 1..t. Output: a linear map of the final
normed state to the vocabulary.

It speaks Show, Attend and Tell's captioning protocol, so the `captioning` training loop, `attnscope caption`
and the intrinsic method `sat` take it unchanged: `forward(images, captions)` teacher-forces and returns the
logits with α_t, here the last decoder layer's cross-attention of position t averaged over heads (it sums
to 1 over the L patches); `caption(images)` decodes greedily or with beam search (`sat_search`). That α is
one head-average of one layer: the methods of `attnscope.explain.multimodal` read every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.errors import CheckpointError, InputError
from attnscope.models import sat_search as search
from attnscope.models.registry import check_fields, register
from attnscope.models.sat import Caption, vocab_fingerprint
from attnscope.models.sat_encoder import _load_part
from attnscope.models.tiny_transformer import TextTower, VisionTower, init_weights
from attnscope.vocab import Vocabulary


@dataclass(frozen=True)
class CaptionerTinyConfig:
    vocab: dict[str, Any] | None = None  # Vocabulary.to_json(); the trainer passes the data's
    image_size: int = 64
    patch_size: int = 8  # an 8 × 8 grid: L = 64 image tokens
    dim: int = 64
    depth: int = 3  # encoder blocks
    decoder_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    stem: str = "conv"  # "conv" (Xiao et al. 2021) or "smallcnn": a hybrid ViT on SmallCNN's feature map
    stem_widths: tuple[int, ...] = (16, 32, 64, 128)  # smallcnn stem: one block per width (8×8 at 64 px)
    freeze_stem: bool = False  # the stem's CNN is not trained (e.g. a pretrained SmallCNN, `stem_weights=`)
    max_len: int = 20  # longest generated caption, <end> included
    attention: str = "soft"  # the captioning protocol's field; a transformer attends softly

    def __post_init__(self) -> None:
        check_fields(self, positive=("image_size", "patch_size", "dim", "depth", "decoder_depth", "heads", "max_len"))
        if self.attention != "soft":
            raise InputError(f"captioner-tiny attends softly (attention='soft'), got {self.attention!r}")


class CaptionerOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) scores of captions[:, 1:] given captions[:, :-1]
    alphas: torch.Tensor  # (B, T, L) last decoder layer's cross-attention, mean over heads
    grid: tuple[int, int]  # (h, w) of the image tokens, L = h · w


class CaptionerTiny(nn.Module):
    """`encoder` (images → L tokens) → `decoder` (causal, cross-attending) → `head` (vocabulary)."""

    attention_kind = "sat"  # the captioning protocol of `explain.captioning.sat` (forward, caption, vocab)

    def __init__(self, config: CaptionerTinyConfig, stem_weights: str | None = None) -> None:
        super().__init__()
        if config.vocab is None:
            raise InputError("captioner-tiny needs a vocabulary: vocab=Vocabulary.to_json() (the trainer passes it)")
        self.config = config
        self.vocab = Vocabulary.from_json(config.vocab)
        self.encoder = VisionTower(config.image_size, config.patch_size, config.dim, config.depth, config.heads,
                                   config.mlp_ratio, cls=False, stem=config.stem, stem_widths=config.stem_widths,
                                   freeze_stem=config.freeze_stem)
        self.decoder = TextTower(len(self.vocab), config.max_len + 1, config.dim, config.decoder_depth, config.heads,
                                 config.mlp_ratio, cross=True)
        self.head = nn.Linear(config.dim, len(self.vocab))
        self.num_prefix_tokens = 0  # the encoder's tokens are all patches
        self.cam_layer = "encoder.norm"  # the memory every cross-attention reads
        self.register_buffer("vocab_id", torch.tensor(vocab_fingerprint(self.vocab)))
        init_weights(self)
        if stem_weights is not None:  # after the initialisation, which would overwrite them
            _load_part(self.encoder.patch_embed[0], stem_weights, "features.", "smallcnn")

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid, self.encoder.grid

    def decode(self, memory: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-word logits (B, T, V) after each of `ids` (B, T) reading `memory` (B, L, D), and α (B, T, L):
        the last decoder layer's cross-attention weights, mean over heads."""
        states, weights = self.decoder(ids, memory, need_weights=True)  # (B, T, D), (B, heads, T, L)
        return self.head(states), weights.mean(dim=1)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, sample: bool | None = None) -> CaptionerOutput:
        """Teacher forcing: scores of `captions[:, 1:]` (B, T+1 ids from <start>); `sample` is ignored (soft)."""
        if not isinstance(captions, torch.Tensor) or captions.dim() != 2 or captions.shape[0] != images.shape[0] \
                or captions.shape[1] < 2:
            shape = tuple(captions.shape) if isinstance(captions, torch.Tensor) else type(captions).__name__
            raise InputError(f"captions must be (B, T>=2) ids for {images.shape[0]} images, got {shape}")
        logits, alphas = self.decode(self.encoder(images), captions[:, :-1])  # (B, T, V), (B, T, L)
        return CaptionerOutput(logits, alphas, self.grid)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, beam_size: int = 1, max_len: int | None = None,
                length_norm: bool = False) -> Caption:
        """Generated captions with α of each token: greedy (beam_size=1) or beam search (`sat_search`)."""
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise InputError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        max_len = self.config.max_len if max_len is None else max_len
        if not 1 <= max_len <= self.config.max_len:
            raise InputError(f"max_len must be in 1..{self.config.max_len} (the model's positions), got {max_len}")
        memory = self.encoder(images)  # (B, L, D)
        b = memory.shape[0]
        if beam_size > 1:
            memory = memory.repeat_interleave(beam_size, dim=0)  # beams of an image stay together
        never = torch.tensor([self.vocab.pad_id, self.vocab.start_id], device=memory.device)
        end = self.vocab.end_id

        def step(words: torch.Tensor, state: tuple[torch.Tensor, ...]):
            mem, prefix = state
            prefix = torch.cat([prefix, words[:, None]], dim=1)  # (N, t)
            logits, alphas = self.decode(mem, prefix)
            logit, alpha = logits[:, -1], alphas[:, -1]  # (N, V), (N, L)
            logit = logit.index_fill(1, never, float("-inf"))  # never <pad> or <start>
            first = (words == self.vocab.start_id)[:, None] & (torch.arange(logit.shape[1], device=mem.device) == end)
            return F.log_softmax(logit.masked_fill(first, float("-inf")), dim=1), (mem, prefix), alpha

        state = (memory, torch.zeros(memory.shape[0], 0, dtype=torch.long, device=memory.device))
        ids = dict(start_id=self.vocab.start_id, end_id=end, pad_id=self.vocab.pad_id, max_len=max_len)
        if beam_size == 1:
            found = search.greedy(step, state, b, **ids)
        else:
            found = search.beam_search(step, state, b, beam_size, length_norm=length_norm, **ids)
        alphas = found.extras.view(b, found.tokens.shape[1], *self.grid)
        return Caption(found.tokens, alphas, found.scores, found.finished)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        theirs = state_dict.get(prefix + "vocab_id")
        if theirs is not None and int(theirs) != int(self.vocab_id):
            raise CheckpointError(f"these weights were trained with another vocabulary than this model's "
                                  f"{len(self.vocab)} words; rebuild the model from its checkpoint")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register("captioner-tiny")
def captioner_tiny(**cfg: Any) -> CaptionerTiny:
    """A tiny ViT + transformer-decoder captioner; options are the fields of `CaptionerTinyConfig`, and
    `stem_weights`: a SmallCNN checkpoint whose `features` start a "smallcnn" stem."""
    cfg.pop("num_classes", None)
    weights = cfg.pop("stem_weights", None)
    if "stem_widths" in cfg:
        cfg["stem_widths"] = tuple(cfg["stem_widths"])
    return CaptionerTiny(CaptionerTinyConfig(**cfg), weights)


captioner_tiny.task = "transformer-captioning"  # what `attnscope train` trains it with (`train.multimodal`)
