"""Perturbation methods: maps from the scores of changed inputs or activations, without gradients.

Score-CAM masks the input with each channel of the layer, Ablation-CAM zeroes each channel, occlusion covers
each window of the input. All run their extra passes through the `Oracle`, batched (`batch_size` inputs per
pass; None: as many as fit the memory budget, `explain.budget`) under no_grad, share the passes of the K
targets of an image, and skip the passes whose result is known without running them. `channels_last="auto"`
runs the passes in NHWC layout when the images already are or the model declares `prefers_channels_last`
(SmallCNN: about 2 × faster on a CPU, bench/README.md), and on a run long enough to measure (`Oracle.plan`) in
the layout whose chunk the probe found faster (resnet18 at 224 px: NHWC, 11 % less CPU for Score-CAM);
`True` forces NHWC, `False` keeps the input's layout. `fold_batchnorm=True` runs those passes through a copy of
the model with BatchNorm folded into its convolutions (`split.folded`; 8–11 % less CPU on resnet18, maps equal
to float rounding, so off by default).
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.budget import PROBE_MIN, Probe
from attnscope.explain.cam import safe_div, weighted_sum
from attnscope.explain.context import Oracle
from attnscope.explain.method import Result, register_method
from attnscope.explain.options import baseline_like, pair
from attnscope.explain.split import same_output as split_same
from attnscope.explain.targets import Target
from attnscope.maps import normalize, upsample

SCORECAM_WEIGHTS = ("probability", "channel-softmax")


def folds(total: int, fold_batchnorm: bool) -> bool:
    """Whether a rerun of `total` masked forwards goes through the model with BatchNorm folded into its
    convolutions (`Oracle.logits(fold=True)`): asked for (`fold_batchnorm`), on a run long enough for the chunk
    probe. Off by default: the maps then differ from the model's own passes by float rounding (3e-7 of a logit)."""
    return fold_batchnorm and total >= PROBE_MIN


def forward_probe(oracle: Oracle, channels_last: bool | str, fold: bool = False) -> Probe:
    """Chunks of masked forwards timed on copies of the first image, in the layout (and folding) the passes use."""
    nhwc = oracle.channels_last(channels_last)
    x = oracle.images[:1]
    return Probe(f"forward-{'nhwc' if nhwc else 'nchw'}{'-folded' if fold else ''}",
                 lambda n: oracle.logits(x.expand(n, *x.shape[1:]).clone(), channels_last, fold))


def _input_masks(
    masks: torch.Tensor, size: tuple[int, int], upsample_first: bool, align_corners: bool
) -> torch.Tensor:
    up = upsample(masks, size, align_corners)
    return normalize(up) if upsample_first else up


def _score(target: Target, logits: torch.Tensor, weights: str) -> torch.Tensor:
    if weights == "probability" and target.fn is None:
        return logits.softmax(dim=1).gather(1, target.classes[:, None])[:, 0]
    return target.score(logits)


