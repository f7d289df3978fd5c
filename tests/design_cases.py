"""The published design cases of ``../shared/design/fim_cases.yaml`` as ldpk models and
designs: one place for ``tests/test_design_fim.py`` (which checks each model's prediction
against the case's formula, then the FIM against the published values) and
``benchmarks/design.py`` (which records values, relative errors and timings)."""

from __future__ import annotations

from typing import Any

import numpy as np

import ldpk
from ldpk import design as dz


def _param(value: float, unit: str = "1") -> dict[str, Any]:
    return {"value": value, "unit": unit}


def one_compartment(
    params: dict[str, float], k: str, oral: bool = False, name: str = "pk1"
) -> ldpk.Model:
    """A one-compartment model: elimination rate constant ``k`` (an expression of
    ``params``), a central volume ``V``, first-order absorption rate ``KA``/``ka`` from a
    depot when ``oral``; output ``cp = central / V``."""
    comps = {"central": {"unit": "mg"}}
    flows = [{"from": "central", "k": k}]
    routes = {"iv": {"target": "central"}}
    if oral:
        ka = "KA" if "KA" in params else "ka"
        comps = {"depot": {"unit": "mg"}, **comps}
        flows.insert(0, {"from": "depot", "to": "central", "k": ka})
        routes = {"oral": {"target": "depot"}}
    return ldpk.build_model({
        "name": name,
        "time_unit": "h",
        "amount_unit": "mg",
        "compartments": comps,
        "parameters": {p: _param(v) for p, v in params.items()},
        "flows": flows,
        "routes": routes,
        "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    })  # fmt: skip


def warfarin(c: dict[str, Any]) -> tuple[ldpk.Model, dz.Design]:
    """PopED's warfarin case (``cases["warfarin"]``): one compartment, first-order absorption,
    70 mg oral, 32 subjects, proportional error (variance convention)."""
    model = ldpk.build_model({
        "name": "warfarin",
        "time_unit": "h",
        "amount_unit": "mg",
        "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
        "parameters": {p: _param(1.0) for p in ("CL", "V", "KA", "F")},
        "flows": [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "CL / V"}],
        "routes": {"oral": {"target": "depot", "bioavailability": "F"}},
        "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    })  # fmt: skip
    group = c["design"]["groups"][0]
    design = dz.Design(
        groups=[
            dz.Group(
                n=group["n"],
                times=group["times"],
                regimen=[ldpk.Bolus(c["fixed"]["D"], route="oral")],
            )
        ],  # fmt: skip
        output="cp",
        fixed_effects=c["parameters"],
        omega2=c["omega2"],
        residual=dz.Residual(proportional=c["residual"]["proportional_variance"]),
    )
    return model, design


#: Retout's model starts from initial amounts: a reset at 0 puts them at t = 0 (initial
#: amounts apply at the first record).
RETOUT_START = (ldpk.Reset(0.0),)


def retout(c: dict[str, Any]) -> tuple[ldpk.Model, dz.Design]:
    """Retout et al. 2007 (``cases["retout_power"]``): log10 of a biexponential, the first rate
    multiplied by exp(BETA) in arm 2; parameters on the log scale, BETA additive."""
    model = ldpk.build_model({
        "name": "retout_biexponential",
        "time_unit": "d",
        "amount_unit": "1",
        "compartments": {"a": {"unit": "1", "initial": "P1"}, "b": {"unit": "1", "initial": "P2"}},
        "parameters": {p: _param(1.0) for p in ("P1", "P2", "L1", "L2", "BETA")},
        "covariates": {"ARM": {"unit": "1", "default": 0}},
        "derived": {"L1e": {"expr": "L1 * exp(BETA * ARM)", "unit": "1/d"}},
        "flows": [{"from": "a", "k": "L1e"}, {"from": "b", "k": "L2"}],
        "outputs": {"y": {"expr": "log10(a + b)", "unit": "1"}},
    })  # fmt: skip
    groups = [
        dz.Group(n=g["n"], times=g["times"], regimen=list(RETOUT_START), covariates={"ARM": g["arm"] - 1}, name=f"arm {g['arm']}")
        for g in c["design"]["groups"]
    ]  # fmt: skip
    design = dz.Design(
        groups=groups,
        output="y",
        fixed_effects=c["parameters_log"],
        omega2=dict(zip(("P1", "P2", "L1", "L2"), c["omega2"], strict=True)),
        scale={"P1": "log", "P2": "log", "L1": "log", "L2": "log", "BETA": "additive"},
        residual=dz.Residual(additive=c["residual"]["additive_sd"] ** 2),
    )
    return model, design


def shrinkage_142(c: dict[str, Any]) -> tuple[ldpk.Model, dz.Design]:
    """PFIM example 1.4.2 (``cases["shrinkage_pfim_142"]``): one compartment oral, one
    subject, combined error (SD convention) held fixed."""
    p = c["parameters"]
    model = one_compartment(dict(p), "K", oral=True)
    design = dz.Design(
        groups=[
            dz.Group(n=1, times=c["design"]["times"], regimen=[ldpk.Bolus(100, route="oral")])
        ],  # fmt: skip
        output="cp",
        fixed_effects=p,
        omega2=c["omega2"],
        residual=dz.Residual(additive=0.5, proportional=0.15, convention="sd", estimate=False),
    )
    return model, design


def pfim(case: dict[str, Any]) -> tuple[ldpk.Model, dz.Design, np.ndarray]:
    """One of PFIM 7.0's one-compartment cases (``cases["pfim_cases"]["cases"][i]``): the
    model, the design (combined error, SD convention, estimated) and the case's formula at
    its times."""
    mu, name = case["mu"], case["name"]
    k = "Cl / V" if "Cl" in mu else "k"
    ka = mu.get("ka")
    t = np.asarray(case["times"], dtype=float)
    V = mu["V"]
    kk = mu["Cl"] / V if "Cl" in mu else mu["k"]
    if "Infusion" in name:
        model = one_compartment(dict(mu), k, name=name)
        regimen = [ldpk.Infusion(30, duration=2, route="iv")]
        f = np.where(
            t <= 2,
            30 / (2 * kk * V) * (1 - np.exp(-kk * t)),
            30 / (2 * kk * V) * (1 - np.exp(-2 * kk)) * np.exp(-kk * (t - 2)),
        )
    elif "FirstOrder" in name:
        model = one_compartment(dict(mu), k, oral=True, name=name)
        regimen = [ldpk.Bolus(100, route="oral")]
        f = 100 / V * ka / (ka - kk) * (np.exp(-kk * t) - np.exp(-ka * t))
    else:
        model = one_compartment(dict(mu), k, name=name)
        regimen = [ldpk.Bolus(100, route="iv")]
        f = 100 / V * np.exp(-kk * t)
    design = dz.Design(
        groups=[dz.Group(n=case["n"], times=case["times"], regimen=regimen)],
        output="cp",
        fixed_effects=mu,
        omega2=case["omega2"],
        residual=dz.Residual(
            additive=case["sigma"]["inter"], proportional=case["sigma"]["slope"], convention="sd"
        ),  # fmt: skip
    )
    return model, design, f
