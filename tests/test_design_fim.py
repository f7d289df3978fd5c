"""Population Fisher information (FO) of a design: ``ldpk.design`` against published PopED and
PFIM values (``../shared/design/fim_cases.yaml``, conventions in its README.md) and a
closed-form D-optimal two-point design. Each model is built with ``ldpk.build_model`` and
its prediction is checked against the case's formula first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import ldpk
from ldpk import design as dz
from ldpk.errors import DataError
from tests import design_cases
from tests.design_cases import one_compartment


@pytest.fixture(scope="module")
def cases(design_data_dir: Path) -> dict[str, Any]:
    """The published cases, ``fim_cases.yaml`` (see conftest's ``design_data_dir``)."""
    return yaml.safe_load((design_data_dir / "fim_cases.yaml").read_text())


def _predict(model: ldpk.Model, regimen: list, times: Any, params: dict, **kw: Any) -> np.ndarray:
    sim = ldpk.simulate(model, params, regimen, np.asarray(times, dtype=float), **kw)
    return np.asarray(sim.output("cp") if "cp" in model.output_names else sim.outputs[..., 0])


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


# ---- warfarin (PopED) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def warfarin(cases):
    c = cases["warfarin"]
    return (c, *design_cases.warfarin(c))


def test_warfarin_prediction_is_the_formula(warfarin):
    c, model, design = warfarin
    CL, V, KA = (c["parameters"][k] for k in ("CL", "V", "KA"))
    D, F = c["fixed"]["D"], c["fixed"]["F"]
    t = np.asarray(design.groups[0].times, dtype=float)
    f = D * F * KA / (V * (KA - CL / V)) * (np.exp(-CL / V * t) - np.exp(-KA * t))
    got = _predict(model, list(design.groups[0].regimen), t, {**c["parameters"], "F": F})
    np.testing.assert_allclose(got, f, rtol=1e-11)


def test_warfarin_reduced_fim(warfarin):
    c, model, design = warfarin
    exp = c["reduced"]
    tol = exp["tolerance_rel"]
    fim = dz.fisher_information(model, design)
    assert fim.names == tuple(c["order"])
    assert fim.kind == "reduced" and isinstance(np.asarray(fim), np.ndarray)
    assert _rel(np.linalg.det(fim.matrix), exp["det"]) < tol
    assert _rel(np.exp(dz.ln_det(fim)), exp["det"]) < tol
    assert _rel(dz.rse_percent(fim), exp["rse_percent"]) < tol
    assert _rel(np.diag(fim.matrix), exp["fim_diagonal"]) < tol
    # block diagonal: no fixed-effect / variance cross terms
    np.testing.assert_array_equal(fim.matrix[:3, 3:], 0.0)
    np.testing.assert_allclose(dz.d_criterion(fim), exp["det"] ** (1 / 7), rtol=tol)
    # efficiency: a design with twice the subjects has det 2^p times larger -> efficiency 2
    double = dz.Design(**{**design.__dict__, "groups": [dz.Group(**{**design.groups[0].__dict__, "n": 64})]})  # fmt: skip
    np.testing.assert_allclose(dz.efficiency(dz.fisher_information(model, double), fim), 2.0, rtol=1e-12)  # fmt: skip


def test_warfarin_full_fim(warfarin):
    c, model, design = warfarin
    exp = c["full"]
    tol = exp["tolerance_rel"]
    fim = dz.fisher_information(model, design, kind="full")
    assert fim.names == tuple(c["order"])
    assert _rel(np.linalg.det(fim.matrix), exp["det"]) < tol
    assert _rel(dz.rse_percent(fim), exp["rse_percent"]) < tol
    # the variance block is the reduced FIM's
    red = dz.fisher_information(model, design)
    np.testing.assert_allclose(fim.matrix[3:, 3:], red.matrix[3:, 3:], rtol=1e-12)


def test_groups_add_each_times_its_size(warfarin):
    """Two groups of 12 and 20 with the same times give the FIM of one group of 32."""
    c, model, design = warfarin
    g = design.groups[0]
    split = dz.Design(**{**design.__dict__, "groups": [dz.Group(12, g.times, g.regimen), dz.Group(20, g.times, g.regimen)]})  # fmt: skip
    np.testing.assert_allclose(
        dz.fisher_information(model, split).matrix, dz.fisher_information(model, design).matrix, rtol=1e-12
    )  # fmt: skip


# ---- Retout 2007: power of a Wald test (PopED) ---------------------------------------------
def test_retout_power(cases):
    c = cases["retout_power"]
    model, design = design_cases.retout(c)
    b = c["parameters_log"]
    start, groups = list(design_cases.RETOUT_START), design.groups
    # the prediction is the formula, arm 2 with L1 = exp(bL1 + BETA)
    for arm, g in enumerate(groups):
        t = np.asarray(g.times, dtype=float)
        P1, P2, L1, L2 = np.exp(b["P1"]), np.exp(b["P2"]), np.exp(b["L1"] + arm * b["BETA"]), np.exp(b["L2"])  # fmt: skip
        f = np.log10(P1 * np.exp(-L1 * t) + P2 * np.exp(-L2 * t))
        sim = ldpk.simulate(model, {"P1": np.exp(b["P1"]), "P2": np.exp(b["P2"]), "L1": np.exp(b["L1"]), "L2": np.exp(b["L2"]), "BETA": b["BETA"]}, start, t, covariates={"ARM": arm})  # fmt: skip
        np.testing.assert_allclose(np.asarray(sim.output("y")), f, rtol=1e-12)
    fim = dz.fisher_information(model, design)
    tol = c["tolerance_rel"]
    se = dz.standard_errors(fim)[fim.index("BETA")]
    assert _rel(se, c["expected"]["se_BETA"]) < tol
    power = 100 * dz.wald_power(fim, "BETA", h0=0.0)
    assert _rel(power, c["expected"]["power_percent_wald_h0_0"]) < tol


# ---- shrinkage (PFIM example 1.4.2 as in PopED) ------------------------------------------
def test_shrinkage_pfim_142(cases):
    c = cases["shrinkage_pfim_142"]
    p = c["parameters"]
    model, design = design_cases.shrinkage_142(c)
    t = np.asarray(design.groups[0].times, dtype=float)
    regimen = list(design.groups[0].regimen)
    f = 100 / p["V"] * p["KA"] / (p["KA"] - p["K"]) * (np.exp(-p["K"] * t) - np.exp(-p["KA"] * t))
    np.testing.assert_allclose(_predict(model, regimen, t, p), f, rtol=1e-11)
    shrink = dz.shrinkage(model, design)
    assert shrink.shape == (1, 3)
    assert _rel(shrink[0], c["expected"]["shrinkage_variance_scale"]) < c["tolerance_rel"]


# ---- PFIM 7.0 determinants ----------------------------------------------------------------
@pytest.mark.parametrize("i", range(6))
def test_pfim_determinants(cases, i):
    pf = cases["pfim_cases"]
    case = pf["cases"][i]
    model, design, f = design_cases.pfim(case)
    regimen = list(design.groups[0].regimen)
    np.testing.assert_allclose(_predict(model, regimen, case["times"], case["mu"]), f, rtol=1e-11)  # fmt: skip
    fim = dz.fisher_information(model, design)
    p = len(case["mu"])
    assert fim.names == (*case["mu"], *(f"omega2_{k}" for k in case["omega2"]), "sigma_add", "sigma_prop")  # fmt: skip
    assert fim.matrix.shape == (2 * p + 2, 2 * p + 2)
    assert _rel(np.exp(dz.ln_det(fim)), float(case["det"])) < pf["tolerance_rel"]


# ---- closed-form D-optimal two-point design ------------------------------------------------
def test_analytic_two_point_design_maximises_det():
    """y = (D/V)e^(-kt), (V, k), two samples in [0, T]: with constant-variance error
    det FIM ∝ e^(-2k(t1+t2))(t2 - t1)^2, maximal at t1 = 0, t2 = 1/k; with proportional error
    at the ends of the window. Checked over a grid that contains both optima."""
    V, k, D, T = 10.0, 0.5, 100.0, 4.0
    model = one_compartment({"V": V, "k": k}, "k")
    regimen = [ldpk.Bolus(D, route="iv")]
    grid = np.arange(0.0, T + 1e-9, 0.25)
    pairs = [(a, b) for i, a in enumerate(grid) for b in grid[i + 1 :]]
    np.testing.assert_allclose(_predict(model, regimen, grid, {}), D / V * np.exp(-k * grid), rtol=1e-12)  # fmt: skip

    def det(t1: float, t2: float, residual: dz.Residual) -> float:
        d = dz.Design(
            groups=[dz.Group(n=1, times=[t1, t2], regimen=regimen)],
            output="cp",
            fixed_effects={"V": V, "k": k},
            residual=residual,
        )
        fim = dz.fisher_information(model, d)
        assert fim.names == ("V", "k")
        return float(np.exp(dz.ln_det(fim)))

    const = np.array([det(a, b, dz.Residual(additive=0.04, estimate=False)) for a, b in pairs])
    closed = np.array([np.exp(-2 * k * (a + b)) * (b - a) ** 2 for a, b in pairs])
    # det FIM = (D/V)^4 e^(-2k(t1+t2)) (t2 - t1)^2 / (V^2 σ^4): the ratio is one constant
    np.testing.assert_allclose(const / closed, (const / closed)[0], rtol=1e-10)
    assert pairs[int(np.argmax(const))] == (0.0, 1 / k)
    prop = np.array([det(a, b, dz.Residual(proportional=0.01, estimate=False)) for a, b in pairs])
    assert pairs[int(np.argmax(prop))] == (0.0, T)


# ---- errors -------------------------------------------------------------------------------
def test_singular_fim_names_the_parameters():
    model = one_compartment({"V": 10.0, "k": 0.5}, "k")
    d = dz.Design(
        groups=[dz.Group(n=10, times=[1.0, 1.0], regimen=[ldpk.Bolus(100, route="iv")])],
        output="cp",
        fixed_effects={"V": 10.0, "k": 0.5},
        residual=dz.Residual(additive=0.1, estimate=False),
    )
    fim = dz.fisher_information(model, d)
    for crit in (dz.ln_det, dz.d_criterion, dz.rse_percent, dz.standard_errors):
        with pytest.raises(DataError, match=r"singular.*V \([+-]0\.\d\d\).*k \([+-]0\.\d\d\)"):
            crit(fim)
    with pytest.raises(DataError, match="singular"):
        dz.wald_power(fim, "k")


def _bad(**kw: Any) -> dict[str, Any]:
    base = {
        "groups": [dz.Group(n=10, times=[0.5, 2.0, 8.0], regimen=[ldpk.Bolus(100, route="iv")])],
        "output": "cp",
        "fixed_effects": {"V": 10.0, "k": 0.5},
        "omega2": {"V": 0.1},
        "residual": dz.Residual(additive=0.1),
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"groups": [dz.Group(n=-3, times=[1.0])]}, r"groups\[0\]\.n: must be a positive"),
        ({"groups": [dz.Group(n=0, times=[1.0])]}, r"groups\[0\]\.n"),
        (
            {"groups": [dz.Group(n=5, times=[1.0]), dz.Group(n=5, times=[2.0, 1.0], name="late")]},
            r"groups\[1\] \('late'\)\.times: .*sorted",
        ),  # fmt: skip
        ({"groups": [dz.Group(n=5, times=[-1.0, 1.0])]}, r"groups\[0\]\.times: .*>= 0"),
        ({"groups": [dz.Group(n=5, times=[])]}, r"groups\[0\]\.times: give"),
        ({"groups": []}, r"at least one group"),
        ({"groups": [dz.Group(n=5, times=2.0)]}, r"groups\[0\]\.times: give a non-empty list"),
        (
            {"groups": [dz.Group(n=5, times=["a"])]},
            r"groups\[0\]\.times: sampling times must be numbers",
        ),
        ({"omega2": {"CL": 0.1}}, r"omega2\.CL: CL has no fixed effect"),
        ({"omega2": {"V": -0.1}}, r"omega2\.V: a variance"),
        ({"scale": "logit"}, r"scale: 'logit'"),
        ({"fixed": ["omega2_k"]}, r"fixed: 'omega2_k' is not a parameter"),
    ],
)
def test_bad_design_is_refused_when_built(kw, match):
    with pytest.raises(DataError, match=match):
        dz.Design(**_bad(**kw))


