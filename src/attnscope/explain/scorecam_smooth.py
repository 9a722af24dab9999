"""Score-CAM with many masked inputs per channel: SS-CAM (noisy masks) and IS-CAM (scaled masks).

Both weigh channel k by the mean target score of n masked inputs x ⊙ M_kj, softmaxed over the channels
(as Score-CAM's "channel-softmax" weights), with H_k = s(Up(A_k)) the channel's normalised mask:
SS-CAM M_kj = H_k + δ_j, IS-CAM M_kj = c_j H_k. All masked passes run without gradients through the
`Oracle`, `batch_size` inputs at a time (None: from the memory budget); the K targets of an image share them.
"""

from __future__ import annotations

import torch

from attnscope.errors import InputError
from attnscope.explain.cam import weighted_sum
from attnscope.explain.context import Oracle
from attnscope.explain.method import register_method
from attnscope.explain.options import positive_int
from attnscope.explain.perturbation import folds, forward_probe
from attnscope.explain.sampled import MAX_POINTS
from attnscope.maps import normalize, upsample


def channel_masks(acts: torch.Tensor, size: tuple[int, int], upsample_first: bool) -> torch.Tensor:
    """H_k (N, C, H, W): each channel upsampled bilinearly then min–max normalised (or normalised first)."""
    n, c = acts.shape[:2]
    flat = acts.flatten(0, 1)  # (N·C, h, w)
    masks = normalize(upsample(flat, size)) if upsample_first else upsample(normalize(flat), size)
    return masks.view(n, c, *size)


def mean_masked_scores(oracle: Oracle, acts: torch.Tensor, upsample_first: bool, coeffs: torch.Tensor,
                       noise: torch.Tensor, batch_size: int | None, channels_last: bool | str,
                       fold_batchnorm: bool = False) -> torch.Tensor:
    """(N, C): mean over j of the score of x ⊙ (coeffs[j] · H_k + noise[j]) for each row's image and channel; the
    masks H_k of each chunk's channels are made for that chunk (an image's C masks at input size are 98 MiB for
    resnet18's layer4 at 224 px: held beside the chunks, they took IS-CAM over its memory budget)."""
    k = oracle.per_image
    n_img, c = acts.shape[0] // k, acts.shape[1]
    n = coeffs.shape[0]
    total = acts.new_zeros(n_img * k, c)
    fold = folds(n_img * c * n, fold_batchnorm)
    channels_last, batch_size = oracle.plan(channels_last, batch_size, n_img * c * n,
                                            lambda nhwc: forward_probe(oracle, nhwc, fold))
    size = tuple(oracle.images.shape[-2:])
    for i in range(n_img):
        for s in range(0, c * n, batch_size):
            flat = torch.arange(s, min(s + batch_size, c * n), device=acts.device)
            ch, j = flat // n, flat % n
            h = channel_masks(acts[i * k, ch][None], size, upsample_first)[0]  # (M, H, W): the chunk's channels only
            mask = coeffs[j].view(-1, 1, 1) * h + noise[j]  # (M, H, W)
            logits = oracle.logits(oracle.images[i] * mask[:, None], channels_last, fold)
            for t in range(k):
                row = i * k + t
                total[row].index_add_(0, ch, oracle.target.take(torch.full_like(ch, row)).score(logits))
    return total / n


def _checked(n: int) -> None:
    positive_int("n", n, at_most=MAX_POINTS)


@register_method("sscam", "perturbation")
def sscam(acts: torch.Tensor, oracle: Oracle, *, n: int = 35, sigma: float = 2.0, seed: int = 0, relu: bool = True,
          upsample_first: bool = True, batch_size: int | None = None, channels_last: bool | str = "auto",
          eigen_smooth: bool = False) -> torch.Tensor:
    """SS-CAM (Wang et al., 2020, arXiv:2006.14255): ReLU(Σ_k w_k A_k), w = softmax_k((1/n) Σ_j y(x ⊙ (H_k + δ_j))),
    δ_j ~ N(0, σ²) at input resolution — the same n draws for every image and channel (from `seed`).

    Defaults n = 35, σ = 2 as torchcam's SSCAM (which also normalises before upsampling:
    upsample_first=False reproduces its masks, and draws its noise per channel).
    """
    _checked(n)
    if not sigma >= 0:
        raise InputError(f"sigma must be >= 0, got {sigma!r}")
    size = tuple(oracle.images.shape[-2:])
    noise = (sigma * torch.randn((n, *size), generator=torch.Generator().manual_seed(seed))).to(acts)
    scores = mean_masked_scores(oracle, acts, upsample_first, torch.ones(n).to(acts), noise, batch_size, channels_last)
    return weighted_sum(acts, scores.softmax(dim=1), relu, eigen_smooth)


@register_method("iscam", "perturbation")
def iscam(acts: torch.Tensor, oracle: Oracle, *, n: int = 10, relu: bool = True, upsample_first: bool = True,
          batch_size: int | None = None, channels_last: bool | str = "auto",
          eigen_smooth: bool = False, fold_batchnorm: bool = False) -> torch.Tensor:
    """IS-CAM (Naidu et al., 2020, arXiv:2010.03023): ReLU(Σ_k w_k A_k), w = softmax_k((1/n) Σ_i y(x ⊙ c_i H_k)),
    c_i = Σ_{j ≤ i} j / n for i = 1 … n (the masks' integration path, as torchcam's ISCAM reads the paper)."""
    _checked(n)
    size = tuple(oracle.images.shape[-2:])
    steps = torch.arange(1, n + 1, dtype=acts.dtype, device=acts.device)
    coeffs = torch.cumsum(steps / n, dim=0)  # (n,)
    scores = mean_masked_scores(oracle, acts, upsample_first, coeffs, acts.new_zeros(n, *size), batch_size,
                                channels_last, fold_batchnorm)
    return weighted_sum(acts, scores.softmax(dim=1), relu, eigen_smooth)
