"""`show(image, maps)`: the one call that draws maps over their images, as a matplotlib figure.

`ats.show(images, ats.explain(model, images, ("gradcam", "ig")))` gives rows = images and columns =
the image then one overlay per method (grouped by kind), a colour bar under every method's column
saying what the colours mean and how the maps were scaled (`report.colours`), the explained class
in the titles, optional boxes, and the flag of any map that says nothing (`report.flags`) written
on it. The figure is not registered with pyplot (no global state); `fig.save("maps.png")` writes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attnscope import fileio
from attnscope.errors import InputError
from attnscope.maps import AttentionMap
from attnscope.registry import METHODS
from attnscope.report import colours, figures
from attnscope.report.flags import explain as flag_text
from attnscope.report.flags import flags as find_flags

MapLike = AttentionMap | torch.Tensor | np.ndarray


class MapFigure(Figure):
    """A matplotlib `Figure` with `save(path)` (atomic; the format from the suffix)."""

    def save(self, path: str | Path, dpi: int = 120) -> Path:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        fileio.write_with(path, lambda tmp: self.savefig(tmp, format=fmt, dpi=dpi))
        return path

    def _repr_png_(self) -> bytes:  # shown inline in notebooks without pyplot
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def show(
    image: torch.Tensor | np.ndarray,
    maps: MapLike | Mapping[str, MapLike],
    *,
    targets: int | None = None,
    boxes: torch.Tensor | Sequence[Sequence[int]] | None = None,
    signed: bool | None = None,
    shared: bool = False,
    alpha: float | None = None,
    tile: float = 2.4,
    target: int | None = None,
) -> MapFigure:
    """Draw `maps` over `image`: rows = images, columns = the image and each method.

    `image`: (3, H, W), (B, 3, H, W) or (1, H, W) tensors in [0, 1], or an (H, W, 3) array (float in
    [0, 1] or uint8). `maps`: an `AttentionMap`, a tensor (H, W) / (B, H, W), or `{name: map}` such as
    `explain`'s result (`maps[:3]` for its first three images). Maps of K targets per image (B, K, H, W)
    need `targets=k`, the column to draw. `signed` forces the colour rule (default: decided per method, see
    `report.colours`); `shared=True` gives all images one scale (the 99th percentile) instead of one per
    image. `boxes`: (B, 4) x0, y0, x1, y1. (`target=`, the name before 0.2, still works with a warning.)
    """
    images = _images(image)
    columns = _columns(maps, _renamed(targets, target))
    b = images.shape[0]
    for name, (values, _, _) in columns.items():
        if values.shape[0] != b or tuple(values.shape[-2:]) != tuple(images.shape[-2:]):
            raise InputError(f"maps {name!r} {tuple(values.shape)} do not fit the images {tuple(images.shape)} "
                             "(B, H, W must match)")
    kinds = {n: _kind(n) for n in columns}
    names = figures.by_kind(list(columns), kinds)
    box_list = None if boxes is None else torch.as_tensor(boxes).reshape(-1, 4)
    if box_list is not None and box_list.shape[0] != b:
        raise InputError(f"boxes must be one (x0, y0, x1, y1) per image: {b}, got {box_list.shape[0]}")

    fig = MapFigure(figsize=(tile * (len(names) + 1), tile * b + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(b + 1, len(names) + 1, squeeze=False, height_ratios=[1.0] * b + [0.07])
    axes, bars = grid[:b], grid[b]
    bars[0].set_axis_off()
    for i in range(b):
        _tile(axes[i, 0], figures.to_rgb(images[i]), "image" if i == 0 else None, box_list, i)
    for j, name in enumerate(names, start=1):
        values, options, targets = columns[name]
        sign = colours.is_signed(values, name, options) if signed is None else signed
        limits = colours.scale(values, sign, shared=shared)
        per_image = find_flags(values)
        for i in range(b):
            rgb = figures.overlay(images[i], values[i], alpha, limits=limits, index=i)
            title = name if i == 0 else None
            if targets is not None and int(targets[i]) >= 0:
                title = f"{name}: class {int(targets[i])}" if i == 0 else f"class {int(targets[i])}"
            ax = axes[i, j]
            _tile(ax, rgb, title, box_list, i)
            if per_image[i] is not None:
                ax.text(0.02, 0.97, flag_text(per_image[i], kinds[name]), transform=ax.transAxes, va="top",
                        fontsize=7, color="#ffd200", wrap=True, bbox={"facecolor": "black", "alpha": 0.7, "pad": 2})
        _colour_bar(fig, bars[j], limits, b == 1 or shared)
    return fig


def _renamed(targets: int | None, target: int | None) -> int | None:
    """`targets`, or `target` (its name before 0.2) with a DeprecationWarning."""
    if target is None:
        return targets
    warnings.warn("ats.show(target=k) is deprecated: the column of K targets is `targets=k`, the word every "
                  "other call uses", DeprecationWarning, stacklevel=3)
    if targets is not None:
        raise InputError("give targets=k only (target= is its old name)")
    return target


def _tile(ax: Any, rgb: np.ndarray, title: str | None, boxes: torch.Tensor | None, i: int) -> None:
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if boxes is not None:
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", lw=1.2))


def _colour_bar(fig: Figure, cax: Any, limits: colours.Scale, with_values: bool) -> None:
    """A colour bar under a method's column: values when one scale holds for the column, else words."""
    mappable = ScalarMappable(Normalize(-1 if limits.signed else 0, 1), limits.cmap)
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    cax.set_label("colour bar")
    ticks = [-1, 0, 1] if limits.signed else [0, 1]
    low, mid, high = limits.labels(0 if with_values else None)
    bar.set_ticks(ticks, labels=[low, mid, high] if limits.signed else [low, high])
    bar.ax.tick_params(labelsize=7)
    bar.set_label(f"{'signed' if limits.signed else 'sequential'}: {limits.rule}", fontsize=7)


