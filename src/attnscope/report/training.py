"""The report's sections on maps recorded during training: every tracked method's maps with the epoch
slider, a colour bar and flags per row; the measures over training; and, per method, a strip of how
one probe image's map changed over training.

The slider's images are layered so the page stays small: the probe photos once, and per snapshot
and method a palette PNG of the colour-mapped map with its opacity (drawn over the photos by the
browser, the same blend `report.colours` computes), plus the boxes once on top.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from attnscope.metrics.declare import METRICS, header
from attnscope.report import colours, figures
from attnscope.report.charts import line_chart
from attnscope.report.flags import flags as find_flags
from attnscope.track.store import Probe, TrackStore

REGION_COLOURS = {"box": (255, 255, 255), "decoy": (255, 40, 40)}
LEVELS = 127  # palette entries of a map layer; entry LEVELS is transparent (gaps between tiles, NaN)
GAP = 2  # px between the tiles of a strip
STRIP_FRAMES = 8  # snapshots in a "how the map changed" strip


def png_uri(image: np.ndarray | Image.Image) -> str:
    """A PNG data URI of a uint8 array or a PIL image (palette and transparency kept)."""
    buffer = io.BytesIO()
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.save(buffer, format="PNG", **({"transparency": pil.info["transparency"]} if "transparency" in pil.info
                                      else {}))
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no `</script>` can close it early, no NaN)."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def pick_frames(entries: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """At most `limit` snapshots (at least every epoch end), the step snapshots thinned evenly."""
    if len(entries) <= limit:
        return list(entries)
    epochs = [e for e in entries if e["kind"] == "epoch"]
    steps = [e for e in entries if e["kind"] != "epoch"]
    room = max(0, limit - len(epochs))
    kept = [steps[round(i * (len(steps) - 1) / max(room - 1, 1))] for i in range(room)] if room else []
    return sorted({id(e): e for e in epochs + kept}.values(), key=lambda e: e["step"])


def maps_section(store: TrackStore, entries: Sequence[Mapping[str, Any]], n_images: int, max_frames: int,
                 classes: Sequence[str] | None = None, axis: str = "epoch") -> str:
    """Every tracked method's maps of the first `n_images` probe images, one row each, with the slider.

    `axis` ("epoch" or "step") is what the charts' cursors follow: steps for a loop that gave no epochs.
    """
    if not entries:
        return "<h2>Maps during training</h2><p>The tracker recorded no snapshot.</p>"
    probe = store.probe()
    n = min(n_images, probe.images.shape[0])
    frames = pick_frames(entries, max_frames)
    keys = list(dict.fromkeys(k for e in frames for k in e["maps"]))
    values = _read(store, frames, keys, n)  # key → (F, n, H, W), NaN where a snapshot lacks the key
    signed = _signedness(values, store.settings)
    native = probe.images.shape[-1] + GAP
    tile = round(min(native * max(1, 128 // probe.images.shape[-1]), 980 / n), 2)  # up to 2x, ≤ 980 px in all
    layers = {k: [png_uri(layer(values[k][f], signed[k])) for f in range(len(frames))] for k in keys}
    frame_data = []
    for f, entry in enumerate(frames):
        found = {k: {str(i): flag for i, flag in enumerate(find_flags(values[k][f])) if flag} for k in keys}
        frame_data.append({"step": entry["step"], "epoch": entry["epoch"], "x": entry[axis], "kind": entry["kind"],
                           "acc": entry["measures"].get("probe_acc"), "measures": entry["measures"],
                           "predictions": entry["predictions"][:n], "flags": {k: v for k, v in found.items() if v}})
    measures = list(dict.fromkeys(m.rpartition("/")[2] for e in frames for m in e["measures"]
                                  if m.rpartition("/")[0] in keys))  # map keys may hold "/" (ltpa/stages.1)
    data = {"frames": frame_data, "keys": keys, "images": layers, "measures": measures,
            "headers": {m: _title(m) for m in measures},
            "labels": probe.labels[:n].tolist(), "tile": tile, "classes": list(classes) if classes else None}
    width = round(n * tile)
    photo, boxes = png_uri(_photos(probe, n)), png_uri(_boxes(probe, n))
    rows = [f'<div class="row"><div class="name">image</div><div class="stack"><img alt="probe images" '
            f'width="{width}" src="{photo}"><img alt="" width="{width}" src="{boxes}"></div></div>',
            '<div class="row"><div class="name"></div><div class="preds" id="frame-preds"></div></div>']
    rows += [f'<div class="row"><div class="name">{html.escape(k)}{legend(signed[k])}</div>'
             f'<div class="stack"><img alt="probe images" width="{width}" src="{photo}">'
             f'<img id="map-{i}" alt="{html.escape(k)} map" width="{width}" src="{layers[k][-1]}">'
             f'<img alt="" width="{width}" src="{boxes}"></div>'
             f'<div class="flags" id="flags-{i}"></div></div>' for i, k in enumerate(keys)]
    regions = ", ".join(f"{r} ({'white' if r == 'box' else 'red'})" for r in probe.regions)
    settings = store.settings if isinstance(store.settings, dict) else {}
    source = store.index.get("probe", {}).get("source") or f"{settings.get('split', 'test')} split"  # older: split
    return (
        "<h2>Maps during training</h2>"
        f'<p class="sub">{n} of {probe.images.shape[0]} probe images ({html.escape(str(source))}), '
        f"explained for the {html.escape(str(settings.get('targets', 'label')))} class; boxes: "
        f"{html.escape(regions)}. {len(frames)} of {len(entries)} snapshots. {_rule_note(signed)}</p>"
        f'<div class="controls"><input type="range" id="frame-slider" min="0" max="{len(frames) - 1}" '
        f'value="{len(frames) - 1}" step="1" aria-label="snapshot"><span id="frame-label"></span></div>'
        f'<div class="maps">{"".join(rows)}</div><div id="frame-measures"></div>'
        f'<script type="application/json" id="frames-data">{script_json(data)}</script>'
        + change_section(probe, frames, values, signed)
    )


def change_section(probe: Probe, frames: Sequence[Mapping[str, Any]], values: Mapping[str, torch.Tensor],
                   signed: Mapping[str, bool], image: int = 0) -> str:
    """Per method, probe image `image`'s map at up to `STRIP_FRAMES` snapshots from first to last."""
    picks = sorted({round(i * (len(frames) - 1) / max(STRIP_FRAMES - 1, 1)) for i in range(STRIP_FRAMES)})
    labels = [f"ep {frames[f]['epoch']:g}" for f in picks]
    rows = []
    for k, v in values.items():
        maps = v[picks, image]  # (picks, H, W)
        limits = colours.scale(maps, signed[k])
        tiles = [figures.overlay(probe.images[image], maps[j], limits=limits, index=j) for j in range(len(picks))]
        strip = png_uri(_labelled(tiles, labels))
        rows.append(f'<div class="row"><div class="name">{html.escape(k)}{legend(signed[k])}</div>'
                    f'<img class="strip" alt="{html.escape(k)} over training" src="{strip}"></div>')
    return ("<h3>How the maps changed over training</h3>"
            f'<p class="note">Probe image {image} at {len(picks)} snapshots from the first to the last, each scaled '
            f'on its own.</p><div class="maps">{"".join(rows)}</div>')


