"""Checkpoints: safetensors weights with the model's spec in the file header, plus a JSON copy.

`save(model, path)` writes `path` (.safetensors) and `path.with_suffix(".json")`, each atomically.
The spec inside the safetensors header is authoritative, so a weights file is never paired with a
stale config. `load` accepts a run folder, a .safetensors file or its .json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnscope import fileio
from attnscope.errors import AttnscopeError, CheckpointError
from attnscope.modules import class_names, unwrap  # noqa: F401  (re-exported: checkpoint.unwrap)

FORMAT = "attnscope-checkpoint/1"
RUN_WEIGHTS = "model.safetensors"


def save(model: nn.Module, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write `model`'s weights and spec (from `attnscope.models.get`) plus `info` (epoch, metrics...)."""
    spec = getattr(unwrap(model), "attnscope_spec", None)
    if spec is None:
        raise CheckpointError("this model was not built by attnscope.models.get, so it has no spec to save")
    path = Path(path).with_suffix(".safetensors")
    names = class_names(model)
    if names is not None:  # what the outputs mean travels with the weights
        spec = {**spec, "class_names": list(names)}
    header = {"format": FORMAT, "model": spec, "info": info or {}}
    fileio.save_tensors(path, unwrap(model).state_dict(), header)
    fileio.write_json(path.with_suffix(".json"), header)
    return path


def resolve_path(path: str | Path) -> Path:
    """The weights file meant by a run folder, a .safetensors file or its .json."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_WEIGHTS
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The header (format, model spec, info) of a checkpoint, without loading its weights."""
    from safetensors import safe_open

    path = resolve_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if "attnscope" not in meta:
        raise CheckpointError(
            f"{path} is not an attnscope checkpoint (no attnscope header); "
            "for plain weights pass a model name with --weights"
        )
    try:
        header = json.loads(meta["attnscope"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt attnscope header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: unsupported checkpoint format {found!r} (expected {FORMAT!r})")
    spec, info = header.get("model"), header.get("info", {})
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{path}: the header's \"model\" must be an object with a \"name\"")
    if not isinstance(spec.get("config", {}), dict) or not isinstance(info, dict):
        raise CheckpointError(f"{path}: the header's model config and info must be objects, got "
                              f"{type(spec.get('config')).__name__} and {type(info).__name__}")
    return header


def load(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights; returns `(model in eval mode, header)`."""
    from safetensors.torch import load_file

    from attnscope import models

    path = resolve_path(path)
    header = read_header(path)
    spec = header["model"]
    try:
        model = models.get(spec["name"], **spec.get("config", {}))
        if "normalize" in spec:  # saved from `models.normalized(...)`: the wrapper comes back
            model = models.normalized(model, spec["normalize"])
        if "class_names" in spec:
            model = models.with_class_names(model, spec["class_names"])
    except AttnscopeError as e:
        raise CheckpointError(f"{path}: cannot rebuild model {spec['name']!r}: {e}") from None
    try:
        state = load_file(str(path), device=str(map_location))
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit model {spec['name']!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    return model.eval(), header
