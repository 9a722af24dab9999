"""What the commands print: the leaderboard, sanity, interventions and demo tables at 80 columns
(`console.table` splits and elides; short column names with a legend under each table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The board's own column beside the metrics (whose short names and legends are declared with them).
TIME = {"ms_per_image": ("ms", "ms per image")}


def leaderboard_tables(rows: list[dict], columns: list[str], lower: list[str], n_images: int, data: str,
                       targets: str = "true class") -> list[tuple[str, list[str], list[list], dict[str, str]]]:
    """(title, short column names, cells, legend) per column group, then the time table, as `console.table`
    prints them; a column where lower is better is marked ↓."""
    from attnscope.evaluate import COLUMNS
    from attnscope.metrics.declare import header

    groups = {c: COLUMNS.get(c).group for c in columns} | {"ms_per_image": "time"}
    tables = []
    for group in dict.fromkeys(groups.values()):
        cols = [c for c in [*columns, "ms_per_image"] if groups[c] == group]
        heads = {c: TIME.get(c) or header(c) for c in cols}
        short = [heads[c][0].removesuffix("↓") + ("↓" if c in lower else "") for c in cols]
        legend = {name: heads[c][1] for c, name in zip(cols, short, strict=True) if heads[c][1] != c}
        legend |= {"↓": "lower is better"} if any(c in lower for c in cols) else {}
        if group == "time":
            tables.append(("time", ["method", "kind", *short], [[r["method"], r["kind"], *[r.get(c) for c in cols]]
                                                                for r in rows], legend))
            continue
        tables.append((f"{group}: {n_images} {data} test images, {targets}", ["method", *short],
                       [[r["method"], *[r.get(c) for c in cols]] for r in rows], legend))
    return tables


def print_leaderboard(board: Mapping[str, Any], data: str, targets: str = "true class") -> None:
    """A leaderboard's tables (from its JSON: meta and rows) on the terminal."""
    from attnscope import console

    meta = board["meta"]
    for table in leaderboard_tables(board["rows"], meta["columns"], meta["lower_is_better"], meta["images"], data,
                                    targets):
        console.table(*table)


def sanity_table(rows: list[dict[str, Any]], steps: list[str], metric: str, meta: Mapping[str, Any]):
    """(title, columns, cells) of one metric's means, blocks × methods, as `console.table` prints it."""
    rows = [r for r in rows if r["metric"] == metric]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["method"], r["block"]): r["mean"] for r in rows}
    table = [[s, *[cells.get((m, s)) for m in methods]] for s in steps]
    return f"{meta.get('test')}: {metric} (mean over {meta.get('images')} images)", ["randomised", *methods], table


def print_sanity(result: Any) -> None:
    """A sanity test's notes and its table of the first metric."""
    from attnscope import console

    for note in result.meta.get("notes", []):
        console.console.print(f"note: {note}", markup=False, highlight=False)
    console.table(*sanity_table(result.rows(), result.steps, result.meta["metrics"][0], result.meta))


def print_interventions(result: Any, title: str) -> None:
    """One table per method (probability drop and map mass per part), then every method's checks."""
    from attnscope import console

    for method in result.mass:
        console.table(f"{method}: {title}", ["part", "probability drop", "map mass", "n"],
                      [[r["part"], r["drop"], r["mass"], r["n"]] for r in result.table(method)])
    console.table("checks (mean over scenes)", ["method", "single deletion ρ", "top part", "background mass"],
                  [[r["method"], r["single_deletion"], r["top_part"], r["background_mass"]] for r in result.summary()])


def demo_table(summary: Mapping[str, Any]) -> tuple[str, list[str], list[tuple]]:
    """(title, columns, cells) of the demo's per-method scores, as `console.table` prints it."""
    rows = [(k, v["pointing"], v["energy_in_box"], v["ms_per_image"]) for k, v in summary["methods"].items()]
    return (f"demo: test accuracy {summary['test_acc']:.4f}, {summary['total_wall_s']} s",
            ["method", "pointing game", "energy in box", "ms / image"], rows)
