"""The tracker's run store: a probe set, one compressed file of maps per snapshot, and a JSON index.

Layout of `<run>/track/`:

    index.json               what was recorded: settings, probe, one entry per snapshot (measures)
    probe.npz                the probe images (float32, exactly as explained), labels, region boxes
    step_0000120.npz         maps of the snapshot at optimizer step 120: per map key, float16 values
                             divided by their per-image max |value| (key) and that scale (key.scale)
    scalars.jsonl            the training loop's own scalars (`AttentionTracker.log`): one line per step,
                             {"step", "epoch", name: value, ...}

Every file is written atomically, and a snapshot's file before the index line that names it, so a
process killed at any moment (kill -9) leaves an index whose every entry is complete; a snapshot
file the index does not name is an orphan that `truncate` removes.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnscope import fileio
from attnscope.errors import DataError

FORMAT = "attnscope-track/1"
INDEX = "index.json"
PROBE = "probe.npz"
SCALARS = "scalars.jsonl"
_SNAPSHOT = re.compile(r"step_(\d+)\.npz")


@dataclass(frozen=True)
class Probe:
    """Fixed test images with their ground truth: images (P, C, H, W), labels (P,), named boxes (P, 4) and, where
    the data set has them, object masks (P, H, W); what a tracker, `bench` and `sanity` explain."""

    images: torch.Tensor  # (P, C, H, W) float
    labels: torch.Tensor  # (P,) long
    regions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (P, 4) long boxes
    source: str | None = None  # where the images came from, for the report (e.g. "the first 64 images of ...")
    masks: torch.Tensor | None = None  # (P, H, W) bool, the object's pixels (not stored by the tracker)
    texts: tuple[str, ...] | None = None  # a captioner's probe: the caption up to the word each image explains

    @property
    def boxes(self) -> torch.Tensor | None:
        """The object's box of each image (P, 4), None when the data set has none."""
        return self.regions.get("box")

    def __post_init__(self) -> None:
        p = self.images.shape[0]
        if self.texts is not None and (len(self.texts) != p or not all(isinstance(t, str) for t in self.texts)):
            raise DataError(f"probe texts must be {p} strings, one per image")
        if self.images.dim() != 4 or self.labels.shape != (p,):
            raise DataError(f"probe images (P, C, H, W) and labels (P,) do not fit: "
                            f"{tuple(self.images.shape)}, {tuple(self.labels.shape)}")
        for name, boxes in self.regions.items():
            if boxes.shape != (p, 4):
                raise DataError(f"probe region {name!r} must hold boxes (P, 4) = ({p}, 4), got {tuple(boxes.shape)}")