def test_bad_residual_is_refused():
    with pytest.raises(DataError, match="convention"):
        dz.Residual(additive=1.0, convention="cv")
    with pytest.raises(DataError, match="give `additive`"):
        dz.Residual()
    with pytest.raises(DataError, match=r"proportional: must be"):
        dz.Residual(proportional=-0.1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"fixed_effects": {"V": 10.0, "CLX": 0.5}, "omega2": {}},
            r"fixed_effects\.CLX: model 'pk1' has no parameter 'CLX'; parameters: V, k",
        ),  # fmt: skip
        ({"output": "auc"}, r"Design\.output: model 'pk1' has no output 'auc'; outputs: cp"),
        (
            {"groups": [dz.Group(n=5, times=[1.0], covariates={"WT": 70})]},
            r"groups\[0\]\.covariates\.WT: .*no covariate",
        ),  # fmt: skip
        (
            {"groups": [dz.Group(n=5, times=[1.0], regimen=[ldpk.Bolus(1, route="oral")])]},
            r"Design\.groups\[0\]: .*oral",
        ),  # fmt: skip
    ],
)
def test_design_the_model_lacks_is_refused_before_compiling(monkeypatch, kw, match):
    """Entries the model does not have raise DataError naming them; nothing is simulated."""
    import ldpk.solve._simulate as sim_mod

    model = one_compartment({"V": 10.0, "k": 0.5}, "k")

    def never(*a: Any, **k: Any) -> Any:
        raise AssertionError("a simulator ran before the design was checked")

    monkeypatch.setattr(sim_mod.Simulator, "run", never)
    for fn in (dz.fisher_information, dz.shrinkage):
        with pytest.raises(DataError, match=match):
            fn(model, dz.Design(**_bad(**kw)))
    with pytest.raises(DataError, match="kind"):
        dz.fisher_information(model, dz.Design(**_bad()), kind="partial")


