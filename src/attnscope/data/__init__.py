"""Offline data with ground truth, generated from scikit-learn's bundled digits; users' own folders."""

from __future__ import annotations

from attnscope.data.cluttered import ClutteredDigits, ClutterSample

__all__ = ["ClutterSample", "ClutteredDigits"]
