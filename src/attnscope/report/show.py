"""`show(image, maps)`: the one call that draws maps over their images, as a matplotlib figure.

`ats.show(images, ats.explain(model, images, ("gradcam", "ig")))` gives rows = images and columns =
the image then one overlay per method (grouped by kind), a colour bar under every method's column
saying what the colours mean and how the maps were scaled (`report.colours`), each row labelled with
the class its maps explain (name, index, probability: `report.labels`), optional boxes, the flag of any
map that says nothing (`report.flags`) and the mark of a weak one written on it. The figure is not
registered with pyplot (no global state); `fig.save("maps.png")` writes it.
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
from attnscope.report import labels as labels_mod
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
    scale: str = "image",
    classes: Sequence[str] | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    shared: bool = False,
    alpha: float | None = None,
    tile: float = 2.4,
    target: int | None = None,
) -> MapFigure:
    """Draw `maps` over `image`: rows = images, columns = the image and each method.

    `image`: (3, H, W), (B, 3, H, W) or (1, H, W) tensors in [0, 1], or an (H, W, 3) array (float in
    [0, 1] or uint8). `maps`: an `AttentionMap`, a tensor (H, W) / (B, H, W), or `{name: map}` such as
    `explain`'s result (`maps[:3]` for its first three images). Maps of K targets per image (B, K, H, W)
    are drawn as K columns, or pass `targets=k` for one of them. Each row says which class its maps
    explain, by name where the model has names (`classes`, else `maps.class_names`), with the model's
    probability where `maps` carries the logits; `labels` (B,) adds the true class, `names` the images' names.
    `scale`: "image" (each map its own limits, the default), "row" or "figure" (maps of one method share
    them across a row or the figure); a map whose peak is below 10 % of the strongest of its method is
    marked weak (`report.colours`). `signed` forces the colour rule. `boxes`: (B, 4) x0, y0, x1, y1.
    (`shared=True`, one 99th-percentile scale per method over the batch, and `target=`, the name of
    `targets=` before 0.2, still work.)
    """
    if scale not in colours.SCALES:
        raise InputError(f"scale must be one of {', '.join(colours.SCALES)}, got {scale!r}")
    images = _images(image)
    columns = _columns(maps, _renamed(targets, target))
    b = images.shape[0]
    box_list = _fitting(images, columns, boxes)
    kinds = {n: _kind(group) for n, (_, _, _, group) in columns.items()}
    order = figures.by_kind(list(columns), kinds)
    words = _row_words(maps, columns, order, classes, labels, names, b)
    limits = _limits(columns, order, signed, scale, shared)
    strongest = _strongest(columns)

    fig = MapFigure(figsize=(tile * (len(order) + 1) + 1.6, tile * b + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(b + 1, len(order) + 1, squeeze=False, height_ratios=[1.0] * b + [0.07])
    axes, bars = grid[:b], grid[b]
    bars[0].set_axis_off()
    for i in range(b):
        _tile(axes[i, 0], figures.to_rgb(images[i]), "image" if i == 0 else None, box_list, i)
        axes[i, 0].set_ylabel(words.rows[i], rotation=0, ha="right", va="center", fontsize=8)
    for j, name in enumerate(order, start=1):
        values, _, col_targets, group = columns[name]
        per_image, peaks = find_flags(values), colours.peaks(values)
        for i in range(b):
            rgb = figures.overlay(images[i], values[i], alpha, limits=limits[name], index=i)
            ax = axes[i, j]
            _tile(ax, rgb, words.title(name, i, col_targets), box_list, i)
            _mark(ax, per_image[i], kinds[name], float(peaks[i]), strongest[group])
        _colour_bar(fig, bars[j], limits[name], b == 1 or shared or scale == "figure")
    return fig


def _fitting(images: torch.Tensor, columns: Mapping[str, Any], boxes: Any) -> torch.Tensor | None:
    """The boxes as (B, 4), once the maps and boxes are checked to fit the images (else an `InputError`)."""
    b = images.shape[0]
    for name, (values, _, _, _) in columns.items():
        if values.shape[0] != b or tuple(values.shape[-2:]) != tuple(images.shape[-2:]):
            raise InputError(f"maps {name!r} {tuple(values.shape)} do not fit the images {tuple(images.shape)} "
                             "(B, H, W must match)")
    box_list = None if boxes is None else torch.as_tensor(boxes).reshape(-1, 4)
    if box_list is not None and box_list.shape[0] != b:
        raise InputError(f"boxes must be one (x0, y0, x1, y1) per image: {b}, got {box_list.shape[0]}")
    return box_list


def _mark(ax: Any, flag: Any, kind: str | None, peak: float, strongest: float) -> None:
    """A tile's flag (its map says nothing) at the top, else a weak mark (peak < 10 % of the method's) at the bottom."""
    mark = flag_text(flag, kind) if flag is not None else None
    if mark is None and colours.weak(peak, strongest):
        mark = f"weak: peak {100 * peak / strongest:.2g}% of max"
    if mark is not None:
        ax.text(0.02, 0.97 if flag is not None else 0.03, mark, transform=ax.transAxes,
                va="top" if flag is not None else "bottom", fontsize=7, color="#ffd200", wrap=True,
                bbox={"facecolor": "black", "alpha": 0.7, "pad": 2})


class _Words:
    """The row labels and the per-tile titles of a `show` figure."""

    def __init__(self, rows: list[str], row_class: list[int | None], classes: Sequence[str] | None,
                 probs: torch.Tensor | None, first: str | None) -> None:
        self.rows, self.row_class, self.classes, self.probs, self.first = rows, row_class, classes, probs, first

    def title(self, name: str, i: int, col_targets: torch.Tensor | None) -> str | None:
        """The method's name on the first row; the class where this tile explains another than its row."""
        head = name if i == 0 else None
        if col_targets is None or int(col_targets[i]) < 0 or int(col_targets[i]) == self.row_class[i]:
            return head
        t = int(col_targets[i])
        p = f" p {labels_mod.prob(float(self.probs[i, t]))}" if self.probs is not None else ""
        said = f"{labels_mod.class_text(t, self.classes)}{p}"
        return f"{head}\n{said}" if head else said


