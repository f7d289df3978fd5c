"""Tracers and labels: nuclide half-lives and decay, label fates, biodistribution units.

What a living-drug study measures is rarely the carrier itself. This module supplies

- a nuclide table (:data:`NUCLIDES`, :func:`nuclide`) with ICRP Publication 107 half-lives;
- radioactive decay (:func:`decay_factor`, :func:`decay_correct`, :func:`to_raw`), written
  in ``jax.numpy`` so that it can be jitted, vmapped and differentiated;
- label fates as model-file fragments (:func:`free_label`, :func:`persistent_dye`,
  :func:`live_reporter`, :func:`dna_assay`) and :func:`merge` to add them to a model spec
  for :func:`ldpk.build_model`;
- unit conversions used in biodistribution tables (:func:`convert`: %ID, %ID/g, amounts,
  activity, counts).

This module sits at the bottom of the layer order: it imports nothing from ldpk except
``ldpk.errors``.

Model amounts of a label are in *carrier equivalents* (the amount of label that that many
carriers held at injection; unit ``cell-eq`` by default), so that a dose of 1e6 cells gives
label amounts directly comparable with %ID. Label amounts in a model are decay-corrected
(the model has no physical decay); compare raw measurements through :func:`decay_correct`
or turn predictions into raw activity with :func:`to_raw`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ldpk.errors import DataError, ModelError

__all__ = [
    "NUCLIDES",
    "Nuclide",
    "convert",
    "decay_correct",
    "decay_factor",
    "dna_assay",
    "free_label",
    "live_reporter",
    "merge",
    "nuclide",
    "persistent_dye",
    "time_unit_seconds",
    "to_raw",
    "undecay",
    "valid_units",
]

# ---- time units ------------------------------------------------------------------------------
#: Seconds per time unit (the day is 86 400 s, as in ICRP 107).
_TIME_UNITS: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_TIME_ALIASES: dict[str, str] = {
    "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
}  # fmt: skip


def time_unit_seconds(time_unit: str) -> float:
    """Seconds in one ``time_unit`` ('s', 'min', 'h', 'd'; also 'second', 'minute', 'hour',
    'day' and plurals). Raises DataError naming the valid units otherwise."""
    key = _TIME_ALIASES.get(str(time_unit).strip().lower()) if isinstance(time_unit, str) else None
    if key is None:
        raise DataError(
            f"unknown time unit {time_unit!r}; valid: s, min, h, d (or second, minute, hour, day)"
        )
    return _TIME_UNITS[key]


# ---- nuclides --------------------------------------------------------------------------------
ICRP107 = (
    "ICRP Publication 107: Nuclear decay data for dosimetric calculations. "
    "Eckerman K, Endo A. Ann ICRP 2008;38(3)."
)


@dataclass(frozen=True)
class Nuclide:
    """A radionuclide: ``half_life`` in ``half_life_unit`` ('min', 'h' or 'd'), the decay mode
    and the reference for the half-life."""

    name: str
    element: str
    mass_number: int
    half_life: float
    half_life_unit: str
    decay_mode: str
    reference: str

    @property
    def metastable(self) -> bool:
        """True for a metastable isomer (e.g. 99mTc)."""
        return self.name.startswith(f"{self.mass_number}m")

    @property
    def half_life_h(self) -> float:
        """Half-life in hours."""
        return self.half_life_in("h")

    def half_life_in(self, time_unit: str = "h") -> float:
        """Half-life in ``time_unit`` ('s', 'min', 'h', 'd')."""
        return (
            self.half_life * time_unit_seconds(self.half_life_unit) / time_unit_seconds(time_unit)
        )

    def decay_constant(self, time_unit: str = "h") -> float:
        """Decay constant λ = ln 2 / T½ in 1/``time_unit``."""
        return math.log(2.0) / self.half_life_in(time_unit)


_ELEMENT_NAMES = {
    "F": "fluorine", "Cu": "copper", "Ga": "gallium", "Zr": "zirconium",
    "Tc": "technetium", "In": "indium", "I": "iodine",
}  # fmt: skip


def _nuc(name: str, half_life: float, unit: str, mode: str) -> Nuclide:
    m = re.fullmatch(r"(\d+)(m?)([A-Z][a-z]?)", name)
    assert m is not None
    return Nuclide(name, m.group(3), int(m.group(1)), half_life, unit, mode, ICRP107)


#: Canonical name -> :class:`Nuclide`. Half-lives from ICRP Publication 107 (2008).
NUCLIDES: Mapping[str, Nuclide] = {
    n.name: n
    for n in (
        _nuc("18F", 109.77, "min", "beta+ / EC"),
        _nuc("64Cu", 12.701, "h", "EC / beta+ / beta-"),
        _nuc("68Ga", 67.71, "min", "beta+ / EC"),
        _nuc("89Zr", 78.41, "h", "EC / beta+"),
        _nuc("99mTc", 6.015, "h", "IT"),
        _nuc("111In", 2.8047, "d", "EC"),
        _nuc("124I", 4.1760, "d", "EC / beta+"),
        _nuc("125I", 59.400, "d", "EC"),
        _nuc("131I", 8.0252, "d", "beta-"),
    )
}


def _alias_key(name: str) -> str:
    return re.sub(r"[\s\-_]", "", name).lower()


def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for n in NUCLIDES.values():
        a = f"{n.mass_number}{'m' if n.metastable else ''}"
        for sym in (n.element, _ELEMENT_NAMES[n.element]):
            out[_alias_key(f"{a}{sym}")] = n.name
            out[_alias_key(f"{sym}{a}")] = n.name
    return out


_ALIASES = _aliases()


def nuclide(name: str | Nuclide) -> Nuclide:
    """The :class:`Nuclide` called ``name``: '111In', 'In-111', 'In111', 'indium-111', '99mTc',
    'Tc-99m' (case, spaces, '-' and '_' ignored). Raises DataError listing valid names."""
    if isinstance(name, Nuclide):
        return name
    key = _alias_key(name) if isinstance(name, str) else None
    if key not in _ALIASES:
        raise DataError(
            f"unknown nuclide {name!r}; valid: {', '.join(NUCLIDES)} "
            "(also written like 'In-111', 'In111' or 'indium-111')"
        )
    return NUCLIDES[_ALIASES[key]]


# ---- decay -----------------------------------------------------------------------------------
def decay_factor(
    nuclide: str | Nuclide, t: ArrayLike, time_unit: str = "h"
) -> Float[Array, "*shape"]:
    """Fraction of activity left after time ``t`` (in ``time_unit``): exp(-λ t), dimensionless.

    ``t`` may be a jax array (jit, vmap and grad work; d/dt = -λ · factor)."""
    lam = _lookup(nuclide).decay_constant(time_unit)
    return jnp.exp(-lam * jnp.asarray(t))


def decay_correct(
    measured: ArrayLike, t: ArrayLike, nuclide: str | Nuclide, time_unit: str = "h"
) -> Float[Array, "*shape"]:
    """Activity measured at time ``t`` after injection referred back to injection (t = 0):
    measured · exp(λ t). Same unit as ``measured`` (Bq, cpm, %ID, ...); ``t`` in ``time_unit``."""
    lam = _lookup(nuclide).decay_constant(time_unit)
    return jnp.asarray(measured) * jnp.exp(lam * jnp.asarray(t))


def to_raw(
    corrected: ArrayLike, t: ArrayLike, nuclide: str | Nuclide, time_unit: str = "h"
) -> Float[Array, "*shape"]:
    """Inverse of :func:`decay_correct`: decay-corrected activity (referred to injection) turned
    into what is measured at time ``t`` (``time_unit``): corrected · exp(-λ t). Same unit."""
    lam = _lookup(nuclide).decay_constant(time_unit)
    return jnp.asarray(corrected) * jnp.exp(-lam * jnp.asarray(t))


undecay = to_raw


def _lookup(n: str | Nuclide) -> Nuclide:
    return nuclide(n)


# ---- label fates as model fragments ------------------------------------------------------------
#: (carrier compartment, first-order rate constant expression in 1/time) pairs.
LossFlows = Sequence[tuple[str, str]]

ILLUSTRATIVE = "illustrative default, not a published value; fit or set it for your label"

_REF_INDIUM = (
    "Thakur ML, Segal AW, Louis L, Welch MJ, Hopkins J, Peters TJ. Indium-111-labeled cellular "
    "blood components: mechanism of labeling and intracellular location in human neutrophils. "
    "J Nucl Med 1977;18(10):1022-1026."
)
_REF_MSC_INDIUM = (
    "Gholamrezanezhad A, Mirpour S, Bagheri M, et al. In vivo tracking of 111In-oxine labeled "
    "mesenchymal stem cells following infusion in patients with advanced cirrhosis. "
    "Nucl Med Biol 2011;38(7):961-967."
)
_REF_DIR = (
    "Kalchenko V, Shivtiel S, Malina V, et al. Use of lipophilic near-infrared dye in whole-body "
    "optical imaging of hematopoietic cell homing. J Biomed Opt 2006;11(5):050507."
)
_REF_EV_DYE = (
    "Lai CP, Mardini O, Ericsson M, et al. Dynamic biodistribution of extracellular vesicles in "
    "vivo using a multimodal imaging reporter. ACS Nano 2014;8(1):483-494."
)
_REF_BLI = (
    "Contag CH, Bachmann MH. Advances in in vivo bioluminescence imaging of gene expression. "
    "Annu Rev Biomed Eng 2002;4:235-260."
)
_REF_ALU = (
    "McBride C, Gaupp D, Phinney DG. Quantifying levels of transplanted murine and human "
    "mesenchymal stem cells in vivo by real-time PCR. Cytotherapy 2003;5(1):7-18."
)
_REF_CFDNA = (
    "Lo YMD, Zhang J, Leung TN, Lau TK, Chang AMZ, Hjelm NM. Rapid clearance of fetal DNA from "
    "maternal plasma. Am J Hum Genet 1999;64(1):218-224."
)


def _check_identifier(name: str, what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelError(f"{what} must be a valid identifier, got {name!r}")


def _loss_flows(carrier_loss_flows: LossFlows, fn: str) -> list[tuple[str, str]]:
    if isinstance(carrier_loss_flows, str | Mapping) or not carrier_loss_flows:
        raise ModelError(
            f"{fn}(): carrier_loss_flows must be a non-empty list of (compartment, k expression) "
            "pairs, e.g. [('cells', 'kd')]"
        )
    out = []
    for i, pair in enumerate(carrier_loss_flows):
        if not (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2):
            raise ModelError(
                f"{fn}(): carrier_loss_flows[{i}] is {pair!r}; give (compartment, k expression)"
            )
        cmt, k = pair
        _check_identifier(cmt, f"{fn}(): carrier_loss_flows[{i}] compartment")
        if isinstance(k, int | float) and not isinstance(k, bool):
            k = repr(float(k))
        if not isinstance(k, str) or not k.strip():
            raise ModelError(f"{fn}(): carrier_loss_flows[{i}] rate constant must be an expression")
        out.append((cmt, k))
    cmts = [c for c, _ in out]
    if len(set(cmts)) != len(cmts):
        raise ModelError(f"{fn}(): a compartment appears twice in carrier_loss_flows: {cmts}")
    return out


def _feed(cmt: str, k: str, target: str, tap: bool, what: str) -> dict[str, Any]:
    """The flow carrying the carrier's loss flux ``k · cmt`` into the label compartment."""
    if tap:
        return {"to": target, "rate": f"({k}) * {cmt}", "description": f"{what} (copy of the flux)"}
    return {"from": cmt, "to": target, "k": k, "description": what}


