"""The claims tables at the top of the science docs are what experiments/claims.py computes from the results."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_half_rise_and_lag_by_hand() -> None:
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import learning_report as lr
    finally:
        sys.path.remove(str(EXPERIMENTS))
    epochs = [0, 1 / 3, 2 / 3, 1, 4 / 3]
    assert lr.half_rise(epochs, [0.1, 0.2, 0.5, 0.9, 0.9]) == 2 / 3  # half way from 0.1 to 0.9 is 0.5
    assert lr.half_rise(epochs, [0.1, 0.6, 0.2, 0.3, 0.5]) == 1 / 3  # to the last value, not the peak
    assert lr.half_rise(epochs, [0.5, 0.4, 0.1, 0.1, 0.1]) == 2 / 3  # falling, read from the values
    assert lr.half_rise(epochs, [0.3] * 5) != lr.half_rise(epochs, [0.3] * 5)  # flat: undefined (NaN)
    record = {"series": [{"epoch": e, "test_acc": a, "m/blankout_rho": r}
                         for e, a, r in zip(epochs, [0.1, 0.1, 0.2, 0.8, 0.9], [0.0, 0.5, 0.6, 0.6, 0.6], strict=True)]}
    assert lr.lag(record, "m/blankout_rho") == pytest.approx(1 / 3 - 1)  # the map rises two thirds of an epoch earlier
