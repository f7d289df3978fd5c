"""D-optimal sampling times (``ldpk.design.optimise_times``) against independent oracles: the
closed-form two-point design of ``../shared/design/README.md`` (y = (D/V)e^(−kt), (V, k),
two samples in [t_min, T]: constant-variance error t1 = t_min, t2 = t_min + 1/k; proportional
error the two ends), from both the gradient and the exchange method; a PopED-like warfarin
design, where the two methods must agree; constraints; singular FIMs; bad inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ldpk
from ldpk import design as dz
from ldpk.errors import DataError
from tests.design_cases import one_compartment

V, K, DOSE, T_END = 10.0, 0.5, 100.0, 4.0
IV = [ldpk.Bolus(DOSE, route="iv")]


@pytest.fixture(scope="module")
def pk1() -> ldpk.Model:
    return one_compartment({"V": V, "k": K}, "k")


def _two_point(times: list[float], residual: dz.Residual, n: float = 1) -> dz.Design:
    return dz.Design(
        groups=[dz.Group(n=n, times=times, regimen=IV)],
        output="cp",
        fixed_effects={"V": V, "k": K},
        residual=residual,
    )


CONST = dz.Residual(additive=0.04, estimate=False)
PROP = dz.Residual(proportional=0.01, estimate=False)


def _closed_form_ln_det(t1: float, t2: float) -> float:
    """ln det FIM of the two-point design, constant variance σ² = 0.04 (derivation in the
    README): (D/V)^4 e^(−2k(t1+t2)) (t2 − t1)² / (V² σ⁴)."""
    return float(np.log((DOSE / V) ** 4 * np.exp(-2 * K * (t1 + t2)) * (t2 - t1) ** 2 / (V**2 * 0.04**2)))  # fmt: skip


# ---- the closed-form two-point design -------------------------------------------------------
@pytest.mark.parametrize("t_min", [0.0, 0.25])
def test_gradient_finds_the_analytic_two_point_design(pk1, t_min):
    r = dz.optimise_times(pk1, _two_point([1.0, 3.0], CONST), windows=(t_min, T_END), starts=2)
    (t,) = r.times
    assert r.method == "gradient" and r.starts == 2 and r.converged >= 1
    assert abs(t[0] - t_min) <= 1e-6
    assert abs(t[1] - (t_min + 1 / K)) <= 1e-3 * (t_min + 1 / K)
    # the reported ln det is the closed form's, and so is the efficiency against the start
    np.testing.assert_allclose(r.ln_det, _closed_form_ln_det(t[0], t[1]), rtol=1e-10)
    eff = np.exp((_closed_form_ln_det(*t) - _closed_form_ln_det(1.0, 3.0)) / 2)
    np.testing.assert_allclose(r.efficiency, eff, rtol=1e-10)
    assert list(r.start.groups[0].times) == [1.0, 3.0]


def test_exchange_finds_the_grid_point_nearest_the_analytic_design(pk1):
    """On a grid whose step (0.03) does not divide 1/k = 2, the best pair is t1 = 0 and t2
    the grid point nearest 2 (ln det is concave in t2 near its optimum, −2k·t2 + 2 ln t2)."""
    grid = np.round(np.arange(0.0, T_END + 1e-9, 0.03), 10)
    r = dz.optimise_times(pk1, _two_point([1.02, 3.0], CONST), grid=grid)
    (t,) = r.times
    assert r.method == "exchange" and r.converged == 1
    assert t[0] == 0.0
    assert t[1] == grid[np.argmin(np.abs(grid - 1 / K))]
    # an exhaustive search over the grid pairs agrees (closed form)
    best = max(((a, b) for i, a in enumerate(grid) for b in grid[i + 1 :]), key=lambda p: _closed_form_ln_det(*p))  # fmt: skip
    assert tuple(t) == best


@pytest.mark.parametrize("method", ["gradient", "exchange"])
def test_proportional_error_samples_the_window_ends(pk1, method):
    kw: dict[str, Any] = {"windows": (0.5, T_END), "starts": 2}
    if method == "exchange":
        kw["grid"] = np.linspace(0.5, T_END, 15)
    r = dz.optimise_times(pk1, _two_point([1.0, 2.0], PROP), method=method, **kw)
    np.testing.assert_allclose(r.times[0], [0.5, T_END], rtol=0, atol=1e-9)
    assert r.efficiency >= 1 - 1e-9


# ---- constraints --------------------------------------------------------------------------
def _check_constraints(times: np.ndarray, lo: Any, hi: Any, spacing: float, replicates: bool) -> None:  # fmt: skip
    assert np.all(times >= np.asarray(lo) - 1e-12) and np.all(times <= np.asarray(hi) + 1e-12)
    gaps = np.diff(times)
    assert np.all(gaps >= spacing - 1e-9)
    if not replicates:
        assert np.all(gaps > 0)


def test_constraints_hold_and_the_start_is_never_beaten_by_worse(pk1):
    """Three samples for (V, k, σ²) under a proportional + additive error: a minimum spacing,
    per-sample windows and a grid without replicates are kept, and no result is worse than
    its start (the start meets the constraints)."""
    res = dz.Residual(additive=0.04, proportional=0.01)
    d = _two_point([0.5, 1.0, 1.5], res)
    r = dz.optimise_times(pk1, d, windows=(0.5, T_END), min_spacing=0.75, starts=2)
    _check_constraints(r.times[0], 0.5, T_END, 0.75, False)
    assert r.efficiency >= 1 - 1e-9
    per = [(0.5, 1.0), (1.5, 2.5), (3.0, T_END)]
    r = dz.optimise_times(pk1, d, windows=[per], starts=2)
    _check_constraints(r.times[0], [w[0] for w in per], [w[1] for w in per], 0.0, False)
    assert r.efficiency >= 1 - 1e-9
    grid = np.arange(0.5, T_END + 1e-9, 0.25)
    r = dz.optimise_times(pk1, d, grid=grid, min_spacing=0.5)
    _check_constraints(r.times[0], 0.5, T_END, 0.5, False)
    assert np.all(np.isin(r.times[0], grid)) and r.efficiency >= 1 - 1e-9
    # replicates allowed: a 2-point grid can hold 3 samples
    r = dz.optimise_times(pk1, d, grid=[0.5, T_END], replicates=True)
    assert np.all(np.isin(r.times[0], [0.5, T_END])) and len(r.times[0]) == 3
    assert r.ln_det >= dz.ln_det(dz.fisher_information(pk1, d)) - 1e-9


# ---- warfarin (PopED's model and parameters), k = 4 in [0.5, 120] h ----------------------------
@pytest.fixture(scope="module")
def warfarin() -> tuple[ldpk.Model, Any]:
    model = ldpk.build_model({
        "name": "warfarin",
        "time_unit": "h",
        "amount_unit": "mg",
        "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
        "parameters": {p: {"value": 1.0, "unit": "1"} for p in ("CL", "V", "KA", "F")},
        "flows": [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "CL / V"}],
        "routes": {"oral": {"target": "depot", "bioavailability": "F"}},
        "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    })  # fmt: skip

    def design(times: list[float]) -> dz.Design:
        return dz.Design(
            groups=[dz.Group(n=32, times=times, regimen=[ldpk.Bolus(70, route="oral")])],
            output="cp",
            fixed_effects={"CL": 0.15, "V": 8.0, "KA": 1.0},
            omega2={"CL": 0.07, "V": 0.02, "KA": 0.6},
            residual=dz.Residual(proportional=0.01),
        )

    return model, design


def test_warfarin_times_improve_a_poor_start_and_match_the_exchange(warfarin):
    """Four early samples (0.5-4 h) against the optimum in [0.5, 120] h, samples ≥ 1 h apart:
    the optimum (0.5, ≈6.5, ≈7.5, 120 h) is 11 times as D-efficient. The exchange on a 0.5 h
    grid stops at (0.5, 7, 8, 120): a grid design is feasible for the continuous problem, so
    its ln det can only be lower, and moving interior samples by less than one grid step
    (0.5 h) around a smooth optimum costs little: D-efficiency ≥ 0.999 of the gradient's,
    each time within one grid step."""
    model, design = warfarin
    start = design([0.5, 1.0, 2.0, 4.0])
    r = dz.optimise_times(model, start, windows=(0.5, 120.0), min_spacing=1.0, starts=2)
    _check_constraints(r.times[0], 0.5, 120.0, 1.0, False)
    assert r.efficiency > 10.0
    np.testing.assert_allclose(r.times[0][[0, 3]], [0.5, 120.0], atol=1e-9)
    ex = dz.optimise_times(model, start, grid=np.arange(0.5, 120.01, 0.5), min_spacing=1.0)
    _check_constraints(ex.times[0], 0.5, 120.0, 1.0, False)
    assert ex.efficiency > 10.0
    rel = dz.efficiency(ex.fim, r.fim)
    assert 0.999 <= rel <= 1 + 1e-9
    assert np.max(np.abs(ex.times[0] - r.times[0])) <= 0.5 + 1e-9


# ---- singular FIMs and bad inputs ------------------------------------------------------------
def test_singular_fim_names_the_parameters(pk1):
    """One sampling time for (V, k): singular wherever it is."""
    d = _two_point([1.0], CONST)
    for kw in ({"windows": (0.5, T_END)}, {"grid": [0.5, 1.0, 2.0]}):
        with pytest.raises(DataError, match=r"singular.*V \([+-]0\.\d\d\).*k \([+-]0\.\d\d\)"):
            dz.optimise_times(pk1, d, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"windows": (-1.0, 4.0)}, r"windows: a window needs finite times 0 <= lo"),
        ({"windows": (3.0, 1.0)}, r"0 <= lo <= hi"),
        ({"windows": [(0.5, 1.0), (1.0, 2.0)]}, r"windows=\): 2 entries for 1 group"),
        ({"windows": [[(0.5, 1.0), (0.8, 2.0)]]}, r"per-sample windows must be in time order"),
        ({"windows": (0.0, 1.0), "min_spacing": 2.0}, r"need a window of 2"),
        ({"grid": [0.5]}, r"2 sampling times but only 1 grid times.*replicates=True"),
        ({"grid": [0.5, 1.0], "min_spacing": 1.0}, r"only 1 grid times"),
        ({"grid": [0.5, -1.0]}, r"grid times must be finite and >= 0"),
        ({"min_spacing": -1.0}, r"min_spacing=\): a finite time >= 0"),
        ({"min_spacing": 0.5, "replicates": True}, r"contradicts min_spacing"),
        ({"method": "exchange"}, r"give the candidate times, grid="),
        ({"method": "anneal"}, r"method=\): 'anneal'"),
        ({"criterion": "A"}, r"criterion=\): 'A'"),
        ({"kind": "partial"}, r"kind=\): 'partial'"),
        ({"starts": 0}, r"starts=\): a positive number"),
    ],
)
def test_bad_inputs_raise_before_compiling(pk1, monkeypatch, kw, match):
    import ldpk.solve._simulate as sim_mod

    def never(*a: Any, **k: Any) -> Any:
        raise AssertionError("a simulator ran before the inputs were checked")

    monkeypatch.setattr(sim_mod.Simulator, "run", never)
    with pytest.raises(DataError, match=match):
        dz.optimise_times(pk1, _two_point([1.0, 2.0], CONST), **kw)


# ---- ED: the expectation of ln det over parameter draws ------------------------------------
# With constant variance ln det FIM = const(V) − 2k(t1 + t2) + 2 ln(t2 − t1) (see
# _closed_form_ln_det), so its mean over draws of k is maximised at t1 = t_min,
# t2 = t_min + 1/mean(k), whatever the draws of V.
K_DRAWS = np.array([0.25, 0.35, 0.4, 0.45, 0.55])  # mean 0.4: t2 = 2.5 (the nominal k gives 2)
V_DRAWS = np.array([8.0, 9.0, 10.0, 11.0, 12.0])


def _closed_form_ln_det_at(t1: float, t2: float, v: float, k: float) -> float:
    return float(np.log((DOSE / v) ** 4 * np.exp(-2 * k * (t1 + t2)) * (t2 - t1) ** 2 / (v**2 * 0.04**2)))  # fmt: skip


def test_expected_ln_det_is_the_mean_of_the_closed_forms(pk1):
    d = _two_point([0.5, 3.0], CONST)
    got = dz.expected_ln_det(pk1, d, {"V": V_DRAWS, "k": K_DRAWS})
    want = np.mean([_closed_form_ln_det_at(0.5, 3.0, v, k) for v, k in zip(V_DRAWS, K_DRAWS, strict=True)])  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # draws all at the design's values: ED is D
    same = dz.expected_ln_det(pk1, d, {"k": np.full(3, K)})
    np.testing.assert_allclose(same, dz.ln_det(dz.fisher_information(pk1, d)), rtol=1e-12)


@pytest.mark.parametrize("method", ["gradient", "exchange"])
def test_ed_optimum_is_the_closed_form(pk1, method):
    samples = {"V": V_DRAWS, "k": K_DRAWS}
    kw = {"windows": (0.0, T_END), "starts": 2} if method == "gradient" else {"grid": np.round(np.arange(0.0, T_END + 1e-9, 0.05), 10)}  # fmt: skip
    r = dz.optimise_times(pk1, _two_point([1.0, 3.0], CONST), criterion="ED", samples=samples, **kw)  # fmt: skip
    (t,) = r.times
    assert r.criterion == "ED" and r.samples == 5 and r.method == method
    assert abs(t[0]) <= 1e-6
    assert abs(t[1] - 1 / K_DRAWS.mean()) <= 1e-3 * 2.5  # 2.5 is on the grid
    want = np.mean([_closed_form_ln_det_at(t[0], t[1], v, k) for v, k in zip(V_DRAWS, K_DRAWS, strict=True)])  # fmt: skip
    np.testing.assert_allclose(r.ln_det, want, rtol=1e-9)
    start = np.mean([_closed_form_ln_det_at(1.0, 3.0, v, k) for v, k in zip(V_DRAWS, K_DRAWS, strict=True)])  # fmt: skip
    np.testing.assert_allclose(r.efficiency, np.exp((want - start) / 2), rtol=1e-9)
    # fim is at the design's own values (the nominal k), as for D
    np.testing.assert_allclose(dz.ln_det(r.fim), _closed_form_ln_det(*t), rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"criterion": "ED"}, "give samples="),
        ({"criterion": "ED", "samples": {"CL": [1.0]}}, "'CL' is not a parameter of the design"),
        ({"criterion": "ED", "samples": {"k": [0.4, 0.5], "V": [10.0]}}, "same number of draws"),
        ({"criterion": "ED", "samples": {"k": [np.nan]}}, "finite values"),
        ({"samples": {"k": [0.4]}}, "samples are for criterion='ED'"),
    ],
)
def test_ed_bad_samples_are_refused(pk1, kwargs, match):
    with pytest.raises(DataError, match=match):
        dz.optimise_times(pk1, _two_point([1.0, 3.0], CONST), windows=(0.0, T_END), **kwargs)