def _sink(fragment: dict[str, Any], sink: str | None, unit: str, what: str) -> None:
    if sink is not None:
        _check_identifier(sink, "sink")
        fragment["compartments"][sink] = {"unit": unit, "description": f"cumulative {what}"}


def free_label(
    carrier_loss_flows: LossFlows,
    *,
    free_compartment: str = "free_label",
    renal_k: str = "k_renal_label",
    renal_k_value: float = 0.1,
    sink: str | None = None,
    total_output: str | None = "label_total",
    unit: str = "cell-eq",
    time_unit: str = "h",
    tap: bool = False,
) -> dict[str, Any]:
    """Label released when carriers die or are degraded (e.g. 111In-oxine, 18F): a free-label
    compartment with its own first-order clearance.

    Each ``(compartment, k)`` of ``carrier_loss_flows`` becomes the flow ``compartment ->
    free_compartment`` with rate constant ``k`` (1/``time_unit``): it *is* the carrier's loss,
    so the carrier model must not declare that loss again. With ``tap=True`` the label
    compartment is instead fed by a copy of the flux (``rate: k * compartment``, input from
    outside) and the carrier model keeps its own loss flow; several labels can then read one
    flux, but the model becomes nonlinear (ODE kernel).

    The free label leaves with rate constant ``renal_k`` (1/``time_unit``), into ``sink`` if
    given (a new compartment: cumulative label cleared) or out of the model. Output
    ``total_output``: label in the carrier compartments plus free label (``unit``, decay
    corrected). For a carrier dying at kd and label cleared at kr, a bolus D gives
    A_free(t) = D·kd/(kr − kd)·(e^{−kd t} − e^{−kr t}).
    """
    flows_in = _loss_flows(carrier_loss_flows, "free_label")
    _check_identifier(free_compartment, "free_compartment")
    _check_identifier(renal_k, "renal_k")
    time_unit_seconds(time_unit)
    frag: dict[str, Any] = {
        "compartments": {
            free_compartment: {
                "unit": unit,
                "description": "free label released from dead or degraded carriers "
                "(decay-corrected)",
            }
        },
        "parameters": {
            renal_k: {
                "value": float(renal_k_value),
                "unit": f"1/{time_unit}",
                "description": "first-order clearance of free label (renal and other); "
                + ILLUSTRATIVE,
            }
        },
        "flows": [
            _feed(c, k, free_compartment, tap, f"label released from {c}") for c, k in flows_in
        ],
        "outputs": {},
        "references": [_REF_INDIUM, _REF_MSC_INDIUM],
    }
    _sink(frag, sink, unit, "free label cleared")
    frag["flows"].append(
        {"from": free_compartment, "k": renal_k, "description": "clearance of free label"}
        | ({"to": sink} if sink else {})
    )
    if total_output is not None:
        frag["outputs"][total_output] = {
            "expr": " + ".join([*(c for c, _ in flows_in), free_compartment]),
            "unit": unit,
            "description": "label in carriers plus free label (decay-corrected)",
        }
    return frag


