"""`TrainConfig`: everything a training run depends on, saved as the run's `config.json`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from attnscope.errors import InputError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
# Fields that may change when a run is resumed (the rest must match the checkpoint's).
RESUMABLE = ("epochs", "resume", "out", "workers", "quiet", "device")
# What each annotation of TrainConfig accepts (bool is an int in Python, and is refused for numbers).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "text"), "int": ((int,), "an integer"), "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"), "dict[str, Any]": ((dict,), "an object"),
}


@dataclass
class TrainConfig:
    model: str = "smallcnn"
    data: str = "clutter"
    out: str = "runs/train"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    data_cfg: dict[str, Any] = field(default_factory=dict)
    n: int = 10_000  # training samples
    n_test: int = 2_000
    epochs: int = 5
    batch_size: int = 64  # global: split evenly over the processes of a distributed run
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    step_size: int = 1  # epochs between LR drops (schedule "step")
    gamma: float = 0.5  # LR factor at each drop (schedule "step")
    seed: int = 0
    data_seed: int = 0
    device: str = "auto"
    workers: int = 0
    resume: bool = False
    quiet: bool = False
    task_cfg: dict[str, Any] = field(default_factory=dict)  # options of the task (e.g. captioning loss)
    guide: str | None = None  # attention guidance (attnscope.guide: "rrr", "cam", "ltpa"; "sat" for captioning)
    guide_weight: float | None = None  # λ of the guidance penalty; None: the guide's default
    guide_region: str = "box"  # where attention is allowed: the object's "box", its "mask" or "not-decoy"

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} must be a finite number, got {getattr(self, name)}")
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.n >= 1 and self.n_test >= 1, f"n and n_test must be >= 1, got {self.n}, {self.n_test}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.gamma > 0, f"gamma must be > 0, got {self.gamma}"),
            (self.workers >= 0, f"workers must be >= 0 (0: load in the main process), got {self.workers}"),
            (self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}"),
            (0 <= self.seed < 2**63 and 0 <= self.data_seed < 2**63,
             f"seed and data_seed must be in 0 .. 2**63 - 1 (what torch and numpy take), got {self.seed!s:.40}, "
             f"{self.data_seed!s:.40}"),
            (self.guide_weight is None or (math.isfinite(self.guide_weight) and self.guide_weight >= 0),
             f"guide_weight must be a finite number >= 0, got {self.guide_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def _check_types(self) -> None:
        """Every field holds its annotated type (a config.json read back may hold anything)."""
        for f in dataclasses.fields(self):
            kind = str(f.type)
            optional = kind.endswith(" | None")
            value = getattr(self, f.name)
            if value is None and optional:
                continue
            accepted, label = _TYPES[kind.removesuffix(" | None")]
            if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
                raise InputError(f"{f.name} must be {label}, got {value!r:.60}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields (other than the resumable ones) in which `other` differs from this config."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUMABLE and a[k] != b[k]]
