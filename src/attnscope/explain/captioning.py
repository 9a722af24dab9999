"""`sat`: the attention a Show, Attend and Tell captioner pays while it writes each word (Xu et al., ICML 2015).

The map of word t is α_t (softmax over the L annotation positions), bilinearly resized to the
image as in the paper's figures and spread over its pixels, so that it sums to ~1 (as `ltpa`'s).
One call returns one `SequenceMap` (B, T, H, W) under `sat`: its targets are the ids of the words
emitted at each step (−1 after the caption's <end>), its mask the real steps, `.words` the
captions and `.mean()` the mean map over each caption's words; chunks (`batch_size`) are padded
to the longest caption when concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from attnscope.errors import InputError
from attnscope.explain.engine import run_model
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.maps import SequenceMap, upsample_density


def _is_captioner(model: nn.Module) -> str | None:
    if getattr(model, "attention_kind", None) == "sat":
        return None
    return (f"{type(model).__name__} is not a captioning model with its own attention "
            "(sat reads models that declare attention_kind = 'sat', e.g. attnscope.models.get('sat'))")


@register_method("sat", "intrinsic", applies=_is_captioner)
def sat(model: nn.Module, images: torch.Tensor, *, beam_size: int = 1,
        max_len: int | None = None, length_norm: bool = False,
        captions: Sequence[str] | None = None) -> SequenceMap:
    """Per-word attention α_t of the caption the model generates (greedy, or beam search with `beam_size`),
    or of given `captions` (one per image, teacher-forced): one `SequenceMap` (B, T, H, W)."""
    steps = int(max_len if max_len is not None else model.config.max_len)
    positive_int("max_len", steps, at_most=1000)
    positive_int("beam_size", beam_size, at_most=64)
    if captions is None:  # run_model: an image the encoder cannot take (1×1) is an InputError quoting the model
        found = run_model(lambda x: model.caption(x, beam_size=beam_size, max_len=steps, length_norm=length_norm),
                          images)
        tokens, alphas = found.tokens, found.alphas  # (B, T), (B, T, h, w)
    else:
        tokens, alphas = run_model(lambda x: _forced(model, x, captions), images)
    mask = _emitted(tokens, model.vocab.end_id, model.vocab.pad_id)  # (B, T)
    targets = torch.where(mask, tokens, -1)
    lowres = alphas.detach().float()
    size = tuple(images.shape[-2:])
    meta = {"beam_size": beam_size, "length_norm": length_norm, "max_len": steps,
            "units": "attention per input pixel (sums to ~1)"}
    return SequenceMap(values=upsample_density(lowres, size), method="sat", targets=targets.long(), lowres=lowres,
                       meta=meta, mask=mask, vocabulary=tuple(model.vocab.itos), end_id=model.vocab.end_id)


def _forced(model: nn.Module, images: torch.Tensor, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (B, T) after <start> and the attention (B, T, h, w) that predicted each, for given captions."""
    if isinstance(captions, str) or len(captions) != images.shape[0]:
        n = 1 if isinstance(captions, str) else len(captions)
        raise InputError(f"captions must be a list of one caption per image: {n} for {images.shape[0]} images")
    encoded = [torch.tensor(model.vocab.encode(c), dtype=torch.long) for c in captions]
    ids = pad_sequence(encoded, batch_first=True, padding_value=model.vocab.pad_id).to(images.device)  # (B, T+1)
    with torch.no_grad():
        out = model(images, ids, sample=False)
    h, w = out.grid
    return ids[:, 1:], out.alphas.view(ids.shape[0], -1, h, w)


def _emitted(tokens: torch.Tensor, end_id: int, pad_id: int) -> torch.Tensor:
    """(B, T) bool: the tokens a caption emitted, up to and including its first <end>."""
    is_end = (tokens == end_id).long()
    before_end = (is_end.cumsum(1) - is_end) == 0  # no <end> strictly before
    return before_end & (tokens != pad_id)
