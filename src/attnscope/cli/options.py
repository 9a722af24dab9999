"""Option values of the command line as Python values: `key=value` settings, name lists, method options, sizes
and the fit of photos to one input size."""

from __future__ import annotations

import json
from typing import Any

from attnscope.errors import InputError


def parse_settings(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """`("widths=[16,32]", "dropout=0.1")` → `{"widths": [16, 32], "dropout": 0.1}` (values as JSON, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} must look like key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_list(text: str, what: str) -> list[str]:
    """"a,b, c" → ["a", "b", "c"]; an empty list raises."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError(f"{what}: give at least one name")
    return items


def method_options(items: tuple[str, ...], flag: str = "--method-opt",
                   form: str = "METHOD.KEY=VALUE") -> dict[str, dict[str, Any]]:
    """`("ig.steps=16", "gradcam.relu=false")` → `{"ig": {"steps": 16}, "gradcam": {"relu": False}}`."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_settings(items, flag).items():
        method, dot, option = key.partition(".")
        if not dot or not method or not option:
            raise InputError(f"{flag} must look like {form} (e.g. ig.steps=64), got {key!r}")
        out.setdefault(method, {})[option] = value
    return out


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """"224" → (224, 224); "224,320" or "224x320" → (224, 320)."""
    parts = text.replace("x", ",").split(",")
    try:
        hw = [int(p) for p in parts]
    except ValueError:
        hw = []
    if len(hw) == 1:
        hw *= 2
    if len(hw) != 2 or min(hw) < 1:
        raise InputError(f"{flag} must be S or H,W (positive integers), got {text!r}")
    return _bounded(hw[0], flag, text), _bounded(hw[1], flag, text)


MAX_SIDE = 4096  # pixels per side of the model's input: 20000 px asked for tens of GB before the first map


def _bounded(side: int, flag: str, text: str) -> int:
    if side > MAX_SIDE:
        raise InputError(f"{flag} {text}: at most {MAX_SIDE} pixels per side (one {side}×{side} RGB image alone "
                         f"takes {12 * side * side / 2**30:.1f} GB as float32, before its maps and gradients)")
    return side


def parse_fit(resize: str | None, crop: str | None, pad: bool, size: str | None):
    """The `data.geometry.Fit` that `--resize`, `--crop`, `--pad` and `--size` ask for (None: none asked)."""
    from attnscope.data.geometry import Fit

    if size is not None:
        if resize is not None or crop is not None or pad:
            raise InputError("--size squashes every image to one size; leave it out with --resize/--crop/--pad")
        return Fit("exact", parse_size(size))
    if resize is None:
        if crop is not None or pad:
            from attnscope.data.inputs import RESIZE_HINT

            raise InputError(f"--crop and --pad go with --resize, e.g. {RESIZE_HINT}")
        return None
    how, eq, value = resize.partition("=")
    if not eq:
        return Fit("exact", parse_size(resize, "--resize"), _crop(crop, None), None if not pad else _bad_pad())
    if how not in ("shorter", "longer") or not value.isdigit() or int(value) < 1:
        raise InputError(f"--resize must be shorter=S, longer=S, S or H,W, got {resize!r}")
    side = _bounded(int(value), "--resize", resize)
    if pad and how != "longer":
        _bad_pad()
    return Fit(how, side, _crop(crop, side if how == "shorter" else None), (side, side) if pad else None)


def _crop(text: str | None, side: int | None) -> tuple[int, int] | None:
    if text is None:
        return None
    how, eq, value = text.partition("=")
    if how != "center":
        raise InputError(f"--crop must be center, center=S or center=H,W, got {text!r}")
    if eq:
        return parse_size(value, "--crop center=")
    if side is None:
        raise InputError("--crop center needs its size: --resize shorter=S --crop center, or --crop center=H,W")
    return side, side


def _bad_pad():
    raise InputError("--pad keeps the whole photo and pads it to a square: use it with --resize longer=S")
