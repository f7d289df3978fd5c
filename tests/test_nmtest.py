"""NONMEM conformance: all 54 cases of ../shared/data/nmtest.csv (NONMEM 7.4.3 output) must
match cp at every observation to 1e-4 relative (1e-6·max absolute where cp < 1e-3·max)."""

from __future__ import annotations

import pytest

from tests._nmtest import compare


@pytest.fixture(scope="module")
def results(reference_data_dir):
    path = reference_data_dir / "nmtest.csv"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    return compare(path)


def test_all_54_cases_present(results):
    assert len(results) == 54


def test_every_case_matches_nonmem(results):
    failed = {k: v for k, v in results.items() if not v["passed"]}
    assert not failed, f"{len(failed)} case(s) differ from NONMEM: {failed}"


@pytest.mark.slow
def test_ode_kernel_matches_nonmem_too(reference_data_dir):
    """The same 54 cases through the diffrax kernel (about a minute; run with -m slow)."""
    results = compare(reference_data_dir / "nmtest.csv", method="ode")
    failed = {k: v for k, v in results.items() if not v["passed"]}
    assert len(results) == 54 and not failed, failed
