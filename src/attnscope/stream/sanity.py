"""Randomisation tests of a whole data set (`attnscope sanity --stream`): each shard runs the tests that work
image by image (cascading, independent, smprt, emprt, random-logit) on its images and writes the per-image
similarities; the end merges the shards' sums into the tables and plots `attnscope sanity` writes.

A shard file `shards/shard-k.safetensors` holds `index` (n,), `values` (K, n) float64 — one row per (test,
method, step, metric) named in the header's `keys`, NaN where undefined — and `sums` (K, 3) float64: n, Σx,
Σx² over the defined values; the shards holding the first `keep` images also hold their maps (`map.j`, named
by `map_keys`: test, step, method) and the images (`image.TEST`). Its header keeps each test's steps and meta.
The re-initialisation of a step is seeded by the step (`seed + position`), not by a stream the images consume,
and the tests' own draws by each image's data-set index (`attnscope.draws`): every shard randomises the same
weights, and the shard size does not change a number. The merge adds the sums in shard order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from attnscope import fileio
from attnscope.errors import DataError
from attnscope.metrics.similarity import sums
from attnscope.sanity.result import SanityResult
from attnscope.stream.core import Sharded, run_shards
from attnscope.stream.settings import Streaming, old_keywords

COMMAND = "sanity"
Test = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], SanityResult]  # (images, labels, index, keep)


@old_keywords(explains=False)
def sanity_dataset(dataset: Dataset, out: str | Path, tests: Mapping[str, Test], *, keep: int = 2,
                   settings: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
                   pin: bool = False, streaming: Streaming | None = None) -> dict[str, SanityResult]:
    """Run each of `tests` (name → fn(images, labels, data-set index, images to keep) -> SanityResult) on every
    shard of `dataset`, then write each test's table, plot and map grids (`report.sanity.write`, prefix = the
    test's name) from the shards' sums into `out`, with `meta` added to each test's. `settings`: what
    defines the run, compared on `resume`. `streaming`: shard size, workers, resume or overwrite, progress.
    (How the tests explain is theirs: each is built on an `attnscope.Explainer`.)
    Returns the merged results on rank 0 ({} on the others)."""
    from attnscope.report import sanity as report

    streaming = streaming or Streaming()
    out = Path(out)
    run = {"tests": list(tests), "keep": keep, "total": len(dataset), "shard_size": streaming.shard_size,
           "settings": dict(settings or {})}
    job = Sharded(COMMAND, out, run, dataset, streaming.shard_size, manifest={"tests": list(tests)})
    merged: dict[str, SanityResult] = {}

    def compute(k: int, start: int, batch: Any) -> None:
        images, labels = batch
        index = torch.arange(start, start + images.shape[0])
        kept = max(0, min(keep - start, images.shape[0]))
        results = {name: test(images, torch.as_tensor(labels).long(), index, kept) for name, test in tests.items()}
        _write(out / job.name(k), k, index, results, kept)

    def finish(shards: list[int]) -> list[str]:
        merged.update(merge([out / job.name(k) for k in shards], len(dataset)))
        written = []
        for name, result in merged.items():
            result.meta.update(meta or {})
            written += [str(p.relative_to(out)) for p in report.write(result, out, prefix=name)]
        return written

    run_shards(job, compute, finish, pin=pin, **streaming.run_shards())
    return merged


def _write(path: Path, k: int, index: torch.Tensor, results: Mapping[str, SanityResult], kept: int) -> None:
    """One shard's per-image similarities, their sums, and the maps and images it keeps for drawing."""
    keys = [(t, m, s, x) for t, r in results.items() for m, by in r.scores.items() for s in r.steps for x in by[s]]
    values = torch.stack([results[t].scores[m][s][x].double().cpu() for t, m, s, x in keys])
    tensors = {"index": index, "values": values, "sums": torch.stack([sums(v) for v in values])}
    map_keys = [(t, s, m) for t, r in results.items() for s, by in r.maps.items() for m in by] if kept else []
    tensors |= {f"map.{j}": results[t].maps[s][m] for j, (t, s, m) in enumerate(map_keys)}
    tensors |= {f"image.{t}": r.images for t, r in results.items() if kept and r.images is not None}
    header = {"shard": k, "first": int(index[0]), "count": len(index), "keys": keys, "map_keys": map_keys,
              "steps": {t: r.steps for t, r in results.items()}, "meta": {t: r.meta for t, r in results.items()}}
    fileio.save_tensors(path, tensors, header)


def merge(paths: Sequence[Path], total: int) -> dict[str, SanityResult]:
    """Each test's result from the shards at `paths` (in order): per-image values concatenated, sums added,
    kept maps and images joined, meta from the first shard (images: the total; seconds, replay counts and
    random-logit's classes: of all shards; notes: all)."""
    values: dict[tuple, list[torch.Tensor]] = {}
    totals: dict[tuple, torch.Tensor] = {}
    maps: dict[tuple, list[torch.Tensor]] = {}
    images: dict[str, list[torch.Tensor]] = {}
    head: dict[str, Any] = {}
    for path in paths:
        with safe_open(str(path), "pt") as f:
            header = json.loads(f.metadata()["attnscope"])
            keys = [tuple(k) for k in header["keys"]]
            if head and keys != [tuple(k) for k in head["keys"]]:
                raise DataError(f"{path}: its tests, methods or steps differ from the first shard's; start again")
            part, summed = f.get_tensor("values"), f.get_tensor("sums")
            for j, key in enumerate(tuple(k) for k in header["map_keys"]):
                maps.setdefault(key, []).append(f.get_tensor(f"map.{j}"))
            for name in (n for n in f.keys() if n.startswith("image.")):
                images.setdefault(name[len("image."):], []).append(f.get_tensor(name))
        if not head:
            head = header
        else:
            for test, meta in header["meta"].items():
                _add_meta(head["meta"][test], meta)
        for key, row, s in zip(keys, part, summed, strict=True):
            values.setdefault(key, []).append(row)
            totals[key] = totals[key] + s if key in totals else s.clone()
    out: dict[str, SanityResult] = {}
    for test, steps in head["steps"].items():
        result = SanityResult(test, steps, {}, meta={**head["meta"][test], "images": total}, sums={})
        for (t, method, step, metric), parts in values.items():
            if t == test:
                result.scores.setdefault(method, {}).setdefault(step, {})[metric] = torch.cat(parts)
                result.sums[(method, step, metric)] = totals[(t, method, step, metric)]
        for (t, step, method), parts in maps.items():
            if t == test:
                result.maps.setdefault(step, {})[method] = torch.cat(parts)
        result.images = torch.cat(images[test]) if test in images else None
        out[test] = result
    return out


def _add_meta(first: dict[str, Any], meta: Mapping[str, Any]) -> None:
    """A later shard's meta into the first's: seconds and the prefix replay's counts added, notes joined,
    random-logit's other class of each image appended."""
    first["seconds"] = first.get("seconds", 0) + meta.get("seconds", 0)
    first["notes"] = list(dict.fromkeys([*first.get("notes", []), *meta.get("notes", [])]))
    if "other" in first:
        first["other"] = [*first["other"], *meta["other"]]
    if first.get("reused") and meta.get("reused"):
        first["reused"] = {k: first["reused"][k] + meta["reused"][k] for k in first["reused"]}
