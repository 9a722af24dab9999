"""Weights files of any model: read safely, unwrap the usual containers, load with a one-line error on mismatch.

Accepted files: `.safetensors`, or a `.pt`/`.pth`/`.bin` torch file read with `weights_only=True`
(never a pickle that could run code). Training scripts save state dicts in a few wrappers —
`{"state_dict": ...}`, `{"model": ...}`, and keys prefixed `module.` by DataParallel/DDP — which
are unwrapped. A file that does not fit the model raises `CheckpointError` naming the first
missing, unexpected or mis-shaped keys, never a page of keys.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from attnscope.errors import CheckpointError

CONTAINERS = ("state_dict", "model", "model_state_dict", "module")  # keys a training script wraps weights in
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
SHOWN = 3  # keys named per kind of mismatch


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in `path` (safetensors or torch file), containers and prefixes unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights-only unpickler refused it; its advice is not repeated
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointError(f"cannot read weights from {path}: not a file of tensors that torch loads "
                                  "without running code") from None
        raise CheckpointError(f"{path} holds pickled Python objects ({found.group(1)}) besides tensors, which "
                              "attnscope never loads (they can run code); save model.state_dict() instead, or "
                              "convert it to .safetensors") from None
    except Exception as e:  # corrupt or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"cannot read weights from {path}: {type(e).__name__}: {first[:200]}") from None
    state = unwrap_state(state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (nor one under "
                              f"{', '.join(repr(k) for k in CONTAINERS)})")
    return state


def unwrap_state(state: object) -> object:
    """A state dict out of its usual containers, with `module.` / `_orig_mod.` key prefixes removed."""
    while isinstance(state, dict):
        inner = next((state[k] for k in CONTAINERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        return state
    for prefix in PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def head_classes(state: dict[str, torch.Tensor], heads: tuple[str, ...]) -> int | None:
    """The class count a state dict's classifier has: rows of the first of `heads` (weight keys) present."""
    for key in heads:
        weight = state.get(key)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


def last_linear_key(model: nn.Module) -> str | None:
    """The state-dict key of the weight of `model`'s last nn.Linear (its classifier head), or None."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return None if name is None else f"{name}.weight"


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly into `model`; one line naming the first mismatching keys when it does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shaped:
        parts = [f"{what} ({len(keys)}): {', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped))
                 if keys]
        raise CheckpointError(f"{source} does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state)
