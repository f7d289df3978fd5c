"""Pharmacodynamic (PD) building blocks as model-file fragments.

Each function returns a fragment in the model-file layout (compartments, parameters, flows,
outputs, references) that :func:`ldpk.tracer.merge` (re-exported here as :func:`merge`) adds
to a PK model spec before :func:`ldpk.build_model`:

- :func:`direct_emax`: an effect that follows the driver instantly (Emax or sigmoid Emax);
- :func:`effect_compartment`: an effect compartment (link model) with equilibration rate
  constant KE0 and an Emax effect on its concentration;
- :func:`indirect_response`: the four turnover (indirect response) models of Dayneka, Garg
  and Jusko.

``driver`` is an expression of the PK model, e.g. ``"central / V"`` (a concentration) or
``"lung"`` (an amount); it may use the PK model's compartments, parameters, derived
quantities and ``t``. Every parameter, compartment and output of a fragment is named with
``prefix`` (e.g. ``prefix="pd_"`` gives ``pd_EMAX``), so that several fragments can be merged
into one model. Default parameter values are illustrative, not published values: set them
for the drug and the response.

This module imports nothing from ldpk except ``ldpk.errors`` and ``ldpk.tracer`` (merge).
"""

from __future__ import annotations

from typing import Any

from ldpk.errors import ModelError
from ldpk.tracer import merge

__all__ = ["direct_emax", "effect_compartment", "indirect_response", "merge"]

ILLUSTRATIVE = "illustrative default, not a published value; fit or set it for your drug"

REF_HOLFORD_SHEINER = (
    "Holford NHG, Sheiner LB. Understanding the dose-effect relationship: clinical application "
    "of pharmacokinetic-pharmacodynamic models. Clin Pharmacokinet 1981;6(6):429-453."
)
REF_SHEINER_1979 = (
    "Sheiner LB, Stanski DR, Vozeh S, Miller RD, Ham J. Simultaneous modeling of "
    "pharmacokinetics and pharmacodynamics: application to d-tubocurarine. "
    "Clin Pharmacol Ther 1979;25(3):358-371."
)
REF_DAYNEKA = (
    "Dayneka NL, Garg V, Jusko WJ. Comparison of four basic models of indirect pharmacodynamic "
    "responses. J Pharmacokinet Biopharm 1993;21(4):457-478."
)

#: Indirect-response kinds: (drug effect is inhibition?, drug acts on production?, label).
_KINDS: dict[int, tuple[bool, bool, str]] = {
    1: (True, True, "I: inhibition of production (kin)"),
    2: (True, False, "II: inhibition of loss (kout)"),
    3: (False, True, "III: stimulation of production (kin)"),
    4: (False, False, "IV: stimulation of loss (kout)"),
}


def _check_prefix(prefix: str, fn: str) -> None:
    if not isinstance(prefix, str) or not (prefix + "X").isidentifier():
        raise ModelError(
            f"{fn}(): prefix must be empty or the start of a valid identifier (e.g. 'pd_'), "
            f"got {prefix!r}"
        )


def _check_driver(driver: Any, fn: str) -> str:
    if not isinstance(driver, str) or not driver.strip():
        raise ModelError(
            f"{fn}(): driver must be an expression string of the PK model, e.g. 'central / V', "
            f"got {driver!r}"
        )
    return f"({driver.strip()})"


def _param(value: float, unit: str, description: str, fn: str, name: str) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{fn}(): {name} must be a number, got {value!r}")
    return {"value": float(value), "unit": unit, "description": description}


def _emax_part(
    drive: str,
    prefix: str,
    sigmoid: bool,
    *,
    e0: float,
    emax: float,
    ec50: float,
    hill: float,
    driver_unit: str,
    effect_unit: str,
    output: str,
    what: str,
    fn: str,
) -> dict[str, Any]:
    """Parameters E0, EMAX, EC50 (and N when sigmoid) and the output E0 + EMAX·hill(...)."""
    p = prefix
    cunit = driver_unit or "1"
    params = {
        f"{p}E0": _param(e0, effect_unit, f"baseline effect (no drug); {ILLUSTRATIVE}", fn, "e0"),
        f"{p}EMAX": _param(
            emax,
            effect_unit,
            f"maximal drug effect (E - E0 at saturation); {ILLUSTRATIVE}",
            fn,
            "emax",
        ),  # fmt: skip
        f"{p}EC50": _param(
            ec50, cunit, f"{what} giving half the maximal effect; {ILLUSTRATIVE}", fn, "ec50"
        ),
    }
    if sigmoid:
        params[f"{p}N"] = _param(
            hill, "1", f"Hill coefficient (steepness) of the sigmoid Emax; {ILLUSTRATIVE}",
            fn, "hill",
        )  # fmt: skip
        expr = f"{p}E0 + {p}EMAX * hill({drive}, {p}EC50, {p}N)"
        shape = "sigmoid Emax (Hill)"
    else:
        expr = f"{p}E0 + {p}EMAX * hill({drive}, {p}EC50)"
        shape = "Emax"
    return {
        "parameters": params,
        "outputs": {
            output: {
                "expr": expr,
                "unit": effect_unit,
                "description": f"{shape} effect of the {what}",
            }
        },
    }


