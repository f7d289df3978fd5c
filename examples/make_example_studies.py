"""Simulate the bundled example studies (examples/data) from the built-in models.

Four designs the field uses, each simulated with ``ldpk.simulate`` from a built-in model with
log-normal between-animal (or between-patient) variability on the parameters the study's fit
config estimates, residual error, and a fixed seed:

- ``mitochondria_iv_biodistribution``: ``mitochondria_iv``, 18F-labelled mitochondria IV in
  mice, destructive sampling (6 times x 4 mice, one time per mouse), 6 organs in %ID/g (each
  mouse's organ weights in WEIGHT) plus blood in %ID/mL; decay-corrected gamma counting.
- ``ev_89zr_pet``: ``ev_iv``, 89Zr-labelled EVs IV in mice, longitudinal PET of liver,
  spleen, lung and kidney (%ID/g) in the same 6 mice at 7 times over 7 days, plus tail-vein
  blood samples (%ID/mL) in the first 30 min; decay-corrected.
- ``msc_111in_bli``: ``msc_pbpk`` for the mouse, 111In-oxine-labelled, luciferase-expressing
  MSCs IV: SPECT of lung, liver, spleen and kidney (%ID, decay-corrected) and bioluminescence
  (whole body and lung, photons/s) in the same 6 mice at 7 times over 7 days.
- ``cart_qpcr``: ``cart_cellular_kinetics``, blood transgene qPCR (copies/ug genomic DNA) in
  40 patients, sparse visits over 12 weeks, values below the LLOQ flagged (M3), NONMEM style.

For each study ``<study>.csv``, ``<study>.fit.yaml`` (the fit config: priors, between-subject
variability and residual error; see ``ldpk.population.fit_spec``) and ``<study>.truth.json``
(the true typical values, omegas, residual-error SDs, the design and the seed) are written.
The three biodistribution studies use the tidy format read by
``ldpk.data.read_biodistribution``: ID, TIME, TIME_UNIT, ORGAN, VALUE, UNIT, WEIGHT (g, organ
weight for %ID/g), DOSE (model amount unit), ROUTE, DOSE_TIME, STUDY, LLOQ, BLQ. Values below
the LLOQ have BLQ = 1 and VALUE = LLOQ. examples/data/README.md describes every study.

Values are written with 4 significant digits, so the files are identical from run to run.
Nothing is overwritten without ``--force``; every file is written to a temporary file and
renamed into place.

Usage: python examples/make_example_studies.py --out examples/data [--seed N] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ldpk

#: Default seed; study k draws from ``numpy.random.default_rng([seed, k])``.
SEED = 20261122
#: Significant digits of measured values in the CSV files.
DIGITS = 4

TIDY_COLUMNS = (
    "ID", "TIME", "TIME_UNIT", "ORGAN", "VALUE", "UNIT", "WEIGHT", "DOSE", "ROUTE",
    "DOSE_TIME", "STUDY", "LLOQ", "BLQ",
)  # fmt: skip
NONMEM_COLUMNS = (
    "ID", "TIME", "AMT", "EVID", "CMT", "OUTPUT", "DV", "MDV", "BLQ", "LLOQ", "WT", "AGE",
    "STUDY",
)  # fmt: skip


@dataclass(frozen=True)
class Study:
    """One simulated study: the table, the fit config (YAML text) and the truth."""

    name: str
    table: pd.DataFrame
    fit_yaml: str
    truth: dict[str, Any]


def _declare_fixed(fit_yaml: str, names: Sequence[str]) -> str:
    """The config with ``NAME: {fixed: true}`` appended to its ``parameters:`` block for each
    of ``names``: parameters of the model without a prior that the study does not inform,
    declared held so that the fit does not warn about them."""
    lines = fit_yaml.split("\n")
    j = lines.index("parameters:") + 1
    while j < len(lines) and lines[j].startswith("  "):
        j += 1
    block = ["  # held at the model file's values (not estimated from these data):"]
    lines[j:j] = block + [f"  {n}: {{fixed: true}}" for n in names]
    return "\n".join(lines)


def _sig(x: float, digits: int = DIGITS) -> str:
    """``x`` with ``digits`` significant digits ('' for NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{float(x):.{digits}g}"


def _lognormal_noise(rng: np.random.Generator, sd: float, shape: Any) -> np.ndarray:
    return np.exp(sd * rng.standard_normal(shape))


def _individual(
    rng: np.random.Generator, typical: dict[str, float], omega: dict[str, float], n: int
) -> dict[str, np.ndarray]:
    """Each subject's parameter values: typical * exp(omega * z), z ~ N(0, 1), drawn in the
    order of ``omega``; parameters without omega take the typical value."""
    out = {k: np.full(n, float(v)) for k, v in typical.items()}
    for name, w in omega.items():
        out[name] = typical[name] * np.exp(w * rng.standard_normal(n))
    return out


def _censor(values: np.ndarray, lloq: float) -> tuple[np.ndarray, np.ndarray]:
    """(VALUE, BLQ): values below the LLOQ become the LLOQ with BLQ = 1."""
    blq = (values < lloq).astype(int)
    return np.where(blq == 1, lloq, values), blq


def _outputs_yaml(outputs: dict[str, str]) -> str:
    """The ``outputs:`` mapping of a config's ``data:`` section, one organ per line."""
    return "\n".join(f"    {o}: {v}" for o, v in outputs.items())


def _prior(loc_value: float, scale: float) -> str:
    """A YAML log-normal prior with median ``loc_value``."""
    return f"{{dist: lognormal, loc: {math.log(loc_value):.4f}, scale: {scale}}}"


# ---- 1. mitochondria: destructive biodistribution ---------------------------------------


def mitochondria_study(rng: np.random.Generator, seed: list[int]) -> Study:
    """18F-labelled mitochondria IV in mice; 4 mice killed at each of 6 times."""
    name = "mitochondria_iv_biodistribution"
    model = ldpk.load_model("mitochondria_iv")
    times_min = np.array([5, 15, 30, 60, 120, 240])
    per_time = 4
    organs = ("lung", "heart", "liver", "spleen", "kidney", "brain")
    typical = {
        "KBL": 4.0, "FU_LUNG": 0.22, "FU_HEART": 0.03, "FU_LIVER": 0.38, "FU_SPLEEN": 0.07,
        "FU_KIDNEY": 0.05,
    }  # fmt: skip
    omega = {"KBL": 0.3}
    sd_organ, weight_cv = 0.15, 0.10
    add_blood, sd_blood = 0.003, 0.15  # combined error of blood: SD = sqrt(a^2 + (b f)^2)
    lloq = 0.01
    n = len(times_min) * per_time
    t_animal = np.repeat(times_min, per_time)
    params = _individual(rng, typical, omega, n)
    ref_w = {o: ldpk.physiology.lookup("mouse", f"{o}.weight").value for o in organs}
    weights = {o: np.round(ref_w[o] * _lognormal_noise(rng, weight_cv, n), 4) for o in organs}
    sim = ldpk.simulate(model, params, [ldpk.Bolus(100.0, route="iv")], times_min / 60.0)
    rows = []
    for i in range(n):
        k = int(np.flatnonzero(times_min == t_animal[i])[0])
        for o in (*organs, "blood"):
            if o == "blood":
                pred = float(sim["pct_per_g_blood"][i, k])  # %ID/mL, reference blood volume
                unit, w, sd = "%ID/mL", float("nan"), math.hypot(add_blood, sd_blood * pred)
            else:
                pred = float(sim[f"pct_{o}"][i, k]) / weights[o][i]  # %ID / g of this mouse
                unit, w, sd = "%ID/g", float(weights[o][i]), sd_organ * pred
            rows.append((i + 1, int(t_animal[i]), o, pred + sd * rng.standard_normal(), unit, w))
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "ORGAN", "raw", "UNIT", "WEIGHT"])
    value, blq = _censor(frame["raw"].to_numpy(), lloq)
    table = pd.DataFrame(
        {
            "ID": frame["ID"], "TIME": frame["TIME"], "TIME_UNIT": "min", "ORGAN": frame["ORGAN"],
            "VALUE": [_sig(v) for v in value], "UNIT": frame["UNIT"],
            "WEIGHT": [_sig(w, 6) for w in frame["WEIGHT"]], "DOSE": "100", "ROUTE": "iv",
            "DOSE_TIME": "0", "STUDY": name, "LLOQ": _sig(lloq), "BLQ": blq,
        }
    )  # fmt: skip
    # %ID/g of each mouse's own organ weight: pct_<organ> (%ID) / WEIGHT
    outputs = {**{o: f"pct_{o}" for o in organs}, "blood": "pct_per_g_blood"}
    err_organs = "\n".join(f"  pct_{o}: {{model: proportional}}" for o in organs)
    fit_yaml = f"""\
# Fit config for {name}.csv with model mitochondria_iv (mouse; 18F, decay-corrected):
#   ldpk.fit(ldpk.load_model("mitochondria_iv"), "{name}.csv",
#            config="{name}.fit.yaml", method="laplace")
# data: options of the reader (ldpk.data.read_biodistribution). The organ values are %ID per
# g of each mouse's weighed organ (WEIGHT). The automatic ORGAN -> output matching would take
# the model's own %ID/g outputs pct_per_g_<organ>, which divide by the reference organ
# weights of the physiology tables; mapping the organs to the whole-organ outputs pct_<organ>
# (%ID) makes the reader divide by the measured WEIGHT instead. Blood (%ID/mL) ->
# pct_per_g_blood (the model's reference blood volume).
# Estimated: the blood uptake rate constant and the uptake fractions of the five organs
# that take up most; FU_BRAIN, the internalisation/degradation/release rate constants
# (KINT, KDEG, KREL) and the clearance of free label stay at the model file's values: over
# 4 h (18F) every organ holds bound + internalised + degraded label alike, so they are not
# identifiable from this design. Priors: weakly informative, centred on the model file's
# illustrative values (not on the truth). Between-animal variability on KBL only: with one
# time per mouse, variability of an uptake fraction is indistinguishable from residual error.
# The additive SD of blood is the assay's noise near its limit of quantification: an LLOQ is
# where the CV reaches about 20 %, so its prior is centred on 0.2 x LLOQ. Under a half-normal
# prior reaching down to 0, the few values near the LLOQ could not determine it, and where it
# was small it pinned those animals' blood clearance: NUTS diverged (96 divergent transitions
# in 4 x 1000 draws) and its effective sample size stayed below 400.
data:
  decay_corrected: true
  outputs:
{_outputs_yaml(outputs)}
parameters:
  KBL: {{prior: {_prior(6.0, 0.7)}, iiv: 0.3}}
  FU_LUNG: {{prior: {_prior(0.15, 0.7)}}}
  FU_HEART: {{prior: {_prior(0.02, 0.7)}}}
  FU_LIVER: {{prior: {_prior(0.45, 0.5)}}}
  FU_SPLEEN: {{prior: {_prior(0.10, 0.7)}}}
  FU_KIDNEY: {{prior: {_prior(0.06, 0.7)}}}
error:
{err_organs}
  pct_per_g_blood: {{model: combined, additive: {_prior(0.2 * lloq, 0.5)}}}
"""
    truth = {
        "study": name, "model": "mitochondria_iv", "species": "mouse", "seed": seed,
        "tracer": "18F", "decay_corrected": True,
        "typical": typical, "omega": omega,
        "fixed_at_model_values": ["FU_BRAIN", "KINT", "KDEG", "KREL", "KREN", "KHEP"],
        "error": {**{outputs[o]: {"model": "proportional", "proportional": sd_organ} for o in organs},
                  outputs["blood"]: {"model": "combined", "additive": add_blood,
                                     "proportional": sd_blood}},
        "outputs": outputs,
        "lloq": {"%ID/g": lloq, "%ID/mL": lloq},
        "organ_weights": {"reference_g": ref_w, "between_animal_cv": weight_cv,
                          "source": "ldpk.physiology mouse (Brown et al. 1997)"},
        "blood_volume_ml": model.parameter("V_BLOOD").value,
        "design": {"times_min": times_min.tolist(), "animals_per_time": per_time,
                   "animals": n, "organs": [*organs, "blood"], "sampling": "destructive",
                   "dose": "100 %ID IV bolus at time 0"},
    }  # fmt: skip
    held = [
        "FU_BRAIN",
        "KINT",
        "KDEG",
        "KREL",
        "KDNA",
        "KREN",
        "KHEP",
        "E_IC",
        "KCOR",
        "KIM",
        "MTDNA_DOSE",
    ]
    return Study(name, table, _declare_fixed(fit_yaml, held), truth)


