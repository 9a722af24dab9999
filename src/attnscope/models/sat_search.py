"""Greedy and beam search for any step-wise decoder, batched over images.

A decoder is a function `step(words (N,), state) -> (log_probs (N, V), state, extra (N, ...))`
whose state is a tuple of tensors with N rows. `extra` (the attention, for Show, Attend and Tell)
is recorded for every emitted token. Beam search moves a hypothesis that emits <end> out of the
beam into the image's finished set, as the authors' `gen_sample` (arctic-captions) does, but keeps
`beam_size` live hypotheses (theirs shrinks by one per finished hypothesis). It stops when an image
has `beam_size` finished hypotheses (their rule) or, without `length_norm`, when its best finished
score beats every live one (log-probabilities only fall). It returns, per image, the best finished
hypothesis by total log-probability (or per token with `length_norm`, as their `generate_caps.py`
offers); when none reaches <end> within `max_len`, the best live one, with `finished=False`.
Beam and word of a candidate come from integer division of its flat index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

State = tuple[torch.Tensor, ...]
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State, torch.Tensor]]


class Search(NamedTuple):
    tokens: torch.Tensor  # (B, T) long: the words, <end> included, then <pad>
    extras: torch.Tensor  # (B, T, ...) what `step` returned with each token (zeros after <end>)
    scores: torch.Tensor  # (B,) total log-probability of the tokens
    finished: torch.Tensor  # (B,) bool: reached <end>


def greedy(step: StepFn, state: State, batch: int, start_id: int, end_id: int, pad_id: int, max_len: int) -> Search:
    """The most probable word at every step, until <end> or `max_len` tokens."""
    words = torch.full((batch,), start_id, dtype=torch.long, device=state[0].device)
    done = torch.zeros(batch, dtype=torch.bool, device=words.device)
    scores = torch.zeros(batch, device=words.device)
    tokens, extras = [], []
    for _ in range(max_len):
        logp, state, extra = step(words, state)  # (B, V)
        best, words = logp.max(dim=1)
        words = torch.where(done, pad_id, words)
        scores = scores + torch.where(done, 0.0, best)
        tokens.append(words)
        extras.append(torch.where(_rows(done, extra), 0.0, extra))
        done = done | (words == end_id)
        if bool(done.all()):
            break
    return Search(torch.stack(tokens, 1), torch.stack(extras, 1), scores, done)


def beam_search(step: StepFn, state: State, batch: int, beam_size: int, start_id: int, end_id: int, pad_id: int,
                max_len: int, length_norm: bool = False) -> Search:
    """Beam search with `beam_size` live hypotheses per image; `state` rows are (B * K), image-major."""
    b, k = batch, beam_size
    device = state[0].device
    words = torch.full((b * k,), start_id, dtype=torch.long, device=device)
    live = torch.full((b, k), float("-inf"), device=device)
    live[:, 0] = 0.0  # one hypothesis (<start>) to begin with
    tokens = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    extras: torch.Tensor | None = None  # (B, K, t, ...)
    best = _Best(b, pad_id, device)
    offsets = (torch.arange(b, device=device) * k)[:, None]  # (B, 1)
    for t in range(max_len):
        logp, state, extra = step(words, state)  # (B*K, V), ..., (B*K, ...)
        v = logp.shape[1]
        cand = (live[:, :, None] + logp.view(b, k, v)).view(b, k * v)  # (B, K*V)
        top, flat = cand.topk(min(2 * k, k * v), dim=1)  # (B, 2K): at most K of them are <end>
        source, word = flat // v, flat % v  # integer arithmetic: beam and word of each candidate
        rows = (source + offsets).view(-1)  # (B*2K,) rows of the step's output
        before = tokens.reshape(b * k, t)[rows].view(b, word.shape[1], t)  # (B, 2K, t) each candidate's history
        hist = torch.cat([before, word[..., None]], dim=2)  # (B, 2K, t+1)
        ext = extra[rows].view(b, -1, 1, *extra.shape[1:])
        ext = ext if extras is None else torch.cat([_take(extras, source), ext], dim=2)
        ends = (word == end_id) & torch.isfinite(top)
        ends[:, k:] = False  # an <end> ranked below the K best is not a finished hypothesis (yet)
        best.offer(top, ends, hist, ext, length_norm)
        keep = torch.argsort((word == end_id).to(torch.int8), dim=1, stable=True)[:, :k]  # best K non-<end>
        live, tokens, extras = top.gather(1, keep), hist.gather(1, _expand(keep, hist)), _take(ext, keep)
        state = tuple(s[(source.gather(1, keep) + offsets).view(-1)] for s in state)
        words = tokens[:, :, -1].reshape(-1)
        enough = best.count >= k
        if not length_norm:  # log-probabilities only fall: a finished score above every live one is final
            enough |= best.score >= live[:, 0]
        if bool(enough.all()):
            break
    return best.result(live, tokens, extras)


class _Best:
    """The best finished hypothesis of each image so far."""

    def __init__(self, b: int, pad_id: int, device: torch.device) -> None:
        self.pad_id = pad_id
        self.score = torch.full((b,), float("-inf"), device=device)  # raw log-probability
        self.key = torch.full((b,), float("-inf"), device=device)  # what is compared (per token if normed)
        self.count = torch.zeros(b, dtype=torch.long, device=device)
        self.tokens: torch.Tensor | None = None  # (B, T)
        self.extras: torch.Tensor | None = None  # (B, T, ...)

    def offer(self, scores: torch.Tensor, ends: torch.Tensor, hist: torch.Tensor, ext: torch.Tensor,
              length_norm: bool) -> None:
        """Take the finished candidates (`ends`, (B, C)) that beat the image's best so far."""
        self.count += ends.sum(1)
        length = hist.shape[2]
        key = torch.where(ends, scores / length if length_norm else scores, float("-inf"))  # (B, C)
        top, idx = key.max(dim=1)
        better = top > self.key
        if not bool(better.any()):
            return
        new_tokens = hist[torch.arange(hist.shape[0]), idx]  # (B, t)
        new_extras = ext[torch.arange(ext.shape[0]), idx]  # (B, t, ...)
        pad = length - (0 if self.tokens is None else self.tokens.shape[1])
        if self.tokens is None:
            self.tokens, self.extras = torch.full_like(new_tokens, self.pad_id), torch.zeros_like(new_extras)
        else:  # grow the stored hypotheses to the current length with padding
            self.tokens = torch.cat([self.tokens, self.tokens.new_full((self.tokens.shape[0], pad), self.pad_id)], 1)
            self.extras = torch.cat([self.extras, self.extras.new_zeros(self.extras.shape[0], pad,
                                                                        *self.extras.shape[2:])], 1)
        self.tokens = torch.where(better[:, None], new_tokens, self.tokens)
        self.extras = torch.where(_rows(~better, new_extras), self.extras, new_extras)
        self.score = torch.where(better, scores.gather(1, idx[:, None]).squeeze(1), self.score)
        self.key = torch.where(better, top, self.key)

    def result(self, live: torch.Tensor, tokens: torch.Tensor, extras: torch.Tensor) -> Search:
        """Finished best per image, or the best live hypothesis where none finished."""
        finished = torch.isfinite(self.score)
        n = tokens.shape[2]
        out_tokens, out_extras = tokens[:, 0].clone(), extras[:, 0].clone()  # live beams are sorted
        if self.tokens is not None:
            m = self.tokens.shape[1]
            out_tokens[:, :m] = torch.where(finished[:, None], self.tokens, out_tokens[:, :m])
            out_tokens[:, m:] = torch.where(finished[:, None], self.pad_id, out_tokens[:, m:])
            fin_ext = torch.cat([self.extras, self.extras.new_zeros(self.extras.shape[0], n - m,
                                                                    *self.extras.shape[2:])], 1)
            out_extras = torch.where(_rows(finished, out_extras), fin_ext, out_extras)
        scores = torch.where(finished, self.score, live[:, 0])
        return Search(out_tokens, out_extras, scores, finished)


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (N,) or (N, T) mask viewed to broadcast over `like`'s trailing dimensions."""
    return mask.view(*mask.shape, *([1] * (like.dim() - mask.dim())))


def _expand(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.view(*index.shape, *([1] * (like.dim() - 2))).expand(*index.shape, *like.shape[2:])


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` (B, C) of the beams of `x` (B, K, ...) → (B, C, ...)."""
    return x.gather(1, _expand(index, x))