def _images(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] from a tensor (C, H, W) / (B, C, H, W) or an array (H, W[, 3])."""
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
            raise InputError(f"an image array must be (H, W) or (H, W, 3), got {image.shape}")
        image = torch.from_numpy(arr).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a tensor (3, H, W) / (B, 3, H, W) or an array (H, W, 3), "
                         f"got {type(image).__name__}")
    images = image[None] if image.dim() == 3 else image
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be (C, H, W) or (B, C, H, W) with 1 or 3 channels, got {tuple(image.shape)}")
    return images.detach().float().cpu()


def _columns(maps: MapLike | Mapping[str, MapLike], target: int | None
             ) -> dict[str, tuple[torch.Tensor, dict[str, Any] | None, torch.Tensor | None]]:
    """`{name: (values (B, H, W), options, targets (B,) or None)}` from whatever `show` accepts."""
    if isinstance(maps, Mapping):
        items = list(maps.items())
    else:
        items = [(maps.method if isinstance(maps, AttentionMap) else "map", maps)]
    if not items:
        raise InputError("no maps to show")
    out = {}
    for name, m in items:
        values, options, targets = (m.values, m.meta, m.targets) if isinstance(m, AttentionMap) else (m, None, None)
        if isinstance(values, np.ndarray):
            values = torch.from_numpy(values)
        if not isinstance(values, torch.Tensor):
            raise InputError(f"maps {name!r} must be an AttentionMap or a tensor, got {type(values).__name__}")
        values, targets = _pick(values, targets, target, str(name))
        out[str(name)] = (figures.as_batch(values.detach().float().cpu(), f"maps {name!r}"), options, targets)
    return out


def _pick(values: torch.Tensor, targets: torch.Tensor | None, target: int | None, name: str):
    """Values (B, H, W) and targets (B,) for one target `k` of (B, K, H, W) maps."""
    if values.dim() != 4:
        if target is not None:
            raise InputError(f"targets={target} picks one of K maps per image, but maps {name!r} are "
                             f"{tuple(values.shape)}")
        return values, targets
    k = values.shape[1]
    if target is None:
        if k != 1:
            raise InputError(f"maps {name!r} hold {k} targets per image {tuple(values.shape)}: pass "
                             f"targets=0..{k - 1}")
        target = 0
    if not -k <= target < k:
        raise InputError(f"targets={target} is out of range for {k} targets per image")
    picked = targets[:, target] if targets is not None and targets.dim() == 2 else targets
    return values[:, target], picked


def _kind(name: str) -> str | None:
    base = name.split("/")[0]
    return METHODS.get(base).kind if base in METHODS else None
