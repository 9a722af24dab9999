"""What a store written from any loop adds to the report: its x axis (epochs when known, else steps) and the
loop's own scalars (`AttentionTracker.log`) as curves whose cursor follows the snapshot slider."""

from __future__ import annotations

from collections.abc import Iterable

from attnscope.report.charts import line_chart
from attnscope.track.store import TrackStore


def axis(store: TrackStore) -> str:
    """"epoch" when every snapshot and scalar row has an epoch, else "step" (a loop that gave only steps)."""
    rows = [*store.snapshots, *store.scalars()]
    return "epoch" if all(r.get("epoch") is not None for r in rows) else "step"


def curve_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Chart title → the curves it shows: `train_X` and `test_X` share the chart "X"; other names have their own."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split("_", 1)[1] if name.startswith(("train_", "test_")) else name, []).append(name)
    return groups


def scalars_section(store: TrackStore, x: str) -> str:
    """One chart per logged scalar (train_/test_ pairs share one), against `x`."""
    rows = store.scalars()
    names = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "epoch")))
    if not names:
        return ""
    charts = [line_chart({n: [(r[x], r.get(n)) for r in rows if n in r] for n in group}, title, x_label=x,
                         cursor=True) for title, group in curve_groups(names).items()]
    return (f'<h2>Logged during training</h2><p class="note">The training loop\'s own scalars '
            f'(<code>AttentionTracker.log</code>), per {x}.</p><div class="charts">{"".join(charts)}</div>')