# ---- 2. EVs: longitudinal 89Zr PET plus blood samples ---------------------------------------


def ev_study(rng: np.random.Generator, seed: list[int]) -> Study:
    """89Zr-labelled EVs IV in 6 mice; PET at 7 times, blood samples in the first 30 min."""
    name = "ev_89zr_pet"
    model = ldpk.load_model("ev_iv")
    n = 6
    blood_min = np.array([2, 5, 10, 20, 30])
    pet_h = np.array([1, 4, 24, 48, 72, 120, 168])
    organs = ("liver", "spleen", "lung", "kidney")
    typical = {
        "K_LIVER": 8.0, "K_SPLEEN": 0.9, "K_LUNG": 1.8, "K_KIDNEY": 0.5, "K_REST": 5.0,
        "KREL": round(math.log(2) / 72.0, 6),
    }  # fmt: skip
    omega = {"K_LIVER": 0.25, "K_LUNG": 0.3, "KREL": 0.3}
    sd_pet = 0.12
    add_blood, sd_blood = 0.003, 0.10  # combined error of blood: SD = sqrt(a^2 + (b f)^2)
    lloq_blood, lloq_pet = 0.01, 0.05
    blood_h = np.round(blood_min / 60.0, 4)
    times = np.concatenate([blood_h, pet_h.astype(float)])
    params = _individual(rng, typical, omega, n)
    sim = ldpk.simulate(model, params, [ldpk.Bolus(100.0, route="iv")], times)
    ref_w = {o: model.parameter(f"W_{o.upper()}").value for o in organs}
    rows = []
    for i in range(n):
        for k, t in enumerate(blood_h):
            pred = float(sim["radio_plasma_conc"][i, k])
            sd = math.hypot(add_blood, sd_blood * pred)
            rows.append((i + 1, t, "plasma", pred + sd * rng.standard_normal(), "%ID/mL", np.nan, lloq_blood))  # fmt: skip
        for k, t in enumerate(pet_h, start=len(blood_h)):
            for o in organs:
                pred = float(sim[f"radio_{o}_g"][i, k])
                rows.append((i + 1, float(t), o, pred * (1 + sd_pet * rng.standard_normal()), "%ID/g", ref_w[o], lloq_pet))  # fmt: skip
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "ORGAN", "raw", "UNIT", "WEIGHT", "LLOQ"])
    value, blq = _censor(frame["raw"].to_numpy(), frame["LLOQ"].to_numpy())
    table = pd.DataFrame(
        {
            "ID": frame["ID"], "TIME": [_sig(t, 6) for t in frame["TIME"]], "TIME_UNIT": "h",
            "ORGAN": frame["ORGAN"], "VALUE": [_sig(v) for v in value], "UNIT": frame["UNIT"],
            "WEIGHT": [_sig(w, 6) for w in frame["WEIGHT"]], "DOSE": "100", "ROUTE": "iv",
            "DOSE_TIME": "0", "STUDY": name, "LLOQ": [_sig(v) for v in frame["LLOQ"]],
            "BLQ": blq,
        }
    )  # fmt: skip
    outputs = {**{o: f"radio_{o}_g" for o in organs}, "plasma": "radio_plasma_conc"}
    fit_yaml = f"""\
# Fit config for {name}.csv with model ev_iv (mouse):
#   ldpk.fit(ldpk.load_model("ev_iv"), "{name}.csv", config="{name}.fit.yaml",
#            method="laplace")
# The model file's tracer is 125I; the PET and blood values here are 89Zr, decay-corrected to
# the injection, so the nuclide does not enter the fit. 89Zr is residualising: KREL (loss of
# the label of degraded vesicles from the organ) is small, and estimated.
# data: options of the reader (ldpk.data.read_biodistribution). The organs would match
# radio_<organ>_g (the only %ID/g outputs) automatically. No output is named for plasma:
# its %ID/mL rows match plasma_conc (intact vesicles) and radio_plasma_conc (label in
# plasma, decay: true), the same expression, so for decay-corrected data they predict the
# same and the automatic matching takes plasma_conc; the mapping names the label output.
# Estimated: the five uptake rate constants (blood samples give their sum, the organs their
# shares; K_REST is the remainder) and KREL. KDEG (degradation of intact vesicles) stays at
# the model file's value: the radiolabel counts intact and degraded vesicles alike, so only
# the release of label (KREL) is seen. Priors: weakly informative, centred on the model
# file's values (calibrated to Morishita et al. 2015 for 125I; not the truth).
data:
  decay_corrected: true
  outputs:
{_outputs_yaml(outputs)}
parameters:
  K_LIVER: {{prior: {_prior(10.11, 0.7)}, iiv: 0.3}}
  K_SPLEEN: {{prior: {_prior(0.578, 0.7)}}}
  K_LUNG: {{prior: {_prior(2.529, 0.7)}, iiv: 0.3}}
  K_KIDNEY: {{prior: {_prior(0.624, 0.7)}}}
  K_REST: {{prior: {_prior(6.949, 0.7)}}}
  KREL: {{prior: {_prior(0.02, 1.0)}, iiv: 0.3}}
error:
  radio_liver_g: {{model: proportional}}
  radio_spleen_g: {{model: proportional}}
  radio_lung_g: {{model: proportional}}
  radio_kidney_g: {{model: proportional}}
  radio_plasma_conc: {{model: combined, additive: {{dist: halfnormal, scale: 0.05}}}}
# NUTS: the PET images pin each animal's rate constants down, so the between-subject
# effects are sampled centred (as log P_i). Non-centred, the sampler needed about ten times
# as many leapfrog steps (adapted step size 0.05 against 0.29; 143 against 15 steps per
# iteration on this study).
fit:
  parameterization: centred
"""
    truth = {
        "study": name, "model": "ev_iv", "species": "mouse", "seed": seed,
        "tracer": "89Zr (model file: 125I; values decay-corrected, so the nuclide does not enter)",
        "decay_corrected": True,
        "typical": typical, "omega": omega,
        "fixed_at_model_values": ["KDEG", "KRENAL"],
        "error": {**{outputs[o]: {"model": "proportional", "proportional": sd_pet} for o in organs},
                  outputs["plasma"]: {"model": "combined", "additive": add_blood,
                                      "proportional": sd_blood}},
        "outputs": outputs,
        "lloq": {"%ID/g": lloq_pet, "%ID/mL": lloq_blood},
        "organ_weights": {"reference_g": ref_w, "note": "PET does not weigh organs: WEIGHT "
                          "is the model's reference organ weight (ldpk.physiology mouse)"},
        "design": {"animals": n, "blood_times_min": blood_min.tolist(),
                   "pet_times_h": pet_h.tolist(), "organs": [*organs, "plasma"],
                   "sampling": "longitudinal", "dose": "100 %ID IV bolus at time 0"},
    }  # fmt: skip
    held = ["KDEG", "KRENAL", "KA_IP", "F_IP", "KA_IN", "F_IN", "KA_SC", "F_SC", "GLUC"]
    return Study(name, table, _declare_fixed(fit_yaml, held), truth)