def encode(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) maps → float16 maps scaled to max |value| = 1 per image, and the float32 scales (B,)."""
    v = values.detach().float().cpu()
    scale = v.abs().flatten(1).amax(1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (v / scale[:, None, None]).half().numpy(), scale.numpy()


def decode(half: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """The (B, H, W) float32 maps that `encode` stored."""
    return torch.from_numpy(half.astype(np.float32)) * torch.from_numpy(scale.astype(np.float32))[:, None, None]


def roundtrip(values: torch.Tensor) -> torch.Tensor:
    """`values` as they read back from the store (what measures against a stored snapshot must use)."""
    return decode(*encode(values))


class TrackStore:
    """A tracker's folder: create or open it, add snapshots, read them back, truncate on resume."""

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder, self.index = Path(folder), index

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / INDEX).is_file()

    @classmethod
    def create(cls, folder: str | Path, settings: Mapping[str, Any], probe: Probe,
               steps_per_epoch: int | None = None, source: str | None = None) -> TrackStore:
        """A new, empty store holding `probe` (`source`: where its images came from, for the report);
        an existing index there is an error."""
        folder = Path(folder)
        if cls.exists(folder):
            raise DataError(f"{folder} already holds a tracker store")
        arrays = {"images": probe.images.detach().float().cpu().numpy(),
                  "labels": probe.labels.detach().long().cpu().numpy()}
        arrays.update({f"region.{k}": v.detach().long().cpu().numpy() for k, v in probe.regions.items()})
        _write_npz(folder / PROBE, arrays)
        store = cls(folder, {
            "format": FORMAT,
            "settings": dict(settings),
            "probe": {"file": PROBE, "count": int(probe.images.shape[0]), "size": list(probe.images.shape[-2:]),
                      "regions": list(probe.regions), "source": source,
                      **({"texts": list(probe.texts)} if probe.texts is not None else {})},
            "steps_per_epoch": steps_per_epoch,
            "snapshots": [],
        })
        store._write_index()
        return store

    @classmethod
    def open(cls, folder: str | Path) -> TrackStore:
        """The store in `folder`; a missing or malformed index raises `DataError`."""
        path = Path(folder) / INDEX
        try:
            index = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"no tracker store in {folder} (no {INDEX})") from None
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not a readable tracker index: {e}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("snapshots"), list):
            raise DataError(f"{path} is not an attnscope tracker index (format {FORMAT})")
        for i, entry in enumerate(index["snapshots"]):
            _check_entry(path, i, entry)
        return cls(Path(folder), index)

    @property
    def settings(self) -> dict[str, Any]:
        return self.index["settings"]

    @property
    def snapshots(self) -> list[dict[str, Any]]:
        """Index entries, in the order of their step."""
        return self.index["snapshots"]

    def entry(self, step: int) -> dict[str, Any] | None:
        return next((e for e in self.snapshots if e["step"] == step), None)

    def probe(self) -> Probe:
        arrays = _read_npz(self.folder / PROBE)
        regions = {k.split(".", 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("region.")}
        texts = self.index["probe"].get("texts")
        return Probe(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), regions,
                     texts=None if texts is None else tuple(texts))

    def add(self, entry: Mapping[str, Any], maps: Mapping[str, torch.Tensor], predictions: torch.Tensor) -> None:
        """Record a snapshot: its maps file first, then the index that names it."""
        step = int(entry["step"])
        if self.entry(step) is not None:
            raise DataError(f"the store already holds a snapshot at step {step}")
        arrays: dict[str, np.ndarray] = {"predictions": predictions.detach().long().cpu().numpy()}
        for key, values in maps.items():
            arrays[key], arrays[f"{key}.scale"] = encode(values)
        name = f"step_{step:07d}.npz"
        _write_npz(self.folder / name, arrays)
        self.snapshots.append({**entry, "step": step, "file": name, "maps": list(maps)})
        self.snapshots.sort(key=lambda e: e["step"])
        self._write_index()

    def update(self, step: int, **fields: Any) -> None:
        """Change fields of the entry at `step` (e.g. a step snapshot that is also an epoch's end)."""
        entry = self.entry(step)
        if entry is None:
            raise DataError(f"no snapshot at step {step}")
        entry.update(fields)
        self._write_index()

    def truncate(self, step: int) -> list[int]:
        """Forget snapshots and scalars past `step` and delete their files and any orphan; returns the dropped
        snapshots' steps."""
        dropped = [e["step"] for e in self.snapshots if e["step"] > step]
        self.index["snapshots"] = [e for e in self.snapshots if e["step"] <= step]
        self._write_index()
        scalars = self.scalars()
        if any(row["step"] > step for row in scalars):
            self.write_scalars([row for row in scalars if row["step"] <= step])
        named = {e["file"] for e in self.snapshots}
        for path in self.folder.glob("step_*.npz"):
            if _SNAPSHOT.fullmatch(path.name) and path.name not in named:
                path.unlink()
        return dropped

    def maps(self, step: int, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The (P, H, W) float32 maps of the snapshot at `step` (all keys, or those asked for)."""
        return self.read(step, keys)[0]

    def predictions(self, step: int) -> torch.Tensor:
        """The classes (P,) the model predicted for the probe images at `step`."""
        return self.read(step, ())[1]

    def read(self, step: int, keys: Iterable[str] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Maps (all keys, or those asked for) and predictions of the snapshot at `step`."""
        entry = self.entry(step)
        if entry is None:
            raise DataError(f"no snapshot at step {step}; recorded steps: {[e['step'] for e in self.snapshots]}")
        wanted = list(entry["maps"] if keys is None else keys)
        names = ["predictions"] + [n for k in wanted for n in (k, f"{k}.scale")]
        arrays = _read_npz(self.folder / entry["file"], names)
        maps = {k: decode(arrays[k], arrays[f"{k}.scale"]) for k in wanted}
        return maps, torch.from_numpy(arrays["predictions"])

    def scalars(self) -> list[dict[str, Any]]:
        """The loop's own scalars, one row per step in the order of the steps: {"step", "epoch", name: value}."""
        path = self.folder / SCALARS
        if not path.is_file():
            return []
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not readable JSON lines: {e}") from None
        for row in rows:
            if not (isinstance(row, dict) and isinstance(row.get("step"), int)
                    and all(v is None or isinstance(v, (int, float)) for v in row.values())):
                raise DataError(f"{path}: every line must be an object of numbers with an integer 'step', got {row!r}")
        return rows

    def write_scalars(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the scalars file with `rows` (atomically), sorted by step."""
        ordered = sorted(rows, key=lambda r: r["step"])
        fileio.write_text(self.folder / SCALARS, "".join(json.dumps(dict(r), allow_nan=False) + "\n" for r in ordered))

    def _write_index(self) -> None:
        fileio.write_json(self.folder / INDEX, self.index)


def _check_entry(index: Path, i: int, entry: Any) -> None:
    """A snapshot entry names its own file in the store's folder (`step_NNNNNNN.npz` of its step) and its maps."""
    where = f"{index}: snapshots[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("step"), int) or isinstance(entry.get("step"), bool):
        raise DataError(f"{where} is not a snapshot entry with an integer \"step\"")
    file = entry.get("file")
    if not isinstance(file, str) or file != f"step_{entry['step']:07d}.npz":
        raise DataError(f"{where}: \"file\" must be the snapshot's own file step_{entry['step']:07d}.npz in "
                        f"{index.parent}, got {file!r}; refusing to read anything else")
    maps = entry.get("maps")
    if not isinstance(maps, list) or not all(isinstance(k, str) for k in maps):
        raise DataError(f"{where}: \"maps\" must be a list of map names")


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    fileio.write_bytes(path, buffer.getvalue())


def _read_npz(path: Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of an .npz file (all, or `names`); a missing, truncated or foreign file raises `DataError`."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as f:  # closed even if np.load fails
            wanted = f.files if names is None else list(names)
            missing = [n for n in wanted if n not in f.files]
            if missing:
                raise DataError(f"tracker file {path} lacks arrays {missing}")
            return {k: f[k] for k in wanted}
    except FileNotFoundError:
        raise DataError(f"tracker file missing: {path}") from None
    except DataError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"tracker file {path} is unreadable: {type(e).__name__}: {e}") from None
