"""Species scaling: a model re-parameterised from one species to another.

Parameters bound to the physiology tables (``value: {physiology: PATH, factor: F}``) take the
target species' table value (at a given body weight through :func:`physiology.scale_to`).
Every other parameter is scaled allometrically,

    P_target = P_source × (BW_target / BW_source)^b,

with the exponent b, in order of precedence: ``exponents={name: b}``; the parameter's
``allometry:`` key in the model file (``none``: not scaled); else a default by the
parameter's unit (:func:`default_exponent`): volume per time (clearances, flows) 0.75,
volume 1, rate constant (1/time) -0.25, time (half-lives, delays) +0.25, anything else
(dimensionless fractions, extraction ratios, amounts, per-cell quantities) 0, not scaled.
The defaults are the conventional exponents of simple allometry (Boxenbaum 1982; Mordenti
1986; West, Brown & Enquist 1997; Lindstedt & Schaeffer 2002). Every rule applied is listed
in :attr:`SpeciesScaling.assumptions`, and ``print(scaling)`` shows them all.

Body weights (kg) default to the reference weights of the physiology tables (mouse 0.025,
rat 0.25, dog 10, human 70); the source weight is the one the model was moved to by
``Model.for_species(..., body_weight_kg=...)`` when it was.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ldpk.errors import DataError, ModelError
from ldpk.model import physiology

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class Model(Protocol):
    """What scaling reads of an :class:`ldpk.Model` (a structural type: this module sits
    below ``ldpk.model._model``, whose ``Model.for_species(allometry=True)`` calls it)."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def species(self) -> str | None: ...
    @property
    def parameters(self) -> tuple[Any, ...]: ...
    @property
    def extra(self) -> tuple[tuple[str, Any], ...]: ...
    @property
    def parameter_names(self) -> tuple[str, ...]: ...
    def for_species(self, name: str) -> Any: ...


__all__ = ["DEFAULT_EXPONENTS", "SpeciesScaling", "default_exponent", "scale_species"]

#: Default allometric exponents by the kind of a parameter's unit.
DEFAULT_EXPONENTS: dict[str, float] = {
    "volume/time": 0.75,
    "volume": 1.0,
    "1/time": -0.25,
    "time": 0.25,
    "other": 0.0,
}

REFERENCES: dict[str, str] = {
    "boxenbaum1982": (
        "Boxenbaum H. Interspecies scaling, allometry, physiological time, and the ground plan "
        "of pharmacokinetics. J Pharmacokinet Biopharm 1982;10(2):201-227."
    ),
    "mordenti1986": (
        "Mordenti J. Man versus beast: pharmacokinetic scaling in mammals. J Pharm Sci "
        "1986;75(11):1028-1040."
    ),
    "west1997": physiology.REFERENCES["west1997"],
    "lindstedt2002": physiology.REFERENCES["lindstedt2002"],
}

_VOLUME = r"(?:l|ml|ul|µl|μl|dl|nl|pl|liters?|litres?|cm3|cm\^3)"
_TIME = r"(?:s|sec|seconds?|min|minutes?|h|hr|hrs|hours?|d|days?|wk|weeks?)"
_KINDS = (
    ("volume/time", re.compile(rf"^{_VOLUME}(?:/{_TIME}|[·*]?{_TIME}(?:\^|\*\*)?-1)$")),
    ("volume", re.compile(rf"^{_VOLUME}$")),
    ("1/time", re.compile(rf"^(?:1?/{_TIME}|{_TIME}(?:\^|\*\*)?-1)$")),
    ("time", re.compile(rf"^{_TIME}$")),
)
_AMOUNT_RATE = re.compile(r"^[a-zµμ%\-]+/" + _TIME + "$")

_WHY = {
    "volume/time": "a volume per time (clearance or flow): volume rates scale as BW^0.75 "
    "(mordenti1986, west1997, lindstedt2002)",
    "volume": "a volume: volumes scale as BW^1 (boxenbaum1982)",
    "1/time": "a rate constant (flow / volume): BW^(0.75 - 1) = BW^-0.25 (boxenbaum1982)",
    "time": "a time (half-life, delay, duration): physiological time scales as BW^0.25 "
    "(boxenbaum1982)",
}


def _unit_kind(unit: str) -> str:
    u = re.sub(r"\s+", "", str(unit)).lower()
    for kind, pattern in _KINDS:
        if pattern.match(u):
            return kind
    return "other"


