"""Figures, reports and terminal tables (reads maps, metrics and run stores; never models)."""

from __future__ import annotations

from attnscope.report import figures
from attnscope.report.html import build

__all__ = ["build", "figures"]
