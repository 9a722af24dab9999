"""Progress bars and tables on the terminal (rich). Below every layer, like `errors` and `fileio`.

rich is imported on first use, so that `attnscope --help` answers at once; `console.console` is the
shared stderr `Console`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


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


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table to the terminal; floats with 4 significant digits."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(str(c))
    for row in rows:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console().print(t)


def note(text: str) -> None:
    """One line on stderr about something the user should know (a replaced file, a fresh start, a bound)."""
    from rich.markup import escape

    _stderr().print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)