def default_exponent(unit: str) -> tuple[float, str]:
    """The default allometric exponent of a parameter with this unit and the reason: volume
    per time (L/h, mL/min) 0.75, volume (L, mL) 1, rate constant (1/h, 1/d, /min) -0.25,
    time (h, d, min) +0.25, anything else 0 (not scaled)."""
    kind = _unit_kind(unit)
    b = DEFAULT_EXPONENTS[kind]
    if kind != "other":
        return b, f"unit {unit} is {_WHY[kind]}: default exponent {b:g}"
    u = re.sub(r"\s+", "", str(unit))
    hint = ""
    if u in ("", "1", "-", "fraction", "%", "ratio"):
        what = "dimensionless (a fraction, extraction ratio or ratio)"
    elif _AMOUNT_RATE.match(u.lower()):
        what = "an amount per time (e.g. a capacity Vmax), not a volume rate"
        hint = "; give exponents={name: 0.75} to scale it like a clearance"
    else:
        what = (
            "not a volume, volume per time, rate constant or time (amounts, concentrations "
            "and per-cell quantities do not scale with body weight by default)"
        )
        hint = "; give exponents= to scale it"
    return 0.0, f"unit {unit!r} is {what}: not scaled{hint}"


@dataclass(frozen=True, eq=False)
class SpeciesScaling:
    """A model scaled from ``source_species`` to ``target_species``.

    ``model``: the target-species :class:`~ldpk.Model`. ``assumptions``: one row per
    parameter: ``parameter``, ``rule`` ('physiology PATH', 'allometry b' or 'unchanged'),
    ``source_value``, ``target_value`` (both in ``unit``), ``unit``, ``exponent`` (NaN for a
    physiology-bound parameter) and ``why``. ``exponents``: the exponent applied to each
    parameter not taken from the physiology tables (0: unchanged). Body weights in kg;
    ``ratio`` = target / source body weight. ``print(scaling)`` lists every assumption."""

    model: Model
    assumptions: pd.DataFrame
    source_species: str
    target_species: str
    source_body_weight_kg: float
    target_body_weight_kg: float
    exponents: dict[str, float]

    @property
    def ratio(self) -> float:
        """Target / source body weight."""
        return self.target_body_weight_kg / self.source_body_weight_kg

    @property
    def allometric(self) -> tuple[str, ...]:
        """The parameters scaled allometrically with a non-zero exponent."""
        return tuple(p for p, b in self.exponents.items() if b != 0.0)

    def scale_values(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Source-species parameter values (name -> a value or an array, e.g. a posterior's
        draws, source units) scaled to the target species as the model was: each times
        ratio^b; a parameter bound to the physiology tables takes the target model's value
        (broadcast to the others' shape). Names the model does not have are refused."""
        unknown = [k for k in values if k not in self.model.parameter_names]
        if unknown:
            raise ModelError(f"scale_values(): unknown parameter(s) {unknown}; parameters: {', '.join(self.model.parameter_names)}")  # fmt: skip
        arrays = {k: np.asarray(v, dtype=float) for k, v in values.items()}
        shape = np.broadcast_shapes(*(a.shape for a in arrays.values())) if arrays else ()
        out = {}
        for k, a in arrays.items():
            if k in self.exponents:
                out[k] = a * self.ratio ** self.exponents[k]
            else:  # physiology-bound: the target table's value
                out[k] = np.full(shape, float(self.model.parameter(k).value))
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.model.name}: {self.source_species} ({self.source_body_weight_kg:g} kg) -> "
            f"{self.target_species} ({self.target_body_weight_kg:g} kg); body-weight ratio "
            f"{self.ratio:.6g}; P_target = P_source x ratio^b unless bound to the physiology "
            "tables",
        ]
        for r in self.assumptions.itertuples(index=False):
            unit = f" {r.unit}" if r.unit not in ("", "1") else ""
            lines.append(
                f"  {r.parameter}: {_fmt(r.source_value)} -> {_fmt(r.target_value)}{unit} "
                f"[{r.rule}] {r.why}"
            )
        refs = sorted({k for k in REFERENCES if any(k in w for w in self.assumptions["why"])})
        if refs:
            lines += ["References:", *(f"  {k}: {REFERENCES[k]}" for k in refs)]
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    a = np.asarray(v, dtype=float)
    return f"{float(a):.6g}" if a.size == 1 else np.array2string(a, precision=4)


def _canonical(name: Any, what: str) -> str:
    try:
        return physiology.species(name).name
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{what} must be a positive number of kg, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise DataError(f"{what} must be a positive, finite number of kg, got {value!r}")
    return v


def check_exponents(model: Model, exponents: Any, what: str = "exponents") -> dict[str, float]:
    """``exponents`` as {parameter: b} (None: 0, unchanged); DataError naming an unknown
    parameter (listing the valid ones) or a value that is not a finite number."""
    if exponents is None:
        return {}
    if not isinstance(exponents, Mapping):
        raise DataError(f"{what} must be a mapping parameter -> exponent, e.g. {{'CL': 0.75}}")
    unknown = [k for k in exponents if k not in model.parameter_names]
    if unknown:
        raise DataError(
            f"{what}: unknown parameter(s) {unknown} of model {model.name!r}; parameters: "
            f"{', '.join(model.parameter_names)}"
        )
    out = {}
    for k, b in exponents.items():
        if b is None:
            out[k] = 0.0
            continue
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b):
            raise DataError(f"{what}[{k!r}] must be a finite number (or None: unchanged), got {b!r}")  # fmt: skip
        out[k] = float(b)
    return out