# ---- 3. MSCs: 111In SPECT plus bioluminescence in the same mice -------------------------


def msc_study(rng: np.random.Generator, seed: list[int]) -> Study:
    """111In-oxine-labelled, luciferase-expressing MSCs IV in 6 mice (1e6 cells)."""
    name = "msc_111in_bli"
    model = ldpk.load_model("msc_pbpk").for_species("mouse")
    n = 6
    dose = 1.0e6
    times_h = np.array([1, 4, 24, 48, 72, 120, 168])
    spect = ("lung", "liver", "spleen", "kidney")
    bli = {"total": "bli_total", "thorax": "bli_lung"}  # BLI region -> output
    typical = {"E_LUNG": 0.85, "K_REL_LUNG": 0.05, "E_LIVER": 0.15, "KD": 0.02, "BLI_PER_CELL": 40.0}  # fmt: skip
    omega = {"K_REL_LUNG": 0.3, "KD": 0.3}
    sd_spect, sd_bli = 0.12, 0.30
    lloq_spect, lloq_bli = 0.1, 2.0e5
    params = _individual(rng, typical, omega, n)
    sim = ldpk.simulate(model, params, [ldpk.Bolus(dose, route="iv")], times_h.astype(float))
    rows = []
    for i in range(n):
        for k, t in enumerate(times_h):
            for o in spect:
                pct = float(sim[f"In111_{o}"][i, k]) / dose * 100.0  # cell-eq -> %ID
                rows.append((i + 1, int(t), o, pct * (1 + sd_spect * rng.standard_normal()), "%ID", lloq_spect))  # fmt: skip
            for o, out in bli.items():
                f = float(sim[out][i, k])
                rows.append((i + 1, int(t), o, f * math.exp(sd_bli * rng.standard_normal()), "photons/s", lloq_bli))  # fmt: skip
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "ORGAN", "raw", "UNIT", "LLOQ"])
    value, blq = _censor(frame["raw"].to_numpy(), frame["LLOQ"].to_numpy())
    table = pd.DataFrame(
        {
            "ID": frame["ID"], "TIME": frame["TIME"], "TIME_UNIT": "h", "ORGAN": frame["ORGAN"],
            "VALUE": [_sig(v) for v in value], "UNIT": frame["UNIT"], "WEIGHT": "",
            "DOSE": _sig(dose), "ROUTE": "iv", "DOSE_TIME": "0", "STUDY": name,
            "LLOQ": [_sig(v) for v in frame["LLOQ"]], "BLQ": blq,
        }
    )  # fmt: skip
    outputs = {**{o: f"In111_{o}" for o in spect}, **bli}
    fit_yaml = f"""\
# Fit config for {name}.csv with model msc_pbpk FOR THE MOUSE (the model file's species is
# human; these are mice):
#   model = ldpk.load_model("msc_pbpk").for_species("mouse")
#   ldpk.fit(model, "{name}.csv", config="{name}.fit.yaml", method="laplace")
# Two assays, one model: 111In SPECT (%ID, decay-corrected) and bioluminescence (photons/s;
# live cells only). DOSE is 1e6 cells (the model's amount unit), so the model's 111In outputs
# are in cell-eq (%ID = 100 cell-eq / DOSE).
# data: options of the reader (ldpk.data.read_biodistribution). %ID rows -> In111_<organ>;
# for the lung, alu_lung (human Alu qPCR) is in cell-eq too, so the mapping is needed. BLI
# regions: total -> bli_total, thorax (chest ROI) -> bli_lung.
# Estimated: pulmonary entrapment and release (E_LUNG, K_REL_LUNG), hepatic extraction
# (E_LIVER), cell death (KD; seen by BLI, which counts live cells only) and the light per
# cell (BLI_PER_CELL). Everything else stays at the model file's (mouse) values. Priors:
# weakly informative; the extractions on (0, 1) by beta priors, the rate constants
# log-normal centred near the model file's human-calibrated values (not the truth).
data:
  decay_corrected: true
  outputs:
{_outputs_yaml(outputs)}
parameters:
  E_LUNG: {{prior: {{dist: beta, a: 2.0, b: 2.0}}}}
  K_REL_LUNG: {{prior: {_prior(0.15, 1.0)}, iiv: 0.3}}
  E_LIVER: {{prior: {{dist: beta, a: 1.5, b: 15.0}}}}
  KD: {{prior: {_prior(0.008, 1.0)}, iiv: 0.3}}
  BLI_PER_CELL: {{prior: {_prior(100.0, 1.0)}}}
error:
  In111_lung: {{model: proportional}}
  In111_liver: {{model: proportional}}
  In111_spleen: {{model: proportional}}
  In111_kidney: {{model: proportional}}
  bli_total: {{model: lognormal}}
  bli_lung: {{model: lognormal}}
"""
    truth = {
        "study": name, "model": "msc_pbpk", "species": "mouse (model.for_species('mouse'))",
        "seed": seed, "tracer": "111In", "decay_corrected": True,
        "typical": typical, "omega": omega,
        "fixed_at_model_values": "all other parameters (mouse physiology)",
        "error": {**{f"In111_{o}": {"model": "proportional", "proportional": sd_spect} for o in spect},
                  **{out: {"model": "lognormal", "proportional": sd_bli} for out in bli.values()}},
        "outputs": outputs,
        "lloq": {"%ID": lloq_spect, "photons/s": lloq_bli},
        "dose_cells": dose,
        "design": {"animals": n, "times_h": times_h.tolist(), "spect_organs": list(spect),
                   "bli_regions": bli, "sampling": "longitudinal",
                   "dose": "1e6 cells IV bolus at time 0"},
    }  # fmt: skip
    held = [
        "E_SPLEEN",
        "E_KIDNEY",
        "E_REST",
        "F_HOME",
        "K_REL_REST",
        "K_REL_INJ",
        "T_HALF_DNA",
        "K_LEAK",
        "K_FREE",
        "F_FREE_LIVER",
        "F_FREE_SPLEEN",
        "F_FREE_KIDNEY",
        "F_FREE_REST",
    ]
    return Study(name, table, _declare_fixed(fit_yaml, held), truth)


