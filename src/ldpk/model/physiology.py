"""Species physiology tables: body weight, organ weights, blood volume, cardiac output and
regional blood flow for the mouse, the rat, the dog and the human.

Every number is a :class:`Value` that carries its unit and a reference key; the species'
``references`` dict maps each key to a full citation. Published values are stored as printed
(a percentage of body weight, a percentage of cardiac output) and converted here; the
conversion is stated in the value's ``note``. Values that no cited source gives directly are
either derived by stated arithmetic from cited values (reference key ``"ldpk"``) or, where
the derivation transfers a ratio from another species, also flagged ``illustrative=True``.

Reference body weights. Percent-of-body-weight values are applied to one reference weight
per species: mouse 0.025 kg (B6C3F1 male, Brown et al. 1997 Table 1), rat 0.25 kg (F344
male, Brown et al. 1997 Table 3), dog 10 kg (the dog of Davies & Morris 1993, at which their
cardiac output and organ blood flows are given), human 70 kg (ICRP Publication 23 Reference
Man). :func:`scale_to` moves a table to another body weight.

The dog combines Brown et al. 1997 (organ weights, Table 6; blood volume, Table 21) with
Davies & Morris 1993 (cardiac output and organ blood flows of a 10 kg dog, in mL/min, stored
as printed and divided by the cardiac output). Its spleen flow and bone-marrow entries are
illustrative transfers (see the notes).

Consistency rules (checked by the tests).

- Weights: ``rest.weight`` = body weight - sum of every other listed organ weight, blood
  included. The listed weights therefore sum to the body weight exactly.
- Flows: ``flow_fraction`` is a fraction of cardiac output. The lung is in series with the
  rest of the body and receives the whole right-ventricular output, so
  ``lung.flow_fraction`` = 1 (pulmonary circulation; bronchial flow is part of ``rest``).
  The liver fraction is the *total* liver blood flow (hepatic artery + portal vein). The
  spleen drains into the portal vein, so its flow is already contained in the liver total
  (:data:`PORTAL_ORGANS`). ``rest.flow_fraction`` = 1 - sum of the fractions of the organs
  whose venous blood returns directly to the vena cava (heart, liver, kidney, brain, muscle,
  bone marrow), so those fractions plus ``rest`` sum to 1.
- Volumes: an organ's volume is its weight / 1.0 g/mL unless a volume is tabulated (only
  blood has one). 1.0 g/mL is a convention of this module, not a tissue-specific density.

The pig and the monkey (rhesus, cynomolgus) are not tabulated. For the monkey the blood
flows of Davies & Morris 1993 were found, but not its brain, lung and spleen weights (the
one reproduction of the paper's tables found, in the httk R package, carries the human
values there); for the pig the sources checked (swine PBPK models) give no brain, heart,
lung or spleen values.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ldpk.errors import DataError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "CARDIAC_OUTPUT_EXPONENT",
    "FIELDS",
    "FRACTION_UNIT",
    "ORGANS",
    "PORTAL_ORGANS",
    "TISSUE_DENSITY_G_PER_ML",
    "Species",
    "Value",
    "lookup",
    "scale_to",
    "species",
    "species_names",
    "table",
]


@dataclass(frozen=True)
class Value:
    """A number with its unit and where it comes from.

    ``reference`` is a key of the owning :attr:`Species.references`; ``"ldpk"`` marks a value
    computed in this module from other values (the ``note`` says how). ``illustrative`` marks
    a value that no cited source gives for this species (a placeholder of the right order of
    magnitude, explained in ``note``); do not rely on it quantitatively.
    """

    value: float
    unit: str
    reference: str
    note: str = ""
    illustrative: bool = False


@dataclass(frozen=True)
class Species:
    """Physiology of one species at one body weight.

    ``organs`` maps an organ name (see :data:`ORGANS`) to its fields: ``"weight"`` (g),
    optionally ``"volume"`` (mL) and ``"flow_fraction"`` (fraction of cardiac output).
    ``blood_volume`` is in mL, ``cardiac_output`` in mL/min, ``body_weight`` in kg.
    """

    name: str
    body_weight: Value
    organs: dict[str, dict[str, Value]]
    blood_volume: Value
    cardiac_output: Value
    references: dict[str, str]
    note: str = ""


ORGANS: tuple[str, ...] = (
    "lung",
    "heart",
    "liver",
    "spleen",
    "kidney",
    "brain",
    "muscle",
    "bone_marrow",
    "blood",
    "rest",
)
"""Organs tabulated for every species, in display order."""

FIELDS: tuple[str, ...] = ("weight", "volume", "flow_fraction", "flow")
"""Organ fields accepted by :func:`lookup` (``volume`` and ``flow`` may be derived)."""

TOP_LEVEL: tuple[str, ...] = ("body_weight", "cardiac_output", "blood_volume")

PORTAL_ORGANS: tuple[str, ...] = ("spleen",)
"""Organs that drain into the portal vein: their flow is part of the liver total and is not
counted again when systemic flows are balanced."""

FRACTION_UNIT = "fraction of cardiac output"
TISSUE_DENSITY_G_PER_ML = 1.0
"""Density used to turn an organ weight (g) into a volume (mL) when no volume is tabulated."""

CARDIAC_OUTPUT_EXPONENT = 0.75
"""Allometric exponent of cardiac output used by :func:`scale_to` (volume rates scale with
body mass^(3/4): West et al. 1997; Lindstedt & Schaeffer 2002)."""

_DERIVED = "ldpk"

REFERENCES: dict[str, str] = {
    "brown1997": (
        "Brown RP, Delp MD, Lindstedt SL, Rhomberg LR, Beliles RP. Physiological parameter "
        "values for physiologically based pharmacokinetic models. Toxicol Ind Health "
        "1997;13(4):407-484."
    ),
    "davies1993": (
        "Davies B, Morris T. Physiological parameters in laboratory animals and humans. "
        "Pharm Res 1993;10(7):1093-1095."
    ),
    "icrp89": (
        "ICRP. Basic anatomical and physiological data for use in radiological protection: "
        "reference values. ICRP Publication 89. Ann ICRP 2002;32(3-4)."
    ),
    "icrp23": (
        "ICRP. Report of the Task Group on Reference Man. ICRP Publication 23. Oxford: "
        "Pergamon Press; 1975."
    ),
    "diehl2001": (
        "Diehl KH, Hull R, Morton D, Pfister R, Rabemampianina Y, Smith D, Vidal JM, "
        "van de Vorstenbosch C. A good practice guide to the administration of substances "
        "and removal of blood, including routes and volumes. J Appl Toxicol 2001;21(1):15-23."
    ),
    "poulin2002": (
        "Poulin P, Theil FP. Prediction of pharmacokinetics prior to in vivo studies. II. "
        "Generic physiologically based pharmacokinetic models of drug disposition. "
        "J Pharm Sci 2002;91(5):1358-1370."
    ),
    "west1997": (
        "West GB, Brown JH, Enquist BJ. A general model for the origin of allometric scaling "
        "laws in biology. Science 1997;276(5309):122-126."
    ),
    "lindstedt2002": (
        "Lindstedt SL, Schaeffer PJ. Use of allometry in predicting anatomical and "
        "physiological parameters of mammals. Lab Anim 2002;36(1):1-19."
    ),
    _DERIVED: (
        "Computed in ldpk.model.physiology from the cited values named in the value's note "
        "(arithmetic on published numbers; no new data)."
    ),
}

# ICRP 89 Table 2.8 (adult male): active (red) marrow 1170 g, total skeleton 10 500 g;
# Table 2.40: red marrow 3 % and total skeleton 5 % of cardiac output. Used only to derive
# the illustrative rodent bone-marrow entries.
_ICRP_RED_MARROW_G = 1170.0
_ICRP_SKELETON_G = 10500.0
_ICRP_RED_MARROW_FLOW_PCT = 3.0
_ICRP_SKELETON_FLOW_PCT = 5.0
_MARROW_PER_SKELETON = _ICRP_RED_MARROW_G / _ICRP_SKELETON_G
_MARROW_PER_SKELETON_FLOW = _ICRP_RED_MARROW_FLOW_PCT / _ICRP_SKELETON_FLOW_PCT

_RULES = (
    "rest.weight = body weight - sum of the other organ weights (blood included). "
    "rest.flow_fraction = 1 - sum of the flow fractions of heart, liver (total: hepatic "
    "artery + portal), kidney, brain, muscle and bone marrow; the lung (fraction 1, "
    "pulmonary circulation, in series) and the spleen (drains into the portal vein, inside "
    "the liver total) are not counted. Volumes are weight / 1.0 g/mL unless tabulated."
)

_LUNG_FLOW_NOTE = (
    "Pulmonary circulation: the lungs are in series with the systemic circulation and receive "
    "the whole cardiac output, so the fraction is 1 by anatomy (not a tabulated value). "
    "Bronchial (systemic) lung flow is not listed separately; it is part of 'rest'."
)
_SPLEEN_FLOW_NOTE = (
    " The spleen drains into the portal vein: this flow is contained in the liver total and "
    "is excluded from the systemic flow balance."
)


# --------------------------------------------------------------------------------------
# Source data, as printed in the sources. Each organ entry:
#   weight: ("pct_bw", percent, ref, where)  -> percent of body weight x reference weight
#           ("g", grams, ref, where)         -> absolute mass
#           ("marrow_from_skeleton", skeleton percent of BW, ref, where) -> illustrative
#   flow:   (percent of cardiac output, ref, where[, illustrative])
#           ("ml_min", mL/min, ref, where)  -> divided by the species' cardiac output
#           ("marrow_from_bone", bone percent of CO, ref, where) -> illustrative
#           ("marrow_from_bone_ml_min", bone mL/min, ref, where) -> illustrative
#           ("transfer_ml_min", mL/min, cardiac output mL/min, ref, where) -> the fraction of
#               cardiac output of another species, transferred unchanged: illustrative
#   cardiac_output: ("allometric", coefficient, ref, where) -> coefficient x BW^0.75
#                   ("ml_min", mL/min, ref, where)         -> absolute, at the reference BW
# --------------------------------------------------------------------------------------

_RAW: dict[str, dict] = {
    "mouse": {
        "body_weight_kg": 0.025,
        "body_weight_ref": ("brown1997", "B6C3F1 male mouse, 25 g (Brown et al. 1997, Table 1)."),
        "weights": {
            "lung": ("pct_bw", 0.73, "brown1997", "Table 4"),
            "heart": ("pct_bw", 0.50, "brown1997", "Table 4"),
            "liver": ("pct_bw", 5.49, "brown1997", "Table 4"),
            "spleen": ("pct_bw", 0.35, "brown1997", "Table 4"),
            "kidney": ("pct_bw", 1.67, "brown1997", "Table 4; both kidneys"),
            "brain": ("pct_bw", 1.65, "brown1997", "Table 4"),
            "muscle": ("pct_bw", 38.4, "brown1997", "Table 4"),
            "bone_marrow": ("marrow_from_skeleton", 10.73, "brown1997", "Table 4 (bone)"),
        },
        "blood": ("pct_bw", 4.9, "brown1997", "Table 21"),
        "cardiac_output": (
            "allometric",
            275.0,
            "brown1997",
            "Brown et al. 1997 (p. 440): Q_C = 0.275 L/min x BW^0.75 (BW in kg) for the mouse",
        ),
        "flows": {
            "heart": (6.6, "brown1997", "Table 23"),
            "liver": (
                16.1,
                "brown1997",
                "Table 23; total liver = hepatic artery 2.0 % + portal vein 14.1 %",
            ),
            "kidney": (9.1, "brown1997", "Table 23"),
            "brain": (3.3, "brown1997", "Table 23"),
            "muscle": (15.9, "brown1997", "Table 23"),
            "spleen": (1.1, "davies1993", "Table III (spleen flow relative to cardiac output)"),
            "bone_marrow": ("marrow_from_bone", 11.0, "brown1997", "Table 23 (bone)"),
        },
    },
    "rat": {
        "body_weight_kg": 0.25,
        "body_weight_ref": ("brown1997", "F344 male rat, 250 g (Brown et al. 1997, Table 3)."),
        "weights": {
            "lung": ("pct_bw", 0.50, "brown1997", "Table 5"),
            "heart": ("pct_bw", 0.33, "brown1997", "Table 5"),
            "liver": ("pct_bw", 3.66, "brown1997", "Table 5"),
            "spleen": ("pct_bw", 0.20, "brown1997", "Table 5"),
            "kidney": ("pct_bw", 0.73, "brown1997", "Table 5; both kidneys"),
            "brain": ("pct_bw", 0.57, "brown1997", "Table 5"),
            "muscle": ("pct_bw", 40.43, "brown1997", "Table 5"),
            "bone_marrow": ("marrow_from_skeleton", 7.3, "brown1997", "p. 425 (bone)"),
        },
        "blood": ("ml_per_kg", 64.0, "diehl2001", "Table 5, rat circulating blood volume"),
        "cardiac_output": (
            "allometric",
            235.0,
            "brown1997",
            "Brown et al. 1997 (p. 441): Q_C = 0.235 L/min x BW^0.75 (BW in kg) for the rat",
        ),
        "flows": {
            "heart": (4.9, "brown1997", "Table 23"),
            "liver": (
                17.4,
                "brown1997",
                "Table 23; total liver (hepatic artery + portal vein). Several rat PBPK models "
                "citing Brown et al. 1997 use 18.3 % instead",
            ),
            "kidney": (14.1, "brown1997", "Table 23"),
            "brain": (2.0, "brown1997", "Table 23"),
            "muscle": (27.8, "brown1997", "Table 23"),
            "spleen": (
                2.0,
                "poulin2002",
                "rat spleen flow as used with this reference in PBPK rat databases; not "
                "checked against the original table",
                True,
            ),
            "bone_marrow": ("marrow_from_bone", 12.2, "brown1997", "Table 23 (bone)"),
        },
    },
    # Dog. Organ weights and blood volume: Brown et al. 1997 Tables 6 and 21 (the same
    # numbers in httk, USEPA/CompTox-ExpoCast-httk Tissue-PercentBW.txt, dog column, and in
    # dog PBPK models citing Tables 6 and 21). Cardiac output, organ flows and the 10 kg
    # body weight: Davies & Morris 1993 (httk datatables/Tissue-Flows.txt and
    # Basic-Physiology.txt, dog column; httk documents physiology.data as Davies & Morris).
    "dog": {
        "body_weight_kg": 10.0,
        "body_weight_ref": (
            "davies1993",
            "10 kg dog, the body weight at which Davies & Morris 1993 give the dog's cardiac "
            "output and organ blood flows; the Brown et al. 1997 Table 6 percentages are "
            "applied to it.",
        ),
        "weights": {
            "lung": ("pct_bw", 0.82, "brown1997", "Table 6"),
            "heart": ("pct_bw", 0.78, "brown1997", "Table 6"),
            "liver": ("pct_bw", 3.29, "brown1997", "Table 6"),
            "spleen": ("pct_bw", 0.27, "brown1997", "Table 6"),
            "kidney": ("pct_bw", 0.55, "brown1997", "Table 6; both kidneys"),
            "brain": ("pct_bw", 0.78, "brown1997", "Table 6"),
            "muscle": ("pct_bw", 45.65, "brown1997", "Table 6"),
            "bone_marrow": ("marrow_from_skeleton", 8.10, "brown1997", "Table 6 (bone)"),
        },
        "blood": ("pct_bw", 8.2, "brown1997", "Table 21"),
        "cardiac_output": (
            "ml_min",
            1200.0,
            "davies1993",
            "Davies & Morris 1993, 10 kg dog. Dog PBPK models citing Brown et al. 1997 "
            "(Table 22) use higher resting values for beagles (12.9 L/h per kg); the Davies & "
            "Morris value is used because the organ flows of this table are fractions of it",
        ),
        "flows": {
            "heart": ("ml_min", 54.0, "davies1993", "Davies & Morris 1993, 10 kg dog"),
            "liver": (
                "ml_min",
                309.0,
                "davies1993",
                "Davies & Morris 1993, 10 kg dog; total liver = hepatic artery 79 + portal "
                "(gut) 230 mL/min; dog PBPK models citing Brown et al. 1997 Table 26 use "
                "29.7 %",
            ),
            "kidney": ("ml_min", 216.0, "davies1993", "Davies & Morris 1993, 10 kg dog"),
            "brain": ("ml_min", 45.0, "davies1993", "Davies & Morris 1993, 10 kg dog"),
            "muscle": ("ml_min", 250.0, "davies1993", "Davies & Morris 1993, 10 kg dog"),
            "spleen": (
                "transfer_ml_min",
                77.0,
                5600.0,
                "davies1993",
                "human spleen flow and human cardiac output, 70 kg",
            ),
            "bone_marrow": (
                "marrow_from_bone_ml_min",
                13.0,
                "davies1993",
                "10 kg dog, bone, as reproduced in the httk R package; not checked against "
                "the original table",
            ),
        },
    },
    "human": {
        "body_weight_kg": 70.0,
        "body_weight_ref": (
            "icrp23",
            "70 kg adult male, the ICRP Publication 23 Reference Man to which the Brown et al. "
            "1997 Table 7 percentages are applied here (ICRP 89 uses 73 kg).",
        ),
        "weights": {
            "lung": ("pct_bw", 0.76, "brown1997", "Table 7"),
            "heart": ("pct_bw", 0.47, "brown1997", "Table 7"),
            "liver": ("pct_bw", 2.57, "brown1997", "Table 7"),
            "spleen": ("pct_bw", 0.26, "brown1997", "Table 7"),
            "kidney": ("pct_bw", 0.44, "brown1997", "Table 7; both kidneys"),
            "brain": ("pct_bw", 2.00, "brown1997", "Table 7"),
            "muscle": ("pct_bw", 40.0, "brown1997", "Table 7"),
            "bone_marrow": (
                "g",
                _ICRP_RED_MARROW_G,
                "icrp89",
                "Table 2.8, active (red) marrow of the 73 kg adult male, used as an absolute "
                "mass (not rescaled to 70 kg)",
            ),
        },
        "blood": ("pct_bw", 7.9, "brown1997", "Table 21"),
        "cardiac_output": (
            "ml_min",
            6500.0,
            "icrp89",
            "ICRP 89 Table 2.39, adult male at rest (73 kg reference), used unscaled for the "
            "70 kg reference",
        ),
        "flows": {
            "heart": (4.0, "brown1997", "Table 23"),
            "liver": (
                22.7,
                "brown1997",
                "Table 23; total liver = hepatic artery 4.6 % + portal vein 18.1 %",
            ),
            "kidney": (17.5, "brown1997", "Table 23"),
            "brain": (11.4, "brown1997", "Table 23"),
            "muscle": (17.0, "icrp89", "Table 2.40, skeletal muscle, adult male"),
            "spleen": (3.0, "icrp89", "Table 2.40, spleen, adult male"),
            "bone_marrow": (3.0, "icrp89", "Table 2.40, red marrow, adult male"),
        },
    },
}

_ALIASES: dict[str, str] = {
    "mouse": "mouse",
    "mice": "mouse",
    "rat": "rat",
    "rats": "rat",
    "dog": "dog",
    "dogs": "dog",
    "beagle": "dog",
    "beagles": "dog",
    "canine": "dog",
    "human": "human",
    "humans": "human",
    "man": "human",
}

# Organs whose venous blood returns directly to the vena cava, besides "rest".
_SYSTEMIC = tuple(o for o in ORGANS if o not in ("lung", "blood", "rest", *PORTAL_ORGANS))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _weight_value(spec: tuple, bw_kg: float) -> Value:
    kind, number, ref, where = spec
    bw_g = bw_kg * 1000.0
    if kind == "pct_bw":
        return Value(
            number / 100.0 * bw_g,
            "g",
            ref,
            f"{_fmt(number)} % of body weight ({where}) x reference body weight {_fmt(bw_kg)} kg.",
        )
    if kind == "g":
        return Value(float(number), "g", ref, f"{where}.")
    if kind == "marrow_from_skeleton":
        pct = number * _MARROW_PER_SKELETON
        return Value(
            pct / 100.0 * bw_g,
            "g",
            _DERIVED,
            f"Illustrative: no cited source gives this species' marrow mass. Skeleton "
            f"{_fmt(number)} % of body weight ({ref} {where}) x human red-marrow/skeleton mass "
            f"ratio {_fmt(_ICRP_RED_MARROW_G)}/{_fmt(_ICRP_SKELETON_G)} g (icrp89 Table 2.8) "
            f"= {_fmt(pct)} % of body weight x reference body weight {_fmt(bw_kg)} kg.",
            illustrative=True,
        )
    raise AssertionError(kind)  # pragma: no cover


def _flow_value(spec: tuple, co_ml_min: float) -> Value:
    kind = spec[0]
    if kind in ("marrow_from_bone", "marrow_from_bone_ml_min"):
        _, bone, ref, where = spec
        if kind == "marrow_from_bone":
            bone_pct = bone
            bone_text = f"Bone {_fmt(bone)} % of cardiac output ({ref} {where})"
        else:
            bone_pct = 100.0 * bone / co_ml_min
            bone_text = (
                f"Bone {_fmt(bone)} mL/min ({ref} {where}) / cardiac output "
                f"{_fmt(co_ml_min)} mL/min = {_fmt(bone_pct)} % of cardiac output"
            )
        pct = bone_pct * _MARROW_PER_SKELETON_FLOW
        return Value(
            pct / 100.0,
            FRACTION_UNIT,
            _DERIVED,
            f"Illustrative: no cited source gives this species' marrow flow. {bone_text} x "
            f"human red-marrow share of skeletal flow "
            f"{_fmt(_ICRP_RED_MARROW_FLOW_PCT)}/{_fmt(_ICRP_SKELETON_FLOW_PCT)} "
            f"(icrp89 Table 2.40) = {_fmt(pct)} % of cardiac output.",
            illustrative=True,
        )
    if kind == "ml_min":
        _, flow, ref, where = spec
        return Value(
            flow / co_ml_min,
            FRACTION_UNIT,
            ref,
            f"{_fmt(flow)} mL/min ({where}) / cardiac output {_fmt(co_ml_min)} mL/min = "
            f"{_fmt(100.0 * flow / co_ml_min)} % of cardiac output.",
        )
    if kind == "transfer_ml_min":
        _, flow, other_co, ref, where = spec
        pct = 100.0 * flow / other_co
        return Value(
            pct / 100.0,
            FRACTION_UNIT,
            _DERIVED,
            f"Illustrative: no cited source gives this species' value. Another species' "
            f"fraction transferred unchanged: {_fmt(flow)} of {_fmt(other_co)} mL/min "
            f"({ref}, {where}) = {_fmt(pct)} % of cardiac output.",
            illustrative=True,
        )
    pct, ref, where, *rest = spec
    illustrative = bool(rest and rest[0])
    return Value(
        pct / 100.0,
        FRACTION_UNIT,
        ref,
        f"{_fmt(pct)} % of cardiac output ({where}).",
        illustrative=illustrative,
    )


def _build(name: str) -> Species:
    raw = _RAW[name]
    bw_kg = raw["body_weight_kg"]
    bw_ref, bw_where = raw["body_weight_ref"]
    body_weight = Value(
        bw_kg,
        "kg",
        bw_ref,
        f"Reference body weight: {bw_where} Every percent-of-body-weight value for the "
        f"{name} is applied to this weight.",
    )

    kind, number, ref, where = raw["blood"]
    if kind == "pct_bw":
        blood_ml = number / 100.0 * bw_kg * 1000.0 / TISSUE_DENSITY_G_PER_ML
        blood_note = (
            f"{_fmt(number)} % of body weight ({where}) x {_fmt(bw_kg)} kg, as mL at "
            f"{_fmt(TISSUE_DENSITY_G_PER_ML)} g/mL."
        )
    else:  # ml_per_kg
        blood_ml = number * bw_kg
        blood_note = f"{_fmt(number)} mL/kg ({where}) x {_fmt(bw_kg)} kg."
    blood_volume = Value(blood_ml, "mL", ref, blood_note)

    co_kind, co_coef, co_ref, co_where = raw["cardiac_output"]
    if co_kind == "ml_min":
        cardiac_output = Value(co_coef, "mL/min", co_ref, f"{co_where}.")
    else:  # allometric
        cardiac_output = Value(
            co_coef * bw_kg**CARDIAC_OUTPUT_EXPONENT,
            "mL/min",
            co_ref,
            f"{co_where}, evaluated at {_fmt(bw_kg)} kg.",
        )

    organs: dict[str, dict[str, Value]] = {}
    for organ, spec in raw["weights"].items():
        organs[organ] = {"weight": _weight_value(spec, bw_kg)}
    organs["blood"] = {
        "weight": Value(
            blood_ml * TISSUE_DENSITY_G_PER_ML,
            "g",
            _DERIVED,
            f"Blood volume ({ref}) x {_fmt(TISSUE_DENSITY_G_PER_ML)} g/mL.",
        ),
        "volume": blood_volume,
    }
    organs["lung"]["flow_fraction"] = Value(1.0, FRACTION_UNIT, _DERIVED, _LUNG_FLOW_NOTE)
    for organ, spec in raw["flows"].items():
        value = _flow_value(spec, cardiac_output.value)
        if organ in PORTAL_ORGANS:
            value = Value(
                value.value,
                value.unit,
                value.reference,
                value.note + _SPLEEN_FLOW_NOTE,
                value.illustrative,
            )
        organs[organ]["flow_fraction"] = value

    listed = [o for o in ORGANS if o != "rest"]
    rest_g = bw_kg * 1000.0 - math.fsum(organs[o]["weight"].value for o in listed)
    rest_q = 1.0 - math.fsum(organs[o]["flow_fraction"].value for o in _SYSTEMIC)
    if rest_g < 0 or rest_q < 0:  # pragma: no cover - guarded by the tests
        raise ModelError(f"built-in {name} table: listed organs exceed the body (rest < 0)")
    organs["rest"] = {
        "weight": Value(
            rest_g,
            "g",
            _DERIVED,
            "Rest of body = body weight - sum of the listed organ weights (blood included): "
            "adipose, skin, skeleton other than marrow, gastrointestinal tract, other organs.",
            illustrative=any(organs[o]["weight"].illustrative for o in listed),
        ),
        "flow_fraction": Value(
            rest_q,
            FRACTION_UNIT,
            _DERIVED,
            "Rest of body = 1 - sum of the flow fractions of "
            + ", ".join(_SYSTEMIC)
            + " (lung excluded: in series; spleen excluded: contained in the liver total).",
            illustrative=any(organs[o]["flow_fraction"].illustrative for o in _SYSTEMIC),
        ),
    }
    organs = {o: organs[o] for o in ORGANS}

    # Keys cited directly, plus keys named in the notes of derived values.
    values = [body_weight, blood_volume, cardiac_output]
    values += [v for fields in organs.values() for v in fields.values()]
    used = {v.reference for v in values}
    text = " ".join(v.note for v in values)
    used.update(k for k in REFERENCES if re.search(rf"\b{k}\b", text))
    references = {k: REFERENCES[k] for k in REFERENCES if k in used}
    return Species(
        name=name,
        body_weight=body_weight,
        organs=organs,
        blood_volume=blood_volume,
        cardiac_output=cardiac_output,
        references=references,
        note=_RULES,
    )


_TABLES: dict[str, Species] = {name: _build(name) for name in _RAW}


def species_names() -> list[str]:
    """Canonical names of the tabulated species (aliases: mice, rats, dogs, beagle(s),
    canine, man, humans)."""
    return list(_TABLES)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise DataError(
            f"species must be a name, got {type(name).__name__}; valid species: "
            + ", ".join(species_names())
        )
    key = name.strip().lower()
    if key not in _ALIASES:
        aliases = ", ".join(f"{a!r} -> {c}" for a, c in _ALIASES.items() if a != c)
        raise DataError(
            f"unknown species {name!r}; valid species: {', '.join(species_names())} "
            f"(case-insensitive; aliases {aliases})"
        )
    return _ALIASES[key]


def species(name: str) -> Species:
    """The reference table of one species (a copy: editing it does not change the module).

    ``name`` is case-insensitive; 'mice', 'rats', 'dogs', 'beagle', 'beagles', 'canine',
    'man' and 'humans' are accepted.
    Raises :class:`DataError` for an unknown name, listing the valid ones.
    """
    return copy.deepcopy(_TABLES[_canonical(name)])


def _resolve(species_or_name: str | Species) -> Species:
    if isinstance(species_or_name, Species):
        return species_or_name
    return _TABLES[_canonical(species_or_name)]


def _path_error(sp: Species, path: object, why: str = "") -> DataError:
    organs = ", ".join(sp.organs)
    return DataError(
        f"{why}unknown physiology path {path!r} for {sp.name}: use one of "
        f"{', '.join(TOP_LEVEL)} or '<organ>.<field>' with organ one of {organs} and field "
        f"one of {', '.join(FIELDS)} (e.g. 'liver.flow')"
    )


def lookup(species_name: str | Species, path: str) -> Value:
    """One value by path: ``'body_weight'`` (kg), ``'cardiac_output'`` (mL/min),
    ``'blood_volume'`` (mL) or ``'<organ>.<field>'``.

    Organ fields: ``weight`` (g), ``flow_fraction`` (fraction of cardiac output),
    ``volume`` (mL: the tabulated volume if there is one, else weight / 1.0 g/mL, said in the
    note) and ``flow`` (mL/min: flow_fraction x cardiac output, derived). ``species_name``
    may also be a :class:`Species` (e.g. from :func:`scale_to`).
    """
    sp = _resolve(species_name)
    if not isinstance(path, str):
        raise _path_error(sp, path)
    key = path.strip()
    if key in TOP_LEVEL:
        return getattr(sp, key)
    organ, sep, fld = key.partition(".")
    organ, fld = organ.strip().lower(), fld.strip().lower()
    if not sep or organ not in sp.organs or fld not in FIELDS:
        raise _path_error(sp, path)
    fields = sp.organs[organ]
    if fld in fields:
        return fields[fld]
    if fld == "volume":
        w = fields["weight"]
        return Value(
            w.value / TISSUE_DENSITY_G_PER_ML,
            "mL",
            _DERIVED,
            f"Weight ({w.reference}) / {_fmt(TISSUE_DENSITY_G_PER_ML)} g/mL: a density of "
            "1.0 g/mL is assumed for every tissue without a tabulated volume.",
            illustrative=w.illustrative,
        )
    if fld == "flow" and "flow_fraction" in fields:
        f = fields["flow_fraction"]
        co = sp.cardiac_output
        return Value(
            f.value * co.value,
            "mL/min",
            _DERIVED,
            f"flow_fraction {_fmt(f.value)} ({f.reference}) x cardiac output "
            f"{_fmt(co.value)} mL/min ({co.reference}).",
            illustrative=f.illustrative or co.illustrative,
        )
    has_flow = ", ".join(o for o, fs in sp.organs.items() if "flow_fraction" in fs)
    raise DataError(
        f"{sp.name} {organ} has no {fld}: blood is the carrier, not a perfused organ. Organs "
        f"with a flow: {has_flow}"
    )


def _scaled(v: Value, factor: float, unit_note: str) -> Value:
    return Value(
        v.value * factor,
        v.unit,
        _DERIVED,
        f"{_fmt(v.value)} {v.unit} ({v.reference}) {unit_note}",
        v.illustrative,
    )


def scale_to(species_name: str | Species, body_weight_kg: float) -> Species:
    """The species' table moved to another body weight.

    Organ weights, the rest of body and blood volume scale in proportion to body weight
    (organ mass ~ BW^1); cardiac output scales as (BW/BW_ref)^0.75 (volume rates ~ BW^3/4:
    West, Brown & Enquist 1997; Lindstedt & Schaeffer 2002, references ``west1997`` and
    ``lindstedt2002``). Flow fractions are unchanged, so organ flows scale as BW^0.75 too.
    Weights still sum to the body weight and systemic fractions to 1.
    """
    sp = _resolve(species_name)
    try:
        bw = float(body_weight_kg)
    except (TypeError, ValueError):
        raise DataError(
            f"body_weight_kg must be a positive number of kg, got {body_weight_kg!r}"
        ) from None
    if not math.isfinite(bw) or bw <= 0:
        raise DataError(f"body_weight_kg must be a positive, finite number of kg, got {bw!r}")
    ratio = bw / sp.body_weight.value
    lin = f"x (BW {_fmt(bw)} / {_fmt(sp.body_weight.value)} kg)^1."
    allo = (
        f"x (BW {_fmt(bw)} / {_fmt(sp.body_weight.value)} kg)^{CARDIAC_OUTPUT_EXPONENT} "
        "(allometric cardiac output: west1997, lindstedt2002)."
    )
    organs: dict[str, dict[str, Value]] = {}
    for organ, fields in sp.organs.items():
        organs[organ] = {
            k: (v if k == "flow_fraction" else _scaled(v, ratio, lin)) for k, v in fields.items()
        }
    references = dict(sp.references)
    for k in ("west1997", "lindstedt2002", _DERIVED):
        references[k] = REFERENCES[k]
    return Species(
        name=sp.name,
        body_weight=Value(
            bw,
            "kg",
            _DERIVED,
            f"Scaled from the reference body weight {_fmt(sp.body_weight.value)} kg "
            f"({sp.body_weight.reference}).",
        ),
        organs=organs,
        blood_volume=_scaled(sp.blood_volume, ratio, lin),
        cardiac_output=_scaled(sp.cardiac_output, ratio**CARDIAC_OUTPUT_EXPONENT, allo),
        references=references,
        note=sp.note,
    )


def table(species_name: str | Species) -> pd.DataFrame:
    """A display table: one row per organ with ``organ``, ``weight_g``, ``flow_fraction``,
    ``flow_mL_min`` (NaN where the organ has no flow), ``reference`` (the reference keys of
    the weight and flow fraction) and ``illustrative``."""
    import pandas as pd

    sp = _resolve(species_name)
    rows = []
    for organ, fields in sp.organs.items():
        w = fields["weight"]
        f = fields.get("flow_fraction")
        refs = [w.reference] + ([f.reference] if f is not None else [])
        rows.append(
            {
                "organ": organ,
                "weight_g": w.value,
                "flow_fraction": f.value if f is not None else math.nan,
                "flow_mL_min": f.value * sp.cardiac_output.value if f is not None else math.nan,
                "reference": "; ".join(dict.fromkeys(refs)),
                "illustrative": w.illustrative or (f is not None and f.illustrative),
            }
        )
    return pd.DataFrame(rows)
