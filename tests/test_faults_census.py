"""Every case of `bench/faults_census.py`: one readable line and exit 2 (CLI) or a typed error (library),
nothing written. Cases whose outcome is decided by code that others are rewriting are strict xfails, so
they turn into failures (to be unmarked) the moment that code lands."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faults_census as census  # noqa: E402

PENDING = {"lead": "lead: explain", "h17": "h17: report"}
CASES = census.cases()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("census-fixtures")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return root, census.build_fixtures(root)


def _marks(case: census.Case) -> list:
    if case.pending:
        return [pytest.mark.xfail(strict=True, reason=PENDING[case.owner])]
    return []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(case, fixtures, tmp_path):
    root, fx = fixtures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = census.run_case(case, fx, root, tmp_path, seconds=120)
    assert outcome.ok, f"{outcome.detail} (wrote: {outcome.wrote})"


def test_the_census_counts_each_case_once():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 100
