"""The tracker's optional TensorBoard log: measures and scalars as scalars, maps over the first probe images."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from attnscope.errors import InputError
from attnscope.track.store import Probe


class Board:
    """A `SummaryWriter` opened once the tracker knows its step (so a resumed run purges later events)."""

    def __init__(self, writer_class: Any) -> None:
        self.writer_class, self.writer = writer_class, None

    @classmethod
    def check(cls) -> Board:
        """A board, or `InputError` at once when the tensorboard package is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return cls(SummaryWriter)

    def open(self, folder: Path, purge_step: int | None) -> None:
        self.writer = self.writer_class(str(folder), purge_step=purge_step)

    def scalars(self, prefix: str, step: int, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if key not in ("step", "epoch") and value is not None:
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def snapshot(self, step: int, measures: Mapping[str, Any], probe: Probe, values: Mapping[str, torch.Tensor],
                 shown: int = 8) -> None:
        """Measures as scalars; per map key, the first `shown` probe images with the map over them."""
        from matplotlib import colormaps

        from attnscope.maps import normalize

        self.scalars("track", step, measures)
        images = probe.images[:shown].float().clamp(0, 1)  # (n, C, H, W)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        for key, maps in values.items():
            heat = torch.from_numpy(colormaps["jet"](normalize(maps[:shown]).numpy())[..., :3]).permute(0, 3, 1, 2)
            blended = 0.5 * images + 0.5 * heat.float()  # (n, 3, H, W)
            self.writer.add_image(f"maps/{key}", torch.cat(list(blended), dim=2), step)  # (3, H, n·W)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