# ---- 4. CAR-T: sparse transgene qPCR in patients ----------------------------------------


def cart_study(rng: np.random.Generator, seed: list[int]) -> Study:
    """Tisagenlecleucel-like transgene kinetics in 40 patients, NONMEM-style table."""
    name = "cart_qpcr"
    model = ldpk.load_model("cart_cellular_kinetics")
    n = 40
    typical = {"RHO": 0.7, "TMAX": 12.0, "ALPHA": 0.12, "KMEM": 0.01, "BETA": 0.004}
    omega = {"RHO": 0.3, "TMAX": 0.2, "ALPHA": 0.3}
    sd_log = 0.4
    lloq = 50.0
    # nominal visit days and the +- window of the actual sampling day
    visits = [(1, 0.2), (4, 0.5), (7, 1), (10, 1), (14, 2), (21, 2), (28, 3), (56, 5), (84, 7)]
    p_missed = 0.15
    params = _individual(rng, typical, omega, n)
    wt = np.round(np.clip(45.0 * _lognormal_noise(rng, 0.45, n), 12.0, 110.0), 1)
    age = np.round(np.clip(np.exp(np.log(14.0) + 0.5 * rng.standard_normal(n)), 3, 26)).astype(int)  # fmt: skip
    # infused dose (1e6 CAR+ cells/kg) as the initial blood transgene level (copies/ug per
    # 1e6 cells/kg: 1, illustrative; the model is linear in the dose)
    amt = np.round(np.clip(1.5 * _lognormal_noise(rng, 0.5, n), 0.2, 5.0), 2)
    sample_times = []
    for _ in range(n):
        ts = []
        for day, win in visits:
            if rng.random() < p_missed:
                continue
            ts.append(round(day + rng.uniform(-win, win), 2))
        sample_times.append(np.array(sorted(ts)))
    grid = np.unique(np.concatenate(sample_times))
    sim = ldpk.simulate(model, params, [ldpk.Bolus(1.0, route="iv")], grid)
    rows = []
    for i in range(n):
        rows.append((i + 1, 0.0, amt[i], 1, 1, "", 0.0, 1, 0))
        for t in sample_times[i]:
            pred = amt[i] * float(sim["transgene"][i, int(np.searchsorted(grid, t))])
            dv = pred * math.exp(sd_log * rng.standard_normal())
            blq = int(dv < lloq)
            rows.append((i + 1, float(t), np.nan, 0, 1, "transgene", lloq if blq else dv, 0, blq))
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "OUTPUT", "DV", "MDV", "BLQ"])  # fmt: skip
    table = pd.DataFrame(
        {
            "ID": frame["ID"], "TIME": [_sig(t, 6) for t in frame["TIME"]],
            "AMT": [_sig(a) if e == 1 else "0" for a, e in zip(frame["AMT"], frame["EVID"], strict=True)],  # fmt: skip
            "EVID": frame["EVID"], "CMT": frame["CMT"], "OUTPUT": frame["OUTPUT"],
            "DV": [_sig(v) for v in frame["DV"]], "MDV": frame["MDV"], "BLQ": frame["BLQ"],
            "LLOQ": _sig(lloq), "WT": [_sig(wt[i - 1]) for i in frame["ID"]],
            "AGE": [str(age[i - 1]) for i in frame["ID"]], "STUDY": name,
        }
    )  # fmt: skip
    fit_yaml = f"""\
# Fit config for {name}.csv (NONMEM style) with model cart_cellular_kinetics (days):
#   ldpk.fit(ldpk.load_model("cart_cellular_kinetics"), "{name}.csv",
#            config="{name}.fit.yaml")  # NUTS
# Not method="laplace": the expansion switch makes the likelihood kinked in TMAX wherever a
# patient's TMAX passes one of its sampling times, and the best TMAX of a patient whose peak
# was sampled sits on that kink. The marginal Laplace approximation needs a smooth, convex
# conditional mode per patient; here it has none for patients 3 (TMAX on its day-13.6
# sample) and 12 (negative curvature), and the fit stops and says so.
# DV in copies/ug genomic DNA; BLQ = 1 rows (DV = LLOQ = 50) enter by the M3 likelihood.
# OUTPUT names the model output (transgene). AMT is the infused dose expressed as the initial
# transgene level (1 copy/ug per 1e6 CAR+ cells/kg, illustrative). WT (kg) and AGE (years)
# are covariates with no effect in the simulation (for covariate-screening exercises).
# Estimated: the five kinetic parameters of Stein et al. 2019, with between-patient
# variability on expansion (RHO, TMAX) and contraction (ALPHA). Priors: RHO and TMAX as in the
# model file; ALPHA, KMEM and BETA weakly informative around the model file's values (not the
# truth). BETA (memory decline, half-life months) is only weakly informed by 12 weeks.
parameters:
  RHO: {{prior: {{dist: lognormal, loc: -0.1181, scale: 0.5}}, iiv: 0.5}}
  TMAX: {{prior: {{dist: lognormal, loc: 2.3026, scale: 0.3}}, iiv: 0.3}}
  ALPHA: {{prior: {_prior(0.153197, 0.7)}, iiv: 0.4}}
  KMEM: {{prior: {_prior(0.008, 1.0)}, iiv: none}}
  BETA: {{prior: {_prior(0.00315067, 1.0)}, iiv: none}}
error:
  transgene: {{model: lognormal}}
# Kernel: the model is piecewise linear (its rates switch at TMAX), so the fit solves it
# exactly by matrix exponentials between TMAX and the doses: 1.0 ms per gradient of this
# posterior on 2 idle cores, against 10 ms with the ODE kernel (Tsit5, rtol 1e-6).
# NUTS warm-up: the joint mode sits on a TMAX kink, so the Hessian there is not positive
# definite and the sampler starts from the identity metric, whose step size must fit the
# narrowest direction (each patient's RHO x TMAX): 0.003-0.006 with trees of 127-255
# leapfrog steps until the metric adapts at iteration 100. Warm-up trees are capped at
# 2^8 - 1 steps; sampling keeps the default cap.
# Two modes: patient 15 missed the day-14 visit (246 copies/ug at day 9.9, 63 at day 20.7,
# then BLQ). Either its expansion stopped near day 10 and declined at the usual rate, or it
# expanded fast (RHO_i about 3.7 /d) and collapsed within hours (ALPHA_i about 15 /d), with
# larger between-patient SDs. The second has about 20 less log density. A single joint MAP
# search ended there with seed 0 and two of four chains started near it stayed (the fit's
# convergence warnings named the two groups of chains and patient 15); the two-stage search
# that starts fits now finds the first from every starting draw tried (README, recovery).
# ALPHA non-centred: its between-patient SD is weakly identified (90 % interval about
# 0.12-0.61), and sampled centred (as 'auto' chose) it met a funnel: 16 divergences and a
# tail ESS of 375 for omega_ALPHA in 4 x (2000 + 2000) draws, where non-centred gave none
# and 789 in 4 x (1000 + 1000). RHO and TMAX stay 'auto' (centred).
fit:
  warmup_max_tree_depth: 8
  parameterization: {{ALPHA: noncentred}}
"""
    n_obs = int((frame["EVID"] == 0).sum())
    truth = {
        "study": name, "model": "cart_cellular_kinetics", "species": "human", "seed": seed,
        "typical": typical, "omega": omega,
        "error": {"transgene": {"model": "lognormal", "proportional": sd_log}},
        "outputs": {"transgene": "transgene"},
        "lloq": {"copies/ug": lloq},
        "design": {"patients": n, "visits_day_window": visits, "p_missed": p_missed,
                   "observations": n_obs, "blq": int(frame["BLQ"].sum()),
                   "dose": "AMT = infused 1e6 CAR+ cells/kg (initial transgene level, "
                           "copies/ug) IV at day 0",
                   "covariates": {"WT": "kg, no effect", "AGE": "years, no effect"}},
    }  # fmt: skip
    return Study(name, table, fit_yaml, truth)