def direct_emax(
    driver: str,
    prefix: str = "",
    sigmoid: bool = False,
    *,
    e0: float = 0.0,
    emax: float = 1.0,
    ec50: float = 1.0,
    hill: float = 1.0,
    driver_unit: str = "",
    effect_unit: str = "1",
    output: str | None = None,
) -> dict[str, Any]:
    """A direct (immediate) Emax effect of ``driver`` (Holford & Sheiner 1981).

    Output ``{prefix}effect`` (or ``output``), in ``effect_unit``::

        E = E0 + EMAX · C^n / (EC50^n + C^n),    C = driver (clamped at 0)

    with n = 1 unless ``sigmoid`` (Hill model; parameter ``{prefix}N``, default ``hill``).
    Parameters ``{prefix}E0``, ``{prefix}EMAX`` (``effect_unit``) and ``{prefix}EC50``
    (``driver_unit``, the unit of the driver expression). The fragment adds no state: a
    linear PK model stays linear (exact kernel). EMAX < 0 gives an inhibitory effect.
    """
    fn = "direct_emax"
    _check_prefix(prefix, fn)
    drive = _check_driver(driver, fn)
    frag = _emax_part(
        drive, prefix, sigmoid, e0=e0, emax=emax, ec50=ec50, hill=hill,
        driver_unit=driver_unit, effect_unit=effect_unit,
        output=output or f"{prefix}effect", what="driver (concentration)", fn=fn,
    )  # fmt: skip
    frag["references"] = [REF_HOLFORD_SHEINER]
    return frag


def effect_compartment(
    driver: str,
    prefix: str = "",
    sigmoid: bool = False,
    *,
    ke0: float = 0.5,
    e0: float = 0.0,
    emax: float = 1.0,
    ec50: float = 1.0,
    hill: float = 1.0,
    driver_unit: str = "",
    effect_unit: str = "1",
    time_unit: str = "h",
    output: str | None = None,
) -> dict[str, Any]:
    """An effect compartment (link model; Sheiner et al. 1979, Holford & Sheiner 1981).

    Compartment ``{prefix}Ce`` with::

        dCe/dt = KE0 · (C − Ce),    Ce(0) = 0,    C = driver

    and an Emax (or sigmoid Emax) output ``{prefix}effect`` (or ``output``) on Ce, with the
    parameters of :func:`direct_emax` plus ``{prefix}KE0`` (1/``time_unit``), whose
    ln 2 / KE0 is the equilibration half-life between driver and effect.

    The effect compartment holds a *concentration* (``driver_unit``), not an amount: it is
    fed by a ``rate:`` flow with no source, so it takes no mass from the PK model (the
    classical hypothetical compartment of negligible volume), and its "amount" is Ce. The
    flow depends on states, so the model is solved with the ODE kernel. For a one-compartment
    IV bolus D (volume V, elimination k ≠ KE0)::

        Ce(t) = D/V · KE0/(KE0 − k) · (e^{−k t} − e^{−KE0 t})
    """
    fn = "effect_compartment"
    _check_prefix(prefix, fn)
    drive = _check_driver(driver, fn)
    p = prefix
    ce = f"{p}Ce"
    frag = _emax_part(
        ce, prefix, sigmoid, e0=e0, emax=emax, ec50=ec50, hill=hill,
        driver_unit=driver_unit, effect_unit=effect_unit,
        output=output or f"{p}effect", what="effect-site concentration", fn=fn,
    )  # fmt: skip
    frag["parameters"][f"{p}KE0"] = _param(
        ke0, f"1/{time_unit}",
        f"equilibration rate constant between driver and effect site; {ILLUSTRATIVE}",
        fn, "ke0",
    )  # fmt: skip
    frag["compartments"] = {
        ce: {
            "unit": driver_unit,
            "description": "effect-site concentration (a concentration, not an amount; "
            "takes no mass from the PK model)",
        }
    }
    frag["flows"] = [
        {
            "to": ce,
            "rate": f"{p}KE0 * ({drive} - {ce})",
            "description": "equilibration of the effect site with the driver (no mass moved)",
        }
    ]
    frag["outputs"][f"{p}Ce_conc"] = {
        "expr": ce,
        "unit": driver_unit,
        "description": "effect-site concentration",
    }
    frag["references"] = [REF_SHEINER_1979, REF_HOLFORD_SHEINER]
    return frag


