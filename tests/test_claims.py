"""The claims tables at the top of the science docs are what experiments/claims.py computes from the results."""

from __future__ import annotations

import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def test_the_docs_claims_tables_equal_the_generated_ones() -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import claims
        import claims_list  # noqa: F401  (registers the claims)

        stale = [str(path) for doc, path in claims.documents() if claims.updated(path.read_text(), doc)
                 != path.read_text()]
    finally:
        sys.path.remove(str(EXPERIMENTS))
    assert not stale, f"run `PYTHONPATH=src python experiments/claims.py`: the tables of {stale} are stale"


def test_a_claim_verdict_follows_its_test() -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import claims
    finally:
        sys.path.remove(str(EXPERIMENTS))
    up = claims.diff_row("x", "p", {0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 1.1, 2: 1.9})
    assert up.verdict == "reproduced" and up.test.startswith("paired t-test, p = ")
    down = claims.diff_row("x", "p", {0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 1.1, 2: 1.9}, sign=-1)
    assert down.verdict == "contradicted"
    assert claims.diff_row("x", "p", {0: 0.47, 1: 0.46, 2: 0.46}, {0: 0.45, 1: 0.36, 2: 0.43}).verdict == "partly"
    assert claims.diff_row("x", "p", {0: 1.0}, {0: 0.0}).test == "1 seed, not tested"
    assert claims.diff_row("x", "p", {0: 1.0, 1: 2.1, 2: 2.9}, {0: 1.1, 1: 2.0, 2: 3.0}, sign=0).verdict.startswith(
        "reproduced")
