"""Perturbation methods: maps from the scores of changed inputs or activations, without gradients.

Score-CAM masks the input with each channel of the layer, Ablation-CAM zeroes each channel,
occlusion covers each window of the input. All run their extra passes batched (`batch_size`
inputs per pass) under no_grad, and skip the passes whose result is known without running them.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.explain.api import Context, register_method
from attnscope.explain.cam import safe_div, weighted_sum
from attnscope.explain.options import baseline_like, pair, positive_int
from attnscope.explain.targets import Target
from attnscope.maps import normalize, upsample

SCORECAM_WEIGHTS = ("probability", "channel-softmax")


def _masked_scores(
    ctx: Context, image: torch.Tensor, masks: torch.Tensor, weights: str, channels_last: bool, **mask_opts: bool
) -> torch.Tensor:
    """Scores (N,) of images `image` (N,) masked by low-res channel masks `masks` (N, h, w) in [0, 1]."""
    up = _input_masks(masks, ctx.size, **mask_opts)  # (N, H, W)
    logits = ctx.logits(ctx.images[image] * up[:, None], channels_last=channels_last)
    return _score(ctx.target.take(image), logits, weights)


def _input_masks(
    masks: torch.Tensor, size: tuple[int, int], upsample_first: bool, align_corners: bool
) -> torch.Tensor:
    up = upsample(masks, size, align_corners)
    return normalize(up) if upsample_first else up


def _score(target: Target, logits: torch.Tensor, weights: str) -> torch.Tensor:
    if weights == "probability" and target.fn is None:
        return logits.softmax(dim=1).gather(1, target.classes[:, None])[:, 0]
    return target.score(logits)


@register_method("scorecam", "perturbation", needs={"layer"})
def scorecam(
    ctx: Context,
    relu: bool = True,
    weights: str = "probability",
    upsample_first: bool = True,
    align_corners: bool = False,
    batch_size: int = 64,
    channels_last: bool = True,
) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020): ReLU(Σ_k w_k A_k), w_k the score of the input masked by
    H_k = s(Up(A_k)), Up bilinear upsampling to the input, s min–max normalisation to [0, 1].

    weights="probability" (default, the paper and its authors' code): w_k = softmax(f(x ⊙ H_k))_c.
    weights="channel-softmax" (pytorch-grad-cam, torchcam): w = softmax_k(f_c(x ⊙ H_k)), the raw
    target scores normalised across channels. A callable target gives raw scores in both cases.
    Mask construction of the peers: pytorch-grad-cam upsamples with align_corners=True before
    normalising; torchcam normalises before upsampling (upsample_first=False).

    Channels whose masks are constant (zero after normalisation) all mask the input to zeros: one
    pass serves them for the whole batch. Duplicate masks of an image share one pass.
    `channels_last=True` (default) runs the masked passes in NHWC layout: 1.1–2 × faster for most CNNs
    on a CPU, 0.8–0.9 × for ResNets at 64 px (bench/README.md); `False` keeps the input's layout.
    """
    positive_int("batch_size", batch_size)
    if weights not in SCORECAM_WEIGHTS:
        raise InputError(f"scorecam weights must be one of {SCORECAM_WEIGHTS}, got {weights!r}")
    opts = {"weights": weights, "upsample_first": upsample_first, "align_corners": align_corners,
            "channels_last": channels_last}
    acts = ctx.capture.activations  # (B, C, h, w)
    b, c, h, w = acts.shape
    rows = normalize(acts.flatten(0, 1)).flatten(1)  # (B*C, h*w) each channel in [0, 1]
    image = torch.arange(b, device=acts.device).repeat_interleave(c)  # (B*C,)
    blank = (rows == 0).all(dim=1)  # constant channels: mask 0, so x ⊙ mask = 0 for every image
    keys = torch.cat([image[:, None].to(rows.dtype), rows], dim=1)[~blank]
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # distinct (image, mask) pairs
    u_image, u_masks = unique[:, 0].long(), unique[:, 1:].view(-1, h, w)
    u_scores = torch.cat(
        [_masked_scores(ctx, u_image[s : s + batch_size], u_masks[s : s + batch_size], **opts)
         for s in range(0, len(unique), batch_size)]
        or [acts.new_zeros(0)]
    )
    scores = acts.new_empty(b * c)
    scores[~blank] = u_scores[inverse]
    if blank.any():
        zero_logits = ctx.logits(torch.zeros_like(ctx.images[:1])).expand(b, -1)
        scores[blank] = _score(ctx.target, zero_logits, weights)[image[blank]]
    scores = scores.view(b, c)
    if weights == "channel-softmax":
        scores = scores.softmax(dim=1)
    return weighted_sum(acts, scores, relu)


