"""Progress inside an explain call: who is listening hears each method start and finish and each rerun of
the model (a chunk of inputs), so a bar moves while IG, SmoothGrad, Score-CAM or occlusion run their
passes, not only between batches.

    with progress.reporting(lambda event, method, n: ...):   # event: "start" | "done" | "inputs"
        explain(model, images, ("gradcam", "ig"))

`explain.plan` reports "start" / "done" (n = images) around each method; every rerun through the
`Oracle` reports "inputs" (n = inputs run). Nothing is reported when no one listens (a context variable:
other threads and calls are not affected). Wrapped methods (`smoothgrad:gradcam`) report as one method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Listener = Callable[[str, "str | None", int], None]

_LISTENER: ContextVar[Listener | None] = ContextVar("attnscope_explain_progress", default=None)
_MUTED: ContextVar[bool] = ContextVar("attnscope_explain_progress_muted", default=False)


@contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """Call `listener(event, method, n)` for every event of the explain calls made inside the block."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@contextmanager
def muted() -> Iterator[None]:
    """Methods started inside (the inner calls of a wrapped method) are not reported; reruns still are."""
    token = _MUTED.set(True)
    try:
        yield
    finally:
        _MUTED.reset(token)


def method(event: str, name: str, n: int = 0) -> None:
    """Report that method `name` starts or is done ("start" / "done") for `n` images."""
    listener = _LISTENER.get()
    if listener is not None and not _MUTED.get():
        listener(event, name, n)


def inputs(n: int) -> None:
    """Report a rerun of the model on `n` inputs."""
    listener = _LISTENER.get()
    if listener is not None:
        listener("inputs", None, n)


def to_bar(bar: Any, images_per_method: bool = True) -> Listener:
    """A listener that moves a `console.progress` bar: by the images of each finished method (a bar of
    images × methods), and its text by the method running and the model passes it has made so far."""
    state = {"method": None, "passes": 0}

    def listen(event: str, name: str | None, n: int) -> None:
        if event == "start":
            state.update(method=name, passes=0)
            bar.advance(0, method=name)
        elif event == "inputs":
            state["passes"] += n
            bar.advance(0, method=state["method"], passes=state["passes"])
        elif event == "done":
            bar.advance(n if images_per_method else 0, method=name)

    return listen
