"""`build(run_dir)`: one self-contained `report.html` for a run, opened from disk without a server.

Sections, each present when its source is: training curves (metrics.jsonl); probe images with the
tracked maps per method and an epoch slider, and the measures over training (track/); sanity-check
plots and metric leaderboards; the demo's method table; the run's configuration. Images are PNG
data URIs and the style sheet and script are inline, so the one file is the whole report.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnscope import fileio
from attnscope.report import assets, figures, logged
from attnscope.report.charts import line_chart
from attnscope.report.sources import RunSources, read_run
from attnscope.track.store import Probe, TrackStore

REGION_COLOURS = {"box": (255, 255, 255), "decoy": (255, 40, 40)}
SKIP_CURVES = {"epoch", "step", "train_time_s", "track_s"}


def build(run_dir: str | Path, out: str | Path | None = None, images: int = 8, max_frames: int = 60,
          title: str | None = None, extra: Sequence[str | Path] = ()) -> Path:
    """Write the report of the run in `run_dir` to `out` (default `run_dir/report.html`); returns its path.

    `images`: probe images shown per map; `max_frames`: most snapshots the slider steps through
    (every epoch end is kept; step snapshots are thinned evenly to fit); `title`: the page's
    heading (default: "attnscope report: " and the folder's name); `extra`: more folders to take
    sanity tables and leaderboards from (e.g. where `attnscope sanity --out` wrote them).
    """
    src = read_run(run_dir, extra)
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    title = title or f"attnscope report: {src.folder.resolve().name}"
    sections = [
        _header(src, title),
        _training(src.metrics),
        _maps(src.store, images, max_frames) if src.store else "",
        logged.scalars_section(src.store, logged.axis(src.store)) if src.store else "",
        _measures(src.store, src.metrics) if src.store else "",
        _sanity(src.sanity),
        _leaderboards(src.leaderboards),
        _summary(src.summary),
        _config(src.config),
    ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{assets.CSS}</style></head><body>"
        + "".join(sections)
        + f"<script>{assets.JS}</script></body></html>\n"
    )
    fileio.write_text(out, page)
    return out


def _header(src: RunSources, title: str) -> str:
    cfg, last = src.config, (src.metrics[-1] if src.metrics else {})
    facts = [f"model <b>{html.escape(str(cfg['model']))}</b>" if "model" in cfg else "",
             f"data <b>{html.escape(str(cfg['data']))}</b>" if "data" in cfg else "",
             f"{last['epoch']} epochs" if "epoch" in last else "",
             f"test accuracy <b>{last['test_acc']:.4f}</b>" if "test_acc" in last else "",
             f"guidance <b>{html.escape(str(cfg['guide']))}</b>" if cfg.get("guide") else ""]
    return (f"<h1>{html.escape(title)}</h1>"
            f'<p class="sub">{" · ".join(f for f in facts if f)}</p>')


def _training(metrics: Sequence[Mapping[str, Any]]) -> str:
    if not metrics:
        return ""
    keys = list(dict.fromkeys(k for r in metrics for k, v in r.items()
                              if isinstance(v, (int, float)) and k not in SKIP_CURVES))
    charts = [line_chart({k: [(r["epoch"], r.get(k)) for r in metrics] for k in ks}, title)
              for title, ks in logged.curve_groups(keys).items()]  # train_loss and test_loss share a chart, ...
    return f'<h2>Training</h2><div class="charts">{"".join(charts)}</div>'


def _maps(store: TrackStore, n_images: int, max_frames: int) -> str:
    if not store.snapshots:
        return "<h2>Maps during training</h2><p>The tracker recorded no snapshot.</p>"
    probe = store.probe()
    n = min(n_images, probe.images.shape[0])
    frames = pick_frames(store.snapshots, max_frames)
    keys = list(dict.fromkeys(k for e in frames for k in e["maps"]))
    native = probe.images.shape[-1] + 2  # one tile of a strip, in image pixels
    tile = round(min(native * max(1, 128 // probe.images.shape[-1]), 980 / n), 2)  # up to 2x, ≤ 980 px in all
    uris: dict[str, list[str]] = {k: [] for k in keys}
    frame_data, x = [], logged.axis(store)
    for entry in frames:
        maps, predictions = store.read(entry["step"], [k for k in keys if k in entry["maps"]])
        for k in keys:
            uris[k].append(_png_uri(_strip(probe, n, maps.get(k))))
        frame_data.append({"step": entry["step"], "epoch": entry["epoch"], "x": entry[x],
                           "kind": entry["kind"],
                           "acc": entry["measures"].get("probe_acc"), "measures": entry["measures"],
                           "predictions": predictions[:n].tolist()})
    measures = list(dict.fromkeys(m.rpartition("/")[2] for e in frames for m in e["measures"]
                                  if m.rpartition("/")[0] in keys))  # map keys may hold "/" (ltpa/stages.1)
    data = {"frames": frame_data, "keys": keys, "images": uris, "measures": measures,
            "labels": probe.labels[:n].tolist(), "tile": tile}
    width = round(n * tile)
    settings = store.settings
    source = store.index["probe"].get("source") or f"{settings.get('split', 'test')} split"  # older stores: split
    rows = [f'<div class="row"><div class="name">image</div><img alt="probe images" width="{width}" '
            f'src="{_png_uri(_strip(probe, n, None))}"></div>',
            '<div class="row"><div class="name"></div><div class="preds" id="frame-preds"></div></div>']
    rows += [f'<div class="row"><div class="name">{html.escape(k)}</div>'
             f'<img id="map-{i}" alt="{html.escape(k)} map" width="{width}" src="{uris[k][-1]}"></div>'
             for i, k in enumerate(keys)]
    regions = ", ".join(f"{r} ({'white' if r == 'box' else 'red'})" for r in probe.regions)
    return (
        "<h2>Maps during training</h2>"
        f'<p class="sub">{n} of {probe.images.shape[0]} probe images ({html.escape(source)}), '
        f"explained for the {html.escape(settings.get('targets', 'label'))} class; boxes: {html.escape(regions)}. "
        f"{len(frames)} of {len(store.snapshots)} snapshots. Each map is min–max scaled per image.</p>"
        f'<div class="controls"><input type="range" id="frame-slider" min="0" max="{len(frames) - 1}" '
        f'value="{len(frames) - 1}" step="1" aria-label="snapshot"><span id="frame-label"></span></div>'
        f'<div class="maps">{"".join(rows)}</div><div id="frame-measures"></div>'
        f'<script type="application/json" id="frames-data">{_script_json(data)}</script>'
    )


def _measures(store: TrackStore, metrics: Sequence[Mapping[str, Any]]) -> str:
    entries, x = store.snapshots, logged.axis(store)
    if not entries:
        return ""
    names = list(dict.fromkeys(m for e in entries for m in e["measures"]))
    groups: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
    for name in names:
        if name.startswith("agreement/"):
            title, series = "agreement (Spearman ρ)", name.removeprefix("agreement/")
        else:
            head, _, tail = name.rpartition("/")  # "{map}/{measure}", or a plain name such as probe_acc
            title, series = (tail, head) if head else (name, name)
        groups.setdefault(title, {})[series] = [(e[x], e["measures"].get(name)) for e in entries]
    if "probe_acc" in groups and metrics and x == "epoch":
        groups["probe_acc"]["test_acc"] = [(r["epoch"], r.get("test_acc")) for r in metrics]
    groups = {("accuracy" if k == "probe_acc" else k): v for k, v in groups.items()}
    bounded = ("pointing", "energy", "entropy", "accuracy")
    charts = [line_chart(series, title, x_label=x, y_range=(0, 1) if title.startswith(bounded) else None,
                         cursor=True) for title, series in groups.items()]
    return ('<h2>Measures over training</h2><p class="note">Means over the probe images; the dashed line is the '
            f'snapshot the slider shows.</p><div class="charts">{"".join(charts)}</div>')


def _sanity(tables: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    parts = []
    for name, table in tables:
        steps, rows = table["steps"], table["rows"]
        position = {s: i for i, s in enumerate(steps)}
        charts = []
        for metric in dict.fromkeys(r["metric"] for r in rows):
            mine = [r for r in rows if r["metric"] == metric and r["block"] in position]
            methods = list(dict.fromkeys(r["method"] for r in mine))
            series = {m: [(position[r["block"]], _num(r["mean"])) for r in mine if r["method"] == m] for m in methods}
            bands = {m: [(position[r["block"]], _num(r["ci_low"]), _num(r["ci_high"])) for r in mine
                         if r["method"] == m and _num(r["ci_low"]) is not None and _num(r["ci_high"]) is not None]
                     for m in methods}
            charts.append(line_chart(series, str(metric), x_label="randomised up to block", bands=bands))
        order = ", ".join(f"{i} = {html.escape(str(s))}" for i, s in enumerate(steps))
        test = table.get("meta", {}).get("test")
        heading = f"{name} ({test})" if test else name
        parts.append(f"<h3>{html.escape(str(heading))}</h3><p class='note'>Blocks: {order}.</p>"
                     f'<div class="charts">{"".join(charts)}</div>')
    return "<h2>Sanity checks</h2>" + "".join(parts) if parts else ""


def _leaderboards(tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> str:
    parts = [f"<h3>{html.escape(name)}</h3>{_table(rows)}" for name, rows in tables if rows]
    return "<h2>Leaderboard</h2>" + "".join(parts) if parts else ""


def _summary(summary: Mapping[str, Any] | None) -> str:
    if not summary or not isinstance(summary.get("methods"), dict):
        return ""
    rows = [{"method": k, **v} for k, v in summary["methods"].items()]
    return f"<h2>Maps of the trained model (demo)</h2>{_table(rows)}"


def _config(config: Mapping[str, Any]) -> str:
    if not config:
        return ""
    rows = [{"setting": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in config.items()]
    return f"<h2>Configuration</h2>{_table(rows)}<details><summary>config.json</summary><pre>" \
           f"{html.escape(json.dumps(config, indent=2))}</pre></details>"


def pick_frames(entries: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """At most `limit` snapshots (at least every epoch end), the step snapshots thinned evenly."""
    if len(entries) <= limit:
        return list(entries)
    epochs = [e for e in entries if e["kind"] == "epoch"]
    steps = [e for e in entries if e["kind"] != "epoch"]
    room = max(0, limit - len(epochs))
    kept = [steps[round(i * (len(steps) - 1) / max(room - 1, 1))] for i in range(room)] if room else []
    return sorted({id(e): e for e in epochs + kept}.values(), key=lambda e: e["step"])


def _strip(probe: Probe, n: int, maps: torch.Tensor | None) -> np.ndarray:
    """The first `n` probe images side by side (2 px apart), with `maps` over them, and their boxes."""
    h, w = probe.images.shape[-2:]
    canvas = np.full((h, n * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        tile = figures.to_rgb(probe.images[i]) if maps is None else figures.overlay(probe.images[i], maps[i])
        for region, boxes in probe.regions.items():
            tile = figures.draw_box(tile, boxes[i].tolist(), REGION_COLOURS.get(region, (255, 255, 0)))
        canvas[:, i * (w + 2) : i * (w + 2) + w] = tile
    return canvas


def _png_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no `</script>` can close it early)."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")