def test_natural_and_log_scale_agree_on_the_variance_block():
    """θ = β·e^η and θ = e^(log β + η) are the same model: identical ω² and residual blocks,
    and fixed-effect blocks related by the Jacobian diag(β)."""
    model = one_compartment({"V": 10.0, "k": 0.5}, "k")
    common = _bad(omega2={"V": 0.1, "k": 0.2})
    nat = dz.fisher_information(model, dz.Design(**common))
    log = dz.fisher_information(model, dz.Design(**{**common, "fixed_effects": {"V": np.log(10.0), "k": np.log(0.5)}, "scale": "log"}))  # fmt: skip
    np.testing.assert_allclose(log.matrix[2:, 2:], nat.matrix[2:, 2:], rtol=1e-12)
    b = np.array([10.0, 0.5])
    np.testing.assert_allclose(log.matrix[:2, :2], nat.matrix[:2, :2] * np.outer(b, b), rtol=1e-12)  # fmt: skip
    held = dz.fisher_information(model, dz.Design(**{**common, "fixed": ["omega2_k", "sigma2_add"]}))  # fmt: skip
    assert held.names == ("V", "k", "omega2_V")


# ---- every kernel -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "ode"])
def test_warfarin_fim_is_the_same_on_every_kernel(warfarin, method):
    """The published warfarin FIM (closed-form kernel by default) again through the matrix
    exponential and through the ODE solver: autodiff through each kernel gives the same
    matrix (ODE: within its tolerances, 1e-5 relative on every entry above 1e-8 of the
    largest)."""
    _, model, design = warfarin
    ref = dz.fisher_information(model, design)
    got = dz.fisher_information(model, design, method=method)
    big = np.abs(ref.matrix) > 1e-8 * np.abs(ref.matrix).max()
    rtol = 1e-9 if method == "exact" else 1e-5
    np.testing.assert_allclose(got.matrix[big], ref.matrix[big], rtol=rtol)


def test_piecewise_linear_model_fim_matches_the_ode_kernel():
    """A piecewise-linear model (CAR-T cellular kinetics: expansion until TMAX, then
    contraction) solved exactly between its switches, and by the ODE solver: the same FIM.
    TMAX is held (its derivative jumps where a sample meets it)."""
    model = ldpk.load_model("cart_cellular_kinetics")
    assert model.is_piecewise_linear
    fe = {p: model.parameter(p).value for p in ("RHO", "ALPHA", "KMEM", "BETA")}
    design = dz.Design(
        groups=[dz.Group(n=20, times=[1, 4, 7, 10, 14, 21, 28, 56, 84], regimen=[ldpk.Bolus(1.0)])],
        output="transgene",
        fixed_effects=fe,
        omega2={"RHO": 0.25, "ALPHA": 0.09},
        residual=dz.Residual(proportional=0.09),
    )
    exact = dz.fisher_information(model, design)
    ode = dz.fisher_information(model, design, method="ode")
    big = np.abs(exact.matrix) > 1e-8 * np.abs(exact.matrix).max()
    np.testing.assert_allclose(ode.matrix[big], exact.matrix[big], rtol=1e-4)
    assert np.all(np.isfinite(dz.rse_percent(exact)))
