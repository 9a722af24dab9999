"""The claims tables at the top of the science docs, generated from `experiments/results/*` so that text and
numbers cannot drift.

Each claim is a function of the results files (registered with `@claim(doc)`) that returns one row: the
claim, the paper it comes from (or "ours"), our number with its 95 % CI, the seeds it rests on, the named
test with its p-value, and a verdict:

- **reproduced**: the effect has the paper's direction and the test rejects "no effect" (p < 0.05);
- **partly**: the direction holds but the test does not reject (p ≥ 0.05), or only part of the claim holds;
- **not reproduced**: no effect in the claimed direction;
- **contradicted**: a significant effect in the opposite direction.

A row whose results are not there says "not run" and why. The table of each doc sits between
`<!-- claims:begin -->` and `<!-- claims:end -->`; `--check` exits 1 when a doc differs from what the results
give (tests/test_claims.py runs it).

    PYTHONPATH=src python experiments/claims.py            # rewrite the tables
    PYTHONPATH=src python experiments/claims.py --check    # only compare
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnscope import stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
DOCS = ("ltpa", "sat", "guidance", "sanity", "vit", "learning")
OTHER = ("bench/README.md",)  # files with generated blocks only (no claims table)
ALPHA = 0.05


class Missing(Exception):
    """A results file the claim needs is not there."""


@dataclass(frozen=True)
class Row:
    claim: str
    paper: str
    number: str
    seeds: str
    test: str
    verdict: str


CLAIMS: dict[str, list[Callable[[], Row]]] = {doc: [] for doc in DOCS}
# Other generated blocks (tables of results): name → markdown, placed in a doc between
# `<!-- generated:NAME:begin -->` and `<!-- generated:NAME:end -->`.
BLOCKS: dict[str, Callable[[], str]] = {}


def block(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def add(fn: Callable[[], str]) -> Callable[[], str]:
        BLOCKS[name] = fn
        return fn
    return add


def claim(doc: str) -> Callable[[Callable[[], Row]], Callable[[], Row]]:
    def add(fn: Callable[[], Row]) -> Callable[[], Row]:
        CLAIMS[doc].append(fn)
        return fn
    return add


# -- reading results -----------------------------------------------------------------------------------------

def load(path: str) -> Any:
    """A results JSON under experiments/results (`Missing` when absent)."""
    p = RESULTS / path
    if not p.exists():
        raise Missing(path)
    return json.loads(p.read_text())


def runs(path: str) -> list[dict[str, Any]]:
    """The per-run records of a summary file ({"runs": [...]}) or of a folder of one JSON per run."""
    p = RESULTS / path
    if p.is_dir():
        return [json.loads(f.read_text()) for f in sorted(p.glob("*.json"))]
    return load(path)["runs"]


def by_seed(records: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float],
            **match: Any) -> dict[int, float]:
    """{seed: value(record)} over the records whose fields equal `match`."""
    out = {}
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            out[int(r["seed"])] = float(value(r))
    if not out:
        raise Missing(f"no run with {match}")
    return out


# -- comparisons -----------------------------------------------------------------------------------------------

def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float], list[int]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds], seeds


def verdict(test: stats.Test, sign: int, partial: bool = False) -> str:
    """The verdict of a test of a claimed effect of direction `sign` (+1: a > b; 0: a claim of *no* difference,
    reproduced when the test finds none — absence of evidence, so the CI says how small)."""
    if math.isnan(test.p):
        return "not tested"
    if sign == 0:
        return "reproduced (no difference found)" if test.p >= ALPHA else "contradicted"
    agrees = test.effect * sign > 0
    if test.p < ALPHA:
        return ("partly" if partial else "reproduced") if agrees else "contradicted"
    return "partly" if agrees else "not reproduced"


def diff_row(claim_text: str, paper: str, a: dict[int, float], b: dict[int, float], sign: int = 1,
             scale: float = 1.0, unit: str = "", digits: int = 2, what: str = "a − b",
             partial: bool = False, verdict_text: str | None = None) -> Row:
    """A row for "a exceeds b" (sign +1) or "a is below b" (sign −1), paired by seed: the mean difference with its
    t-interval over seeds, and the paired t-test."""
    xa, xb, seeds = paired(a, b)
    if len(seeds) < 2:
        return Row(claim_text, paper, f"{what}: {scale * (xa[0] - xb[0]):+.{digits}f}{unit}", f"{len(seeds)}",
                   "1 seed, not tested", verdict_text or "not tested")
    test = stats.paired_t(xa, xb)
    ci = stats.t_interval([scale * (x - y) for x, y in zip(xa, xb, strict=True)])
    number = (f"{what}: {ci.mean:+.{digits}f}{unit} [{ci.low:+.{digits}f}, {ci.high:+.{digits}f}] "
              f"({scale * sum(xa) / len(xa):.{digits}f} vs {scale * sum(xb) / len(xb):.{digits}f})")
    return Row(claim_text, paper, number, f"{len(seeds)} ({', '.join(map(str, seeds))})",
               f"paired t-test, {stats.p_text(test.p)}", verdict_text or verdict(test, sign, partial))


def against_row(claim_text: str, paper: str, a: dict[int, float], level: float, sign: int = 1, scale: float = 1.0,
                unit: str = "", digits: int = 2, what: str = "value", chance: str = "chance",
                partial: bool = False, verdict_text: str | None = None) -> Row:
    """A row for "a exceeds `level`" (sign +1) or "stays below it" (−1): one-sample t-test over seeds."""
    seeds = sorted(a)
    xs = [a[s] for s in seeds]
    if len(xs) < 2:
        return Row(claim_text, paper, f"{what}: {scale * xs[0]:.{digits}f}{unit} ({chance} {scale * level:.{digits}f})",
                   "1", "1 seed, not tested", verdict_text or "not tested")
    test = stats.paired_t(xs, [level] * len(xs))
    ci = stats.t_interval([scale * x for x in xs])
    number = (f"{what}: {ci.mean:.{digits}f}{unit} [{ci.low:.{digits}f}, {ci.high:.{digits}f}] "
              f"({chance} {scale * level:.{digits}f})")
    return Row(claim_text, paper, number, f"{len(seeds)} ({', '.join(map(str, seeds))})",
               f"one-sample t-test vs {chance}, {stats.p_text(test.p)}", verdict_text or verdict(test, sign, partial))


def one_seed_row(claim_text: str, paper: str, number: str, verdict_text: str = "not tested") -> Row:
    return Row(claim_text, paper, number, "1", "1 seed, not tested", verdict_text)


# -- rendering -------------------------------------------------------------------------------------------------

def table(doc: str) -> str:
    """The markdown table of `doc`'s claims."""
    lines = [BEGIN, "", "| claim | paper | our number (95 % CI) | seeds | test | verdict |", "| --- " * 6 + "|"]
    for fn in CLAIMS[doc]:
        try:
            r = fn()
        except Missing as e:
            name = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
            r = Row(name, "", f"not run: {e.args[0]} is missing", "–", "–", "not run")
        lines.append(f"| {r.claim} | {r.paper} | {r.number} | {r.seeds} | {r.test} | {r.verdict} |")
    lines += ["", "*Generated by `experiments/claims.py` from `experiments/results/`; the verdict is *reproduced* "
              "when the effect has the claimed direction and the named test gives p < 0.05, *partly* when the "
              "direction holds without p < 0.05 (or only part of the claim holds), *not reproduced* when it "
              "does not hold, *contradicted* for a significant opposite effect. CIs: Student-t over seeds.*",
              "", END]
    return "\n".join(lines)


