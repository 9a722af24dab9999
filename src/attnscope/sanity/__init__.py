"""Sanity checks of attention maps: model parameter and data randomisation (Adebayo et al., NeurIPS 2018)."""

from __future__ import annotations

from attnscope.sanity.blocks import INITS, Block, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.randomization import data_randomization, model_randomization
from attnscope.sanity.result import SanityResult

__all__ = [
    "CALIBRATIONS",
    "INITS",
    "Block",
    "SanityResult",
    "data_randomization",
    "model_randomization",
    "trace_blocks",
]