def persistent_dye(
    carrier_loss_flows: LossFlows,
    *,
    prefix: str = "dye_",
    loss_k: str = "k_dye_loss",
    loss_k_value: float = 0.005,
    sink: str | None = None,
    output_prefix: str | None = "fluor_",
    unit: str = "cell-eq",
    time_unit: str = "h",
    tap: bool = False,
) -> dict[str, Any]:
    """Lipophilic membrane dye (DiR, DiD, PKH) that stays in the tissue after the carrier is gone.

    For each ``(organ, k)`` of ``carrier_loss_flows``: a compartment ``<prefix><organ>`` fed by
    the carrier's degradation flux (``organ -> <prefix><organ>`` with rate constant ``k``,
    1/``time_unit``; see :func:`free_label` for ``tap``) and losing dye slowly with rate
    constant ``loss_k`` (1/``time_unit``) into ``sink`` (if given) or out of the model. Output
    ``<output_prefix><organ>``: fluorescence of the organ, carrier plus left-behind dye
    (``unit``); scale to radiant efficiency in the error model.
    """
    flows_in = _loss_flows(carrier_loss_flows, "persistent_dye")
    _check_identifier(loss_k, "loss_k")
    time_unit_seconds(time_unit)
    frag: dict[str, Any] = {
        "compartments": {},
        "parameters": {
            loss_k: {
                "value": float(loss_k_value),
                "unit": f"1/{time_unit}",
                "description": "first-order loss of dye left in tissue after the carrier is "
                "degraded (default ~6 d half-life); " + ILLUSTRATIVE,
            }
        },
        "flows": [],
        "outputs": {},
        "references": [_REF_DIR, _REF_EV_DYE],
    }
    _sink(frag, sink, unit, "dye lost from tissue")
    for organ, k in flows_in:
        dye = f"{prefix}{organ}"
        _check_identifier(dye, "dye compartment name")
        frag["compartments"][dye] = {
            "unit": unit,
            "description": f"dye left in {organ} after its carriers were degraded",
        }
        frag["flows"].append(_feed(organ, k, dye, tap, f"dye left behind by degraded {organ}"))
        frag["flows"].append(
            {"from": dye, "k": loss_k, "description": f"slow loss of dye from {organ}"}
            | ({"to": sink} if sink else {})
        )
        if output_prefix is not None:
            frag["outputs"][f"{output_prefix}{organ}"] = {
                "expr": f"{organ} + {dye}",
                "unit": unit,
                "description": f"dye signal of {organ}: live carriers plus persisting dye",
            }
    return frag