def indirect_response(
    driver: str,
    kind: int = 1,
    prefix: str = "",
    sigmoid: bool = False,
    *,
    kin: float = 1.0,
    kout: float = 0.1,
    imax: float = 1.0,
    ic50: float = 1.0,
    smax: float = 1.0,
    sc50: float = 1.0,
    hill: float = 1.0,
    driver_unit: str = "",
    response_unit: str = "1",
    time_unit: str = "h",
    output: str | None = None,
) -> dict[str, Any]:
    """An indirect-response (turnover) model (Dayneka, Garg & Jusko 1993).

    Compartment ``{prefix}R`` (the response, in ``response_unit``; like an effect compartment
    it holds the response itself, not an amount of drug) with::

        dR/dt = KIN · f_in − KOUT · f_out · R,    R(0) = R0 = KIN / KOUT

    where the drug acts through I(C) = 1 − IMAX · C^n/(IC50^n + C^n) (kinds 1, 2) or
    S(C) = 1 + SMAX · C^n/(SC50^n + C^n) (kinds 3, 4), n = 1 unless ``sigmoid``:

    - kind 1 (I): inhibition of production, f_in = I(C);   R_ss = R0 · I(Css)
    - kind 2 (II): inhibition of loss, f_out = I(C);       R_ss = R0 / I(Css)
    - kind 3 (III): stimulation of production, f_in = S(C); R_ss = R0 · S(Css)
    - kind 4 (IV): stimulation of loss, f_out = S(C);       R_ss = R0 / S(Css)

    Parameters ``{prefix}KIN`` (``response_unit``/``time_unit``), ``{prefix}KOUT``
    (1/``time_unit``), ``{prefix}IMAX`` ('1', ≤ 1) and ``{prefix}IC50`` (``driver_unit``) for
    kinds 1-2, or ``{prefix}SMAX`` ('1') and ``{prefix}SC50`` for kinds 3-4, and
    ``{prefix}N`` when sigmoid. Outputs ``{prefix}response`` (or ``output``): R, and
    ``{prefix}response_rel``: R / R0. The response starts at its baseline through the
    compartment's ``initial: KIN / KOUT``; a Reset event restores it.
    """
    fn = "indirect_response"
    _check_prefix(prefix, fn)
    drive = _check_driver(driver, fn)
    if isinstance(kind, bool) or kind not in _KINDS:
        raise ModelError(
            f"{fn}(): kind must be 1 (inhibit kin), 2 (inhibit kout), 3 (stimulate kin) or "
            f"4 (stimulate kout), got {kind!r}"
        )
    inhibit, on_production, label = _KINDS[kind]
    p = prefix
    r = f"{p}R"
    cunit = driver_unit or "1"
    params: dict[str, Any] = {
        f"{p}KIN": _param(
            kin, f"{response_unit}/{time_unit}",
            f"zero-order production rate of the response; {ILLUSTRATIVE}", fn, "kin",
        ),
        f"{p}KOUT": _param(
            kout, f"1/{time_unit}",
            f"first-order loss rate constant of the response; {ILLUSTRATIVE}", fn, "kout",
        ),
    }  # fmt: skip
    n = f", {p}N" if sigmoid else ""
    if inhibit:
        params[f"{p}IMAX"] = _param(
            imax, "1", f"maximal fractional inhibition (0 to 1); {ILLUSTRATIVE}", fn, "imax"
        )
        params[f"{p}IC50"] = _param(
            ic50, cunit, f"driver giving half the maximal inhibition; {ILLUSTRATIVE}", fn, "ic50"
        )
        factor = f"(1 - {p}IMAX * hill({drive}, {p}IC50{n}))"
    else:
        params[f"{p}SMAX"] = _param(
            smax, "1", f"maximal fractional stimulation; {ILLUSTRATIVE}", fn, "smax"
        )
        params[f"{p}SC50"] = _param(
            sc50, cunit, f"driver giving half the maximal stimulation; {ILLUSTRATIVE}", fn, "sc50"
        )
        factor = f"(1 + {p}SMAX * hill({drive}, {p}SC50{n}))"
    if sigmoid:
        params[f"{p}N"] = _param(
            hill, "1", f"Hill coefficient of the drug effect; {ILLUSTRATIVE}", fn, "hill"
        )
    what = "inhibited" if inhibit else "stimulated"
    if on_production:
        flows = [
            {"to": r, "rate": f"{p}KIN * {factor}", "description": f"production ({what})"},
            {"from": r, "k": f"{p}KOUT", "description": "first-order loss"},
        ]
    else:
        flows = [
            {"to": r, "rate": f"{p}KIN", "description": "zero-order production"},
            {
                "from": r,
                "rate": f"{p}KOUT * {factor} * {r}",
                "description": f"first-order loss ({what})",
            },
        ]
    return {
        "compartments": {
            r: {
                "unit": response_unit,
                "description": f"response of indirect-response model {label} "
                "(the response itself, not an amount of drug)",
                "initial": f"{p}KIN / {p}KOUT",
            }
        },
        "parameters": params,
        "flows": flows,
        "outputs": {
            output or f"{p}response": {
                "expr": r,
                "unit": response_unit,
                "description": f"response (indirect-response model {label})",
            },
            f"{p}response_rel": {
                "expr": f"{r} / ({p}KIN / {p}KOUT)",
                "unit": "1",
                "description": "response relative to its baseline R0 = KIN / KOUT",
            },
        },
        "references": [REF_DAYNEKA],
    }
