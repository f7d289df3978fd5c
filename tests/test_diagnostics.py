"""convergence_warnings() on synthetic NUTS output with known properties: independent normal
draws (R-hat about 1, ESS about the number of draws) give no warning; each defect (chains
that disagree, divergences, saturated trees, too few draws) gives its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from ldpk.diagnostics import convergence_warnings
from ldpk.inference import FitOptions


@dataclass
class _Fit:
    posterior: object
    method: str = "nuts"
    options: FitOptions = field(default_factory=FitOptions)


def _fit(draws=500, shift=0.0, diverging=0, depth=3, seed=0):
    import arviz as az

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, draws))
    x[0] += shift
    stats = {
        "diverging": np.arange(4 * draws).reshape(4, draws) < diverging,
        "tree_depth": np.full((4, draws), depth),
        "energy": rng.standard_normal((4, draws)),
    }
    return _Fit(az.from_dict({"posterior": {"CL": x}, "sample_stats": stats}))


def test_independent_draws_give_no_warning():
    assert convergence_warnings(_fit()) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"shift": 3.0}, "R-hat"),
        ({"diverging": 3}, "3 divergent transitions"),
        ({"depth": 10}, "maximum tree depth (10)"),
        ({"draws": 60}, "ESS"),
    ],
)
def test_each_defect_is_named(kwargs, needle):
    warnings = convergence_warnings(_fit(**kwargs))
    assert any(needle in w for w in warnings), warnings