@register_method("scorecam", "perturbation")
def scorecam(
    acts: torch.Tensor,
    oracle: Oracle,
    *,
    relu: bool = True,
    weights: str = "probability",
    upsample_first: bool = True,
    align_corners: bool = False,
    batch_size: int | None = None,
    channels_last: bool | str = "auto",
    eigen_smooth: bool = False,
    fold_batchnorm: bool = False,
) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020): ReLU(Σ_k w_k A_k), w_k the score of the input masked by
    H_k = s(Up(A_k)), Up bilinear upsampling to the input, s min–max normalisation to [0, 1].

    weights="probability" (default, the paper and its authors' code): w_k = softmax(f(x ⊙ H_k))_c.
    weights="channel-softmax" (pytorch-grad-cam, torchcam): w = softmax_k(f_c(x ⊙ H_k)), the raw
    target scores normalised across channels. A callable target gives raw scores in both cases.
    Mask construction of the peers: pytorch-grad-cam upsamples with align_corners=True before
    normalising; torchcam normalises before upsampling (upsample_first=False).

    Channels whose masks are constant (zero after normalisation) all mask the input to zeros: one
    pass serves them for the whole batch. Duplicate masks of an image — and the K targets of an
    image — share one pass.
    """
    if weights not in SCORECAM_WEIGHTS:
        raise InputError(f"scorecam weights must be one of {SCORECAM_WEIGHTS}, got {weights!r}")
    n, c, h, w = acts.shape  # rows
    masks = normalize(acts.flatten(0, 1)).flatten(1)  # (N·C, h·w) each channel in [0, 1]
    row = torch.arange(n, device=acts.device).repeat_interleave(c)  # (N·C,)
    image = oracle.source.to(acts.device)[row]  # the image each mask belongs to
    blank = (masks == 0).all(dim=1)  # constant channels: mask 0, so x ⊙ mask = 0 for every image
    keys = torch.cat([image[:, None].to(masks.dtype), masks], dim=1)[~blank]
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # distinct (image, mask) pairs
    u_image, u_masks = unique[:, 0].long(), unique[:, 1:].view(-1, h, w)
    fold = folds(len(unique), fold_batchnorm)
    channels_last, batch_size = oracle.plan(channels_last, batch_size, len(unique),
                                            lambda nhwc: forward_probe(oracle, nhwc, fold))
    logits = [
        oracle.logits(oracle.images[u_image[s : s + batch_size]]
                      * _input_masks(u_masks[s : s + batch_size], oracle.images.shape[-2:], upsample_first,
                                     align_corners)[:, None], channels_last, fold)
        for s in range(0, len(unique), batch_size)
    ]
    scores = acts.new_empty(n * c)
    if logits:
        scores[~blank] = _score(oracle.target.take(row[~blank]), torch.cat(logits)[inverse], weights)
    if blank.any():
        zero = oracle.logits(torch.zeros_like(oracle.images[:1]), channels_last, fold)
        scores[blank] = _score(oracle.target.take(row[blank]), zero.expand(int(blank.sum()), -1), weights)
    scores = scores.view(n, c)
    if weights == "channel-softmax":
        scores = scores.softmax(dim=1)
    return weighted_sum(acts, scores, relu, eigen_smooth)


TAILS = ("auto", "split", "shared", "repeat")


def _tail(oracle: Oracle, tail: str, acts: torch.Tensor, scores: torch.Tensor) -> str:
    """The way ablated outputs reach the model's output: "split" where the layers after the chosen one run
    alone and reproduce the shared pass's score of the first row, else "shared" (tail="auto")."""
    if tail not in ("auto", "split"):
        return tail
    module, why = oracle.layer_tail()
    if module is not None:
        first = oracle.target.take(torch.zeros(1, dtype=torch.long, device=acts.device))
        if split_same(first.score(oracle.with_layer_output_tail(0, acts[:1])), scores[:1]):
            return "split"
        why = "the layers after it, run alone, do not reproduce the model's score"
    if tail == "split":
        raise NotApplicableError(f"ablationcam tail='split': {why}; use tail='auto' or 'shared'")
    return "shared"


@register_method("ablationcam", "perturbation")
def ablationcam(acts: torch.Tensor, scores: torch.Tensor, oracle: Oracle, *, relu: bool = True,
                batch_size: int | None = None, tail: str = "auto", eigen_smooth: bool = False) -> Result:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): ReLU(Σ_k w_k A_k), w_k = (y − y_k) / y,
    y_k the score with channel k of the layer set to zero (w_k = 0 where y = 0).

    tail="split": only the layers after the chosen one run, on the ablated copies of the shared
    pass's activations (`explain.split`; about one forward in all); "shared": the layers before the
    chosen one run once per chunk of `batch_size` ablations, the layers after it on the chunk;
    "repeat": the whole model per ablation (for models whose later layers also read tensors from
    before the layer); "auto" (default): "split" where the model traces with torch.fx, nothing after
    the layer reads from before it, and the split reproduces the shared pass's score, else "shared".
    The path taken is in the map's meta["tail"]. Channels that are already all zero are not run
    (y_k = y); the K targets of an image share the ablated passes.
    """
    if tail not in TAILS:
        raise InputError(f"ablationcam tail must be one of {TAILS}, got {tail!r}")
    used = _tail(oracle, tail, acts, scores)
    run = {"split": oracle.with_layer_output_tail, "shared": oracle.with_layer_output,
           "repeat": oracle.with_layer_output_repeated}[used]
    n, c = acts.shape[:2]
    k = oracle.per_image
    first = acts[:1]
    probe = Probe(f"ablation-{used}", lambda m: run(0, first.expand(m, *first.shape[1:]).clone()))
    batch_size = oracle.chunk(batch_size, c, after_layer=used != "repeat", probe=probe)
    y_k = scores[:, None].repeat(1, c)  # (N, C)
    for i in range(n // k):
        rows = torch.arange(i * k, (i + 1) * k, device=acts.device)
        a = acts[i * k]  # the K rows of an image share its activations
        live = a.flatten(1).ne(0).any(dim=1).nonzero()[:, 0]  # channels that ablation changes
        for s in range(0, len(live), batch_size):
            ch = live[s : s + batch_size]
            ablated = a.expand(len(ch), *a.shape).clone()  # (M, C, h, w)
            ablated[torch.arange(len(ch), device=ch.device), ch] = 0
            out = run(i, ablated)
            for r in rows.tolist():
                y_k[r, ch] = oracle.target.take(torch.full_like(ch, r)).score(out)
    weights = safe_div(scores[:, None] - y_k, scores[:, None].expand_as(y_k))
    return Result(weighted_sum(acts, weights, relu, eigen_smooth), meta={"tail": used})


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis; a last window is aligned to the edge so every pixel is covered."""
    if window > length:
        raise InputError(f"occlusion window {window} is larger than the image ({length} px)")
    if stride > window:
        raise InputError(f"occlusion stride {stride} is larger than the window {window}: the pixels between "
                         f"windows would never be occluded; use a stride ≤ the window")
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else [*starts, length - window]


