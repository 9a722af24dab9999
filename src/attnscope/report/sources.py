"""What a run folder holds that a report shows: config, metrics, tracked maps, sanity and leaderboard tables.

Everything optional is looked for and skipped when absent; what is present but unreadable raises
`DataError` naming the file. Sanity tables and leaderboards are recognised by their content, so the
report finds them wherever the commands that made them put them inside the run folder.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnscope.errors import DataError
from attnscope.track.store import TrackStore

SANITY_COLUMNS = {"method", "block", "metric", "mean", "ci_low", "ci_high"}
_SKIP = {"track", "checkpoints", "tensorboard"}


@dataclass
class RunSources:
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    store: TrackStore | None = None
    summary: dict[str, Any] | None = None  # the demo's summary.json
    photos: dict[str, Any] | None = None  # the demo's real-photo part: photos/summary.json (+ its PNGs)
    sanity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, {"steps", "rows"})
    leaderboards: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)


def read_run(folder: str | Path, extra: Sequence[str | Path] = ()) -> RunSources:
    """Read what a report needs from `folder` (and sanity/leaderboard tables from `extra` folders too).

    A folder with nothing to report raises `DataError`.
    """
    folder = Path(folder)
    for f in (folder, *map(Path, extra)):
        if not f.is_dir():
            raise DataError(f"run folder not found: {f}")
    src = RunSources(folder)
    if (folder / "config.json").is_file():
        src.config = _json(folder / "config.json")
    if (folder / "metrics.jsonl").is_file():
        src.metrics = _jsonl(folder / "metrics.jsonl")
    if TrackStore.exists(folder / "track"):
        src.store = TrackStore.open(folder / "track")
    if (folder / "summary.json").is_file():
        src.summary = _json(folder / "summary.json")
    if (folder / "photos" / "summary.json").is_file():
        src.photos = _json(folder / "photos" / "summary.json")
        if not isinstance(src.photos, dict) or not isinstance(src.photos.get("methods"), dict):
            raise DataError(f"{folder / 'photos' / 'summary.json'} is not a photo summary (no methods table)")
    for path in [p for f in (folder, *map(Path, extra)) for p in _candidates(f)]:
        if "leaderboard" in path.name:
            src.leaderboards.append((path.name, _rows(path)))
        elif path.suffix == ".json":
            sanity = _sanity(path)
            if sanity is not None:
                src.sanity.append((path.name, sanity))
    if not (src.config or src.metrics or src.store or src.summary or src.photos or src.sanity or src.leaderboards):
        raise DataError(f"{folder} holds nothing to report (no config.json, metrics.jsonl, track/, "
                        "summary.json, sanity or leaderboard table)")
    return src


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


def _sanity(path: Path) -> dict[str, Any] | None:
    data = _json(path)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    if not all(isinstance(r, dict) and SANITY_COLUMNS <= set(r) for r in rows):
        return None
    steps = data.get("steps") or list(dict.fromkeys(r["block"] for r in rows))
    return {"steps": [str(s) for s in steps], "rows": rows, "meta": data.get("meta", {})}


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        try:
            with path.open(newline="") as f:
                return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not a readable CSV table: {e}") from None
    data = _json(path)
    rows = data.get("rows", data.get("leaderboard")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected a list of rows (objects), or an object with 'rows'")
    return rows


def _number(text: str) -> Any:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not readable JSON: {e}") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not readable JSON lines: {e}") from None
