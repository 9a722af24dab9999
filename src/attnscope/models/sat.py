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
Greedy and beam search are in `sat_search.py`. The model carries its vocabulary in its config,
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.data.vocab import Vocabulary
from attnscope.errors import CheckpointError, InputError
from attnscope.models import register
from attnscope.models import sat_search as search
from attnscope.models.smallcnn import SmallCNN, SmallCNNConfig
from attnscope.models.torchvision_models import IMAGENET_MEAN, IMAGENET_STD

ATTENTION = ("soft", "hard")
INIT_STATES = ("mean", "zero", "learned")  # "mean" is the paper's; the others are not in it


@dataclass(frozen=True)
class SATConfig:
    vocab: dict[str, Any] | None = None  # Vocabulary.to_json(); required
    attention: str = "soft"  # "soft" (deterministic) or "hard" (stochastic)
    encoder: str = "smallcnn"  # "smallcnn" or a torchvision model name (e.g. "resnet18")
    encoder_layer: str | None = None  # torchvision only: the node whose output are the annotations
    encoder_widths: tuple[int, ...] = (16, 32, 64, 128)  # smallcnn only: one block per width
    freeze_encoder: bool = False  # no gradients and BatchNorm statistics kept (as the paper's VGG)
    encoder_lr_scale: float = 1.0  # a fine-tuned encoder learns at this times the run's learning rate
    position_channels: bool = False  # not in the paper: append each a_i's (x, y) in [-1, 1] (CoordConv-like)
    init_state: str = "mean"  # h0, c0 from the mean annotation (paper); not in the paper: "zero", "learned"
    annotation_scale: float = 1.0  # not in the paper: the CNN features are multiplied by this (not the positions)
    attend_word: bool = False  # not in the paper: the word just read, E y_{t−1}, enters the attention's score
    embed_dim: int = 64
    hidden_dim: int = 256
    attn_dim: int = 128
    gate: bool = True  # the scalar β
    dropout: float = 0.5
    expectation_prob: float = 0.5  # hard attention: chance a caption uses α instead of a sample
    max_len: int = 20  # longest generated caption, <end> included


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


class Encoder(nn.Module):
    """Images (B, 3, H, W) → annotation vectors (B, L, D) and their grid (h, w)."""

    def __init__(self, config: SATConfig, weights: str | None = None) -> None:
        super().__init__()
        self.frozen = config.freeze_encoder
        if config.encoder == "smallcnn":
            self.body = SmallCNN(SmallCNNConfig(widths=tuple(config.encoder_widths))).features
            if weights is not None:  # e.g. a SmallCNN classifier's checkpoint: its `features.*` tensors
                _load_part(self.body, weights, "features.", "smallcnn")
            self.register_buffer("mean", torch.zeros(3, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(3, 1, 1), persistent=False)
        else:
            self.body = _torchvision_trunk(config.encoder, config.encoder_layer, weights)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)
        was = self.body.training
        self.body.eval()  # a trial pass for the channel count must leave BatchNorm statistics as they are
        with torch.no_grad():
            self.dim = int(self._features(torch.zeros(1, 3, 64, 64).to(self.mean)).shape[1])
        self.body.train(was)
        if self.frozen:
            self.body.requires_grad_(False)
        self.position, self.scale = config.position_channels, config.annotation_scale
        self.dim += 2 * self.position

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body((images - self.mean) / self.std)
        return out["a"] if isinstance(out, dict) else out  # (B, D, h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        fmap = self._features(images)  # (B, D, h, w)
        a = fmap.flatten(2).transpose(1, 2) * self.scale  # (B, L, D)
        h, w = fmap.shape[2], fmap.shape[3]
        if self.position:
            a = torch.cat([a, grid_positions(h, w, a).expand(a.shape[0], -1, -1)], dim=2)  # (B, L, D + 2)
        return a, (h, w)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self


def grid_positions(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(1, h·w, 2) cell centres (x, y) in [-1, 1], raster order (row-major, as the annotations)."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w * 2 - 1
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=1)[None]


