"""`sat`: the attention a Show, Attend and Tell captioner pays while it writes each word (Xu et al., ICML 2015).

The map of word t is α_t (softmax over the L annotation positions), bilinearly resized to the
image as in the paper's figures and spread over its pixels, so that it sums to ~1 (as `ltpa`'s).
One call returns `sat/t00`, `sat/t01`, ... (one `AttentionMap` per step, `max_len` of them so that
every batch has the same keys) and `sat`, the mean over each caption's words. The targets of
`sat/tNN` are the ids of the words emitted at step NN (−1 after the caption's <end>), so captions
survive chunking (`batch_size`); `captions_of(maps)` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from attnscope.errors import InputError
from attnscope.explain.api import Context, register_method
from attnscope.maps import AttentionMap, upsample_density


def step_key(t: int) -> str:
    return f"sat/t{t:02d}"


def _is_captioner(model: nn.Module) -> str | None:
    if getattr(model, "attention_kind", None) == "sat":
        return None
    return (f"{type(model).__name__} is not a captioning model with its own attention "
            "(sat reads models that declare attention_kind = 'sat', e.g. attnscope.models.get('sat'))")


@register_method("sat", "intrinsic", applies=_is_captioner)
def sat(ctx: Context, beam_size: int = 1, max_len: int | None = None, length_norm: bool = False,
        captions: Sequence[str] | None = None) -> dict[str, AttentionMap]:
    """Per-word attention α_t of the caption the model generates (greedy, or beam search with `beam_size`),
    or of given `captions` (one per image, teacher-forced)."""
    if ctx._target_spec is not None:
        raise InputError("sat explains the caption the model writes; pass options={'sat': {'captions': [...]}} "
                         "to explain given captions instead of targets")
    model, images = ctx.model, ctx.images
    steps = int(max_len if max_len is not None else model.config.max_len)
    if captions is None:
        found = model.caption(images, beam_size=beam_size, max_len=steps, length_norm=length_norm)
        tokens, alphas = found.tokens, found.alphas  # (B, T), (B, T, h, w)
    else:
        tokens, alphas = _forced(model, images, captions)
        steps = tokens.shape[1]
    b, t = tokens.shape
    tokens = torch.cat([tokens, tokens.new_full((b, steps - t), model.vocab.pad_id)], 1)  # (B, steps)
    alphas = torch.cat([alphas, alphas.new_zeros(b, steps - t, *alphas.shape[2:])], 1)  # (B, steps, h, w)
    emitted = _emitted(tokens, model.vocab.end_id, model.vocab.pad_id)  # (B, steps)
    targets = torch.where(emitted, tokens, -1)
    meta = {"beam_size": beam_size, "length_norm": length_norm, "words": model.vocab.itos,
            "units": "attention per input pixel (sums to ~1)"}
    out: dict[str, AttentionMap] = {}
    for s in range(steps):
        out[step_key(s)] = _map(step_key(s), alphas[:, s], targets[:, s], ctx.size, {**meta, "step": s})
    words = emitted & (tokens != model.vocab.end_id)  # (B, steps): real words only
    mean = (alphas * words[..., None, None]).sum(1) / words.sum(1).clamp_min(1)[:, None, None]  # (B, h, w)
    out["sat"] = _map("sat", mean, torch.full((b,), -1, device=tokens.device), ctx.size, meta)
    return out


def captions_of(maps: Mapping[str, AttentionMap]) -> list[list[str]]:
    """The words of each image's caption, read from the targets of the `sat/tNN` maps (<end> left out)."""
    keys = sorted(k for k in maps if k.startswith("sat/t"))
    if not keys:
        raise InputError("no sat/tNN maps: pass the result of explain(..., methods=('sat',))")
    itos = maps[keys[0]].meta["words"]
    ids = torch.stack([maps[k].targets.cpu() for k in keys], 1)  # (B, steps)
    out = []
    for row in ids.tolist():
        words = []
        for i in row:
            if i < 0 or itos[i] == "<end>":
                break
            words.append(itos[i])
        out.append(words)
    return out


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


def _map(name: str, lowres: torch.Tensor, targets: torch.Tensor, size: tuple[int, int], meta: dict) -> AttentionMap:
    """α (B, h, w) resized to the image and spread over its pixels (÷ pixels per cell, as `ltpa` does)."""
    lowres = lowres.detach().float()
    values = upsample_density(lowres, size)
    return AttentionMap(values=values, method=name, targets=targets.long(), lowres=lowres, meta=meta)
