"""Training state (model, optimizer, schedule, epoch) saved per epoch for `--resume`, without pickle.

Tensors go into a safetensors file; everything else (optimizer hyper-parameters, step counts,
the schedule's position) into its JSON header. Written atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnscope import fileio
from attnscope.errors import CheckpointError

STATE_FORMAT = "attnscope-train-state/1"


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               epoch: int, config: dict[str, Any]) -> None:
    """Everything needed to continue after `epoch` (1-based, completed)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_meta: dict[str, dict[str, Any]] = {}
    for idx, slot in opt["state"].items():
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                opt_meta.setdefault(str(idx), {})[key] = value
    header = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "config": config,
        "param_groups": opt["param_groups"],
        "optim_scalars": opt_meta,
        "scheduler": scheduler.state_dict(),
    }
    fileio.save_tensors(path, tensors, header)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore `model`, `optimizer`, `scheduler` from `path`; returns the header (epoch, config)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["attnscope"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"cannot read training state {path}: {type(e).__name__}: {e}") from None
    _check_header(path, header)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise CheckpointError(f"{path}: tensor {key!r} is not an optimizer state (optim.<index>.<name>)")
            state.setdefault(int(parts[1]), {})[parts[2]] = value
    for idx, scalars in header["optim_scalars"].items():
        if not str(idx).isdigit() or not isinstance(scalars, dict):
            raise CheckpointError(f"{path}: optim_scalars must map parameter indices to objects")
        state.setdefault(int(idx), {}).update(scalars)
    if len({frozenset(slot) for slot in state.values()}) > 1:  # e.g. one parameter's exp_avg is missing
        raise CheckpointError(f"{path}: the optimizer state is incomplete (parameters hold different entries)")
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})
        scheduler.load_state_dict(header["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        reason = " ".join(str(e).split())  # torch lists missing keys over several lines
        raise CheckpointError(f"{path} does not fit this run: {reason[:300]}") from None
    return header


# The header fields of a training state and the type each must have.
_HEADER = {"epoch": (int, "an integer"), "config": (dict, "an object"), "param_groups": (list, "a list"),
           "optim_scalars": (dict, "an object"), "scheduler": (dict, "an object")}


def _check_header(path: Path, header: Any) -> None:
    """Refuse a header that is not an attnscope training state, or whose epoch is not the file's."""
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an attnscope training state")
    for key, (kind, label) in _HEADER.items():
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: header field {key!r} must be {label}, got {value!r:.60}")
    m = re.fullmatch(r"epoch_(\d+)\.safetensors", path.name)
    if m is not None and header["epoch"] != int(m.group(1)):
        raise CheckpointError(f"{path}: the header says epoch {header['epoch']}, the file name {int(m.group(1))}")
    if header["epoch"] < 1 or not all(isinstance(g, dict) for g in header["param_groups"]):
        raise CheckpointError(f"{path}: epoch must be >= 1 and param_groups a list of objects")


def latest_state(folder: Path) -> Path | None:
    """The training state of the highest completed epoch in `folder`, if any."""
    pattern = re.compile(r"epoch_(\d+)\.safetensors")
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.safetensors") if (m := pattern.fullmatch(p.name))]
    return max(found)[1] if found else None


# What fileio.atomic_path leaves when a run is killed while writing: `.<name>.XXXXXXXX.tmp` beside the file.
_RUN_TEMP = re.compile(r"\.(epoch_\d+\.safetensors|model\.safetensors|model\.json|metrics\.jsonl|config\.json)"
                       r"\.[a-z0-9_]{8}\.tmp")


def clear_temporaries(out: Path) -> list[Path]:
    """Remove the temporary files a killed run left in run folder `out` and its `checkpoints/` (the names
    `fileio.atomic_path` gives the run's own files; regular files only); returns them."""
    removed = []
    for folder in (out, out / "checkpoints"):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if _RUN_TEMP.fullmatch(entry.name) and not entry.is_symlink() and entry.is_file():
                entry.unlink()
                removed.append(entry)
    return removed


def state_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.safetensors"