def documents() -> list[tuple[str, Path]]:
    """(doc name or "", path) of every file the generator writes: the science docs and OTHER."""
    return [(doc, ROOT / "docs" / f"{doc}.md") for doc in DOCS] + [("", ROOT / p) for p in OTHER]


def updated(text: str, doc: str) -> str:
    """`text` (a doc) with its claims table replaced, or inserted after the title line (a doc without claims: as is),
    and every generated block it has a place for filled in."""
    for name, fn in BLOCKS.items():
        begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            try:
                body = fn()
            except Missing as e:
                body = f"*Not run yet: {e.args[0]} is missing.*"
            text = f"{head}{begin}\n\n{body.strip()}\n\n{end}{rest.split(end, 1)[1]}"
    if not CLAIMS.get(doc):
        return text
    table_ = table(doc)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + table_ + rest.split(END, 1)[1]
    title, _, body = text.partition("\n")
    return f"{title}\n\n{table_}\n{body}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if a doc differs")
    p.add_argument("--docs", nargs="+", default=list(DOCS), choices=DOCS)
    args = p.parse_args(argv)
    import claims_list  # noqa: F401  (registers the claims)

    stale = []
    for doc, path in documents():
        if doc and doc not in args.docs:
            continue
        text = path.read_text() if path.exists() else f"# {doc}\n"
        new = updated(text, doc)
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if stale:
        print(("differs from the results: " if args.check else "updated: ") + ", ".join(stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import claims  # the registry lives in the module `claims_list` imports, not in __main__

    sys.exit(claims.main())
