"""Show, Attend and Tell (Xu et al., ICML 2015): a CNN encoder and an LSTM decoder that attends.

Faithful to the paper and to its authors' code (kelvinxu/arctic-captions, `capgen.py`):

- annotation vectors a_i (L of them, D channels) are the positions of a CNN's last feature map;
- initial state h0 = tanh(f_h(ā)), c0 = tanh(f_c(ā)) from the mean annotation ā ("ff_state",
  "ff_memory" in capgen.py, top right of page 4 of the paper);
- attention e_ti = v · tanh(W_a a_i + W_h h_{t−1} + b) + c, α_t = softmax(e_t) (eqs. 4–6;
  "Wc_att", "Wd_att", "U_att" in `lstm_cond_layer`);
- gate β_t = σ(f_β(h_{t−1})), a scalar that scales the context (Sec. 4.2.1, the "selector");
- soft attention: z_t = β_t Σ_i α_ti a_i; hard attention: z_t = β_t a_{s_t} with s_t ~ Cat(α_t),
  and, as in the paper (Sec. 4.1) and `semi_sampling_p`, the expectation used instead of a sample
  with probability `expectation_prob` (drawn per caption here; capgen.py draws one coin per batch);
- LSTM input [E y_{t−1}; z_t] (eq. 1, "W" and "Wc" of the decoder);
- deep output p(y_t) ∝ exp(L_o tanh(E y_{t−1} + L_h h_t + L_z z_t)) (eq. 7 with the tanh and the
  dropout on h_t and before L_o that capgen.py applies: "prev2out", "ctx2out", "use_dropout").

At inference hard attention uses the expectation α (capgen.py's sampler with `sampling=False`).
The encoder is in `sat_encoder.py`, the attending decoder in `sat_decoder.py`, greedy and beam search in
`sat_search.py`. The model carries its vocabulary in its config,
so a checkpoint rebuilds it; weights trained on another vocabulary refuse to load.

Options that are NOT in the paper (off by default): `position_channels` appends each a_i's cell
centre (x, y); `init_state="zero"` (h0 = c0 = 0) or `"learned"` (one learned h0, c0 for all images)
replaces the mean-annotation initial state, so that the decoder learns of the image only through
what it attends to; `annotation_scale` multiplies the CNN features; `attend_word` adds W_y E y_{t−1}
to the attention's score, so that α_t can follow the word just read (the paper's h_{t−1} has read
only y_{t−2}). On DigitScenes a constant initial state does not train: Adam drives L_z z into the
deep output's saturated tanh within a few dozen steps and the gradients to the LSTM vanish, with or
without features scaled by 0.1 (docs/sat.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import attnscope.models.sat_search as search
from attnscope.errors import CheckpointError, InputError
from attnscope.models.registry import register
from attnscope.models.sat_config import ATTENTION, INIT_STATES, SATConfig
from attnscope.models.sat_decoder import Decoder
from attnscope.models.sat_encoder import Encoder, grid_positions  # noqa: F401  (grid_positions re-exported)
from attnscope.vocab import Vocabulary


class SATOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) scores of captions[:, 1:] given captions[:, :-1]
    alphas: torch.Tensor  # (B, T, L) attention of every step
    betas: torch.Tensor  # (B, T) gate of every step
    log_q: torch.Tensor  # (B, T) log α_t[s_t] of the sampled locations (0 where nothing was sampled)
    sampled: torch.Tensor  # (B,) bool: this caption used sampled locations (hard attention, training)
    grid: tuple[int, int]  # (h, w) of the feature map, L = h * w


class Caption(NamedTuple):
    tokens: torch.Tensor  # (B, T) word ids, <end> included, then <pad>
    alphas: torch.Tensor  # (B, T, h, w) attention used to emit each token (zeros after <end>)
    scores: torch.Tensor  # (B,) sum of log-probabilities of the tokens
    finished: torch.Tensor  # (B,) bool: the caption reached <end> within max_len


class ShowAttendTell(nn.Module):
    """`forward(images, captions)` teacher-forces; `caption(images)` generates with the attention."""

    attention_kind = "sat"  # what `explain`'s intrinsic method `sat` reads (via `caption` and `forward`)

    def __init__(self, config: SATConfig, weights: str | None = None) -> None:
        super().__init__()
        if config.vocab is None:
            raise InputError("sat needs a vocabulary: vocab=Vocabulary.to_json() (the trainer passes the data's)")
        if config.attention not in ATTENTION:
            raise InputError(f"attention must be one of {ATTENTION}, got {config.attention!r}")
        if not 0.0 <= config.expectation_prob <= 1.0 or not 0.0 <= config.dropout < 1.0 or config.max_len < 1:
            raise InputError("need 0 <= expectation_prob <= 1, 0 <= dropout < 1 and max_len >= 1")
        if config.init_state not in INIT_STATES:
            raise InputError(f"init_state must be one of {INIT_STATES}, got {config.init_state!r}")
        if not config.annotation_scale > 0:
            raise InputError(f"annotation_scale must be > 0, got {config.annotation_scale}")
        if not config.encoder_lr_scale >= 0:
            raise InputError(f"encoder_lr_scale must be >= 0, got {config.encoder_lr_scale}")
        self.config = config
        self.vocab = Vocabulary.from_json(config.vocab)
        self.encoder = Encoder(config, weights)
        self.decoder = Decoder(config, len(self.vocab), self.encoder.dim)
        self.register_buffer("vocab_id", torch.tensor(vocab_fingerprint(self.vocab)))
        self.register_buffer("baseline", torch.zeros(()))  # REINFORCE moving average (trainer-owned)
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters for the optimizer: the encoder's at `encoder_lr_scale` times the run's LR."""
        groups = [{"params": [p for p in self.decoder.parameters() if p.requires_grad], "lr_scale": 1.0},
                  {"params": [p for p in self.encoder.parameters() if p.requires_grad],
                   "lr_scale": self.config.encoder_lr_scale}]
        return [g for g in groups if g["params"]]

    def forward(self, images: torch.Tensor, captions: torch.Tensor, sample: bool | None = None,
                locations: torch.Tensor | None = None) -> SATOutput:
        """Teacher forcing: scores of `captions[:, 1:]` (B, T+1 ids from <start>) for every step.

        `sample`: draw hard-attention locations (default: hard attention in training mode).
        `locations` (B, T) long forces the sampled locations (−1: use the expectation).
        """
        if not isinstance(captions, torch.Tensor) or captions.dim() != 2 or captions.shape[0] != images.shape[0] \
                or captions.shape[1] < 2:
            shape = tuple(captions.shape) if isinstance(captions, torch.Tensor) else type(captions).__name__
            raise InputError(f"captions must be (B, T>=2) ids for {images.shape[0]} images, got {shape}")
        a, grid = self.encoder(images)  # (B, L, D)
        b, steps = captions.shape[0], captions.shape[1] - 1
        sample = (self.training and self.config.attention == "hard") if sample is None else sample
        use_sample = torch.zeros(b, dtype=torch.bool, device=a.device)
        if locations is not None:
            use_sample = (locations >= 0).any(dim=1)
        elif sample:
            use_sample = torch.rand(b, device=a.device) >= self.config.expectation_prob
        keys = self.decoder.att_ctx(a)  # (B, L, A)
        state = self.decoder.init_state(a)
        logits, alphas, betas, log_q = [], [], [], []
        for t in range(steps):
            pick = None
            if locations is not None:
                pick = lambda _alpha, t=t: locations[:, t]
            elif sample:
                pick = lambda alpha: torch.where(use_sample, torch.multinomial(alpha, 1).squeeze(1), -1)
            logit, state, alpha, beta, loc = self.decoder.step(captions[:, t], state, a, keys, pick)
            logits.append(logit)
            alphas.append(alpha)
            betas.append(beta)
            log_q.append(torch.zeros(b, device=a.device) if loc is None else _log_at(alpha, loc))
        stack = lambda xs: torch.stack(xs, dim=1)
        return SATOutput(stack(logits), stack(alphas), stack(betas), stack(log_q), use_sample, grid)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, beam_size: int = 1, max_len: int | None = None,
                length_norm: bool = False) -> Caption:
        """Generated captions with the attention of each token: greedy (beam_size=1) or beam search."""
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise InputError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        max_len = self.config.max_len if max_len is None else max_len
        if max_len < 1:
            raise InputError(f"max_len must be >= 1, got {max_len}")
        a, (gh, gw) = self.encoder(images)  # (B, L, D)
        b = a.shape[0]
        if beam_size > 1:
            a = a.repeat_interleave(beam_size, dim=0)  # (B*K, L, D): beams of an image stay together
        keys = self.decoder.att_ctx(a)

        never = torch.tensor([self.vocab.pad_id, self.vocab.start_id], device=a.device)
        end = self.vocab.end_id

        def step(words: torch.Tensor, state: tuple[torch.Tensor, ...]):
            logit, state, alpha, _, _ = self.decoder.step(words, state, a, keys)
            logit = logit.index_fill(1, never, float("-inf"))  # a caption never emits <pad> or <start>
            first = (words == self.vocab.start_id)[:, None] & (torch.arange(logit.shape[1], device=a.device) == end)
            logit = logit.masked_fill(first, float("-inf"))  # and has at least one word
            return F.log_softmax(logit, dim=1), state, alpha

        state = self.decoder.init_state(a)
        ids = dict(start_id=self.vocab.start_id, end_id=self.vocab.end_id, pad_id=self.vocab.pad_id, max_len=max_len)
        if beam_size == 1:
            found = search.greedy(step, state, b, **ids)
        else:
            found = search.beam_search(step, state, b, beam_size, length_norm=length_norm, **ids)
        alphas = found.extras.view(b, found.tokens.shape[1], gh, gw)
        return Caption(found.tokens, alphas, found.scores, found.finished)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        theirs = state_dict.get(prefix + "vocab_id")
        if theirs is not None and int(theirs) != int(self.vocab_id):
            raise CheckpointError(
                f"these weights were trained with another vocabulary (fingerprint {int(theirs)}) than this model's "
                f"{len(self.vocab)} words (fingerprint {int(self.vocab_id)}); rebuild the model from its checkpoint "
                "(attnscope.models.checkpoint.load) or train on the same vocabulary"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def vocab_fingerprint(vocab: Vocabulary) -> int:
    """A 63-bit digest of the vocabulary's words in order (stored with the weights)."""
    digest = hashlib.sha256(json.dumps(vocab.itos).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _log_at(alpha: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """log α[b, loc_b] (B,), 0 where loc is −1."""
    picked = alpha.gather(1, loc.clamp_min(0)[:, None]).squeeze(1)
    return torch.where(loc >= 0, picked.clamp_min(torch.finfo(alpha.dtype).tiny).log(), torch.zeros_like(picked))


@register("sat")
def sat(**cfg: Any) -> ShowAttendTell:
    """Show, Attend and Tell; options are the fields of `SATConfig`, plus `weights`: a local file to start the
    encoder from (a torchvision state dict, or a SmallCNN classifier's checkpoint for a smallcnn encoder)."""
    weights = cfg.pop("weights", None)
    if "encoder_widths" in cfg:
        cfg["encoder_widths"] = tuple(cfg["encoder_widths"])
    return ShowAttendTell(SATConfig(**cfg), weights)