@register_method("ablationcam", "perturbation", needs={"layer"})
def ablationcam(ctx: Context, relu: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): ReLU(Σ_k w_k A_k), w_k = (y − y_k) / y,
    y_k the score with channel k of the layer set to zero (w_k = 0 where y = 0).

    The layers before the chosen one run once per chunk of `batch_size` ablations (not once per
    ablation); channels that are already all zero are not run (y_k = y).
    """
    positive_int("batch_size", batch_size)
    cap = ctx.capture
    acts, y = cap.activations, cap.scores  # (B, C, h, w), (B,)
    b, c = acts.shape[:2]
    y_k = y[:, None].repeat(1, c)  # (B, C)
    for i in range(b):
        live = acts[i].flatten(1).ne(0).any(dim=1).nonzero()[:, 0]  # channels that ablation changes
        for s in range(0, len(live), batch_size):
            k = live[s : s + batch_size]
            ablated = acts[i].expand(len(k), *acts.shape[1:]).clone()  # (N, C, h, w)
            ablated[torch.arange(len(k), device=k.device), k] = 0
            logits = ctx.logits_with_layer_output(i, ablated)
            y_k[i, k] = ctx.target.take(torch.full_like(k, i)).score(logits)
    return weighted_sum(acts, safe_div(y[:, None] - y_k, y[:, None].expand_as(y_k)), relu)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis; a last window is aligned to the edge so every pixel is covered."""
    if window > length:
        raise InputError(f"occlusion window {window} is larger than the image ({length} px)")
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else [*starts, length - window]


def _spans(starts: list[int], window: int, length: int, device: torch.device) -> torch.Tensor:
    """(P, length) boolean: which positions each window covers."""
    pos = torch.arange(length, device=device)
    first = torch.tensor(starts, device=device)[:, None]
    return (pos >= first) & (pos < first + window)


@register_method("occlusion", "perturbation")
def occlusion(
    ctx: Context,
    window: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 8,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
    channels_last: bool = True,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, ECCV 2014): M_ij = mean over windows W ∋ (i, j) of y(x) − y(x_W),
    x_W the image with window W (all channels) set to the baseline.

    Windows slide by `stride`; where the stride does not reach the edge a last full window is
    aligned to it, so every pixel is covered (captum's Occlusion cuts a window at the edge instead).
    `channels_last=True` (default) runs the occluded passes in NHWC layout (see `scorecam`).
    """
    positive_int("batch_size", batch_size)
    (wh, ww), (sh, sw) = pair("window", window), pair("stride", stride)
    x = ctx.images
    b, _, height, width = x.shape
    base = baseline_like(baseline, x)
    rows = _spans(_starts(height, wh, sh), wh, height, x.device)  # (Ph, H)
    cols = _spans(_starts(width, ww, sw), ww, width, x.device)  # (Pw, W)
    p = rows.shape[0] * cols.shape[0]
    win_rows = rows.repeat_interleave(cols.shape[0], dim=0)  # (P, H), window p = (p // Pw, p % Pw)
    win_cols = cols.repeat(rows.shape[0], 1)  # (P, W)
    target, y = ctx.target.repeat(p), ctx.capture.scores
    drops = x.new_empty(b * p)
    for s in range(0, b * p, batch_size):
        flat = torch.arange(s, min(s + batch_size, b * p), device=x.device)
        i, j = flat // p, flat % p
        covered = (win_rows[j][:, :, None] & win_cols[j][:, None, :])[:, None]  # (N, 1, H, W)
        occluded = torch.where(covered, base[i], x[i])
        drops[flat] = y[i] - target.take(flat).score(ctx.logits(occluded, channels_last=channels_last))
    drops = drops.view(b, p)
    total = torch.einsum("bp,ph,pw->bhw", drops, win_rows.to(x.dtype), win_cols.to(x.dtype))
    count = torch.einsum("ph,pw->hw", win_rows.to(x.dtype), win_cols.to(x.dtype))
    return total / count
