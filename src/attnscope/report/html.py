"""`build(run_dir)`: one self-contained `report.html` for a run, opened from disk without a server.

Sections, each present when its source is: training curves (metrics.jsonl); every tracked method's
maps of the probe images with an epoch slider, how each map changed over training, and the measures
over training (track/); sanity-check plots and map grids; metric leaderboards; captions; the demo's
method table; the run's configuration. Images are PNG data URIs and the style sheet and script are
inline, so the one file is the whole report.

Every value read from a file is validated (`report.sources`) and escaped here before it reaches the
page; a Content-Security-Policy allows only this page's own script and style (by hash) and data:
images, so no inline handler runs and nothing is loaded from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnscope import fileio
from attnscope.report import assets, logged, training
from attnscope.report import tables as tables_mod
from attnscope.report.charts import line_chart
from attnscope.report.sources import RunSources, number, read_run

SKIP_CURVES = {"epoch", "step", "train_time_s", "track_s"}
pick_frames = training.pick_frames


def build(run_dir: str | Path, out: str | Path | None = None, images: int = 8, max_frames: int = 60,
          title: str | None = None, extra: Sequence[str | Path] = ()) -> Path:
    """Write the report of the run in `run_dir` to `out` (default `run_dir/report.html`); returns its path.

    `images`: probe images shown per map; `max_frames`: most snapshots the slider steps through
    (every epoch end is kept; step snapshots are thinned evenly to fit); `title`: the page's
    heading (default: "attnscope report: " and the folder's name); `extra`: more folders to take
    sanity tables, leaderboards and captions from (e.g. where `attnscope sanity --out` wrote them).
    """
    src = read_run(run_dir, extra)
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    title = title or f"attnscope report: {src.folder.resolve().name}"
    axis = logged.axis(src.store) if src.store else "epoch"  # steps for a loop that gave no epochs
    sections = [
        ("top", _header(src, title)),
        ("photos", _photos(src)),
        ("training", _training(src.metrics)),
        ("maps", training.maps_section(src.store, src.snapshots, images, max_frames, src.classes, axis)
         if src.store else ""),
        ("logged", logged.scalars_section(src.store, axis) if src.store else ""),
        ("measures", training.measures_section(src.snapshots, src.metrics, axis) if src.store else ""),
        ("sanity", _sanity(src.sanity)),
        ("leaderboard", _leaderboards(src.leaderboards)),
        ("captions", _captions(src.captions)),
        ("tokens", _tokens(src.tokens)),
        ("demo", _summary(src.summary, src.folder)),
        ("configuration", _config(src.config)),
    ]
    body = "".join(f'<section id="{name}">{part}</section>' for name, part in sections if part)
    fileio.write_text(out, page(title, body))
    return out


GENERATOR = '<meta name="generator" content="attnscope report">'  # how `attnscope report` knows a page it wrote


def page(title: str, body: str) -> str:
    """The whole document: the CSP, the inline style and script (allowed by their hashes) and `body`."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{assets.CSS}</style></head><body>"
        f"{body}<script>{assets.JS}</script></body></html>\n"
    )


def csp() -> str:
    """Nothing but data: images, and this page's own style and script, named by their SHA-256."""
    digest = lambda text: base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'sha256-{digest(assets.CSS)}'; "
            f"script-src 'sha256-{digest(assets.JS)}'; base-uri 'none'; form-action 'none'")


def _header(src: RunSources, title: str) -> str:
    cfg, last = src.config, (src.metrics[-1] if src.metrics else {})
    epoch, acc = number(last.get("epoch")), number(last.get("test_acc"))
    facts = [f"model <b>{_text(cfg['model'])}</b>" if "model" in cfg else "",
             f"data <b>{_text(cfg['data'])}</b>" if "data" in cfg else "",
             f"{epoch:g} epochs" if epoch is not None else "",
             f"test accuracy <b>{acc:.4f}</b>" if acc is not None else "",
             f"guidance <b>{_text(cfg['guide'])}</b>" if cfg.get("guide") else ""]
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