def scale_species(
    model: Model,
    species: str,
    *,
    body_weight_kg: float | None = None,
    exponents: Mapping[str, float | None] | None = None,
    source_species: str | None = None,
    source_body_weight_kg: float | None = None,
) -> SpeciesScaling:
    """Scale ``model`` from its species to ``species``.

    Parameters
    ----------
    model: the source model; its ``species`` names the source species (or give
        ``source_species`` for a model without one).
    species: the target species (a physiology-table species: mouse, rat, dog, human).
    body_weight_kg: the target body weight (kg); default the table's reference weight.
    exponents: {parameter: b} overriding the model file's ``allometry:`` and the defaults by
        unit; None for a parameter: unchanged. An exponent given for a physiology-bound
        parameter scales its source value instead of taking the target table's value.
    source_species, source_body_weight_kg: the source species and body weight (kg), when the
        model does not state them (default: ``model.species`` and the weight the model was
        moved to by ``for_species``, else the table's reference weight).

    Returns a :class:`SpeciesScaling`: the target model and every assumption.
    """
    if not all(hasattr(model, a) for a in ("parameters", "species", "for_species", "extra")):
        raise DataError(f"scale_species(): model must be an ldpk Model, got {type(model).__name__}")  # fmt: skip
    if model.species is None and source_species is None:
        raise ModelError(
            f"{model.source}: model {model.name!r} states no species, so the source of the "
            "scaling is unknown: give source_species='mouse' (or the model file's `species:`)"
        )
    if (
        model.species is not None
        and source_species is not None
        and _canonical(model.species, "model species")
        != _canonical(source_species, "source_species")
    ):
        raise ModelError(
            f"{model.source}: model {model.name!r} is a {model.species} model, but "
            f"source_species={source_species!r}; move it first with "
            f"model.for_species({source_species!r}) or leave source_species out"
        )
    src = _canonical(model.species if model.species is not None else source_species, "source species")  # fmt: skip
    tgt = _canonical(species, "scale_species(): species")
    given = check_exponents(model, exponents)
    if source_body_weight_kg is not None:
        bw_s = _positive(source_body_weight_kg, "source_body_weight_kg")
    elif "body_weight_kg" in dict(model.extra):
        bw_s = float(dict(model.extra)["body_weight_kg"])
    else:
        bw_s = physiology.lookup(src, "body_weight").value
    if body_weight_kg is None:
        table: Any = tgt
        bw_t = physiology.lookup(tgt, "body_weight").value
    else:
        bw_t = _positive(body_weight_kg, "body_weight_kg")
        table = physiology.scale_to(tgt, bw_t)
    ratio = bw_t / bw_s

    rows, params, used = [], [], {}
    for p in model.parameters:
        if p.physiology and p.name not in given:
            path, factor = p.physiology
            v = physiology.lookup(table, path)
            value = v.value * factor
            flag = "; illustrative" if v.illustrative else ""
            why = (
                f"bound to the physiology tables: {tgt} {path} = {v.value:.6g} {v.unit} "
                f"({v.reference}{flag}) x factor {factor:g}"
            )
            rows.append((p.name, f"physiology {path}", p.value, value, p.unit, math.nan, why))
            params.append(dataclasses.replace(p, value=value))
            continue
        if p.name in given:
            b = given[p.name]
            why = f"exponent {b:g} given in exponents="
            if p.physiology:
                why += f" (instead of the physiology binding {p.physiology[0]})"
        elif p.allometry is not None:
            b = float(p.allometry)
            why = f"exponent {b:g} from the model file (`allometry:`)"
        else:
            b, why = default_exponent(p.unit)
        value = p.value if b == 0.0 else _times(p.value, ratio**b)
        rule = "unchanged" if b == 0.0 else f"allometry {b:g}"
        rows.append((p.name, rule, p.value, value, p.unit, b, why))
        params.append(dataclasses.replace(p, value=value, physiology=None if p.name in given else p.physiology))  # fmt: skip
        used[p.name] = b

    import pandas as pd

    assumptions = pd.DataFrame(
        rows,
        columns=["parameter", "rule", "source_value", "target_value", "unit", "exponent", "why"],
    )
    extra = tuple((k, v) for k, v in model.extra if k != "body_weight_kg")
    if body_weight_kg is not None:
        extra += (("body_weight_kg", bw_t),)
    target = dataclasses.replace(model, parameters=tuple(params), species=tgt, extra=extra)  # type: ignore[type-var]
    return SpeciesScaling(target, assumptions, src, tgt, bw_s, bw_t, used)


def _times(value: Any, factor: float) -> Any:
    if isinstance(value, numbers.Real):
        return float(value) * factor
    return np.asarray(value, dtype=float) * factor
