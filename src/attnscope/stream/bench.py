"""The leaderboard of a whole data set (`attnscope bench --stream`): each shard scores its images with the
leaderboard's columns (`evaluate.leaderboard.image_scores`) and writes the values per image; the end merges
the shards' sums into the table `attnscope bench` writes.

A shard file `shards/shard-k.safetensors` holds `index` (n,) — the images' data-set indices —, `values`
(K, n) float64, one row per (map, column) pair named in the header's `keys`, NaN where undefined, and `sums`
(K, 3) float64: n, Σx, Σx² over the defined values. Its header also has each map's kind and explainer and the
explainers' seconds. The merge adds the sums in shard order (so the result does not depend on the number of
processes) and computes each mean and Student-t CI from them (`metrics.similarity.mean_ci_of_sums`). Random
draws are seeded per image by its data-set index (`attnscope.draws`), so the shard size does not change them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import Dataset, default_collate

from attnscope import fileio
from attnscope.errors import DataError
from attnscope.metrics.similarity import mean_ci_of_sums, sums
from attnscope.stream.core import Sharded, run_shards, source_of
from attnscope.stream.settings import Streaming, old_keywords

COMMAND = "bench"
RESULTS = ("leaderboard.csv", "leaderboard.json")


class Scored(Dataset):
    """The items of `dataset` as dicts: image, label, and box and mask where its samples have them (a
    built-in data set read without a fit); images of a folder have neither."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        first = self._sample(0) if len(dataset) else None
        self.truth = [k for k in ("box", "mask") if isinstance(getattr(first, k, None), torch.Tensor)]

    def _sample(self, i: int) -> Any:
        inner = getattr(self.dataset, "data", None)
        return inner[i] if inner is not None and getattr(self.dataset, "fit", None) is None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label = self.dataset[i]
        sample = self._sample(i) if self.truth else None
        return {"image": image, "label": label, **{k: getattr(sample, k) for k in self.truth}}

    def source(self, i: int) -> dict[str, Any]:
        return source_of(self.dataset, i)


@old_keywords()
def bench_dataset(model: nn.Module, dataset: Dataset, out: str | Path, how: Any = None, *,
                  metrics: Sequence[str] | str | None = None, settings: Any = None,
                  meta: Mapping[str, Any] | None = None, streaming: Streaming | None = None) -> dict[str, Any]:
    """Score every image of `dataset` ((image, label) items; label −1: the predicted class) shard by shard into
    `out`, then write leaderboard.csv and .json (rows as `leaderboard` gives them, plus each mean's CI) from the
    shards' sums. `how`, `metrics` and `settings` (`evaluate.Settings`) are the leaderboard's; `streaming`:
    shard size, workers, resume or overwrite, progress. `meta`: what else the JSON records (and `resume`
    compares). Returns the JSON's content on rank 0 ({} on the others)."""
    from attnscope.evaluate.leaderboard import Settings, rows_of

    streaming, settings = streaming or Streaming(), settings or Settings()
    out, items = Path(out), Scored(dataset)
    first = [items[0]] if len(items) else []  # one image scored first: a bad method or column fails before writing
    if first:
        _scores(model, default_collate(first), 0, how, metrics, settings)
    run = {"methods": None if how is None else _recorded(rows_of(how, model)),
           "metrics": metrics if metrics is None or isinstance(metrics, str) else list(metrics),
           "calibration": list(settings.calibration), "settings": settings.record(), "how": _how(how),
           "truth": items.truth, "total": len(items), "shard_size": streaming.shard_size, "meta": dict(meta or {})}
    job = Sharded(COMMAND, out, run, items, streaming.shard_size, manifest={"results": list(RESULTS)})
    merged: dict[str, Any] = {}

    def compute(k: int, start: int, batch: dict[str, Any]) -> None:
        scores, index = _scores(model, batch, start, how, metrics, settings)
        keys = [(row, col) for row in scores.kinds for col in scores.columns if col in scores.values[row]]
        values = torch.stack([scores.values[r][c] for r, c in keys])
        header = {"shard": k, "first": start, "count": len(index), "keys": keys, "columns": scores.columns,
                  "kinds": scores.kinds, "labels": scores.labels, "seconds": scores.seconds,
                  "skipped": scores.skipped}
        fileio.save_tensors(out / job.name(k), {"index": index, "values": values,
                                                "sums": torch.stack([sums(v) for v in values])}, header)

    def finish(shards: list[int]) -> list[str]:
        from attnscope.report.sanity import table_csv

        merged.update(merge([out / job.name(k) for k in shards], dict(meta or {}), len(items)))
        fileio.write_text(out / RESULTS[0], table_csv(merged["rows"]))
        fileio.write_json(out / RESULTS[1], merged)
        return list(RESULTS)

    run_shards(job, compute, finish, pin=next((p.device.type == "cuda" for p in model.parameters()), False),
               **streaming.run_shards())
    return merged