def live_reporter(
    compartments: Sequence[str],
    *,
    photons_per_cell: str = "bli_per_cell",
    photons_per_cell_value: float = 100.0,
    output_prefix: str = "bli_",
    total_output: str | None = "bli_total",
    carrier_unit: str = "cell",
) -> dict[str, Any]:
    """Bioluminescence (luciferase): light proportional to live carriers only.

    Outputs ``<output_prefix><compartment>`` = ``photons_per_cell`` · compartment (photons/s)
    for each compartment, and ``total_output`` = their sum. Dead carriers emit nothing (the
    reaction needs the live cell's ATP), so the reporter adds no compartments or flows.
    ``photons_per_cell`` is in photons/s per ``carrier_unit`` (tissue attenuation included).
    """
    if isinstance(compartments, str) or not compartments:
        raise ModelError("live_reporter(): compartments must be a non-empty list of names")
    for c in compartments:
        _check_identifier(c, "live_reporter(): compartment")
    _check_identifier(photons_per_cell, "photons_per_cell")
    frag: dict[str, Any] = {
        "compartments": {},
        "parameters": {
            photons_per_cell: {
                "value": float(photons_per_cell_value),
                "unit": f"photons/s/{carrier_unit}",
                "description": "detected bioluminescence per live carrier, after tissue "
                "attenuation; " + ILLUSTRATIVE,
            }
        },
        "flows": [],
        "outputs": {
            f"{output_prefix}{c}": {
                "expr": f"{photons_per_cell} * {c}",
                "unit": "photons/s",
                "description": f"bioluminescence of live carriers in {c}",
            }
            for c in compartments
        },
        "references": [_REF_BLI],
    }
    if total_output is not None:
        frag["outputs"][total_output] = {
            "expr": f"{photons_per_cell} * ({' + '.join(compartments)})",
            "unit": "photons/s",
            "description": "bioluminescence of all live carriers named",
        }
    return frag


