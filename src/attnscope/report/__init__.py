"""Figures, reports and terminal tables (reads maps, metrics and run stores; never models)."""

from __future__ import annotations

from attnscope.report import colours, figures, flags
from attnscope.report.html import build
from attnscope.report.show import MapFigure, show

__all__ = ["MapFigure", "build", "colours", "figures", "flags", "show"]
