"""Progress bars and tables on the terminal (rich). Below every layer, like `errors` and `fileio`.

rich is imported on first use, so that `attnscope --help` answers at once; `console.console` is the
shared stderr `Console`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text


@cache
def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def __getattr__(name: str) -> Any:
    if name == "console":
        return _stderr()
    raise AttributeError(f"module 'attnscope.console' has no attribute {name!r}")


class Bar:
    """A handle on one progress bar: `advance(n, **fields)` moves it and updates its text fields."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, info=info)


@contextmanager
def progress(total: int, description: str, enabled: bool = True) -> Iterator[Bar]:
    """A progress bar of `total` steps (shown on stderr; a no-op when disabled)."""
    if not enabled:
        yield Bar(None, None)
        return
    import rich.progress as bars

    columns = (
        bars.TextColumn("[bold]{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
        bars.TimeElapsedColumn(), bars.TimeRemainingColumn(), bars.TextColumn("{task.fields[info]}"),
    )
    with bars.Progress(*columns, console=_stderr(), transient=False, disable=not sys.stderr) as p:
        yield Bar(p, p.add_task(description, total=total, info=""))


def cell(value: Any) -> str:
    """A table cell: numbers to 3 significant digits (whole numbers from 100 up), NaN and None as "–"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–" if value is None or value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def elide_middle(text: str, limit: int) -> str:
    """`text` cut in its middle to `limit` characters, so that both ends stay readable."""
    from rich.cells import cell_len

    if cell_len(text) <= limit:
        return text
    keep = max(limit - 1, 2)
    head = (keep + 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - head):]


def fit_tables(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int = 80,
               legend: Mapping[str, str] | None = None, keys: int = 1, max_cell: int = 24) -> list[Table | Text]:
    """Tables that fit `width` columns with no cell cut: cells as `cell` gives them (text longer than
    `max_cell` elided in the middle), and the columns split over several tables (each repeating the
    first `keys` columns) when they do not fit side by side; `legend` explains short column names."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    header = [str(c) for c in columns]
    body = [[elide_middle(cell(v), max_cell) for v in row] for row in rows]
    widths = [max([cell_len(header[j])] + [cell_len(r[j]) for r in body]) for j in range(len(header))]
    cost = lambda js: sum(widths[j] + 3 for j in js) + 1  # padding 1 + 1 and one border per column
    parts: list[list[int]] = []
    for j in range(keys, len(header)):
        if parts and cost([*range(keys), *parts[-1], j]) <= width:
            parts[-1].append(j)
        else:
            parts.append([j])
    parts = parts or [[]]
    out: list[Table | Text] = []
    for n, part in enumerate(parts, start=1):
        shown = [*range(keys), *part]
        suffix = f" ({n}/{len(parts)})" if len(parts) > 1 else ""
        t = Table(title=title + suffix, title_justify="left")
        for j in shown:
            t.add_column(header[j], no_wrap=True, overflow="ellipsis")
        for row in body:
            t.add_row(*[row[j] for j in shown])
        out.append(t)
    if legend:
        out.append(Text(" · ".join(f"{k}: {v}" for k, v in legend.items()), style="dim"))
    return out


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
          legend: Mapping[str, str] | None = None, to: Console | None = None) -> None:
    """Print a table to the terminal (stdout), fitted to its width by `fit_tables`."""
    from rich.console import Console

    to = to or Console()
    for part in fit_tables(title, columns, rows, width=to.width, legend=legend):
        to.print(part)


def note(text: str) -> None:
    """One line on stderr about something the user should know (a replaced file, a fresh start, a bound)."""
    from rich.markup import escape

    _stderr().print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


def brief(value: Any, limit: int = 6) -> str:
    """A value in a few characters, for a `repr`: a tensor by its shape (small integer ones by their values),
    dtype and device; a list by its first items and its length; text cut at 40 characters."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() <= limit and not value.is_floating_point() and value.dim() <= 1:
            return str(value.tolist())
        where = "" if value.device.type == "cpu" else f", {value.device}"
        grad = ", grad" if value.requires_grad else ""
        return f"tensor({tuple(value.shape)}, {str(value.dtype).removeprefix('torch.')}{where}{grad})"
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        shown = ", ".join(brief(v, limit) for v in value[:3])
        more = f", … {len(value)} in all" if len(value) > 3 else ""
        return f"[{shown}{more}]" if isinstance(value, list) else f"({shown}{more})"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def brief_fields(value: Any, limit: int = 6) -> str:
    """`Name(field=brief, ...)` of a NamedTuple: a data sample in one short line instead of every pixel."""
    shown = ", ".join(f"{k}={brief(v, limit)}" for k, v in zip(value._fields, value, strict=True))
    return f"{type(value).__name__}({shown})"