def dna_assay(
    carrier_loss_flows: LossFlows,
    *,
    prefix: str = "dna_",
    t_half: str = "t_half_dna",
    t_half_value: float = 6.0,
    sink: str | None = None,
    output_prefix: str | None = "qpcr_",
    unit: str = "cell-eq",
    time_unit: str = "h",
    tap: bool = False,
) -> dict[str, Any]:
    """qPCR of donor DNA (human Alu, Y chromosome, donor mtDNA), which outlives the carrier
    briefly.

    For each ``(organ, k)`` of ``carrier_loss_flows``: a compartment ``<prefix><organ>`` of DNA
    from dead carriers, fed by the death flux (``organ -> <prefix><organ>`` with rate constant
    ``k``, 1/``time_unit``; see :func:`free_label` for ``tap``) and cleared with half-life
    ``t_half`` (``time_unit``; rate constant ln2 / t_half) into ``sink`` (if given) or out of
    the model. Output ``<output_prefix><organ>``: donor DNA measured in the organ, live plus
    dead-carrier DNA, in genome (carrier) equivalents.
    """
    flows_in = _loss_flows(carrier_loss_flows, "dna_assay")
    _check_identifier(t_half, "t_half")
    time_unit_seconds(time_unit)
    frag: dict[str, Any] = {
        "compartments": {},
        "parameters": {
            t_half: {
                "value": float(t_half_value),
                "unit": time_unit,
                "description": "half-life of donor DNA released by dead carriers in tissue; "
                "circulating cell-free DNA clears faster (~16 min, Lo et al. 1999); "
                + ILLUSTRATIVE,
            }
        },
        "flows": [],
        "outputs": {},
        "references": [_REF_ALU, _REF_CFDNA],
    }
    _sink(frag, sink, unit, "donor DNA degraded")
    for organ, k in flows_in:
        dna = f"{prefix}{organ}"
        _check_identifier(dna, "DNA compartment name")
        frag["compartments"][dna] = {
            "unit": unit,
            "description": f"donor DNA from dead carriers in {organ} (genome equivalents)",
        }
        frag["flows"].append(_feed(organ, k, dna, tap, f"DNA released by dying {organ}"))
        frag["flows"].append(
            {"from": dna, "k": f"ln2 / {t_half}", "description": f"degradation of DNA in {organ}"}
            | ({"to": sink} if sink else {})
        )
        if output_prefix is not None:
            frag["outputs"][f"{output_prefix}{organ}"] = {
                "expr": f"{organ} + {dna}",
                "unit": unit,
                "description": f"donor DNA in {organ}: live carriers plus DNA of dead ones",
            }
    return frag


