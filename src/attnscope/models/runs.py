"""What a run folder says about its model's data: its `config.json` (the data seed, where it lives), and the
data set a checkpoint was trained on (`checkpoint_data`), which `bench`, `sanity` and the scripts draw test
images from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attnscope.errors import CheckpointError, InputError


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """The `config.json` of a run folder as an object ({} when there is none); anything else is a `CheckpointError`."""
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


def checkpoint_data(source: str | Path, header: dict[str, Any], data: str | None = None
                    ) -> tuple[str, int, dict[str, Any]]:
    """(data set name, seed, configuration) of the test images for a checkpoint: `data` when given (built with
    its defaults and the run's seed), else the data set the checkpoint records, with its configuration."""
    info = header.get("info", {})
    name = data or info.get("data")
    if name is None:
        raise InputError("the checkpoint does not record its data set; pass --data (e.g. --data clutter)")
    cfg = info.get("data_cfg", {}) if name == info.get("data") else {}
    if not isinstance(name, str) or not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: the checkpoint's info.data must be a name and info.data_cfg an object")
    seed = read_run_config(source).get("data_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CheckpointError(f"{Path(source) / 'config.json'}: data_seed must be an integer, got {seed!r}")
    return name, seed, dict(cfg)