class Decoder(nn.Module):
    """The attending LSTM: one `step` per word, from annotations (B, L, D)."""

    def __init__(self, config: SATConfig, vocab_size: int, ctx_dim: int) -> None:
        super().__init__()
        e, h, a = config.embed_dim, config.hidden_dim, config.attn_dim
        self.embed = nn.Embedding(vocab_size, e)  # E
        self.init_h = self.init_c = None  # f_h, f_c of the paper's h0 = tanh(f_h(ā)), c0 = tanh(f_c(ā))
        if config.init_state == "mean":
            self.init_h, self.init_c = nn.Linear(ctx_dim, h), nn.Linear(ctx_dim, h)
        else:  # the same state for every image: what the decoder knows of it comes through attention
            start = lambda: torch.zeros(h)
            if config.init_state == "learned":  # h0 = tanh(b_h), c0 = tanh(b_c): f_h, f_c with no weight
                self.h0, self.c0 = nn.Parameter(start()), nn.Parameter(start())
            else:
                self.register_buffer("h0", start(), persistent=False)
                self.register_buffer("c0", start(), persistent=False)
        self.att_ctx = nn.Linear(ctx_dim, a)  # W_a, b
        self.att_hid = nn.Linear(h, a, bias=False)  # W_h
        self.att_word = nn.Linear(e, a, bias=False) if config.attend_word else None  # W_y (not in the paper)
        self.att_out = nn.Linear(a, 1)  # v, c
        self.gate = nn.Linear(h, 1) if config.gate else None  # f_β
        self.lstm = nn.LSTMCell(e + ctx_dim, h)
        self.out_h, self.out_z = nn.Linear(h, e), nn.Linear(ctx_dim, e)  # L_h, L_z
        self.out = nn.Linear(e, vocab_size)  # L_o
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """capgen.py's initialisation: N(0, 0.01²) weights, orthogonal square ones, zero biases.

        Small weights matter: with PyTorch's default ones, W_a a_i of CNN features (values in the
        tens) saturates the attention's tanh and α never learns to move.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if module.weight.shape[0] == module.weight.shape[1]:
                    nn.init.orthogonal_(module.weight)
                else:
                    nn.init.normal_(module.weight, 0.0, 0.01)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        h = self.lstm.hidden_size
        nn.init.normal_(self.lstm.weight_ih, 0.0, 0.01)
        for gate in range(4):  # one orthogonal block per gate, as `ortho_weight` in param_init_lstm_cond
            nn.init.orthogonal_(self.lstm.weight_hh.data[gate * h : (gate + 1) * h])
        nn.init.zeros_(self.lstm.bias_ih)
        nn.init.zeros_(self.lstm.bias_hh)

    def init_state(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h0, c0), each (B, hidden): from the mean annotation ā (paper), or the same for every image."""
        if self.init_h is not None:
            mean = a.mean(dim=1)  # (B, D)
            return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        b = a.shape[0]
        return torch.tanh(self.h0).expand(b, -1), torch.tanh(self.c0).expand(b, -1)  # zeros for "zero"

    def attend(self, keys: torch.Tensor, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """α_t (B, L) = softmax_i(v · tanh(W_a a_i + b + W_h h_{t−1} [+ W_y E y_{t−1}]) + c); `keys` = W_a a + b
        (B, L, A). The bracket only with `attend_word`: h_{t−1} was computed from y_{t−2}, so the paper's α_t
        cannot follow the word just read ("a red" → attend to the red digit for the next word)."""
        query = self.att_hid(h) if self.att_word is None else self.att_hid(h) + self.att_word(emb)
        e = self.att_out(torch.tanh(keys + query[:, None, :]))  # (B, L, 1)
        return F.softmax(e.squeeze(2), dim=1)

    def step(
        self, word: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], a: torch.Tensor, keys: torch.Tensor,
        pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One word after ids `word` (B,): `(logits (B, V), (h, c), α (B, L), β (B,), location or None)`.

        `pick(α)` → locations (B,) long chooses a_{s_t} for hard attention (−1: use the expectation).
        """
        h, c = state
        emb = self.embed(word)  # (B, E)
        alpha = self.attend(keys, h, emb)  # (B, L)
        z = torch.bmm(alpha[:, None, :], a).squeeze(1)  # (B, D) expected annotation
        loc = None if pick is None else pick(alpha.detach())
        if loc is not None:
            picked = a[torch.arange(a.shape[0], device=a.device), loc.clamp_min(0)]  # (B, D)
            z = torch.where((loc >= 0)[:, None], picked, z)
        beta = torch.sigmoid(self.gate(h)).squeeze(1) if self.gate is not None else torch.ones_like(h[:, 0])
        z = beta[:, None] * z  # (B, D)
        h, c = self.lstm(torch.cat([emb, z], dim=1), (h, c))
        deep = torch.tanh(emb + self.out_h(self.drop(h)) + self.out_z(z))  # (B, E)
        return self.out(self.drop(deep)), (h, c), alpha, beta, loc


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


def _torchvision_trunk(name: str, layer: str | None, weights: str | None) -> nn.Module:
    """torchvision model `name` cut after node `layer` (its output is the feature map).

    `weights` is a local state dict of the whole model; the tensors of the cut-off head are ignored.
    """
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    from attnscope.models.torchvision_models import build_torchvision

    model = build_torchvision(name)
    nodes = get_graph_node_names(model)[1]
    if not isinstance(layer, str) or not any(n == layer or n.startswith(layer + ".") for n in nodes):
        shown = ", ".join(n for n, _ in model.named_children())
        raise InputError(f"encoder_layer must name a module of {name} whose output is the feature map, got {layer!r}; "
                         f"its top-level modules are {shown}")
    trunk = create_feature_extractor(model, return_nodes={layer: "a"})
    if weights is not None:
        _load_part(trunk, weights, "", name)
    return trunk


def _load_part(module: nn.Module, weights: str, prefix: str, name: str) -> None:
    """Load `module` from the tensors `prefix + key` of a local weights file; other tensors are ignored."""
    from pathlib import Path

    from attnscope.models.torchvision_models import read_state_dict

    state = read_state_dict(Path(weights))
    missing = [prefix + k for k in module.state_dict() if prefix + k not in state]
    if missing:
        raise CheckpointError(f"{weights} lacks {len(missing)} tensors of the {name} encoder, e.g. {missing[0]}")
    try:
        module.load_state_dict({k: state[prefix + k] for k in module.state_dict()})
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit the {name} encoder: {str(e).splitlines()[-1].strip()}") from None


@register("sat")
def sat(**cfg: Any) -> ShowAttendTell:
    """Show, Attend and Tell; options are the fields of `SATConfig`, plus `weights`: a local file to start the
    encoder from (a torchvision state dict, or a SmallCNN classifier's checkpoint for a smallcnn encoder)."""
    weights = cfg.pop("weights", None)
    if "encoder_widths" in cfg:
        cfg["encoder_widths"] = tuple(cfg["encoder_widths"])
    return ShowAttendTell(SATConfig(**cfg), weights)
