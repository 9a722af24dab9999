"""The report's tables: human headers, 3 significant digits, the best value per column marked, calibration
rows marked, and one sentence above each saying what is scored against what.

Headers come from the metric declarations (`metrics.declare`: the legend, ↓ where lower is better) or
`NAMES`; a column whose direction is known (a declared metric) marks its best value among the method
rows in bold. Calibration rows — maps that look at nothing (a centre cone, noise, an edge filter) — are
set apart in grey and say so: they are the level a method must beat, never a candidate for best.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from attnscope.console import cell as number_text
from attnscope.metrics.declare import METRICS, header

# Columns of the demo's summaries under their declared metric's name.
ALIASES = {"energy_in_box": "energy_box"}
NAMES = {"ms_per_image": "ms / image", "p_class": "p(class)", "class_name": "class", "name": "photo",
         "method": "method", "kind": "kind", "predicted": "predicted", "setting": "setting", "value": "value"}
CALIBRATION = frozenset({"centre", "random", "sobel", "random map", "edges"})
GROUP_WORDS = {
    "localisation": "against the ground-truth boxes or masks: how much of each map falls on the object",
    "faithfulness": "against the model's own score as the pixels a map ranks first are removed or kept",
    "robustness": "against the maps of slightly perturbed copies of the images: lower moves less",
    "complexity": "against nothing but the map itself: how concentrated it is",
}


def declared(column: str) -> str | None:
    """The declared metric a column stands for (its own name, or `ALIASES`), or None."""
    name = ALIASES.get(column, column)
    header(name)  # registers the metric families
    return name if name in METRICS else None


def human(column: str) -> tuple[str, str]:
    """(header, tooltip) of a column: a declared metric's legend (↓ where lower is better) and short name."""
    name = declared(column)
    if name is not None:
        metric = METRICS.get(name)
        arrow = "" if metric.higher_is_better else " ↓"
        return metric.legend + arrow, f"{metric.header} ({name})"
    return NAMES.get(column, column.replace("_", " ")), column


def is_calibration(row: Mapping[str, Any]) -> bool:
    """Whether a row is a calibration map (its kind says so, or its method is one of `CALIBRATION`)."""
    return row.get("kind") == "calibration" or str(row.get("method", "")) in CALIBRATION


def best_rows(rows: Sequence[Mapping[str, Any]], column: str) -> set[int]:
    """Indices of the rows holding the best value of a declared column among non-calibration rows (ties all)."""
    name = declared(column)
    if name is None:
        return set()
    higher = METRICS.get(name).higher_is_better
    values = {i: r.get(column) for i, r in enumerate(rows) if not is_calibration(r)}
    finite = {i: float(v) for i, v in values.items() if _number(v)}
    if len(finite) < 2:
        return set()
    top = max(finite.values()) if higher else min(finite.values())
    return {i for i, v in finite.items() if number_text(v) == number_text(top)}


def table(rows: Sequence[Mapping[str, Any]], sentence: str = "", columns: Sequence[str] | None = None) -> str:
    """An HTML table (in a box that scrolls on its own if it must) with `sentence` above it and a line under
    it saying what the marks and short headers mean."""
    rows = [{str(k): v for k, v in r.items()} for r in rows]
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    best = {c: best_rows(rows, c) for c in columns}
    head = "".join(f'<th title="{html.escape(tip)}">{html.escape(text)}</th>'
                   for text, tip in (human(c) for c in columns))
    body = []
    for i, r in enumerate(rows):
        calib = is_calibration(r)
        cells = "".join(_cell(r.get(c), best=i in best[c], tag=" (calibration)" if calib and c == "method" else "",
                              key=j == 0) for j, c in enumerate(columns))
        body.append(f'<tr class="calibration">{cells}</tr>' if calib else f"<tr>{cells}</tr>")
    marks = []
    if any(best.values()):
        marks.append("<b>bold</b>: the best value of a column among the methods")
    if any(is_calibration(r) for r in rows):
        marks.append('<span class="calibration">grey (calibration)</span>: a map that looks at nothing, the level '
                     "a method must beat")
    if any(human(c)[0].endswith("↓") for c in columns):
        marks.append("↓ lower is better")
    what = f'<p class="what">{html.escape(sentence)}</p>' if sentence else ""
    legend = f'<p class="note">{" · ".join(marks)}</p>' if marks else ""
    return (f'{what}<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table></div>{legend}")


def by_group(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("method",),
             most: int = 8) -> list[tuple[str, list[str]]]:
    """The rows' metric columns split by declared group (localisation, faithfulness, ...) and in parts of at
    most `most` columns (so a table fits the page), each led by `keys`; undeclared columns (ms / image) in a
    last group "other"."""
    columns = [c for c in dict.fromkeys(str(k) for r in rows for k in r) if c not in keys and c != "kind"]
    groups: dict[str, list[str]] = {}
    for c in columns:
        name = declared(c)
        groups.setdefault(METRICS.get(name).group if name else "other", []).append(c)
    out = []
    for g in [g for g in (*GROUP_WORDS, "other") if g in groups]:
        parts = [groups[g][i : i + most] for i in range(0, len(groups[g]), most)]
        out += [(g, [*keys, *part]) for part in parts]
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cell(value: Any, best: bool = False, tag: str = "", key: bool = False) -> str:
    if isinstance(value, bool):
        return f"<td>{value}</td>"
    if isinstance(value, (int, float)):
        text = html.escape(number_text(value))
        return f'<td class="num best"><b>{text}</b></td>' if best else f'<td class="num">{text}</td>'
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    text = f"{html.escape('' if value is None else str(value))}{html.escape(tag)}"
    return f'<td class="key">{text}</td>' if key else f"<td>{text}</td>"
