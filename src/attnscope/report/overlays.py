"""What is drawn of an in-memory run's maps: one overlay per image and method on the original photo (the map
put back through the image's placement), flagged where the map says nothing; the flags also said on the
terminal."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_overlays(folder: Path, inputs: Any, maps: Mapping[str, Any]) -> dict[str, list[str]]:
    """One overlay PNG per image and method of `inputs` (a `data.inputs.Inputs`), on the original photo,
    flagged where the map says nothing; returns the relative paths per method."""
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
