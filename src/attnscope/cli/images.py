"""The images a command explains (a folder, a file or a built-in data set, fitted to one input size by
`--resize/--crop/--pad`), and what is drawn of their maps: overlays on the original photos, flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnscope.errors import DataError, InputError


@dataclass
class Inputs:
    """Model inputs (B, 3, H, W) in [0, 1], one description each, labels (B,) or None, and, where a `Fit`
    changed the images, the original photos (3, h, w) and their placements in the input."""

    images: torch.Tensor
    sources: list[dict[str, Any]]
    labels: torch.Tensor | None = None
    originals: list[torch.Tensor] | None = None
    placements: list[Any] | None = None  # data.geometry.Placement per image


def read_inputs(source: str, n: int, seed: int, fit: Any = None) -> Inputs:
    """The images of `--images` (a path or a data set name), fitted by `fit` (a `data.geometry.Fit`)."""
    from attnscope import data
    from attnscope.cli.options import existing_input

    if existing_input(source, "--images") is not None:  # a FIFO or a device is refused, not read forever
        from attnscope.cli.options import RESIZE_HINT
        from attnscope.data.folder import image_paths, same_size

        paths = image_paths(source)
        photos = [data.read_image(p) for p in paths]
        sources = [{"name": p.stem, "path": str(p)} for p in paths]
        if fit is None:
            shapes: dict[tuple[int, int], Path] = {}
            for photo, p in zip(photos, paths, strict=True):
                shapes.setdefault(tuple(photo.shape[-2:]), p)
            same_size(shapes, hint=f"pass {RESIZE_HINT}")
            return Inputs(torch.stack(photos), sources)
        return _fitted(photos, sources, None, fit)
    if source in data.names():
        if n < 1:
            raise InputError(f"--n must be >= 1, got {n}")
        dataset = data.get(source, "test", n, seed=seed)
        samples = [dataset[i] for i in range(min(n, len(dataset)))]  # a fixed set (photos) may hold fewer
        captions = getattr(dataset, "kind", None) == "captioning"  # scenes for prompts (--text): no labels
        if not hasattr(samples[0], "label") and not captions:
            raise DataError(f"data set {source!r} has no class labels to explain; use a classification data set")
        images = [s.image for s in samples]
        labels = None if captions else torch.tensor([int(s.label) for s in samples])
        sources = [{"name": f"{source}-{i:04d}", "data": source, "index": i} for i in range(len(samples))]
        return Inputs(torch.stack(images), sources, labels) if fit is None else _fitted(images, sources, labels, fit)
    raise DataError(f"--images {source}: no such file or folder, and not a built-in data set "
                    f"({', '.join(data.names())})")


def _fitted(photos: list[torch.Tensor], sources: list[dict[str, Any]], labels: torch.Tensor | None, fit: Any) -> Inputs:
    placements = [fit.place(p.shape[-2], p.shape[-1], s["name"]) for p, s in zip(photos, sources, strict=True)]
    images = torch.stack([pl.apply(p).clamp(0, 1) for pl, p in zip(placements, photos, strict=True)])
    return Inputs(images, sources, labels, photos, placements)


def write_overlays(folder: Path, inputs: Inputs, maps: Mapping[str, Any]) -> dict[str, list[str]]:
    """One overlay PNG per image and method, on the original photo, flagged where the map says nothing;
    returns the relative paths per method."""
    from attnscope.report import figures
    from attnscope.report.flags import flags

    written: dict[str, list[str]] = {}
    for name, amap in maps.items():
        values = amap.values.detach().float().cpu()
        limits = figures.column_scales({name: values}, options={name: amap.meta})[name]
        per_image = flags(values)
        for i, source in enumerate(inputs.sources):
            photo, map_ = inputs.images[i], values[i : i + 1]
            if inputs.placements is not None:
                photo, map_ = inputs.originals[i], inputs.placements[i].invert(map_)
            rgb = figures.overlay(photo, map_, limits=limits, index=i)
            if per_image[i] is not None:
                rgb = figures.draw_flag(rgb, per_image[i])
            rel = f"overlays/{name}/{i:04d}_{source['name']}.png"
            figures.save_png(folder / rel, rgb)
            written.setdefault(name, []).append(rel)
    return written


def flag_maps(maps: Mapping[str, Any], sources: list[dict[str, Any]], kinds: Mapping[str, str | None]
              ) -> dict[str, dict[str, list[str]]]:
    """`{method: {flag: [image names]}}` of the maps that say nothing, each also warned about on the terminal."""
    from rich.markup import escape

    from attnscope import console
    from attnscope.report.flags import explain, flags, summary

    names = [s["name"] for s in sources]
    out = {}
    for method, amap in maps.items():
        found = summary(flags(amap.values), names)
        for flag, which in found.items():
            shown = ", ".join(which[:5]) + (f" and {len(which) - 5} more" if len(which) > 5 else "")
            text = f"warning: {method}: {len(which)} of {len(names)} maps {explain(flag, kinds.get(method))} ({shown})"
            console.console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
        out[method] = found
    return out