_NAMESPACE_KEYS = ("compartments", "parameters", "covariates", "derived")
_OWN_NAMESPACE_KEYS = ("outputs", "routes")
_FRAGMENT_KEYS = {*_NAMESPACE_KEYS, *_OWN_NAMESPACE_KEYS, "flows", "references"}
_SINGULAR = {
    "compartments": "compartment", "parameters": "parameter", "covariates": "covariate",
    "derived": "derived quantity", "outputs": "output", "routes": "route",
}  # fmt: skip


def merge(model_spec: Mapping[str, Any], *fragments: Mapping[str, Any]) -> dict[str, Any]:
    """A new model spec: ``model_spec`` (model-file layout) with ``fragments`` added.

    Compartments, parameters, covariates, derived quantities, outputs and routes are added by
    name, flows appended, references appended once each. A name defined twice (compartments,
    parameters, covariates and derived quantities share one namespace) raises ModelError. The
    inputs are not modified."""
    if not isinstance(model_spec, Mapping):
        raise ModelError("merge(): the model spec must be a mapping (model-file layout)")
    out = copy.deepcopy(dict(model_spec))
    shared: dict[str, str] = {}
    for key in _NAMESPACE_KEYS:
        for name in out.get(key) or {}:
            shared.setdefault(name, f"the model's {_SINGULAR[key]}")
    for i, frag in enumerate(fragments, start=1):
        where = f"merge(): fragment {i}"
        if not isinstance(frag, Mapping):
            raise ModelError(f"{where} is not a mapping")
        bad = set(frag) - _FRAGMENT_KEYS
        if bad:
            raise ModelError(
                f"{where} has unknown entr{'y' if len(bad) == 1 else 'ies'} {sorted(bad)}; "
                f"valid: {', '.join(sorted(_FRAGMENT_KEYS))}"
            )
        for key in (*_NAMESPACE_KEYS, *_OWN_NAMESPACE_KEYS):
            entries = frag.get(key) or {}
            if not isinstance(entries, Mapping):
                raise ModelError(f"{where}: `{key}` must be a mapping of name -> entry")
            if not entries:
                continue
            target = out.get(key) or {}
            if not isinstance(target, Mapping):
                raise ModelError(f"merge(): the model's `{key}` must be a mapping")
            target = dict(target)
            for name, entry in entries.items():
                if key in _NAMESPACE_KEYS and name in shared:
                    clash = shared[name]
                elif key in _OWN_NAMESPACE_KEYS and name in target:
                    clash = f"the model's {_SINGULAR[key]}"
                else:
                    clash = None
                if clash is not None:
                    raise ModelError(
                        f"{where} defines {_SINGULAR[key]} {name!r}, which is already "
                        f"{clash}; rename one (the fragment functions take the names as "
                        "keyword arguments)"
                    )
                target[name] = copy.deepcopy(entry)
                if key in _NAMESPACE_KEYS:
                    shared[name] = f"{_SINGULAR[key]} of fragment {i}"
            out[key] = target
        flows = frag.get("flows") or []
        if not isinstance(flows, list):
            raise ModelError(f"{where}: `flows` must be a list")
        if flows:
            out["flows"] = [*(out.get("flows") or []), *copy.deepcopy(flows)]
        refs = frag.get("references") or []
        if isinstance(refs, str):
            refs = [refs]
        if refs:
            have = out.get("references") or []
            have = [have] if isinstance(have, str) else list(have)
            out["references"] = have + [r for r in dict.fromkeys(refs) if r not in have]
    return out


