"""Parameter recovery on the bundled example studies (slow: minutes per study on 2 cores).

Each study was simulated from recorded true values (``examples/data/<study>.truth.json``);
fitted with its own fit config by the marginal Laplace approximation, the central 90 %
intervals of the population parameters with a true value (typical values, between-subject
SDs, residual SDs) must contain it. Even a calibrated method misses each truth with
probability 0.1, so for n parameters the test allows the misses of a Binomial(n, 0.1) up to
its 99th percentile (n = 15: at most 5) and no true value further than one interval width
outside its interval. ``benchmarks/recovery.py`` runs the same fits and records the numbers
in ``benchmarks/results/recovery.json`` (mitochondria: 15/15 covered; EV: 13/15, K_SPLEEN
0.9 against [0.91, 0.97] and the plasma proportional SD 0.10 against [0.055, 0.094]).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.slow
@pytest.mark.parametrize("study", ["mitochondria_iv_biodistribution", "ev_89zr_pet"])
def test_laplace_intervals_cover_the_truth(study):
    import recovery

    r = recovery.recover(study, "laplace", {"draws": 1000}, seed=0)
    params = r["parameters"]
    assert len(params) >= 5, params  # the check compared something
    missed = {n: params[n] for n in r["not_covered"]}
    assert len(missed) <= stats.binom.ppf(0.99, len(params), 0.1), missed
    for n, p in missed.items():
        width = p["q95"] - p["q05"]
        assert p["q05"] - width <= p["true"] <= p["q95"] + width, (n, p)