def _spans(starts: list[int], window: int, length: int, device: torch.device) -> torch.Tensor:
    """(P, length) boolean: which positions each window covers."""
    pos = torch.arange(length, device=device)
    first = torch.tensor(starts, device=device)[:, None]
    return (pos >= first) & (pos < first + window)


@register_method("occlusion", "perturbation")
def occlusion(
    scores: torch.Tensor,
    oracle: Oracle,
    *,
    window: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 8,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None,
    channels_last: bool | str = "auto",
    fold_batchnorm: bool = False,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, ECCV 2014): M_ij = mean over windows W ∋ (i, j) of y(x) − y(x_W),
    x_W the image with window W (all channels) set to the baseline.

    Windows slide by `stride` (at most the window, so no pixel is left out); where the stride does
    not reach the edge a last full window is aligned to it, so every pixel is covered (captum's
    Occlusion cuts a window at the edge instead).
    """
    (wh, ww), (sh, sw) = pair("window", window), pair("stride", stride)
    x = oracle.images  # (B, C, H, W): the K targets of an image share its occluded passes
    b, _, height, width = x.shape
    k = oracle.per_image
    base = baseline_like(baseline, x)
    rows = _spans(_starts(height, wh, sh), wh, height, x.device)  # (Ph, H)
    cols = _spans(_starts(width, ww, sw), ww, width, x.device)  # (Pw, W)
    p = rows.shape[0] * cols.shape[0]
    win_rows = rows.repeat_interleave(cols.shape[0], dim=0)  # (P, H), window p = (p // Pw, p % Pw)
    win_cols = cols.repeat(rows.shape[0], 1)  # (P, W)
    drops = x.new_empty(b * k, p)
    fold = folds(b * p, fold_batchnorm)
    channels_last, batch_size = oracle.plan(channels_last, batch_size, b * p,
                                            lambda nhwc: forward_probe(oracle, nhwc, fold))
    for s in range(0, b * p, batch_size):
        flat = torch.arange(s, min(s + batch_size, b * p), device=x.device)
        i, j = flat // p, flat % p
        covered = (win_rows[j][:, :, None] & win_cols[j][:, None, :])[:, None]  # (M, 1, H, W)
        logits = oracle.logits(torch.where(covered, base[i], x[i]), channels_last, fold)
        for t in range(k):
            r = i * k + t
            drops[r, j] = (scores[r] - oracle.target.take(r).score(logits)).to(drops.dtype)  # bf16 under autocast
    total = torch.einsum("np,ph,pw->nhw", drops, win_rows.to(x.dtype), win_cols.to(x.dtype))
    count = torch.einsum("ph,pw->hw", win_rows.to(x.dtype), win_cols.to(x.dtype))
    return total / count