# ---- biodistribution units -------------------------------------------------------------------
_RELATIVE = {"fraction": 1.0, "ID": 1.0, "%ID": 0.01}
_AMOUNT = ("amount", "cells", "particles", "mitochondria", "cell-eq")
#: singular spellings of amount units (model files say 'cell', tables 'cells')
_AMOUNT_SINGULAR = {"cell": "cells", "particle": "particles", "mitochondrion": "mitochondria"}
_ACTIVITY = {
    "Bq": 1.0, "kBq": 1e3, "MBq": 1e6, "GBq": 1e9,
    "nCi": 37.0, "uCi": 3.7e4, "µCi": 3.7e4, "μCi": 3.7e4, "mCi": 3.7e7, "Ci": 3.7e10,
}  # fmt: skip
#: count rates in counts per second ('counts' means counts per minute, as gamma counters report)
_COUNT = {"cps": 1.0, "cpm": 1.0 / 60.0, "counts": 1.0 / 60.0}


@dataclass(frozen=True)
class _Unit:
    text: str
    base: str
    kind: str  # relative | amount | activity | count
    factor: float  # to the kind's base: fraction, dose unit, Bq, counts per second
    per_gram: bool


def valid_units() -> list[str]:
    """Units :func:`convert` accepts (each also per gram with '/g', e.g. '%ID/g', 'cells/g')."""
    return [*_RELATIVE, *_AMOUNT, *_ACTIVITY, *_COUNT]


def _parse_unit(text: str, what: str) -> _Unit:
    if not isinstance(text, str):
        raise DataError(f"convert(): {what} must be a unit string, got {text!r}")
    s = text.strip()
    per_gram = s.endswith("/g")
    base = s[:-2].strip() if per_gram else s
    base = _AMOUNT_SINGULAR.get(base, base)
    for kind, table in (("relative", _RELATIVE), ("activity", _ACTIVITY), ("count", _COUNT)):
        if base in table:
            return _Unit(s, base, kind, table[base], per_gram)
    if base in _AMOUNT:
        return _Unit(s, base, "amount", 1.0, per_gram)
    raise DataError(
        f"convert(): unknown {what} {text!r}; valid: {', '.join(valid_units())}, "
        "each also per gram of organ with '/g' (e.g. '%ID/g', 'cells/g')"
    )


