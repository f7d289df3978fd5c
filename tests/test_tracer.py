"""The tracer layer: nuclide half-lives and decay, label-fate model fragments, units.

Oracles: the ICRP Publication 107 half-lives written below as literals; closed forms of
first-order label kinetics (Bateman, two consecutive first-order steps); hand-computed unit
conversions. Tolerances are stated where used."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldpk
from ldpk import tracer
from ldpk.errors import DataError, ModelError

#: Half-lives from ICRP Publication 107 (Eckerman K, Endo A. Nuclear decay data for dosimetric
#: calculations. Ann ICRP 2008;38(3)): value and unit as tabulated there.
ICRP107_HALF_LIVES = {
    "18F": (109.77, "min"),
    "64Cu": (12.701, "h"),
    "68Ga": (67.71, "min"),
    "89Zr": (78.41, "h"),
    "99mTc": (6.015, "h"),
    "111In": (2.8047, "d"),
    "124I": (4.1760, "d"),
    "125I": (59.400, "d"),
    "131I": (8.0252, "d"),
}
HOURS_PER = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0}

#: Relative tolerance of exact-kernel simulations against closed forms.
RTOL_EXACT = 1e-9
DOSE = 1e6  # cells
TIMES = np.linspace(0.0, 48.0, 49)  # h
#: Batches of (kd, k_label) pairs simulated at once; no pair has kd == k_label.
KD = np.array([0.3, 0.05, 1.2])
KL = np.array([0.1, 0.4, 0.02])


# ---- nuclides ----------------------------------------------------------------------------------
def test_table_matches_icrp107():
    assert set(tracer.NUCLIDES) == set(ICRP107_HALF_LIVES)
    for name, (value, unit) in ICRP107_HALF_LIVES.items():
        n = tracer.NUCLIDES[name]
        assert n.name == name
        assert (n.half_life, n.half_life_unit) == (value, unit)
        assert n.half_life_h == pytest.approx(value * HOURS_PER[unit], rel=1e-14)
        assert "ICRP Publication 107" in n.reference
        assert n.decay_mode


def test_nuclide_fields_and_frozen():
    n = tracer.nuclide("99mTc")
    assert (n.element, n.mass_number, n.metastable) == ("Tc", 99, True)
    assert (tracer.nuclide("131I").element, tracer.nuclide("131I").metastable) == ("I", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.half_life = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("unit", ["s", "min", "h", "d", "day", "hour", "minute"])
def test_decay_constant_units(unit):
    per_hour = {"day": 24.0, "hour": 1.0, "minute": 1 / 60}.get(unit, HOURS_PER.get(unit))
    for name, (value, u) in ICRP107_HALF_LIVES.items():
        lam = tracer.nuclide(name).decay_constant(unit)
        assert lam == pytest.approx(math.log(2) / (value * HOURS_PER[u] / per_hour), rel=1e-13)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("111In", "111In"), ("In-111", "111In"), ("In111", "111In"), ("indium-111", "111In"),
        ("INDIUM 111", "111In"), ("in_111", "111In"), ("99mTc", "99mTc"), ("Tc-99m", "99mTc"),
        ("tc99m", "99mTc"), ("technetium-99m", "99mTc"), ("F-18", "18F"), ("fluorine-18", "18F"),
        ("cu64", "64Cu"), ("Ga-68", "68Ga"), ("Zr-89", "89Zr"), ("I-124", "124I"),
        ("iodine-125", "125I"), ("131i", "131I"),
    ],
)  # fmt: skip
def test_name_aliases(alias, name):
    assert tracer.nuclide(alias) is tracer.NUCLIDES[name]


@pytest.mark.parametrize("bad", ["Tc-99", "In-112", "indium", "", "C-11", 111])
def test_unknown_nuclide_lists_valid_names(bad):
    with pytest.raises(DataError) as exc:
        tracer.nuclide(bad)
    for name in ICRP107_HALF_LIVES:
        assert name in str(exc.value)


# ---- decay -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ICRP107_HALF_LIVES))
def test_decay_factor_at_half_life(name):
    value, unit = ICRP107_HALF_LIVES[name]
    assert float(tracer.decay_factor(name, value, unit)) == pytest.approx(0.5, abs=1e-12)
    t_h = value * HOURS_PER[unit]
    assert float(tracer.decay_factor(name, t_h, "h")) == pytest.approx(0.5, abs=1e-12)
    assert float(tracer.decay_factor(name, 3 * t_h * 60, "min")) == pytest.approx(0.125, abs=1e-12)
    assert float(tracer.decay_factor(name, 0.0)) == 1.0


def test_decay_correct_and_to_raw():
    t = np.array([0.0, 1.0, 24.0, 67.3128, 200.0])  # h; 67.3128 h = one 111In half-life
    raw = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    corrected = tracer.decay_correct(raw, t, "In-111", "h")
    np.testing.assert_allclose(corrected[3], 4.0, rtol=1e-12)
    np.testing.assert_allclose(tracer.to_raw(corrected, t, "111In", "h"), raw, rtol=1e-13)
    np.testing.assert_allclose(tracer.undecay(corrected, t, "111In", "h"), raw, rtol=1e-13)
    # decay_correct(x) = x / decay_factor; the day and the hour agree
    np.testing.assert_allclose(
        corrected, raw / tracer.decay_factor("111In", t / 24.0, "d"), rtol=1e-13
    )
    n = tracer.nuclide("18F")
    assert float(tracer.decay_correct(1.0, 109.77, n, "minute")) == pytest.approx(2.0, rel=1e-12)


def test_decay_is_traceable_and_differentiable():
    lam = tracer.nuclide("89Zr").decay_constant("h")
    f = jax.jit(lambda t: tracer.decay_factor("89Zr", t))
    g = jax.grad(lambda t: tracer.decay_factor("89Zr", t))
    for t in (0.0, 1.5, 78.41, 500.0):
        assert float(g(t)) == pytest.approx(-lam * float(f(t)), rel=1e-12)
    ts = jnp.linspace(0.0, 100.0, 7)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(lambda t: tracer.decay_factor("89Zr", t)))(ts),
        -lam * tracer.decay_factor("89Zr", ts),
        rtol=1e-12,
    )
    # decay_correct: d/dt = +λ · corrected; d/dmeasured = exp(λ t)
    dc = jax.grad(lambda t: tracer.decay_correct(3.0, t, "89Zr"))(10.0)
    assert float(dc) == pytest.approx(lam * 3.0 * math.exp(lam * 10.0), rel=1e-12)
    dm = jax.grad(lambda m: tracer.to_raw(m, 10.0, "89Zr"))(3.0)
    assert float(dm) == pytest.approx(math.exp(-lam * 10.0), rel=1e-12)


def test_bad_time_unit():
    with pytest.raises(DataError, match="valid: s, min, h, d"):
        tracer.decay_factor("18F", 1.0, "weeks")
    with pytest.raises(DataError, match="valid: s, min, h, d"):
        tracer.nuclide("18F").decay_constant("y")


def test_tracer_imports_only_errors_from_ldpk():
    src = Path(tracer.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ldpk"):
            assert node.module == "ldpk.errors"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("ldpk") for a in node.names)


# ---- label fragments -----------------------------------------------------------------------------
def carrier(death_to: str | None = None) -> dict:
    """One compartment of cells. With ``death_to`` the model declares its own death flow
    (into that new compartment); else the label fragment supplies it."""
    spec = {
        "name": "carrier",
        "time_unit": "h",
        "amount_unit": "cells",
        "compartments": {"cells": {"unit": "cells", "description": "live carriers"}},
        "parameters": {"kd": {"value": 0.3, "unit": "1/h", "description": "death rate"}},
        "flows": [],
        "routes": {"iv": {"target": "cells"}},
    }
    if death_to:
        spec["compartments"][death_to] = {"unit": "cells"}
        spec["flows"].append({"from": "cells", "to": death_to, "k": "kd"})
    return spec


def bateman(kd, kl, t):
    """Amount in the second of two first-order steps after a bolus DOSE into the first."""
    kd, kl = np.asarray(kd)[:, None], np.asarray(kl)[:, None]
    return DOSE * kd / (kl - kd) * (np.exp(-kd * t) - np.exp(-kl * t))


def run(spec, params, **kw):
    m = ldpk.build_model(spec)
    return m, ldpk.simulate(m, params, [ldpk.Bolus(DOSE, route="iv")], TIMES, **kw)


def close(actual, expected, rtol=RTOL_EXACT, atol=RTOL_EXACT * DOSE * 1e-6):
    """Relative tolerance ``rtol``; ``atol`` (cells) only for values near zero."""
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


def check_fragment_metadata(frag):
    assert set(frag) == {"compartments", "parameters", "flows", "outputs", "references"}
    assert frag["references"]
    for p in frag["parameters"].values():
        assert p["unit"] and p["description"]
        assert "illustrative" in p["description"]
    for c in frag["compartments"].values():
        assert c["unit"] and c["description"]
    for o in frag["outputs"].values():
        assert o["unit"] and o["description"]


def test_free_label():
    frag = tracer.free_label([("cells", "kd")], sink="label_out")
    check_fragment_metadata(frag)
    m, sim = run(tracer.merge(carrier(), frag), {"kd": KD, "k_renal_label": KL})
    assert sim.kernel == "exact"
    cells = DOSE * np.exp(-KD[:, None] * TIMES)
    close(sim["cells"], cells)
    close(sim["free_label"], bateman(KD, KL, TIMES))
    close(sim["label_total"], cells + bateman(KD, KL, TIMES))
    total = np.asarray(sim.states).sum(axis=-1)
    close(total, np.full_like(total, DOSE))  # cells + free + cleared = dose
    assert np.asarray(sim["label_out"])[:, -1].min() > 0.1 * DOSE  # not vacuous
    assert any(r in m.references for r in frag["references"])


def test_persistent_dye():
    frag = tracer.persistent_dye([("cells", "kd")], sink="dye_lost")
    check_fragment_metadata(frag)
    _, sim = run(tracer.merge(carrier(), frag), {"kd": KD, "k_dye_loss": KL})
    dye = bateman(KD, KL, TIMES)
    close(sim["dye_cells"], dye)
    close(sim["fluor_cells"], DOSE * np.exp(-KD[:, None] * TIMES) + dye)
    total = np.asarray(sim.states).sum(axis=-1)
    close(total, np.full_like(total, DOSE))
    # the dye outlasts the carrier: with the default slow loss most signal remains at 48 h
    _, slow = run(tracer.merge(carrier(), frag), {"kd": 0.3})
    assert float(slow["fluor_cells"][-1]) > 0.7 * DOSE > 1e3 * float(slow["cells"][-1])


def test_live_reporter():
    frag = tracer.live_reporter(["cells"])
    check_fragment_metadata(frag)
    assert not frag["compartments"] and not frag["flows"]
    p = np.array([100.0, 2.5e3, 7.0])
    _, sim = run(tracer.merge(carrier("dead"), frag), {"kd": KD, "bli_per_cell": p})
    expected = p[:, None] * DOSE * np.exp(-KD[:, None] * TIMES)
    close(sim["bli_cells"], expected)
    close(sim["bli_total"], expected)
    total = np.asarray(sim.states).sum(axis=-1)
    close(total, np.full_like(total, DOSE))


def test_dna_assay():
    frag = tracer.dna_assay([("cells", "kd")], sink="dna_degraded")
    check_fragment_metadata(frag)
    t_half = np.log(2) / KL
    _, sim = run(tracer.merge(carrier(), frag), {"kd": KD, "t_half_dna": t_half})
    dna = bateman(KD, KL, TIMES)
    close(sim["dna_cells"], dna)
    close(sim["qpcr_cells"], DOSE * np.exp(-KD[:, None] * TIMES) + dna)
    total = np.asarray(sim.states).sum(axis=-1)
    close(total, np.full_like(total, DOSE))


@pytest.mark.parametrize("method", ["auto", "ode"])
def test_tapped_fluxes_feed_two_labels(method):
    """tap=True: free label and donor DNA both read the death flux; cells die at kd once.
    The taps are `rate:` flows linear in the states, so 'auto' solves the model exactly
    (Model.is_linear_system); the ODE kernel must agree too."""
    spec = tracer.merge(
        carrier("dead"),
        tracer.free_label([("cells", "kd")], tap=True),
        tracer.dna_assay([("cells", "kd")], tap=True, t_half_value=math.log(2) / 0.4),
    )
    ode = ldpk.ODEOptions(solver="tsit5", rtol=1e-10, atol=1e-6)
    m, sim = run(spec, {"kd": 0.3, "k_renal_label": 0.1}, ode=ode, method=method)
    assert m.is_linear_system
    assert sim.kernel == ("exact" if method == "auto" else "ode")
    # ODE kernel at rtol 1e-10, atol 1e-6 cells (1e-12 of the dose); exact kernel 1e-12
    rtol, atol = (1e-12, 1e-9) if method == "auto" else (1e-8, 1e-6)
    close(sim["cells"], DOSE * np.exp(-0.3 * TIMES), rtol, atol)
    close(sim["dead"], DOSE * (1 - np.exp(-0.3 * TIMES)), rtol, atol)
    close(sim["free_label"], bateman([0.3], [0.1], TIMES)[0], rtol, atol)
    close(sim["dna_cells"], bateman([0.3], [0.4], TIMES)[0], rtol, atol)


def test_fragments_compose_on_two_organs():
    """lung -> liver; cells die in both; free label from both, BLI of both."""
    spec = {
        "name": "two_organs",
        "compartments": {"lung": {"unit": "cells"}, "liver": {"unit": "cells"}},
        "parameters": {
            "k_lu": {"value": 0.5, "unit": "1/h"},
            "kd_lung": {"value": 0.2, "unit": "1/h"},
            "kd_liver": {"value": 0.05, "unit": "1/h"},
        },
        "flows": [{"from": "lung", "to": "liver", "k": "k_lu"}],
        "routes": {"iv": {"target": "lung"}},
    }
    spec = tracer.merge(
        spec,
        tracer.free_label([("lung", "kd_lung"), ("liver", "kd_liver")], sink="urine"),
        tracer.live_reporter(["lung", "liver"]),
    )
    m = ldpk.build_model(spec)
    assert {"bli_lung", "bli_liver", "bli_total", "label_total"} <= set(m.output_names)
    sim = ldpk.simulate(m, None, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    total = np.asarray(sim.states).sum(axis=-1)
    close(total, np.full_like(total, DOSE))
    lung = DOSE * np.exp(-0.7 * TIMES)
    close(sim["lung"], lung)
    close(sim["bli_total"], 100.0 * (lung + np.asarray(sim["liver"])))


def test_merge_rules():
    base = carrier()
    frag = tracer.free_label([("cells", "kd")])
    merged = tracer.merge(base, frag, tracer.live_reporter(["cells"]))
    assert "free_label" not in base["compartments"] and base["flows"] == []  # not modified
    assert len(merged["flows"]) == len(frag["flows"])
    assert merged["references"] == [
        *frag["references"],
        *tracer.live_reporter(["cells"])["references"],
    ]
    # references appear once
    again = tracer.merge(merged, {"references": frag["references"]})
    assert again["references"] == merged["references"]
    with pytest.raises(ModelError, match="compartment 'free_label'"):
        tracer.merge(base, frag, tracer.free_label([("cells", "kd")], renal_k="k2"))
    with pytest.raises(ModelError, match="parameter 'kd'.*model's parameter"):
        tracer.merge(base, tracer.free_label([("cells", "kd")], renal_k="kd"))
    with pytest.raises(ModelError, match="compartment 'kd'"):  # shared namespace
        tracer.merge(base, tracer.free_label([("cells", "kd")], free_compartment="kd"))
    with pytest.raises(ModelError, match="output 'bli_total'"):
        tracer.merge(
            base,
            tracer.live_reporter(["cells"]),
            tracer.live_reporter(["cells"], photons_per_cell="p2", output_prefix="b2_"),
        )
    with pytest.raises(ModelError, match="unknown entry"):
        tracer.merge(base, {"name": "x"})
    with pytest.raises(ModelError, match="carrier_loss_flows"):
        tracer.free_label("cells")
    with pytest.raises(ModelError, match="carrier_loss_flows"):
        tracer.dna_assay([("cells",)])


# ---- units -------------------------------------------------------------------------------------
def test_hand_computed_conversions():
    c = tracer.convert
    assert c(5.0, "%ID", "fraction") == pytest.approx(0.05, rel=1e-15)
    assert c(0.05, "ID", "%ID") == pytest.approx(5.0, rel=1e-15)
    # 2e4 cells of a 1e6 dose in a 0.1 g organ: 2 %ID, 20 %ID/g, 2e5 cells/g
    assert c(2e4, "cells", "%ID/g", dose=1e6, organ_weight_g=0.1) == pytest.approx(20.0)
    assert c(2e4, "cells", "%ID", dose=1e6) == pytest.approx(2.0)
    assert c(20.0, "%ID/g", "cells/g", dose=1e6) == pytest.approx(2e5)
    assert c(2e5, "cells/g", "cells", organ_weight_g=0.1) == pytest.approx(2e4)
    # singular spellings (msc_pbpk's amount unit is 'cell') are the same units
    assert c(2e5, "cell/g", "cells", organ_weight_g=0.1) == pytest.approx(2e4)
    assert c(20.0, "%ID/g", "particle/g", dose=1e6) == pytest.approx(2e5)
    assert c(20.0, "%ID/g", "ID/g") == pytest.approx(0.2)
    assert c(20.0, "%ID/g", "%ID", organ_weight_g=0.1) == pytest.approx(2.0)
    # activity: 1 mCi = 37 MBq
    assert c(1.0, "mCi", "MBq") == pytest.approx(37.0, rel=1e-15)
    assert c(37.0, "kBq", "uCi") == pytest.approx(1.0, rel=1e-15)
    assert c(2.0, "MBq", "Bq") == pytest.approx(2e6, rel=1e-15)
    # counts: cpm = Bq · 60 · efficiency
    assert c(1000.0, "Bq", "cpm", counting_efficiency=0.5) == pytest.approx(3e4)
    assert c(3e4, "cpm", "kBq", counting_efficiency=0.5) == pytest.approx(1.0)
    assert c(3e4, "counts", "cps") == pytest.approx(500.0)
    # %ID against a counted dose standard (dose in cpm) or an injected activity
    assert c(3e4, "cpm", "%ID", dose=6e5) == pytest.approx(5.0)
    assert c(3e4, "cpm", "%ID", dose=1.0, dose_unit="uCi", counting_efficiency=0.5) == (
        pytest.approx(100 * 3e4 / (3.7e4 * 60 * 0.5))
    )
    assert c(0.37, "MBq", "%ID", dose=0.1, dose_unit="mCi") == pytest.approx(10.0)
    # decay: 0.5 MBq of 18F measured one half-life after injecting 10 MBq = 10 %ID
    assert c(0.5, "MBq", "%ID", dose=10.0, nuclide="F-18", t=109.77, time_unit="min") == (
        pytest.approx(10.0, rel=1e-12)
    )
    assert c(10.0, "%ID", "MBq", dose=10.0, nuclide="18F", t=109.77, time_unit="min") == (
        pytest.approx(0.5, rel=1e-12)
    )
    # %ID/g from raw kBq/g, two half-lives of 111In later, dose 1 MBq
    t = 2 * 2.8047
    assert c(
        10.0, "kBq/g", "%ID/g", dose=1.0, dose_unit="MBq", nuclide="111In", t=t, time_unit="d"
    ) == (pytest.approx(4.0, rel=1e-12))
    # arrays broadcast (one organ weight per animal)
    np.testing.assert_allclose(
        c([1e4, 2e4], "cells", "%ID/g", dose=1e6, organ_weight_g=[0.1, 0.2]), [10.0, 10.0]
    )


ROUND_TRIPS = [
    ("%ID", "fraction"), ("%ID/g", "cells"), ("cells/g", "%ID"), ("cells", "ID/g"),
    ("MBq", "%ID"), ("mCi", "kBq"), ("uCi", "cpm"), ("cpm", "%ID/g"), ("Bq/g", "MBq"),
    ("particles/g", "particles"), ("amount", "cells"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), ROUND_TRIPS)
def test_round_trips(a, b):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 100.0, 5)
    kw = {"dose": 3.3, "organ_weight_g": 0.27, "counting_efficiency": 0.41}
    if {a, b} & {"MBq", "cpm"} and {a, b} & {"%ID", "%ID/g"}:
        kw |= {"nuclide": "124I", "t": 30.0}
    y = tracer.convert(x, a, b, **kw)
    np.testing.assert_allclose(tracer.convert(y, b, a, **kw), x, rtol=1e-13)


@pytest.mark.parametrize(
    ("args", "needed"),
    [
        ((1.0, "%ID", "cells"), "dose="),
        ((1.0, "cells", "%ID/g"), "dose="),
        ((1.0, "cells/g", "cells"), "organ_weight_g="),
        ((1.0, "%ID", "%ID/g"), "organ_weight_g="),
        ((1.0, "Bq", "cpm"), "counting_efficiency="),
        ((1.0, "cpm", "%ID", {"dose": 1.0, "dose_unit": "MBq"}), "counting_efficiency="),
        ((1.0, "MBq", "%ID", {"dose": 1.0, "nuclide": "18F"}), "t="),
        ((1.0, "MBq", "%ID", {"dose": 1.0, "t": 1.0}), "nuclide="),
    ],
)
def test_missing_arguments_are_named(args, needed):
    kw = args[3] if len(args) == 4 else {}
    with pytest.raises(DataError, match=needed):
        tracer.convert(*args[:3], **kw)


def test_conversion_errors():
    with pytest.raises(DataError, match="needs `dose=` and `organ_weight_g=`"):
        tracer.convert(1.0, "cells", "%ID/g")
    with pytest.raises(DataError, match="valid: fraction"):
        tracer.convert(1.0, "%ID/kg", "%ID")
    with pytest.raises(DataError, match="through the dose"):
        tracer.convert(1.0, "cells", "MBq", dose=1.0)
    with pytest.raises(DataError, match="different things"):
        tracer.convert(1.0, "cells", "particles")
    with pytest.raises(DataError, match="organ_weight_g must be positive"):
        tracer.convert(1.0, "cells/g", "cells", organ_weight_g=0.0)
    with pytest.raises(DataError, match="dose must be positive"):
        tracer.convert(1.0, "%ID", "cells", dose=-1.0)
    with pytest.raises(DataError, match="unknown nuclide"):
        tracer.convert(1.0, "MBq", "%ID", dose=1.0, nuclide="Tc-99", t=1.0)
