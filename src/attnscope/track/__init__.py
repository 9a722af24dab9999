"""Attention during training: `AttentionTracker` records maps and their measures into a run store, from any loop.

`FitTracker` is the callback through which `attnscope.train.fit` drives the same tracker.
"""

from __future__ import annotations

from attnscope.track.causal import CausalMeasures, Parts, parts_from
from attnscope.track.fit import FitTracker
from attnscope.track.measures import measure
from attnscope.track.probe import as_probe, probe_from
from attnscope.track.store import Probe, TrackStore
from attnscope.track.tracker import AttentionTracker

__all__ = ["AttentionTracker", "CausalMeasures", "FitTracker", "Parts", "Probe", "TrackStore", "as_probe", "measure",
           "parts_from", "probe_from"]
