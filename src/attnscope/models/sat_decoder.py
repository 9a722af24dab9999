"""The decoder of Show, Attend and Tell (`models.sat`): an LSTM that attends over the annotation vectors
(eqs. 1, 4–7 of Xu et al. 2015, initialised as the authors' capgen.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attnscope.models.sat_config import SATConfig


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
