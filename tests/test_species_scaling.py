"""Species scaling (ldpk.scale_species, Model.for_species) and the first-in-human dose
(ldpk.design.first_in_human, bsa_dose). Oracles: value × (BW_t/BW_s)^b by hand, the
physiology tables, AUC_inf = dose / CL of a one-compartment IV model, normal quantiles of the
log dose under exponent uncertainty, a direct simulate() of the found dose, FDA Km factors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import lambertw

import ldpk
from ldpk import design as dz
from ldpk.errors import DataError, ModelError
from ldpk.model import physiology

BW_MOUSE = physiology.lookup("mouse", "body_weight").value
BW_HUMAN = physiology.lookup("human", "body_weight").value


def test_reference_body_weights():
    # physiology.py: mouse 0.025 kg (Brown 1997 Table 1), human 70 kg (ICRP 23)
    assert BW_MOUSE == 0.025 and BW_HUMAN == 70.0


def _spec(**extra_params):
    params = {
        "CL": {"value": 0.01, "unit": "L/h"},
        "V": {"value": 0.002, "unit": "L"},
        "K": {"value": 0.5, "unit": "1/h"},
        "T": {"value": 2.0, "unit": "h"},
        "F": {"value": 0.4, "unit": "1"},
    }
    params.update(extra_params)
    return {
        "name": "small",
        "species": "mouse",
        "time_unit": "h",
        "amount_unit": "mg",
        "compartments": {"central": {"unit": "mg"}, "peripheral": {"unit": "mg"}},
        "parameters": params,
        "flows": [
            {"from": "central", "k": "CL / V"},
            {"from": "central", "to": "peripheral", "k": "K * F"},
            {"from": "peripheral", "to": "central", "k": "1 / T"},
        ],
        "routes": {"iv": {"target": "central"}},
        "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    }


def test_default_exponents_by_unit():
    m = ldpk.build_model(_spec())
    s = ldpk.scale_species(m, "human")
    r = BW_HUMAN / BW_MOUSE
    want = {"CL": 0.01 * r**0.75, "V": 0.002 * r, "K": 0.5 * r**-0.25, "T": 2.0 * r**0.25, "F": 0.4}
    got = {p.name: p.value for p in s.model.parameters}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    a = s.assumptions.set_index("parameter")
    assert list(a.loc[["CL", "V", "K", "T", "F"], "exponent"]) == [0.75, 1.0, -0.25, 0.25, 0.0]
    assert a.loc["F", "rule"] == "unchanged" and a.loc["CL", "rule"] == "allometry 0.75"
    assert "dimensionless" in a.loc["F", "why"]
    assert s.model.species == "human" and s.source_species == "mouse"
    assert s.ratio == pytest.approx(r)
    text = str(s)
    for name in ("CL", "V", "K", "T", "F", "0.025 kg", "70 kg"):
        assert name in text
    # for_species(allometry=True) is the same model
    m2 = m.for_species("human", allometry=True)
    assert m2.parameter("CL").value == pytest.approx(want["CL"], rel=1e-12)
    # default for_species: nothing bound to physiology here, so nothing changes
    assert m.for_species("human").parameter("CL").value == 0.01


def test_body_weight_and_exponent_overrides():
    m = ldpk.build_model(_spec())
    s = ldpk.scale_species(m, "human", body_weight_kg=60.0, exponents={"CL": 0.67, "F": None})
    r = 60.0 / BW_MOUSE
    assert s.model.parameter("CL").value == pytest.approx(0.01 * r**0.67, rel=1e-12)
    assert s.model.parameter("V").value == pytest.approx(0.002 * r, rel=1e-12)
    assert s.model.parameter("F").value == 0.4
    assert "exponents=" in s.assumptions.set_index("parameter").loc["CL", "why"]
    # a model moved to another body weight scales from that weight
    heavy = m.for_species("mouse", body_weight_kg=0.030)
    s2 = ldpk.scale_species(heavy, "human")
    assert s2.source_body_weight_kg == 0.030
    assert s2.model.parameter("V").value == pytest.approx(0.002 * 70.0 / 0.030, rel=1e-12)


def test_allometry_key_in_model_file(tmp_path):
    import yaml

    spec = _spec(
        CL={"value": 0.01, "unit": "L/h", "allometry": 0.8},
        F={"value": 0.4, "unit": "1", "allometry": "none"},
        K={"value": 0.5, "unit": "1/h", "allometry": "none"},
    )
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec))
    m = ldpk.load_model(str(path))
    assert m.parameter("CL").allometry == 0.8 and m.parameter("K").allometry == 0.0
    s = ldpk.scale_species(m, "human")
    r = BW_HUMAN / BW_MOUSE
    assert s.model.parameter("CL").value == pytest.approx(0.01 * r**0.8, rel=1e-12)
    assert s.model.parameter("K").value == 0.5  # none: unchanged despite 1/h
    a = s.assumptions.set_index("parameter")
    assert a.loc["K", "rule"] == "unchanged" and "allometry" in a.loc["K", "why"]
    # exponents= beats the file
    s2 = ldpk.scale_species(m, "human", exponents={"CL": 0.75})
    assert s2.model.parameter("CL").value == pytest.approx(0.01 * r**0.75, rel=1e-12)
    with pytest.raises(ModelError, match=r"parameters\.CL\.allometry.*number"):
        ldpk.build_model(_spec(CL={"value": 0.01, "unit": "L/h", "allometry": "fast"}))


def test_bad_inputs_are_refused():
    m = ldpk.build_model(_spec())
    with pytest.raises(DataError, match=r"unknown parameter\(s\) \['CLX'\].*CL, V, K, T, F"):
        ldpk.scale_species(m, "human", exponents={"CLX": 0.75})
    with pytest.raises(DataError, match="unknown species 'hamster'.*mouse"):
        ldpk.scale_species(m, "hamster")
    with pytest.raises(DataError, match=r"exponents\['CL'\] must be a finite number"):
        ldpk.scale_species(m, "human", exponents={"CL": float("nan")})
    with pytest.raises(DataError, match="body_weight_kg must be a positive"):
        ldpk.scale_species(m, "human", body_weight_kg=-1)
    no_species = ldpk.build_model({**_spec(), "species": None})
    with pytest.raises(ModelError, match="source_species='mouse'"):
        ldpk.scale_species(no_species, "human")
    assert ldpk.scale_species(no_species, "human", source_species="mouse").source_species == "mouse"
    with pytest.raises(ModelError, match="allometry=True"):
        m.for_species("human", exponents={"CL": 0.7})
    bound = {"value": {"physiology": "liver.flow", "factor": 0.06}, "unit": "L/h"}
    with pytest.raises(ModelError, match=r"parameters\.Q\.allometry: .*physiology"):
        ldpk.build_model(_spec(Q={**bound, "allometry": 0.75}))


def test_msc_pbpk_mouse_to_human_physiology():
    mouse = ldpk.load_model("msc_pbpk").for_species("mouse")
    s = ldpk.scale_species(mouse, "human")
    h = s.model
    a = s.assumptions.set_index("parameter")
    for name, path, factor in (
        ("QCO", "cardiac_output", 0.06),
        ("QH", "liver.flow", 0.06),
        ("QS", "spleen.flow", 0.06),
        ("QK", "kidney.flow", 0.06),
        ("VVEN", "blood_volume", 0.000666667),
        ("VART", "blood_volume", 0.000333333),
    ):
        want = physiology.lookup("human", path).value * factor
        assert h.parameter(name).value == pytest.approx(want, rel=1e-12), name
        assert a.loc[name, "rule"] == f"physiology {path}"
        assert math.isnan(a.loc[name, "exponent"])
    r = BW_HUMAN / BW_MOUSE
    assert h.parameter("K_REL_LUNG").value == pytest.approx(0.36 * r**-0.25, rel=1e-12)
    assert h.parameter("T_HALF_DNA").value == pytest.approx(6.0 * r**0.25, rel=1e-12)
    assert h.parameter("E_LUNG").value == 0.23
    assert h.parameter("BLI_PER_CELL").value == 100.0  # photons/s/cell: not scaled
    # the default for_species still changes only the physiology-bound values
    plain = mouse.for_species("human")
    assert plain.parameter("K_REL_LUNG").value == 0.36
    assert plain.parameter("QCO").value == pytest.approx(h.parameter("QCO").value, rel=1e-12)
    # at another body weight the tables are scaled (cardiac output ~ BW^0.75)
    h60 = ldpk.scale_species(mouse, "human", body_weight_kg=60.0).model
    co = physiology.lookup(physiology.scale_to("human", 60.0), "cardiac_output").value
    assert h60.parameter("QCO").value == pytest.approx(co * 0.06, rel=1e-12)
    assert co == pytest.approx(6500.0 * (60 / 70) ** 0.75, rel=1e-12)
    # an exponent given for a physiology-bound parameter scales its mouse value instead
    o = ldpk.scale_species(mouse, "human", exponents={"QCO": 0.75})
    assert o.model.parameter("QCO").value == pytest.approx(mouse.parameter("QCO").value * r**0.75, rel=1e-12)  # fmt: skip
    assert o.assumptions.set_index("parameter").loc["QCO", "rule"] == "allometry 0.75"
    assert o.model.parameter("QH").value == pytest.approx(h.parameter("QH").value, rel=1e-12)
    # the scaled model is still a pytree with the values as leaves
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(h)
    assert len(leaves) == len(h.parameters)
    assert jax.tree_util.tree_unflatten(treedef, leaves).parameter("QCO").value == h.parameter("QCO").value  # fmt: skip


def test_scale_values_scales_draws_as_the_model():
    mouse = ldpk.load_model("msc_pbpk").for_species("mouse")
    s = ldpk.scale_species(mouse, "human")
    r = BW_HUMAN / BW_MOUSE
    draws = {"K_REL_LUNG": np.array([0.1, 0.2, 0.4]), "E_LUNG": np.array([0.5, 0.8, 0.9]), "QCO": 1.0}  # fmt: skip
    out = s.scale_values(draws)
    np.testing.assert_allclose(out["K_REL_LUNG"], draws["K_REL_LUNG"] * r**-0.25, rtol=1e-12)
    np.testing.assert_array_equal(out["E_LUNG"], draws["E_LUNG"])  # dimensionless: unchanged
    # bound to the physiology tables: the human value, whatever the mouse value
    np.testing.assert_allclose(out["QCO"], np.full(3, s.model.parameter("QCO").value), rtol=0)
    with pytest.raises(ldpk.ModelError, match="unknown parameter"):
        s.scale_values({"CLX": 1.0})


# ---- BSA -----------------------------------------------------------------------------------
def test_bsa_dose():
    assert dz.bsa_dose(10, "mouse") == pytest.approx(10 * 3 / 37, rel=1e-15)
    assert dz.bsa_dose(10, "Rat", "dog") == pytest.approx(10 * 6 / 20, rel=1e-15)
    assert dz.bsa_dose(1.0, "guinea_pig") == pytest.approx(8 / 37)
    assert dz.KM_FACTORS["human"] == 37 and dz.KM_FACTORS["mini-pig"] == 35
    assert "2005" in dz.KM_REFERENCE
    with pytest.raises(DataError, match="no FDA Km factor for 'cat'.*mouse, hamster"):
        dz.bsa_dose(10, "cat")
    with pytest.raises(DataError, match="dose_per_kg must be finite and >= 0"):
        dz.bsa_dose(-1, "mouse")


# ---- first in human ---------------------------------------------------------------------------
def _one_cmt(species="mouse"):
    return ldpk.build_model(
        {
            "name": "pk1",
            "species": species,
            "time_unit": "h",
            "amount_unit": "mg",
            "compartments": {"central": {"unit": "mg"}},
            "parameters": {
                "CL": {"value": 0.01, "unit": "L/h"},
                "V": {"value": 0.002, "unit": "L"},
            },
            "flows": [{"from": "central", "k": "CL / V"}],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )


def _draws(n, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "CL": 0.01 * np.exp(0.3 * rng.standard_normal(n)),
        "V": 0.002 * np.exp(0.2 * rng.standard_normal(n)),
    }


def test_first_in_human_linear_is_clearance_scaling():
    # AUC_inf = D / CL and CL_h = CL_m r^0.75, so D_h = D_m r^0.75 for every draw
    m = _one_cmt()
    r = BW_HUMAN / BW_MOUSE
    res = dz.first_in_human(
        _draws(40), ("cp", "auc_inf"), ldpk.Bolus(2.0, route="iv"), np.linspace(0, 24, 49),
        model=m, n_draws=40,
    )  # fmt: skip
    assert res.method.startswith("proportional")
    np.testing.assert_allclose(res.doses, 2.0 * r**0.75, rtol=1e-6)
    np.testing.assert_array_equal(res.doses, res.doses_with_uncertainty)
    assert res.median == pytest.approx(2.0 * r**0.75, rel=1e-6)
    # animal exposure against the closed form D / CL (auc_inf extrapolates log-linearly)
    np.testing.assert_allclose(res.animal_exposure, 2.0 / _draws(40)["CL"], rtol=1e-6)
    # BSA comparison: (2 mg / 0.025 kg) x 3/37 x 70 kg
    assert res.bsa_dose == pytest.approx(2.0 / BW_MOUSE * 3 / 37 * BW_HUMAN, rel=1e-12)
    s = res.summary()
    assert list(s["estimate"]) == ["model, exponents fixed", "model, exponents uncertain", "BSA (FDA Km)"]  # fmt: skip
    assert s["dose_per_kg"][0] == pytest.approx(2.0 * r**0.75 / BW_HUMAN, rel=1e-6)
    assert "BSA" in str(res) and "CL" in str(res)


def test_first_in_human_exponent_uncertainty_matches_normal_quantiles():
    # b_CL ~ N(0.75, s): log D_h = log(D_m r^0.75) + s ln(r) Z exactly (V does not enter AUC_inf)
    m = _one_cmt()
    r = BW_HUMAN / BW_MOUSE
    n, s, ci = 2000, 0.05, 0.9
    res = dz.first_in_human(
        {"CL": 0.01, "V": 0.002}, ("cp", "auc_inf"), ldpk.Bolus(1.0, route="iv"),
        np.linspace(0, 24, 49), model=m, n_draws=n, exponent_sd=s, ci=ci, seed=3,
    )  # fmt: skip
    sigma = s * math.log(r)
    mu = math.log(r**0.75)
    lo, hi = res.interval_with_uncertainty
    z = stats.norm.ppf(0.95)
    # Monte-Carlo SE of a sample 5 % quantile of a normal: sqrt(p(1-p)/n)/phi(z) sigma
    # = 0.047 sigma at n = 2000; allowed: 4 SE. The median: 1.2533 sigma/sqrt(n) = 0.028 sigma.
    se_q = math.sqrt(0.05 * 0.95 / n) / stats.norm.pdf(z) * sigma
    assert abs(math.log(lo) - (mu - z * sigma)) < 4 * se_q
    assert abs(math.log(hi) - (mu + z * sigma)) < 4 * se_q
    assert abs(math.log(res.median_with_uncertainty) - mu) < 4 * 1.2533 * sigma / math.sqrt(n)
    assert np.std(np.log(res.doses_with_uncertainty)) == pytest.approx(sigma, rel=4 / math.sqrt(2 * n))  # fmt: skip
    # without the exponent uncertainty the point estimate has no spread at all
    assert res.interval == pytest.approx((r**0.75, r**0.75), rel=1e-6)
    # each draw's dose is its own exponent's: D_m r^b_i
    np.testing.assert_allclose(res.doses_with_uncertainty, r ** res.exponent_draws["CL"], rtol=1e-6)  # fmt: skip
    assert set(res.exponent_sd) == {"CL", "V"}


def _mm_auc(t, dose, vm, km, v):
    """AUC on the grid of the exact Michaelis-Menten bolus solution (Lambert W):
    C(t) = KM W((C0/KM) exp((C0 - VM t / V) / KM)), C0 = dose / V."""
    c0 = dose / v
    c = km * lambertw(c0 / km * np.exp((c0 - vm * t / v) / km)).real
    return float(ldpk.exposure.auc(t, c))


def test_first_in_human_nonlinear_reproduces_the_exposure():
    # saturable elimination: no proportionality, so root finding; the exposure of the found
    # dose in each draw's human model, by the closed form, equals the animal's (rtol 1e-4)
    m = _mm_mouse()
    rng = np.random.default_rng(5)
    vm = 0.05 * np.exp(0.3 * rng.standard_normal(8))
    t = np.linspace(0, 48, 97)
    res = dz.first_in_human(
        {"VM": vm}, ("cp", "auc"), ldpk.Bolus(1.0, route="iv"), t, model=m, n_draws=8,
        exponent_sd={"VM": 0.05}, seed=1,
    )  # fmt: skip
    assert res.method.startswith("root finding") and res.n_failed == 0
    r = BW_HUMAN / BW_MOUSE
    vh = 0.002 * r
    for i in range(8):
        assert _mm_auc(t, 1.0, vm[i], 100.0, 0.002) == pytest.approx(res.animal_exposure[i], rel=1e-6)  # fmt: skip
        for dose, b in ((res.doses[i], 0.75), (res.doses_with_uncertainty[i], res.exponent_draws["VM"][i])):  # fmt: skip
            auc = _mm_auc(t, dose, vm[i] * r**b, 100.0, vh)
            assert auc == pytest.approx(res.animal_exposure[i], rel=1e-4)
    # the saturation makes the dose differ from the linear answer D r^0.75 (V r / CL r^0.75)
    assert not np.allclose(res.doses, r**0.75, rtol=1e-3)


def _mm_mouse():
    return ldpk.build_model(
        {
            "name": "mm_mouse", "species": "mouse", "time_unit": "h", "amount_unit": "mg",
            "compartments": {"central": {"unit": "mg"}},
            "parameters": {
                "VM": {"value": 0.05, "unit": "mg/h", "allometry": 0.75},
                "KM": {"value": 100.0, "unit": "mg/L"},
                "V": {"value": 0.002, "unit": "L"},
            },
            "flows": [{"from": "central", "rate": "VM * central / (KM * V + central)"}],
            "routes": {"iv": {"target": "central"}},
            "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
        }
    )  # fmt: skip


def test_first_in_human_nonlinear_infusion_keeps_its_duration():
    # an infusion given by rate (0.5 mg/h of 1 mg: 2 h) becomes a 2 h infusion whose amount
    # (and so rate) is scaled; the default route (the model's only one) is used
    m = _mm_mouse()
    vm = np.array([0.04, 0.08])
    t = np.linspace(0, 24, 49)
    res = dz.first_in_human(
        {"VM": vm}, ("cp", "cmax"), ldpk.Infusion(1.0, rate=0.5), t, model=m, n_draws=2
    )
    assert res.method.startswith("root finding") and res.n_failed == 0
    r = BW_HUMAN / BW_MOUSE
    for i in range(2):
        h = res.scaling.model.with_values(VM=vm[i] * r**0.75)
        sim = ldpk.simulate(h, None, [ldpk.Infusion(res.doses[i], duration=2.0, route="iv")], t)
        cmax = float(np.max(np.asarray(sim.output("cp"))))
        assert cmax == pytest.approx(res.animal_exposure[i], rel=1e-4)


def test_first_in_human_bad_inputs():
    m = _one_cmt()
    reg = ldpk.Bolus(1.0, route="iv")
    t = np.linspace(0, 24, 25)
    with pytest.raises(DataError, match="metric 'tmax' cannot be matched"):
        dz.first_in_human({"CL": 0.01}, ("cp", "tmax"), reg, t, model=m)
    with pytest.raises(DataError, match="output 'cq' is not an output.*cp"):
        dz.first_in_human({"CL": 0.01}, ("cq", "auc"), reg, t, model=m)
    with pytest.raises(DataError, match="give the animal model as model="):
        dz.first_in_human({"CL": 0.01}, ("cp", "auc"), reg, t)
    with pytest.raises(DataError, match=r"unknown parameter\(s\) \['CLX'\]"):
        dz.first_in_human({"CLX": 0.01}, ("cp", "auc"), reg, t, model=m)
    with pytest.raises(DataError, match="exponent_sd names \\['Q'\\].*CL, V"):
        dz.first_in_human({"CL": 0.01}, ("cp", "auc"), reg, t, model=m, exponent_sd={"Q": 0.1})
    with pytest.raises(DataError, match="amount must be a positive"):
        dz.first_in_human({"CL": 0.01}, ("cp", "auc"), ldpk.Bolus(0.0, route="iv"), t, model=m)
    with pytest.raises(DataError, match="ci must be a probability"):
        dz.first_in_human({"CL": 0.01}, ("cp", "auc"), reg, t, model=m, ci=90)
    with pytest.raises(DataError, match="unknown species 'hamster'; valid species: mouse"):
        dz.first_in_human({"CL": 0.01}, ("cp", "auc"), reg, t, model=m, species="hamster")


def test_first_in_human_msc_pbpk_mouse(tmp_path):
    mouse = ldpk.load_model("msc_pbpk").for_species("mouse")
    table = {"E_LUNG": [0.5, 0.7, 0.9], "K_REL_LUNG": [0.2, 0.36, 0.5]}
    res = dz.first_in_human(
        table, ("In111_lung", "auc"), ldpk.Bolus(1e6, route="iv"), np.linspace(0, 24, 25),
        model=mouse, n_draws=3, exponent_sd=0.05,
    )  # fmt: skip
    assert res.method.startswith("proportional")
    for d in (res.doses, res.doses_with_uncertainty):
        assert d.shape == (3,) and np.all(np.isfinite(d)) and np.all(d > 0)
    assert res.species == "human" and res.dose_unit == "cell"
    fig = ldpk.plots.plot_first_in_human(res, path=tmp_path / "fih.png")
    assert (tmp_path / "fih.png").stat().st_size > 0
    assert len(fig.axes) == 1


def test_first_in_human_from_a_fit():
    # a MAP fit of simulated mouse data: one population set, repeated n_draws times, so only
    # the exponent varies; with it fixed the dose is D r^0.75 (AUC_inf = D / CL)
    import pandas as pd

    spec = {
        "name": "pk1_fit", "species": "mouse", "time_unit": "h", "amount_unit": "mg",
        "compartments": {"central": {"unit": "mg"}},
        "parameters": {
            "CL": {"value": 0.01, "unit": "L/h", "prior": {"dist": "lognormal", "loc": -4.6, "scale": 1.0}, "iiv": 0.3},  # noqa: E501
            "V": {"value": 0.002, "unit": "L", "prior": {"dist": "lognormal", "loc": -6.2, "scale": 1.0}, "iiv": 0.3},  # noqa: E501
        },
        "flows": [{"from": "central", "k": "CL / V"}],
        "routes": {"iv": {"target": "central"}},
        "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    }  # fmt: skip
    m = ldpk.build_model(spec)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, 7):
        cl, v = 0.01 * np.exp(0.3 * rng.standard_normal()), 0.002 * np.exp(0.3 * rng.standard_normal())  # fmt: skip
        rows.append({"ID": i, "TIME": 0.0, "AMT": 1.0, "DV": np.nan, "EVID": 1, "ROUTE": "iv"})
        for t in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
            c = np.exp(-cl / v * t) / v * np.exp(0.1 * rng.standard_normal())
            rows.append({"ID": i, "TIME": t, "AMT": 0.0, "DV": c, "EVID": 0, "ROUTE": ""})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ldpk.fit(m, ldpk.read_data(m, pd.DataFrame(rows)), config={"error": {"cp": {"model": "proportional"}}}, method="map", progress=False)  # fmt: skip
    r = BW_HUMAN / BW_MOUSE
    res = dz.first_in_human(
        fit, ("cp", "auc_inf"), ldpk.Bolus(1.0, route="iv"), np.linspace(0, 24, 49),
        n_draws=20, exponent_sd={"CL": 0.05},
    )  # fmt: skip
    np.testing.assert_allclose(res.doses, r**0.75, rtol=1e-6)
    np.testing.assert_allclose(res.doses_with_uncertainty, r ** res.exponent_draws["CL"], rtol=1e-6)  # fmt: skip
    assert res.doses.shape == (20,) and np.std(res.exponent_draws["CL"]) > 0
    with pytest.raises(DataError, match="a Fit brings its model"):
        dz.first_in_human(fit, ("cp", "auc"), ldpk.Bolus(1.0), np.linspace(0, 24, 49), model=m)
