"""Sanity checks of attention maps: model parameter and data randomisation (Adebayo et al., NeurIPS 2018)
and the repaired tests papers report now: sMPRT, eMPRT (Hedström et al. 2023), random-logit (Sixt et al. 2020)."""

from __future__ import annotations

from attnscope.sanity.blocks import INITS, Block, trace_blocks
from attnscope.sanity.calibration import CALIBRATIONS
from attnscope.sanity.randomization import data_randomization, model_randomization
from attnscope.sanity.repaired import emprt, random_logit, smprt
from attnscope.sanity.result import SanityResult
from attnscope.sanity.settings import Comparison, Randomisation

__all__ = [
    "CALIBRATIONS",
    "INITS",
    "Block",
    "Comparison",
    "Randomisation",
    "SanityResult",
    "data_randomization",
    "emprt",
    "model_randomization",
    "random_logit",
    "smprt",
    "trace_blocks",
]