def _positive(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise DataError(f"convert(): {name} must be positive and finite, got {value!r}")
    return arr


def _need(value: Any, name: str, why: str) -> Any:
    if value is None:
        raise DataError(f"convert(): {why} needs `{name}=`")
    return value


def _between(x: np.ndarray, a: _Unit, b: _Unit, eff: Any, why: str) -> np.ndarray:
    """Whole-organ conversion within or between the absolute kinds (no dose involved)."""
    if a.kind == b.kind:
        if a.kind == "amount" and "amount" not in (a.base, b.base) and a.base != b.base:
            raise DataError(
                f"convert(): {a.base!r} and {b.base!r} are different things; use 'amount' "
                "for a unit that stands for any dosed amount"
            )
        return x * (a.factor / b.factor)
    radio = {"activity", "count"}
    if {a.kind, b.kind} == radio:
        e = _positive(_need(eff, "counting_efficiency", why), "counting_efficiency")
        bq_to_cps = e if a.kind == "activity" else 1.0 / e
        return x * a.factor * bq_to_cps / b.factor
    raise DataError(
        f"convert(): no conversion between {a.text!r} and {b.text!r} ({why}): amounts and "
        "radioactivity are related through the dose; convert to '%ID' first with the "
        "injected activity as `dose`, then to amounts with the dosed amount"
    )


def convert(
    values: ArrayLike,
    from_unit: str,
    to_unit: str,
    *,
    dose: ArrayLike | None = None,
    dose_unit: str | None = None,
    organ_weight_g: ArrayLike | None = None,
    counting_efficiency: ArrayLike | None = None,
    nuclide: str | Nuclide | None = None,
    t: ArrayLike | None = None,
    time_unit: str = "h",
) -> np.ndarray:
    """Convert biodistribution values between units (NumPy, host side; arrays broadcast).

    Units (see :func:`valid_units`): dose-relative 'fraction' (= 'ID') and '%ID'; amounts
    'amount', 'cells', 'particles', 'mitochondria', 'cell-eq' (the unit of the dose);
    activity 'Bq', 'kBq', 'MBq', 'GBq', 'nCi', 'uCi', 'mCi', 'Ci' (1 mCi = 37 MBq); count
    rates 'cps', 'cpm' and 'counts' (= cpm, counts per minute). Each may be per gram of
    organ with '/g', e.g. '%ID/g' = 100 · amount / dose / organ_weight_g.

    Arguments are needed only where the conversion uses them (DataError says which):

    - ``dose``: the dose, between dose-relative and absolute units. In ``dose_unit`` if
      given, else in the absolute unit of the conversion (without '/g'): cells for
      'cells/g', the injected activity in MBq for 'MBq', the counted dose standard in cpm
      for 'cpm'.
    - ``organ_weight_g``: organ weight (g), between per-gram and whole-organ units.
    - ``counting_efficiency``: counts per decay, between activity and count rates
      (cpm = Bq · 60 · efficiency).
    - ``nuclide`` and ``t`` (in ``time_unit``): the time of measurement after injection, to
      decay-correct activity or counts before dividing by the dose (the activity injected
      at t = 0), or to give raw activity from %ID. Without them activity values are taken as
      decay-corrected already (or counted together with the dose standard). They are not
      used between two radioactivity units (same measurement time).
    """
    src = _parse_unit(from_unit, "from_unit")
    dst = _parse_unit(to_unit, "to_unit")
    why = f"{src.text!r} -> {dst.text!r}"
    x = np.asarray(values, dtype=float)
    if (nuclide is None) != (t is None):
        missing = "t" if t is None else "nuclide"
        raise DataError(
            f"convert(): decay correction needs both `nuclide=` and `t=`; give `{missing}=`"
        )
    rel_src, rel_dst = src.kind == "relative", dst.kind == "relative"
    du = None if dose_unit is None else _parse_unit(dose_unit, "dose_unit")
    if du is not None and (du.kind == "relative" or du.per_gram):
        raise DataError(f"convert(): dose_unit must be an absolute unit, got {dose_unit!r}")
    # name every missing argument at once
    radio = {"activity", "count"}
    needs = {
        "dose": rel_src != rel_dst,
        "organ_weight_g": src.per_gram != dst.per_gram,
        "counting_efficiency": {src.kind, dst.kind} == radio
        or (
            rel_src != rel_dst
            and du is not None
            and {du.kind, (dst if rel_src else src).kind} == radio
        ),
    }
    given = {
        "dose": dose,
        "organ_weight_g": organ_weight_g,
        "counting_efficiency": counting_efficiency,
    }
    missing = [f"`{k}=`" for k, need in needs.items() if need and given[k] is None]
    if missing:
        raise DataError(f"convert(): {why} needs {' and '.join(missing)}")
    # per gram <-> whole organ
    if src.per_gram != dst.per_gram:
        w = _positive(organ_weight_g, "organ_weight_g")
        x = x * w if src.per_gram else x / w
    if rel_src and rel_dst:
        return x * (src.factor / dst.factor)
    if not rel_src and not rel_dst:
        return _between(x, src, dst, counting_efficiency, why)
    # dose-relative <-> absolute
    absolute = dst if rel_src else src
    ref = _Unit(absolute.base, absolute.base, absolute.kind, absolute.factor, False)
    d = _positive(dose, "dose")
    if du is not None:
        d = _between(d, du, ref, counting_efficiency, f"dose in {du.text!r} -> {ref.text!r}")
    decay = np.ones(())
    if nuclide is not None and absolute.kind in ("activity", "count"):
        decay = np.asarray(decay_factor(nuclide, np.asarray(t, dtype=float), time_unit))
    if rel_src:  # fraction of dose at injection -> raw absolute at t
        return x * src.factor * d * decay
    return x / decay / d / dst.factor