STUDIES: dict[str, Callable[[np.random.Generator, list[int]], Study]] = {
    "mitochondria_iv_biodistribution": mitochondria_study,
    "ev_89zr_pet": ev_study,
    "msc_111in_bli": msc_study,
    "cart_qpcr": cart_study,
}


def make_study(name: str, seed: int = SEED) -> Study:
    """Simulate study ``name`` (a key of ``STUDIES``) with the base ``seed``."""
    k = list(STUDIES).index(name)
    return STUDIES[name](np.random.default_rng([seed, k]), [seed, k])


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def study_files(study: Study) -> dict[str, str]:
    """File name -> content of a study's three files."""
    return {
        f"{study.name}.csv": study.table.to_csv(index=False, lineterminator="\n"),
        f"{study.name}.fit.yaml": study.fit_yaml,
        f"{study.name}.truth.json": json.dumps(study.truth, indent=2) + "\n",
    }


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/data", help="output directory")
    parser.add_argument("--seed", type=int, default=SEED, help=f"base seed (default {SEED})")
    parser.add_argument("--study", action="append", choices=list(STUDIES),
                        help="simulate only this study (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    names = args.study or list(STUDIES)
    targets = [out / f"{s}{ext}" for s in names for ext in (".csv", ".fit.yaml", ".truth.json")]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        sys.exit(f"refusing to overwrite {', '.join(existing)}; give --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in names:
        study = make_study(s, args.seed)
        for fname, text in study_files(study).items():
            _write_atomic(out / fname, text)
            written.append(out / fname)
        print(f"{s}: {len(study.table)} rows")
    return written


if __name__ == "__main__":
    main()