def measures_section(entries: Sequence[Mapping[str, Any]], metrics: Sequence[Mapping[str, Any]],
                     axis: str = "epoch") -> str:
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
        groups.setdefault(title, {})[series] = [(e[axis], e["measures"].get(name)) for e in entries]
    if "probe_acc" in groups and metrics and axis == "epoch":
        groups["probe_acc"]["test_acc"] = [(r["epoch"], r.get("test_acc")) for r in metrics]
    groups = {("accuracy" if k == "probe_acc" else k): v for k, v in groups.items()}
    charts = [line_chart(series, _title(title), x_label=axis, y_range=_bounds(title), cursor=True)
              for title, series in groups.items()]
    return ('<h2>Measures over training</h2><p class="note">Means over the probe images; the dashed line is the '
            f'snapshot the slider shows.</p><div class="charts">{"".join(charts)}</div>')


def _title(measure: str) -> str:
    """A chart's title: the declared metric's legend and the region (`energy_box@box` → energy in box @box)."""
    name, at, region = measure.partition("@")
    return f"{header(name)[1]}{' @' + region if at else ''}" if header(name) != (name, name) else measure


def _bounds(measure: str) -> tuple[float, float] | None:
    """The y range of a measure's chart: the declared metric's bounds; accuracy in [0, 1]; else the data's."""
    name = measure.partition("@")[0]
    if measure == "accuracy" or name in ("pointing", "energy"):  # `energy`: stores written before 0.2
        return (0, 1)
    return METRICS.get(name).bounds if header(name) != (name, name) else None


def legend(signed: bool) -> str:
    """A colour bar and what its ends mean, for one row of maps."""
    ends = "".join(f"<span>{html.escape(t)}</span>"
                   for t in colours.Scale(signed, torch.zeros(1), torch.zeros(1), "").labels())
    return (f'<div class="map-legend"><img class="colorbar" alt="colour bar" width="120" height="8" '
            f'src="{_bar_uri(signed)}"><div class="ends">{ends}</div>'
            f'<div class="rule">{"signed" if signed else "sequential"}</div></div>')