def _sanity(tables: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    parts = []
    for name, table in tables:
        steps, rows = table["steps"], table["rows"]
        position = {s: i for i, s in enumerate(steps)}
        charts = []
        for metric in dict.fromkeys(r["metric"] for r in rows):
            mine = [r for r in rows if r["metric"] == metric and r["block"] in position]
            methods = list(dict.fromkeys(r["method"] for r in mine))
            series = {m: [(position[r["block"]], r["mean"]) for r in mine if r["method"] == m] for m in methods}
            bands = {m: [(position[r["block"]], r["ci_low"], r["ci_high"]) for r in mine
                         if r["method"] == m and r["ci_low"] is not None and r["ci_high"] is not None]
                     for m in methods}
            charts.append(line_chart(series, metric, x_label="randomised up to block", bands=bands))
        order = ", ".join(f"{i} = {html.escape(s)}" for i, s in enumerate(steps))
        test = table.get("meta", {}).get("test")
        heading = f"{name} ({test})" if test else name
        grids = "".join(f'<img class="grid" alt="maps along the randomisation" src="{_data_uri(g)}">'
                        for g in table.get("grids", []))
        parts.append(f"<h3>{_text(heading)}</h3><p class='what'>How similar each method's maps stay to the trained "
                     "model's maps as the model's blocks are randomised one after the other: a map that depends on "
                     "the weights falls toward the calibration lines (random, sobel), which look at nothing. "
                     f"Lines: mean over the images, bands: 95 % intervals.</p><p class='note'>Blocks: {order}.</p>"
                     f'<div class="charts">{"".join(charts)}</div>'
                     + (f'<p class="note">Maps of the trained model, then after each randomisation step.</p>'
                        f'<div class="pictures">{grids}</div>' if grids else ""))
    return "<h2>Sanity checks</h2>" + "".join(parts) if parts else ""


def _leaderboards(tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> str:
    """Each leaderboard as one table per metric group (localisation, faithfulness, ...), so none is wider
    than the page, each saying what its columns score against."""
    parts = []
    for name, rows in tables:
        if not rows:
            continue
        groups = tables_mod.by_group(rows)
        parts.append(f"<h3>{_text(name)}</h3>" + "".join(
            tables_mod.table(rows, _group_sentence(group), columns) for group, columns in groups))
    return "<h2>Leaderboard</h2>" + "".join(parts) if parts else ""


def _group_sentence(group: str) -> str:
    if group == "other":
        return "Time: milliseconds per image of each method's maps, on this machine (they vary with its load)."
    return f"{group.capitalize()}: every method's maps of the explained class, scored {tables_mod.GROUP_WORDS[group]}."


def _photos(src: RunSources) -> str:
    """The demo's real case: a pretrained model's maps on photos against hand-drawn boxes, and one photo's top 5."""
    real = src.photos
    if not real:
        return ""
    weights = real.get("weights") or {}
    rows = [{"method": k, **{c: v.get(c) for c in ("pointing", "energy_in_box", "ms_per_image")}}
            for k, v in real["methods"].items() if isinstance(v, dict)]
    photos = [{k: p.get(k) for k in ("name", "class_name", "p_class", "predicted")}
              for p in real.get("photos", []) if isinstance(p, dict)]
    n = len(photos)
    figures_html = "".join(
        f'<figure><img class="picture" alt="{html.escape(what)}" src="{_data_uri(path.read_bytes())}">'
        f"<figcaption>{html.escape(what)}</figcaption></figure>"
        for what, path in (("maps of each object's labelled class; boxes drawn by hand; each row says which photo, "
                            "which class, the model's probability for it and its prediction",
                            src.folder / "photos" / "grid.png"),
                           (f"Grad-CAM of the top-5 classes of {real.get('top5', {}).get('photo', '')}, one call "
                            "with targets (1, 5), on one scale per row", src.folder / "photos" / "top5.png"))
        if path.is_file())
    sentence = (f"Maps of each object's labelled class ({n} objects in the photos), scored against the box drawn by "
                "hand around it: pointing game = the map's peak inside the box, energy in box = the share of the "
                "map's positive mass inside it.")
    return (f"<h2>A pretrained model on real photos</h2>"
            f'<p class="sub">model <b>{html.escape(str(real.get("model")))}</b> · weights '
            f'<code>{html.escape(str(weights.get("file")))}</code> sha256 '
            f'<code class="hash">{html.escape(str(weights.get("sha256")))}</code></p>'
            f"{tables_mod.table(rows, sentence)}{figures_html}<h3>Photos</h3>"
            f"{tables_mod.table(photos, 'Each object, its class, the probability the model gives it, its top class.')}"
            + _not_run(real.get("skipped"), real.get("commands")))


def _not_run(skipped: Any, commands: Any) -> str:
    """Methods left out, why, and the complete command that runs each (copyable: no markup in it)."""
    if not isinstance(skipped, dict) or not skipped:
        return ""
    commands = commands if isinstance(commands, dict) else {}
    items = []
    for name, why in skipped.items():
        command = commands.get(name)
        run = f'<pre class="command"><code>{html.escape(str(command))}</code></pre>' if command else ""
        items.append(f"<li><b>{html.escape(str(name))}</b>: {html.escape(str(why))}{run}</li>")
    return f"<p>Not run here:</p><ul class=\"skipped\">{''.join(items)}</ul>"


def _captions(tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], limit: int = 16) -> str:
    parts = []
    for name, images in tables:
        rows = []
        for r in images[:limit]:
            strip = f'<img class="strip" alt="attention per word" src="{_data_uri(r["strip"])}">' if r["strip"] else ""
            if r.get("strips"):  # one strip per method (`attnscope caption --methods`)
                strip = "".join(f'<p class="note">{_text(m)}</p><img class="strip" alt="{_text(m)} per word" '
                                f'src="{_data_uri(png)}">' for m, png in r["strips"].items())
            refs = "".join(f"<li>{_text(x)}</li>" for x in r["references"])
            rows.append(f"<tr><td>{_text(r['image'])}</td><td><b>{_text(r['caption'])}</b>"
                        f"{f'<ul>{refs}</ul>' if refs else ''}{strip}</td></tr>")
        shown = f"first {limit} of {len(images)}" if len(images) > limit else f"{len(images)}"
        parts.append(f"<h3>{_text(name)}</h3><p class='what'>The caption each of {shown} images was given, its "
                     "reference captions, and where the map of each method puts each word (one strip per method, "
                     "one frame per word).</p><div class='table-wrap'><table>"
                     f"<tr><th>image</th><th>caption (references)</th></tr>{''.join(rows)}</table></div>")
    return "<h2>Captions</h2>" + "".join(parts) if parts else ""


def _tokens(tables: Sequence[tuple[str, Mapping[str, Any]]], limit: int = 8) -> str:
    """Prompt tokens highlighted by their relevance (`attnscope explain --text`), per method and image."""
    from attnscope.report.tokens import SCALE, token_page_body

    parts = [f"<h3>{_text(name)}</h3>" + token_page_body({m: v[:limit] for m, v in t["methods"].items()},
                                                          t["images"][:limit])
             for name, t in tables]
    legend = f"<p class='what'>How much each token of a prompt adds to the image–text score: {SCALE}.</p>"
    return "<h2>Prompt tokens</h2>" + legend + "".join(parts) if parts else ""


def _summary(summary: Mapping[str, Any] | None, folder: Path) -> str:
    methods = summary.get("methods") if summary else None
    if not isinstance(methods, dict):
        return ""
    rows = [{"method": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in methods.items()]
    n = summary.get("probe_images")
    grid = folder / "grid.png"
    picture = (f'<figure><img class="picture" alt="the demo\'s grid" src="{_data_uri(grid.read_bytes())}">'
               "<figcaption>maps of the true class of the first test images; each row says which image, its class, "
               "the model's probability and prediction</figcaption></figure>") if grid.is_file() else ""
    sentence = (f"Maps of the true class of {n if isinstance(n, int) else 'the'} test images, scored against the "
                "digit's box: pointing game = the map's peak inside the box, energy in box = the share of the map's "
                "positive mass inside it. Times vary with the machine, its load and the threads.")
    return (f"<h2>Maps of the trained model (demo)</h2>{tables_mod.table(rows, sentence)}{picture}"
            + _not_run(summary.get("skipped"), summary.get("commands")))


def _config(config: Mapping[str, Any]) -> str:
    if not config:
        return ""
    rows = [{"setting": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in config.items()]
    return f"<h2>Configuration</h2>{tables_mod.table(rows)}<details><summary>config.json</summary><pre>" \
           f"{html.escape(json.dumps(config, indent=2))}</pre></details>"


def _text(value: Any) -> str:
    return html.escape(str(value))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
