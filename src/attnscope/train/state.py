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
    if header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an attnscope training state")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in header["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    scheduler.load_state_dict(header["scheduler"])
    return header


def latest_state(folder: Path) -> Path | None:
    """The training state of the highest completed epoch in `folder`, if any."""
    pattern = re.compile(r"epoch_(\d+)\.safetensors")
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.safetensors") if (m := pattern.fullmatch(p.name))]
    return max(found)[1] if found else None


def state_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.safetensors"
