"""What a sanity check writes: the tidy table (CSV + JSON), the similarity-vs-depth plot (Adebayo
et al. 2018, Fig. 4) and a grid of maps along the randomisation.

Reads a sanity result (anything with `rows()`, `steps`, `maps`, `images`, `meta`); never a model.
Every file is written atomically; figures use matplotlib's Agg canvas, never pyplot's global state.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw

from attnscope import fileio
from attnscope.report import colours, figures

CALIBRATION_STYLE = {"random": ":", "sobel": "--"}


class Result(Protocol):
    steps: list[str]
    maps: dict[str, dict[str, torch.Tensor]]
    images: torch.Tensor | None
    meta: dict[str, Any]

    def rows(self, level: float = 0.95) -> list[dict[str, Any]]: ...


def write(result: Result, out: str | Path, prefix: str = "sanity") -> list[Path]:
    """Write `<prefix>.csv`, `<prefix>.json`, `<prefix>_similarity.png` and one `<prefix>_maps_<i>.png`
    per kept image into `out`; returns the paths written."""
    out = Path(out)
    rows = result.rows()
    paths = [out / f"{prefix}.csv", out / f"{prefix}.json", out / f"{prefix}_similarity.png"]
    fileio.write_text(paths[0], table_csv(rows))
    fileio.write_json(paths[1], {"meta": result.meta, "steps": result.steps, "rows": rows})
    fileio.write_bytes(paths[2], similarity_plot(rows, result.steps, title=str(result.meta.get("test", ""))))
    if result.images is not None:
        for i in range(result.images.shape[0]):
            path = out / f"{prefix}_maps_{i}.png"
            figures.save_png(path, cascade_grid(result.images[i], result.maps, i))
            paths.append(path)
    return paths


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The tidy table as CSV text (columns in the rows' order; NaN written as an empty cell)."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and v != v else v for k, v in row.items()})
    return buf.getvalue()


def similarity_plot(rows: Sequence[dict[str, Any]], steps: Sequence[str], title: str = "") -> bytes:
    """PNG bytes: one panel per metric, similarity (mean and 95 % CI band) against randomised depth,
    one line per method; calibration rows dashed in grey."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(3.2 * len(metrics) + 1.4, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    x = np.arange(1, len(steps) + 1)
    for ax, metric in zip(axes, metrics, strict=True):
        for method in methods:
            cells = {r["block"]: r for r in rows if r["method"] == method and r["metric"] == metric}
            mean = np.array([cells[s]["mean"] for s in steps], dtype=float)
            low = np.array([cells[s]["ci_low"] for s in steps], dtype=float)
            high = np.array([cells[s]["ci_high"] for s in steps], dtype=float)
            style = CALIBRATION_STYLE.get(method)
            line = ax.plot(x, mean, style or "-", marker="o", ms=3, lw=1.2, label=method,
                           color="0.5" if style else None)[0]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.12, lw=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(x, [s if len(s) <= 14 else "…" + s[-13:] for s in steps], rotation=90, fontsize=6)
        values = [r[k] for r in rows if r["metric"] == metric for k in ("mean", "ci_low", "ci_high")]
        known = [v for v in values if v == v]
        if known:  # the axis fitted to the data (plus a margin), with 0 marked where the data cross it
            lo, hi = min(known), max(known)
            pad = 0.08 * (hi - lo) or 0.05
            ax.set_ylim(lo - pad, hi + pad)
            if lo < 0 < hi:
                ax.axhline(0.0, color="k", lw=0.6)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylabel("similarity to the trained model's map", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    if title:
        fig.suptitle(f"{title} randomisation", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def cascade_grid(image: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], index: int, scale: float | None = None,
                 label_width: int = 110, label_height: int = 16, width: int = 1180) -> np.ndarray:
    """Rows = methods, columns = the image, the trained model's map, then each randomisation step
    (`maps[step][method]` (K, H, W), drawn for image `index`), each map scaled on its own by the rule
    of `report.colours` (signed or sequential per method), a colour bar under each method's name.
    `scale`: pixels per map pixel (default: up to 2, so that the grid fits `width` pixels)."""
    steps = list(maps)
    methods = list(maps[steps[0]])
    _, h, w = image.shape
    cols = ["image", *steps]
    zoom = scale if scale is not None else min(2.0, (width - label_width) / len(cols) / (w + 2))
    ch, cw = max(1, round(h * zoom)), max(1, round(w * zoom))
    foot = 16
    canvas = Image.new("RGB", (label_width + len(cols) * (cw + 2), label_height + len(methods) * (ch + 2) + foot),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = figures.font(11)
    for j, name in enumerate(cols):
        draw.text((label_width + j * (cw + 2) + 1, 1), figures.elide(name, max(4, cw // 6)), fill=(0, 0, 0), font=font)
    base = figures.to_rgb(image)
    resample = Image.NEAREST if zoom >= 1 else Image.BILINEAR
    used = set()
    for i, method in enumerate(methods):
        along = torch.stack([maps[s][method][index] for s in steps])  # (steps, H, W)
        signed = colours.is_signed(along, method)
        used.add(signed)
        limits = colours.scale(along, signed)
        y = label_height + i * (ch + 2)
        draw.text((2, y + ch // 2 - 16), figures.elide(method, 16), fill=(0, 0, 0), font=figures.font(12))
        figures.draw_colour_bar(canvas, draw, limits, (0, y + ch // 2 + 2), label_width - 4, font)
        for j, name in enumerate(cols):
            tile = base if name == "image" else figures.overlay(image, along[j - 1], limits=limits, index=j - 1)
            tile = np.asarray(Image.fromarray(tile).resize((cw, ch), resample))
            canvas.paste(Image.fromarray(tile), (label_width + j * (cw + 2), y))
    note = "; ".join(f"{'signed' if s else 'sequential'}: {colours.meaning(s)}" for s in sorted(used))
    draw.text((2, label_height + len(methods) * (ch + 2) + 2), f"each map scaled on its own. {note}",
              fill=(80, 80, 80), font=font)
    return np.asarray(canvas)