def layer(values: torch.Tensor, signed: bool) -> Image.Image:
    """(n, H, W) maps, each scaled on its own, as one palette image: tiles side by side, GAP px apart,
    colour and opacity per level from `report.colours`; gaps and NaN transparent."""
    n, h, w = values.shape
    unit = colours.scale(values, signed).unit(values).numpy()
    ramp = np.linspace(-1, 1, LEVELS) if signed else np.linspace(0, 1, LEVELS)
    index = np.rint((unit + 1) / 2 * (LEVELS - 1) if signed else unit * (LEVELS - 1))
    index = np.where(np.isnan(index), LEVELS, index).astype(np.uint8)
    canvas = np.full((h, n * (w + GAP)), LEVELS, np.uint8)
    for i in range(n):
        canvas[:, i * (w + GAP) : i * (w + GAP) + w] = index[i]
    rgba = colours.rgba(torch.from_numpy(ramp), signed)  # (LEVELS, 4)
    palette = (rgba[:, :3] * 255).round().astype(np.uint8).tolist() + [[0, 0, 0]]
    img = Image.fromarray(canvas, mode="P")
    img.putpalette([c for rgb in palette for c in rgb])
    img.info["transparency"] = bytes((rgba[:, 3] * 255).round().astype(np.uint8).tolist() + [0])
    return img


def _read(store: TrackStore, frames: Sequence[Mapping[str, Any]], keys: Sequence[str], n: int
          ) -> dict[str, torch.Tensor]:
    """`{key: (F, n, H, W)}` of the first n probe images at each frame; frames also get their predictions."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    size = tuple(store.probe().images.shape[-2:])
    for entry in frames:
        maps, predictions = store.read(entry["step"], [k for k in keys if k in entry["maps"]])
        entry["predictions"] = predictions.tolist()  # type: ignore[index]
        for k in keys:
            out[k].append(maps[k][:n].float() if k in maps else torch.full((n, *size), float("nan")))
    return {k: torch.stack(v) for k, v in out.items()}


def _signedness(values: Mapping[str, torch.Tensor], settings: Any) -> dict[str, bool]:
    options = settings.get("options", {}) if isinstance(settings, dict) else {}
    options = options if isinstance(options, dict) else {}
    return {k: colours.is_signed(v, k, options.get(k.split("/")[0]) if isinstance(options.get(k.split("/")[0]),
                                                                                   dict) else None)
            for k, v in values.items()}


def _rule_note(signed: Mapping[str, bool]) -> str:
    used = sorted(set(signed.values()))
    parts = [("signed maps: " if s else "sequential maps: ") + colours.meaning(s) +
             (", ±p99 = the 99th percentile of |v| per image" if s else ", min–max per image") for s in used]
    return html.escape("Each map is scaled per image; " + "; ".join(parts) + ".")


def _photos(probe: Probe, n: int) -> np.ndarray:
    h, w = probe.images.shape[-2:]
    canvas = np.full((h, n * (w + GAP), 3), 255, np.uint8)
    for i in range(n):
        canvas[:, i * (w + GAP) : i * (w + GAP) + w] = figures.to_rgb(probe.images[i])
    return canvas


def _boxes(probe: Probe, n: int) -> Image.Image:
    """The probe's region boxes on a transparent strip (drawn over the maps)."""
    h, w = probe.images.shape[-2:]
    img = Image.new("RGBA", (n * (w + GAP), h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for region, boxes in probe.regions.items():
        colour = (*REGION_COLOURS.get(region, (255, 255, 0)), 255)
        for i in range(n):
            x0, y0, x1, y1 = (int(v) for v in boxes[i].tolist())
            dx = i * (w + GAP)
            draw.rectangle([x0 + dx, y0, x1 - 1 + dx, y1 - 1], outline=colour)
    return img


def _labelled(tiles: Sequence[np.ndarray], labels: Sequence[str], scale: int = 2) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    canvas = Image.new("RGB", (len(tiles) * (w * scale + GAP), h * scale + 14), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, (t, text) in enumerate(zip(tiles, labels, strict=True)):
        x = j * (w * scale + GAP)
        draw.text((x + 2, 1), text, fill=(0, 0, 0), font=figures.font(10))
        canvas.paste(Image.fromarray(t).resize((w * scale, h * scale), Image.NEAREST), (x, 14))
    return np.asarray(canvas)


_BARS: dict[bool, str] = {}


def _bar_uri(signed: bool) -> str:
    if signed not in _BARS:
        _BARS[signed] = png_uri(colours.colour_bar(signed, 120, 8))
    return _BARS[signed]
