"""Option parsing shared by commands: `key=value` settings, method lists, model sources."""

from __future__ import annotations

import json
from pathlib import Path
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


def load_model(source: str, weights: str | None = None, num_classes: int | None = None):
    """A model from a run folder / checkpoint file, or a registered model name (+ a local weights file).

    Returns `(model in eval mode, info)`; info holds the checkpoint header or the model's spec.
    """
    from attnscope import models
    from attnscope.models import checkpoint

    path = Path(source)
    if path.exists():
        if weights is not None:
            raise InputError("--weights goes with a model name, not with a checkpoint")
        return checkpoint.load(path)
    if source in models.names():
        cfg: dict[str, Any] = {}
        if weights is not None:
            cfg["weights"] = weights
        if num_classes is not None:
            cfg["num_classes"] = num_classes
        model = models.get(source, **cfg)
        return model.eval(), {"model": model.attnscope_spec, "info": {}}
    if any(ch in source for ch in "/\\.") :
        raise InputError(f"checkpoint not found: {source}")
    from attnscope.errors import UnknownNameError

    raise UnknownNameError("model or checkpoint", source, models.names())


def method_options(items: tuple[str, ...], flag: str = "--method-opt",
                   form: str = "METHOD.OPTION=VALUE") -> dict[str, dict[str, Any]]:
    """`("ig.steps=16", "gradcam.relu=false")` → `{"ig": {"steps": 16}, "gradcam": {"relu": False}}`."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_settings(items, flag).items():
        method, dot, option = key.partition(".")
        if not dot or not method or not option:
            raise InputError(f"{flag} must look like {form} (e.g. ig.steps=64), got {key!r}")
        out.setdefault(method, {})[option] = value
    return out


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """The `config.json` of a run folder as an object ({} when there is none); anything else is a `CheckpointError`."""
    from attnscope.errors import CheckpointError

    path = Path(folder) / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object (a run's settings), got {type(config).__name__}")
    return config


def record_final_out(run: Path, final: Path) -> None:
    """Write into a run's config.json the folder it will live in once its temporary folder is renamed."""
    from attnscope import fileio

    fileio.write_json(run / "config.json", {**read_run_config(run), "out": str(final)})


def existing_input(source: str, flag: str) -> Path | None:
    """`source` as a path when it exists (a regular file or a folder), else None; a FIFO or device is refused.

    Reading a FIFO blocks until something writes to it, and /dev/zero never ends.
    """
    path = Path(source)
    if not path.exists():
        return None
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{flag} {source} is not a regular file or folder (a FIFO, device or socket); give image "
                         "files or a folder of them")
    return path
