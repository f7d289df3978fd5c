"""Messages from the curvature at the mode: typical values the data do not inform (two
parallel clearances only identified as a sum) are named before sampling; a Laplace
approximation whose Hessian is not positive definite takes the prior's width along the flat
directions and says so instead of failing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.inference._driver import WeaklyInformedWarning
from ldpk.inference._marginal import _with_prior_curvature
from ldpk.inference._mode import _directions, _weakly_informed


def _lognormal(median: float, scale: float) -> dict:
    return {"dist": "lognormal", "loc": float(np.log(median)), "scale": scale}


def _model(two_clearances: bool) -> ldpk.Model:
    """One compartment, IV bolus; elimination by CL1 + CL2 (only their sum is identifiable
    from concentrations) or by CL alone."""
    params = {"V": {"value": 10.0, "unit": "L", "prior": _lognormal(10, 1.0)}}
    if two_clearances:
        params |= {
            "CL1": {"value": 1.0, "unit": "L/h", "prior": _lognormal(1, 1.0)},
            "CL2": {"value": 1.0, "unit": "L/h", "prior": _lognormal(1, 1.0)},
        }
        k = "(CL1 + CL2) / V"
    else:
        params["CL"] = {"value": 2.0, "unit": "L/h", "prior": _lognormal(2, 1.0)}
        k = "CL / V"
    return ldpk.build_model(
        {
            "name": "two_cl" if two_clearances else "one_cl",
            "compartments": {"central": {"unit": "mg"}},
            "parameters": params,
            "flows": [{"from": "central", "k": k}],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def _data(model: ldpk.Model) -> ldpk.Dataset:
    """One subject, 100 mg IV, cp = 10 exp(-0.2 t) (CL 2 L/h, V 10 L) with 5 % noise."""
    rng = np.random.default_rng(1)
    t = np.array([0.25, 0.5, 1, 2, 4, 6, 8, 12, 16, 24.0])
    cp = 10 * np.exp(-0.2 * t) * np.exp(0.05 * rng.standard_normal(t.size))
    rows = [{"ID": 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "ROUTE": "iv", "DV": np.nan}]
    rows += [{"ID": 1, "TIME": ti, "EVID": 0, "AMT": 0.0, "ROUTE": "", "DV": c} for ti, c in zip(t, cp, strict=True)]  # fmt: skip
    return ldpk.read_data(model, pd.DataFrame(rows))


CONFIG = {"error": {"cp": {"model": "proportional"}}}


def test_a_sum_of_clearances_is_named_before_sampling():
    model = _model(two_clearances=True)
    with pytest.warns(WeaklyInformedWarning, match=r"hardly inform \(CL[12] - CL[12]\)") as rec:
        fit = ldpk.fit(model, _data(model), config=CONFIG, method="laplace", draws=200, progress=False)  # fmt: skip
    assert len([w for w in rec if issubclass(w.category, WeaklyInformedWarning)]) == 1
    # kept with the fit, first among its warnings; V (well informed) is not named
    first = fit.convergence()[0]
    assert "CL1" in first and "CL2" in first and "V" not in first.split("(sampler")[0]
    # the sum is informed: CL1 + CL2 ≈ 2 L/h (the truth) within 15 %, the SD of its log below
    # the prior's (about 0.75 for two lognormal(0, 1); the normal approximation in the logs
    # of CL1 and CL2 widens a sum that lies on a curved ridge there)
    total = fit.draws("CL1") + fit.draws("CL2")
    assert abs(np.median(total) - 2.0) < 0.3 and np.std(np.log(total)) < 0.5


def test_an_identified_model_gets_no_message():
    model = _model(two_clearances=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeaklyInformedWarning)
        fit = ldpk.fit(model, _data(model), config=CONFIG, method="laplace", draws=200, progress=False)  # fmt: skip
    assert not any("hardly inform" in w for w in fit.convergence())


def test_weakly_informed_directions_against_a_hand_made_curvature():
    """Prior N(0, 1) on (a, b, c); the data inform a + b strongly and c strongly, a - b not
    at all: the one weak direction is (a - b); c and the sum are not named."""
    prior = np.eye(3)
    s = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    data = 400 * np.outer(s, s) + np.diag([0, 0, 400.0])
    out = _weakly_informed(prior + data, prior, ["a", "b", "c"], {"a", "b", "c"})
    assert len(out) == 1 and ("(a - b)" in out[0] or "(b - a)" in out[0])
    assert _weakly_informed(prior + data + 400 * np.eye(3), prior, ["a", "b", "c"], {"a", "b", "c"}) == []  # fmt: skip
    # subject effects are integrated out (Schur complement), not judged
    h = np.block([[prior + data, np.zeros((3, 1))], [np.zeros((1, 3)), np.eye(1) * 5]])
    p = np.block([[prior, np.zeros((3, 1))], [np.zeros((1, 3)), np.eye(1)]])
    assert len(_weakly_informed(h, p, ["a", "b", "c", "eta_a[0]"], {"a", "b", "c"})) == 1


def test_a_hessian_that_is_not_positive_definite_takes_the_prior_width():
    """Eigenvalues (4, 0, -1) along e1, (e2 + e3)/√2, (e2 - e3)/√2; prior curvature 2·I: the
    regularised matrix keeps 4 along e1 and puts 2 (the prior's) along both others."""
    v = np.array([[1, 0, 0], [0, 1, 1], [0, 1, -1]], dtype=float).T
    v[:, 1:] /= np.sqrt(2)
    hess = v @ np.diag([4.0, 0.0, -1.0]) @ v.T
    fixed, flat = _with_prior_curvature(hess, 2 * np.eye(3))
    np.testing.assert_allclose(fixed, v @ np.diag([4.0, 2.0, 2.0]) @ v.T, atol=1e-12)
    assert flat.shape == (3, 2)
    text = _directions(flat, ["KA", "CL1", "CL2"])
    assert "CL1" in text and "CL2" in text and "KA" not in text


def test_laplace_with_a_saddle_at_the_map_warns_and_still_draws(monkeypatch):
    """The joint Laplace (no subject effects) at a MAP whose Hessian is not positive definite
    (here made so: the curvature along log CL negated) no longer fails: it warns naming CL
    and draws with the prior's width along it (lognormal(log 2, 1): SD 1 of log CL)."""
    import dataclasses

    import ldpk.inference._driver as driver

    real = driver._map

    def saddle(*args, **kwargs):
        mode = real(*args, **kwargs)
        pos = int(np.asarray(mode.positions()["CL"]))
        h = np.array(mode.hessian)
        h[pos, :] = h[:, pos] = 0.0
        h[pos, pos] = -1.0
        return dataclasses.replace(mode, hessian=h, cov=None)

    monkeypatch.setattr(driver, "_map", saddle)
    model = _model(two_clearances=False)
    with pytest.warns(UserWarning, match=r"curved the wrong way at the MAP along CL"):
        fit = ldpk.fit(model, _data(model), config=CONFIG, method="laplace", draws=2000, progress=False)  # fmt: skip
    sd = np.std(np.log(fit.draws("CL")))
    assert 0.9 < sd < 1.1  # the prior's width (SD 1), within Monte-Carlo error of 2000 draws


@pytest.mark.parametrize("how", ["zeros", "censored"])
def test_all_zero_or_all_censored_observations_are_named(how):
    from ldpk.population import UninformativeDataWarning, check_fit_inputs, fit_spec

    model = _model(two_clearances=False)
    rows = [{"ID": 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "ROUTE": "iv", "DV": np.nan, "BLQ": 0}]  # fmt: skip
    rows += [{"ID": 1, "TIME": t, "EVID": 0, "AMT": 0.0, "ROUTE": "", "DV": 0.0 if how == "zeros" else 0.1, "BLQ": int(how == "censored")} for t in (1.0, 2.0, 4.0)]  # fmt: skip
    ds = ldpk.read_data(model, pd.DataFrame(rows))
    spec = fit_spec(model, ds, {"error": {"cp": {"model": "additive"}}})
    says = "every uncensored one is exactly 0" if how == "zeros" else "every one is censored"
    with pytest.warns(UninformativeDataWarning, match=f"3 observations of output 'cp', {says}"):
        check_fit_inputs(model, ds, spec)
    # one informative observation among them: no warning
    rows[1]["DV"], rows[1]["BLQ"] = 5.0, 0
    ds = ldpk.read_data(model, pd.DataFrame(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UninformativeDataWarning)
        check_fit_inputs(model, ds, fit_spec(model, ds, {"error": {"cp": {"model": "additive"}}}))
