"""How a streamed run runs (`Streaming`): shard size, data-loading workers, resume or overwrite, a progress bar.

The same for `explain_dataset`, `bench_dataset` and `sanity_dataset`; the keywords it groups are accepted for
one release with a `DeprecationWarning` (`old_keywords`).
"""

from __future__ import annotations

from dataclasses import dataclass

from attnscope.deprecated import into, moved
from attnscope.errors import InputError
from attnscope.explain import HOW_KEYWORDS, into_how
from attnscope.stream.core import positive

STREAMING_KEYWORDS = ("shard_size", "workers", "resume", "overwrite", "progress")


@dataclass(frozen=True)
class Streaming:
    """`shard_size` consecutive images per shard file; `workers` DataLoader processes; `resume` an interrupted run
    in the output folder (its settings must match), or `overwrite` one this tool wrote; `progress`: a bar."""

    shard_size: int = 64
    workers: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        positive(shard_size=self.shard_size)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise InputError(f"workers must be an int >= 0, got {self.workers!r}")

    def run_shards(self) -> dict[str, object]:
        """The keywords of `stream.core.run_shards` this sets."""
        return {"resume": self.resume, "overwrite": self.overwrite, "workers": self.workers,
                "progress": self.progress}


def old_keywords(explains: bool = True):
    """Accept a streamed call's keywords of the last release (explain's, and those `Streaming` holds)."""

    def wrap(fn):
        fn = moved("streaming", STREAMING_KEYWORDS, into(Streaming))(fn)
        return moved("how", HOW_KEYWORDS, into_how)(fn) if explains else fn

    return wrap
