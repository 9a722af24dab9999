"""Inline SVG line charts for the HTML report (no plotting library, no script needed to draw them)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")

Point = tuple[float, float | None]
Scale = Callable[[float], float]


def line_chart(
    series: Mapping[str, Sequence[Point]],
    title: str,
    x_label: str = "epoch",
    y_range: tuple[float, float] | None = None,
    width: int = 380,
    height: int = 230,
    cursor: bool = False,
    bands: Mapping[str, Sequence[tuple[float, float, float]]] | None = None,
) -> str:
    """An SVG chart with one line per series (points with y None leave a gap) and a legend.

    `bands`: per series, (x, low, high) to shade (e.g. confidence intervals). `cursor`: a vertical
    line the page's script moves to the selected epoch (its scale is in the data-* attributes).
    """
    pad_l, pad_r, pad_t, pad_b = 46, 12, 24, 34
    legend_h = 14 * math.ceil(len(series) / 2) + 6
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    xs = [x for pts in series.values() for x, _ in pts if _finite(x)]
    ys = [y for pts in series.values() for _, y in pts if _finite(y)]
    ys += [v for pts in (bands or {}).values() for _, lo, hi in pts for v in (lo, hi) if _finite(v)]
    if not xs or not ys:
        return f'<div class="chart empty">{html.escape(title)}: nothing recorded</div>'
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = y_range or _nice_range(min(ys), max(ys))
    sx = lambda x: pad_l + (x - x0) / (x1 - x0) * plot_w
    sy = lambda y: pad_t + (1 - (y - y0) / ((y1 - y0) or 1)) * plot_h
    cursor_attr = ' data-cursor="1"' if cursor else ""  # the epoch slider moves the cursor of these charts
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + legend_h}" width="{width}" height="{height + legend_h}" '
        f'role="img" aria-label="{html.escape(title)}" data-x0="{x0}" data-x1="{x1}" data-px0="{pad_l}" '
        f'data-px1="{pad_l + plot_w}"{cursor_attr}>',
        f'<text x="{pad_l}" y="15" class="title">{html.escape(title)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    parts += _axes(sx, sy, (x0, x1), (y0, y1), (pad_l, pad_t, plot_w, plot_h), x_label)
    for i, (name, pts) in enumerate(series.items()):
        band = [(x, lo, hi) for x, lo, hi in (bands or {}).get(name, ()) if _finite(x) and _finite(lo) and _finite(hi)]
        legend_at = (pad_l + (i % 2) * (plot_w / 2), height + 14 * (i // 2) + 10)
        parts += _series(name, pts, band, PALETTE[i % len(PALETTE)], sx, sy, legend_at)
    if cursor:
        parts.append(f'<line class="cursor" x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{pad_t + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _axes(sx: Scale, sy: Scale, xr: tuple[float, float], yr: tuple[float, float],
          box: tuple[float, float, float, float], x_label: str) -> list[str]:
    """The grid lines with the y ticks, the x ticks and the x axis' label of a plot `box` (left, top, w, h)."""
    pad_l, pad_t, plot_w, plot_h = box
    y_ticks, x_ticks = _ticks(*yr), _ticks(*xr)
    parts = [f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
             f'<text x="{pad_l - 4}" y="{sy(t) + 3:.1f}" class="tick" text-anchor="end">{_fmt(t, y_ticks)}</text>'
             for t in y_ticks]
    parts += [f'<text x="{sx(t):.1f}" y="{pad_t + plot_h + 13}" class="tick" text-anchor="middle">'
              f'{_fmt(t, x_ticks)}</text>' for t in x_ticks]
    parts.append(f'<text x="{pad_l + plot_w / 2}" y="{pad_t + plot_h + 27}" class="tick" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    return parts


def _series(name: str, pts: Sequence[Point], band: Sequence[tuple[float, float, float]], colour: str, sx: Scale,
            sy: Scale, legend_at: tuple[float, float]) -> list[str]:
    """One series: its shaded band, its line (a gap where y is None; dots when short) and its legend entry."""
    parts = []
    if band:
        upper = " ".join(f"{sx(x):.1f},{sy(hi):.1f}" for x, _, hi in band)
        lower = " ".join(f"{sx(x):.1f},{sy(lo):.1f}" for x, lo, _ in reversed(band))
        parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" opacity="0.15"/>')
    for run in _runs(pts):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if len(run) <= 40:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"/>' for x, y in run]
    lx, ly = legend_at
    parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                 f'<text x="{lx + 14}" y="{ly - 3}" class="legend">{html.escape(name)}</text>')
    return parts


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _runs(points: Sequence[Point]) -> list[list[tuple[float, float]]]:
    """Consecutive stretches of points whose x and y are known."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if not (_finite(x) and _finite(y)):
            runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round numbers between `lo` and `hi`."""
    raw = (hi - lo) / max(n - 1, 1)
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float, ticks: Sequence[float]) -> str:
    """A tick label with just enough decimals to tell neighbouring ticks apart."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    if step < 1e-3 or max(abs(t) for t in ticks) >= 1e5:
        return f"{v:.2e}"
    decimals = next(d for d in range(8) if all(abs(round(t, d) - t) < 1e-3 * step for t in ticks) or d == 7)
    return f"{v:.{decimals}f}"