def _row_words(maps: Any, columns: Mapping[str, Any], order: Sequence[str], classes: Sequence[str] | None,
               labels: torch.Tensor | Sequence[int] | None, names: Sequence[str] | None, b: int) -> _Words:
    """Row labels from the first column with targets, the class names and the logits of an `Explanation`."""
    classes = classes if classes is not None else getattr(maps, "class_names", None)
    probs = labels_mod.probabilities(getattr(maps, "logits", None))
    probs = probs if probs is not None and probs.shape[0] == b else None
    first = next((n for n in order if columns[n][2] is not None), None)
    targets = columns[first][2] if first is not None else None
    truth = None if labels is None else torch.as_tensor(labels).reshape(-1)
    if truth is not None and truth.shape[0] != b:
        raise InputError(f"labels must be one class per image: {b}, got {truth.shape[0]}")
    if names is not None and len(names) != b:
        raise InputError(f"names must be one per image: {b}, got {len(names)}")
    if targets is None and probs is None and truth is None and names is None:
        return _Words([""] * b, [None] * b, classes, probs, first)
    rows = labels_mod.row_labels(targets, classes, probs, truth, names)
    row_class = [None if targets is None else int(targets[i]) for i in range(b)]
    return _Words(rows, row_class, classes, probs, first)


def _limits(columns: Mapping[str, Any], order: Sequence[str], signed: bool | None, scale: str,
            shared: bool) -> dict[str, colours.Scale]:
    """Each column's `Scale`: its own per image, pooled over its method's columns for "row" / "figure"."""
    out = {}
    for name in order:
        values, options, _, group = columns[name]
        sign = colours.is_signed(values, group, options) if signed is None else signed
        out[name] = colours.scale(values, sign, shared=shared)
    if scale != "image" and not shared:
        for group in dict.fromkeys(columns[n][3] for n in order):
            members = [n for n in order if columns[n][3] == group]
            out.update(zip(members, colours.pooled([out[n] for n in members], rows=scale == "row"), strict=True))
    return out


def _strongest(columns: Mapping[str, Any]) -> dict[str, float]:
    """The largest peak of each method's maps in the figure (for the weak mark)."""
    out: dict[str, float] = {}
    for values, _, _, group in columns.values():
        out[group] = max(out.get(group, 0.0), float(colours.peaks(values).max(initial=0)))
    return out


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
        ax.set_title(title, fontsize=8)
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
             ) -> dict[str, tuple[torch.Tensor, dict[str, Any] | None, torch.Tensor | None, str]]:
    """`{column: (values (B, H, W), options, targets (B,) or None, method)}` from whatever `show` accepts;
    maps of K targets per image become K columns ("gradcam #1", ...) unless `target` picks one."""
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
        values = values.detach().float().cpu()
        if values.dim() == 4 and values.shape[1] > 1 and target is None:
            for k in range(values.shape[1]):
                picked = targets[:, k] if targets is not None and targets.dim() == 2 else None
                out[f"{name} #{k + 1}"] = (values[:, k], options, picked, str(name))
            continue
        values, targets = _pick(values, targets, target, str(name))
        out[str(name)] = (figures.as_batch(values, f"maps {name!r}"), options, targets, str(name))
    return out


def _pick(values: torch.Tensor, targets: torch.Tensor | None, target: int | None, name: str):
    """Values (B, H, W) and targets (B,) for one target `k` of (B, K, H, W) maps."""
    if values.dim() != 4:
        if target is not None:
            raise InputError(f"targets={target} picks one of K maps per image, but maps {name!r} are "
                             f"{tuple(values.shape)}")
        return values, targets
    k = values.shape[1]
    target = 0 if target is None else target
    if not -k <= target < k:
        raise InputError(f"targets={target} is out of range for {k} targets per image")
    picked = targets[:, target] if targets is not None and targets.dim() == 2 else targets
    return values[:, target], picked


def _kind(name: str) -> str | None:
    base = name.split("/")[0].split(":")[-1]
    return METHODS.get(base).kind if base in METHODS else None
