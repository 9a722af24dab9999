"""What a run folder holds that a report shows: config, metrics, tracked maps, sanity, leaderboard and
caption tables.

Everything optional is looked for and skipped when absent; what is present but unreadable or of the
wrong type raises `DataError` naming the file (and line or entry). Values are validated here, before
any reaches the page: numbers must be numbers (NaN and infinities become gaps), names become text.
Sanity tables, leaderboards and captions are recognised by their content, so the report finds them
wherever the commands that made them put them inside the run folder.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnscope import fileio
from attnscope.errors import DataError
from attnscope.track.store import TrackStore

SANITY_COLUMNS = {"method", "block", "metric", "mean", "ci_low", "ci_high"}
_SKIP = {"track", "checkpoints", "tensorboard"}
_PNG = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 4_000_000  # a PNG the report embeds (sanity map grids, caption strips)


@dataclass
class RunSources:
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    store: TrackStore | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # the store's entries, validated
    summary: dict[str, Any] | None = None  # the demo's summary.json
    photos: dict[str, Any] | None = None  # the demo's real-photo part: photos/summary.json (+ its PNGs)
    sanity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, {"steps", "rows", ...})
    leaderboards: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    captions: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (file name, images)
    tokens: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, `explain --text` tokens)
    classes: list[str] | None = None  # class names, where the run records them


def read_run(folder: str | Path, extra: Sequence[str | Path] = ()) -> RunSources:
    """Read what a report needs from `folder` (and sanity/leaderboard/caption tables from `extra` too).

    A folder with nothing to report raises `DataError`.
    """
    folder = Path(folder)
    for f in (folder, *map(Path, extra)):
        if not f.is_dir():
            raise DataError(f"run folder not found: {f}")
    src = RunSources(folder)
    if (folder / "config.json").is_file():
        src.config = _object(folder / "config.json")
    if (folder / "metrics.jsonl").is_file():
        src.metrics = metrics_rows(folder / "metrics.jsonl")
    if TrackStore.exists(folder / "track"):
        src.store = TrackStore.open(folder / "track")
        src.snapshots = snapshots(src.store)
    if (folder / "summary.json").is_file():
        src.summary = _object(folder / "summary.json")
    if (folder / "photos" / "summary.json").is_file():
        src.photos = _object(folder / "photos" / "summary.json")
        if not isinstance(src.photos.get("methods"), dict):
            raise DataError(f"{folder / 'photos' / 'summary.json'} is not a photo summary (no methods table)")
    src.classes = _classes(src)
    for path in [p for f in (folder, *map(Path, extra)) for p in _candidates(f)]:
        if "leaderboard" in path.name:
            src.leaderboards.append((path.name, _rows(path)))
        elif path.suffix == ".json":
            data = _json(path)
            sanity, captions = _sanity(path, data), _captions(path, data)
            if sanity is not None:
                src.sanity.append((path.name, sanity))
            if captions is not None:
                src.captions.append((path.name, captions))
            tokens = _tokens(path, data)
            if tokens is not None:
                src.tokens.append((path.name, tokens))
    if not (src.config or src.metrics or src.store or src.summary or src.photos or src.sanity or src.leaderboards
            or src.captions or src.tokens):
        raise DataError(f"{folder} holds nothing to report (no config.json, metrics.jsonl, track/, "
                        "summary.json, sanity, leaderboard or captions table)")
    return src


def number(value: Any) -> float | None:
    """A finite number as float; None for anything else (NaN, infinities, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def metrics_rows(path: Path) -> list[dict[str, Any]]:
    """The lines of metrics.jsonl: objects with a numeric `epoch`; other values kept only when numbers
    (NaN / infinite ones, e.g. a diverged learning rate, become None: a gap in the chart)."""
    rows = []
    for i, record in fileio.read_jsonl(path, DataError):
        if number(record.get("epoch")) is None:
            raise DataError(f"{path} line {i}: epoch must be a finite number, got {_shown(record.get('epoch'))}")
        rows.append({str(k): number(v) for k, v in record.items() if isinstance(v, (int, float))})
    return rows


def snapshots(store: TrackStore) -> list[dict[str, Any]]:
    """The tracker's index entries with checked types: step, epoch, kind, map keys, numeric measures."""
    out = []
    for i, e in enumerate(store.snapshots):
        where = f"{store.folder / 'index.json'} snapshot {i}"
        if not isinstance(e, dict):
            raise DataError(f"{where}: expected an object")
        step, epoch = e.get("step"), number(e.get("epoch"))
        if isinstance(step, bool) or not isinstance(step, int) or epoch is None:
            raise DataError(f"{where}: step must be an integer and epoch a number, got {_shown(step)}, "
                            f"{_shown(e.get('epoch'))}")
        maps, measures = e.get("maps", []), e.get("measures", {})
        if not isinstance(maps, list) or not all(isinstance(k, str) for k in maps) or not isinstance(measures, dict):
            raise DataError(f"{where}: maps must be a list of names and measures an object")
        out.append({"step": step, "epoch": epoch, "kind": str(e.get("kind", "")), "maps": maps,
                    "measures": {str(k): number(v) for k, v in measures.items()}})
    return out


def png(path: Path) -> bytes | None:
    """The bytes of a PNG file to embed, or None when it is missing, not a PNG or too large."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_PNG_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(_PNG) else None


def inside(root: Path, name: Any, what: str) -> Path:
    """`root / name`, refused (DataError) when it resolves outside `root`."""
    target = (root / str(name)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DataError(f"{what}: {str(name)!r} points outside {root}")
    return target


def _classes(src: RunSources) -> list[str] | None:
    names = src.config.get("classes")
    if names is None and src.store is not None:
        names = src.store.settings.get("classes") if isinstance(src.store.settings, dict) else None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{src.folder}: classes must be a list of names, got {_shown(names)}")
    return names


def _candidates(folder: Path) -> list[Path]:
    """JSON and CSV files in `folder` and its sub-folders (not the tracker's or the checkpoints')."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if len(rel) > 3 or rel[0] in _SKIP or path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix in (".json", ".csv") and path.name not in ("config.json", "summary.json", "model.json"):
            found.append(path)
    # A table written both ways (leaderboard.csv + leaderboard.json) is read once, from the JSON.
    return [p for p in found if not (p.suffix == ".csv" and p.with_suffix(".json") in found)]


def _sanity(path: Path, data: Any) -> dict[str, Any] | None:
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    if not all(isinstance(r, dict) and SANITY_COLUMNS <= set(r) for r in rows):
        return None
    rows = [{**r, **{k: str(r[k]) for k in ("method", "block", "metric")},
             **{k: number(r[k]) for k in ("mean", "ci_low", "ci_high")}} for r in rows]
    steps = data.get("steps") if isinstance(data.get("steps"), list) else None
    steps = [str(s) for s in steps] if steps else list(dict.fromkeys(r["block"] for r in rows))
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    grids = [g for i in range(8) for g in [png(path.with_name(f"{path.stem}_maps_{i}.png"))] if g is not None]
    return {"steps": steps, "rows": rows, "meta": meta, "grids": grids}


def _captions(path: Path, data: Any) -> list[dict[str, Any]] | None:
    """The images of an `attnscope caption` output (captions.json): name, caption, references, strip PNG."""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(r, dict) and "caption" in r for r in images):
        return None
    out = []
    for i, r in enumerate(images):
        refs = r.get("references")
        strip = png(inside(path.parent, r["strip"], f"{path} image {i} strip")) if r.get("strip") else None
        strips = r.get("strips") if isinstance(r.get("strips"), dict) else {}  # one per method (`caption --methods`)
        out.append({"image": str(r.get("image", i)), "caption": str(r["caption"]),
                    "references": [str(x) for x in refs] if isinstance(refs, list) else [], "strip": strip,
                    "strips": {str(m): png(inside(path.parent, f, f"{path} image {i} strip {m}"))
                               for m, f in strips.items() if isinstance(f, str)}})
    return out