def _recorded(rows: Mapping[str, Any]) -> list[Any]:
    """The rows as run.json records them: a method by its name, a labelled row as [label, method, settings]."""
    return [label if label == e.methods[0] else [label, e.methods[0], e.settings()] for label, e in rows.items()]


def _how(how: Any) -> dict[str, Any] | None:
    """An `Explainer`'s record (`Explainer.settings`); None for names or labelled rows (`methods` records them)."""
    from attnscope.explain import Explainer

    return how.settings() if isinstance(how, Explainer) else None


def _scores(model: nn.Module, batch: dict[str, Any], start: int, how: Any, metrics: Any,
            settings: Any) -> tuple[Any, torch.Tensor]:
    """`image_scores` of one shard's images (their data-set indices from `start`), for their labels or, where
    they have none (−1), for the class the model predicts."""
    from attnscope.evaluate.leaderboard import image_scores
    from attnscope.evaluate.robustness import logits_of

    images, labels = batch["image"], torch.as_tensor(batch["label"]).long()
    if bool((labels < 0).any()):
        labels = logits_of(model, images).argmax(1).cpu()
    index = torch.arange(start, start + images.shape[0])
    scores = image_scores(model, images, labels, batch.get("box"), batch.get("mask"), how, metrics, settings,
                          index=index)
    return scores, index


def merge(paths: Sequence[Path], meta: dict[str, Any], total: int) -> dict[str, Any]:
    """The leaderboard of the shards at `paths` (in order): each (map, column)'s sums added shard after shard,
    the mean and CI from them; ms per image from the explainers' summed seconds."""
    from attnscope.evaluate.columns import COLUMNS
    from attnscope.evaluate.leaderboard import board_rows

    totals: dict[tuple[str, str], torch.Tensor] = {}
    seconds: dict[str, float] = {}
    head: dict[str, Any] = {}
    for path in paths:
        with safe_open(str(path), "pt") as f:
            header, part = json.loads(f.metadata()["attnscope"]), f.get_tensor("sums")
        keys = [tuple(k) for k in header["keys"]]
        if head and keys != [tuple(k) for k in head["keys"]]:
            raise DataError(f"{path}: its maps and columns differ from the first shard's; start the run again")
        head = head or header
        for key, row in zip(keys, part, strict=True):
            totals[key] = totals[key] + row if key in totals else row.clone()
        for name, s in header["seconds"].items():
            seconds[name] = seconds.get(name, 0.0) + s
    stats = {key: mean_ci_of_sums(v) for key, v in totals.items()}
    nan = (float("nan"),) * 3 + (0,)
    rows = board_rows(head["columns"], head["kinds"], lambda r, c: stats.get((r, c), nan)[0],
                      lambda r: 1000 * seconds[head["labels"][r]] / total)
    lower = [c for c in head["columns"] if not COLUMNS.get(c).higher_is_better]
    ci = {r: {c: list(stats[(r, c)][1:]) for c in head["columns"] if (r, c) in stats} for r in head["kinds"]}
    meta = {**meta, "images": total, "columns": head["columns"], "lower_is_better": lower,
            "groups": {c: COLUMNS.get(c).group for c in head["columns"]}, "skipped": head["skipped"],
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    return {"meta": meta, "rows": rows, "ci": ci}
