"""Typed exceptions. Every error attnscope raises on purpose derives from `AttnscopeError`.

This module sits below every layer in DESIGN.md: any module may import it.
The CLI turns an `AttnscopeError` into one readable line and exit status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AttnscopeError(Exception):
    """Base class for errors caused by what the user passed in (not by a bug)."""


class UnknownNameError(AttnscopeError, KeyError):
    """A method, model, dataset or layer name that is not known."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
        super().__init__(f"unknown {kind} {name!r}.{hint} Known: {shown}")
        self.kind, self.name, self.known, self.close = kind, name, known, close

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class InputError(AttnscopeError, ValueError):
    """Input of the wrong shape, type, range or content (images, targets, options)."""


class CheckpointError(AttnscopeError):
    """A checkpoint that is missing, corrupt, or was written for something else."""


class DataError(AttnscopeError):
    """A data set or data file that is missing, malformed or incomplete."""


class NotApplicableError(AttnscopeError):
    """A method that does not apply to the given model (e.g. `ltpa` on a ResNet)."""


class TrainingError(AttnscopeError, FloatingPointError):
    """Training that cannot go on with the settings given (e.g. the loss became NaN or infinite)."""
