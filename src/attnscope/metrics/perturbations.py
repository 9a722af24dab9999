"""Faithfulness under random perturbations: does a map's mass on what a perturbation changes predict
how much the model's score changes? Faithfulness correlation (Bhatt et al. 2020) and infidelity
(Yeh et al. 2019).

Like every faithfulness metric they take a scorer `f(x, source) -> scores` (see
`attnscope.metrics.faithfulness`). The random draws come from a seed, or are given explicitly
(`subsets`, `perturbations`) so that another library's draws can be replayed exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from attnscope.errors import InputError
from attnscope.metrics.checks import check_images, positive_int, scored
from attnscope.metrics.declare import declare
from attnscope.metrics.faithfulness import Scorer, scores_of, substrate_of
from attnscope.metrics.similarity import pearson
from attnscope.registry import Registry

Perturbation = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # images, n, gen -> I (B, n, C, H, W)
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")
Maps = torch.Tensor | Mapping[str, torch.Tensor]  # one method's maps (B, H, W), or several methods' by name


def random_subsets(b: int, pixels: int, runs: int, size: int, seed: int = 0) -> torch.Tensor:
    """`runs` random sets of `size` distinct pixel indices in [0, pixels) per image: (B, runs, size) long."""
    positive_int("subset size", size)
    positive_int("runs", runs)
    if size > pixels:
        raise InputError(f"subset size {size} is larger than the {pixels} pixels of a map")
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, runs, pixels, generator=g).argsort(dim=2)[..., :size]


@declare("faith_corr", "faithfulness", lambda m, b: faithfulness_correlation(m, b.images, b.scorer, seed=b.seed,
                                                                          batch_size=b.batch_size),
         model=True, seeded=True, short="fcorr", legend="faithfulness correlation", bounds=(-1, 1))
@scored
def faithfulness_correlation(maps: Maps, images: torch.Tensor, f: Scorer, runs: int = 100,
                             size: int = 224, substrate: str | torch.Tensor = "zero", seed: int = 0,
                             subsets: torch.Tensor | None = None, batch_size: int = 256) -> Maps:
    """Faithfulness correlation (Bhatt et al., IJCAI 2020): Pearson correlation, over `runs` random
    subsets S of `size` pixels, between Σ_{i∈S} M_i and f(x) − f(x_S), x_S = x with S replaced by
    `substrate` (every channel of a pixel). `subsets` (B, runs, size) replaces the seeded draw.
    NaN where either side is constant over the runs. (B,); for a dict of maps (several methods) a dict of
    them, from one set of passes: f(x_S) does not depend on the map."""
    many = _many(images, maps)
    b, h, w = next(iter(many.values())).shape
    subsets = random_subsets(b, h * w, runs, size, seed) if subsets is None else _checked_subsets(subsets, b, h * w)
    runs = subsets.shape[1]
    subsets = subsets.to(images.device)
    end = substrate_of(substrate, images)
    deltas = torch.empty(b, runs, dtype=torch.float64)
    base = scores_of(f, images, torch.arange(b, device=images.device)).double().cpu()
    for lo in range(0, b * runs, positive_int("batch_size", batch_size)):
        flat = torch.arange(lo, min(lo + batch_size, b * runs), device=images.device)
        i, r = flat // runs, flat % runs
        hidden = torch.zeros(len(flat), h * w, dtype=torch.bool, device=images.device)
        hidden.scatter_(1, subsets[i, r], True)
        x = torch.where(hidden.view(-1, 1, h, w), end[i], images[i])
        deltas.view(-1)[lo : lo + len(flat)] = base[i.cpu()] - scores_of(f, x, i).double().cpu()

    def correlation(m: torch.Tensor) -> torch.Tensor:
        sums = m.flatten(1).double()[:, None, :].expand(-1, runs, -1).gather(2, subsets.to(m.device)).sum(2)
        return pearson(sums.cpu(), deltas)  # (B,)

    return _each(maps, many, correlation)


@PERTURBATIONS.register("gaussian")
def gaussian_perturbation(images: torch.Tensor, n: int, generator: torch.Generator, sigma: float = 0.2) -> torch.Tensor:
    """I ~ N(0, σ²) for every pixel and channel (Yeh et al. 2019, "noisy baseline"): (B, n, C, H, W)."""
    noise = torch.randn((images.shape[0], n, *images.shape[1:]), generator=generator, dtype=torch.float64)
    return (sigma * noise).to(device=images.device, dtype=images.dtype)


@PERTURBATIONS.register("square")
def square_perturbation(images: torch.Tensor, n: int, generator: torch.Generator, side: int = 8) -> torch.Tensor:
    """I = x inside one random side×side square, 0 elsewhere (Yeh et al. 2019, "square removal":
    x − I blacks the square out): (B, n, C, H, W)."""
    b, _, h, w = images.shape
    side = min(positive_int("square side", side), h, w)
    top = torch.randint(0, h - side + 1, (b, n), generator=generator).to(images.device)
    left = torch.randint(0, w - side + 1, (b, n), generator=generator).to(images.device)
    ys = torch.arange(h, device=images.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, 1, w)
    inside = (ys >= top[..., None, None]) & (ys < top[..., None, None] + side) & \
        (xs >= left[..., None, None]) & (xs < left[..., None, None] + side)  # (B, n, H, W)
    return images[:, None] * inside[:, :, None].to(images.dtype)


@declare("infidelity", "faithfulness", lambda m, b: infidelity(m, b.images, b.scorer, seed=b.seed,
                                                              batch_size=b.batch_size),
         higher_is_better=False, model=True, seeded=True, short="infid", legend="infidelity")
@scored
def infidelity(maps: Maps, images: torch.Tensor, f: Scorer, n: int = 10, perturbation: str = "gaussian",
               seed: int = 0, normalize: bool = False, perturbations: torch.Tensor | None = None,
               batch_size: int = 256) -> Maps:
    """Infidelity (Yeh et al., NeurIPS 2019): E_I[(Σ I ⊙ M − (f(x) − f(x − I)))²] over `n` draws of I
    (`perturbation`: "gaussian" or "square", see `PERTURBATIONS`), the map broadcast over channels.
    `normalize=True` first scales M by the β minimising it, β = E[IM·Δf] / E[(IM)²] (captum's option).
    `perturbations` (B, n, C, H, W) replaces the seeded draw. Lower is better. (B,); for a dict of maps
    (several methods) a dict of them, from one set of passes: f(x − I) does not depend on the map."""
    many = _many(images, maps)
    b = images.shape[0]
    if perturbations is None:
        draw = PERTURBATIONS.get(perturbation)
        perturbations = draw(images, positive_int("n", n), torch.Generator().manual_seed(seed))
    if perturbations.dim() != 5 or perturbations.shape[0] != b or perturbations.shape[2:] != images.shape[1:]:
        raise InputError(f"perturbations must be (B, n, C, H, W) with (B, C, H, W) = {tuple(images.shape)}, "
                         f"got {tuple(perturbations.shape)}")
    n = perturbations.shape[1]
    perturbations = perturbations.to(device=images.device, dtype=images.dtype)
    base = scores_of(f, images, torch.arange(b, device=images.device)).double().cpu()
    deltas = torch.empty(b, n, dtype=torch.float64)
    for lo in range(0, b * n, positive_int("batch_size", batch_size)):
        flat = torch.arange(lo, min(lo + batch_size, b * n), device=images.device)
        i, j = flat // n, flat % n
        moved = scores_of(f, images[i] - perturbations[i, j], i).double().cpu()
        deltas.view(-1)[lo : lo + len(flat)] = base[i.cpu()] - moved

    def score(m: torch.Tensor) -> torch.Tensor:
        explained = (perturbations.double() * m[:, None, None].double()).flatten(2).sum(2).cpu()  # (B, n)
        if normalize:
            fit = (explained * deltas).mean(1, keepdim=True)
            explained = fit / explained.square().mean(1, keepdim=True).clamp_min(1e-300) * explained
        return (explained - deltas).square().mean(1)

    return _each(maps, many, score)


def _many(images: torch.Tensor, maps: Maps) -> dict[str, torch.Tensor]:
    """`maps` as a non-empty dict {name: (B, H, W)}, each checked against `images`."""
    many = dict(maps) if isinstance(maps, Mapping) else {"": maps}
    if not many:
        raise InputError("maps must be a (B, H, W) tensor or a non-empty dict of them")
    for m in many.values():
        check_images(images, m)
    return many


def _each(maps: Maps, many: dict[str, torch.Tensor], score: Callable[[torch.Tensor], torch.Tensor]) -> Maps:
    """`score` of each map: a dict for a dict of maps, else the one result."""
    out = {k: score(m) for k, m in many.items()}
    return out if isinstance(maps, Mapping) else out[""]


def _checked_subsets(subsets: torch.Tensor, b: int, pixels: int) -> torch.Tensor:
    if subsets.dim() != 3 or subsets.shape[0] != b or subsets.dtype != torch.long:
        raise InputError(f"subsets must be long (B, runs, size) with B = {b}, "
                         f"got {subsets.dtype} {tuple(subsets.shape)}")
    if subsets.numel() and (subsets.min() < 0 or subsets.max() >= pixels):
        raise InputError(f"subset indices must lie in [0, {pixels})")
    return subsets