def _tokens(path: Path, data: Any) -> dict[str, Any] | None:
    """The prompt tokens of an `attnscope explain --text` output (tokens.json): per method, image and prompt,
    (token, relevance) pairs; values that are not numbers are read as 0."""
    if path.name != "tokens.json" or not (isinstance(data, dict) and isinstance(data.get("texts"), list)
                                         and isinstance(data.get("methods"), dict)
                                         and isinstance(data.get("images"), list)):
        return None
    methods = {}
    for method, per_image in data["methods"].items():
        if not isinstance(per_image, list):
            raise DataError(f"{path}: method {method!r} holds no list of images")
        methods[str(method)] = [[[(str(w), number(v) or 0.0) for w, v in prompt] for prompt in prompts]
                                for prompts in per_image]
    return {"texts": [str(t) for t in data["texts"]], "images": [str(i) for i in data["images"]], "methods": methods}


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        try:
            with path.open(newline="") as f:
                return [{str(k): _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not a readable CSV table: {e}") from None
    data = _json(path)
    rows = data.get("rows", data.get("leaderboard")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected a list of rows (objects), or an object with 'rows'")
    return rows


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return float(text) if any(c in text for c in ".eEnN") else int(text)
    except ValueError:
        return text


def _object(path: Path) -> dict[str, Any]:
    data = _json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{path} is not readable JSON: {e}") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
