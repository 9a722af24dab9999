"""Attention during training: `AttentionTracker` records maps and their measures into a run store."""

from __future__ import annotations

from attnscope.track.measures import measure
from attnscope.track.store import Probe, TrackStore
from attnscope.track.tracker import AttentionTracker, probe_from

__all__ = ["AttentionTracker", "Probe", "TrackStore", "measure", "probe_from"]
