"""From animal to human: the body-surface-area (Km) dose conversion and the first-in-human
dose that matches an animal exposure.

:func:`bsa_dose` is the FDA's conversion of a dose per kg between species by body surface
area (human equivalent dose = animal dose × Km_animal / Km_human, Km = body weight / body
surface area, FDA 2005 Table 1). :func:`first_in_human` is model-based: for each posterior
draw (or parameter set) of an animal model it computes the animal's exposure at the animal
regimen, scales that draw to the human (:func:`ldpk.model.scaling.scale_species`: the
physiology tables, and allometry for the other parameters) and finds the human dose that
gives the same exposure. With ``exponent_sd`` the allometric exponents are uncertain too,
and the result shows the dose's interval with and without that uncertainty.

Every simulation runs through :func:`ldpk.sweep` (one compiled kernel per model and regimen
structure, chunked): one sweep of the animal draws, and for the human either one sweep at a
reference dose (a model linear in the dose) or a bracketing sweep and a few root-finding
sweeps over all draws at once (any other model).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ldpk.dosing import Bolus, Infusion
from ldpk.errors import DataError, SolverError
from ldpk.model import Model, Parameter, compile_expr
from ldpk.model._expr import piecewise_linear_in
from ldpk.model.scaling import SpeciesScaling, scale_species
from ldpk.paramsets import ParameterTable
from ldpk.solve import ODEOptions
from ldpk.sweep import sweep

#: FDA body-surface-area conversion factors Km (body weight in kg / body surface area in m²)
#: of Table 1 of :data:`KM_REFERENCE`; the human value is that of a 60 kg adult.
KM_FACTORS: dict[str, float] = {
    "mouse": 3.0,
    "hamster": 5.0,
    "rat": 6.0,
    "ferret": 7.0,
    "guinea pig": 8.0,
    "rabbit": 12.0,
    "dog": 20.0,
    "monkey": 12.0,
    "marmoset": 6.0,
    "squirrel monkey": 7.0,
    "baboon": 20.0,
    "micro-pig": 27.0,
    "mini-pig": 35.0,
    "human": 37.0,
}

KM_REFERENCE = (
    "U.S. FDA, Center for Drug Evaluation and Research. Guidance for Industry: Estimating the "
    "Maximum Safe Starting Dose in Initial Clinical Trials for Therapeutics in Adult Healthy "
    "Volunteers. July 2005, Table 1 (conversion of animal doses to human equivalent doses "
    "based on body surface area; human Km 37 for a 60 kg adult)."
)

_KM_ALIASES = {
    "mice": "mouse", "rats": "rat", "hamsters": "hamster", "ferrets": "ferret",
    "guineapigs": "guinea pig", "rabbits": "rabbit", "dogs": "dog", "beagle": "dog",
    "beagles": "dog", "canine": "dog", "monkeys": "monkey", "rhesus": "monkey",
    "cynomolgus": "monkey", "marmosets": "marmoset", "baboons": "baboon", "micropig": "micro-pig",
    "minipig": "mini-pig", "humans": "human", "man": "human",
}  # fmt: skip

#: Exposure metrics proportional to the dose for a model linear in the dose.
PROPORTIONAL_METRICS = ("auc", "auc_inf", "cmax", "cmin", "trough", "amount_at")
#: Exposure metrics first_in_human can match: they do not decrease as the dose grows.
MATCHABLE_METRICS = (*PROPORTIONAL_METRICS, "time_above")

#: Dose factors of the bracketing sweep: the clearance-scaled guess × 10^k, k = -4..4; draws
#: not bracketed there get a second sweep at 10^±5..±8.
_BRACKET = np.arange(-4, 5, dtype=float)
_WIDER = np.array([-8.0, -7.0, -6.0, -5.0, 5.0, 6.0, 7.0, 8.0])
_MAX_ITER = 60
_TOL_LOG_EXPOSURE = 1e-10
_TOL_LOG_DOSE = 1e-12
_SCALE = "FIH_DOSE_SCALE"


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.strip().lower())


_KM_KEYS = {_key(k): k for k in KM_FACTORS} | {_key(a): c for a, c in _KM_ALIASES.items()}


def km_species(name: Any, what: str = "species") -> str:
    """The :data:`KM_FACTORS` name of ``name`` (case, spaces, '-' and '_' ignored; plurals
    and 'man', 'beagle', 'rhesus', 'cynomolgus' accepted); DataError listing the valid ones."""
    if isinstance(name, str) and _key(name) in _KM_KEYS:
        return _KM_KEYS[_key(name)]
    raise DataError(
        f"{what}: no FDA Km factor for {name!r}; species: {', '.join(KM_FACTORS)} "
        "(FDA 2005 Table 1)"
    )


def bsa_dose(dose_per_kg: Any, from_species: str, to_species: str = "human") -> Any:
    """The dose per kg in ``to_species`` equivalent by body surface area to ``dose_per_kg``
    in ``from_species`` (any amount unit per kg, kept): dose × Km_from / Km_to, the FDA's
    human equivalent dose (:data:`KM_FACTORS`, :data:`KM_REFERENCE`). Mouse to human:
    × 3/37. The Km factors are for the reference weights of FDA Table 1 (mouse 20 g, human
    60 kg); the conversion is for small molecules' maximum safe starting dose, shown here as
    a comparison for model-based doses."""
    a = km_species(from_species, "bsa_dose(): from_species")
    b = km_species(to_species, "bsa_dose(): to_species")
    try:
        d = np.asarray(dose_per_kg, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"bsa_dose(): dose_per_kg must be a number (amount per kg), got {dose_per_kg!r}") from None  # fmt: skip
    if isinstance(dose_per_kg, bool) or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise DataError(f"bsa_dose(): dose_per_kg must be finite and >= 0 (amount per kg), got {dose_per_kg!r}")  # fmt: skip
    out = d * KM_FACTORS[a] / KM_FACTORS[b]
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True, eq=False)
class FirstInHuman:
    """The result of :func:`first_in_human`.

    Doses are in the model's amount unit (``dose_unit``; per kg where named so), each the
    amount of the regimen's first dose: every dose of the human regimen is the animal's
    multiplied by the same factor. ``doses``: the human dose per draw with the allometric
    exponents fixed; ``doses_with_uncertainty``: with the exponents drawn from N(b, sd) per
    draw (equal to ``doses`` when ``exponent_sd`` is 0). NaN where a draw failed (its
    simulation failed, its exposure was not positive and finite, or no dose gave it).
    ``animal_exposure``: per draw, in ``exposure_unit``. ``bsa_dose``: the human dose by
    body-surface-area scaling (FDA Km) of the same animal dose, for comparison.
    ``scaling``: the species scaling (``print(result.scaling)`` lists every assumption)."""

    output: str
    metric: str
    exposure_unit: str
    dose_unit: str
    animal_species: str
    species: str
    animal_body_weight_kg: float
    body_weight_kg: float
    animal_dose: float
    animal_exposure: np.ndarray
    doses: np.ndarray
    doses_with_uncertainty: np.ndarray
    exponent_sd: dict[str, float]
    exponent_draws: dict[str, np.ndarray]
    ci: float
    method: str
    bsa_dose: float
    scaling: SpeciesScaling
    n_failed: int

    @property
    def assumptions(self) -> Any:
        """The scaling's assumptions table (pandas; see :class:`SpeciesScaling`)."""
        return self.scaling.assumptions

    @property
    def bsa_dose_per_kg(self) -> float:
        return self.bsa_dose / self.body_weight_kg

    def _q(self, doses: np.ndarray) -> tuple[float, float, float]:
        lo = (1.0 - self.ci) / 2.0
        d = doses[np.isfinite(doses)]
        if not d.size:
            return (math.nan, math.nan, math.nan)
        q = np.quantile(d, [0.5, lo, 1.0 - lo])
        return float(q[0]), float(q[1]), float(q[2])

    @property
    def median(self) -> float:
        """Median human dose over the draws, exponents fixed."""
        return self._q(self.doses)[0]

    @property
    def interval(self) -> tuple[float, float]:
        """Central ``ci`` interval of the human dose, exponents fixed."""
        return self._q(self.doses)[1:]

    @property
    def median_with_uncertainty(self) -> float:
        """Median human dose with the allometric exponents uncertain."""
        return self._q(self.doses_with_uncertainty)[0]

    @property
    def interval_with_uncertainty(self) -> tuple[float, float]:
        """Central ``ci`` interval of the human dose with the exponents uncertain."""
        return self._q(self.doses_with_uncertainty)[1:]

    def summary(self) -> Any:
        """A pandas table: one row per estimate ('model, exponents fixed', 'model, exponents
        uncertain', 'BSA (FDA Km)') with the median and the ``ci`` interval of the dose and
        of the dose per kg (the BSA row: its one value in all three)."""
        import pandas as pd

        rows = []
        for label, d in (
            ("model, exponents fixed", self.doses),
            ("model, exponents uncertain", self.doses_with_uncertainty),
        ):
            m, lo, hi = self._q(d)
            rows.append((label, m, lo, hi))
        b = self.bsa_dose
        rows.append(("BSA (FDA Km)", b, b, b))
        df = pd.DataFrame(rows, columns=["estimate", "dose", "lower", "upper"])
        for c in ("dose", "lower", "upper"):
            df[f"{c}_per_kg"] = df[c] / self.body_weight_kg
        df.attrs.update(unit=self.dose_unit, ci=self.ci)
        return df

    def __str__(self) -> str:
        u = self.dose_unit or "amount"
        pct = f"{100 * self.ci:g}%"
        n = int(np.sum(np.isfinite(self.doses)))
        lines = [
            f"First-in-human dose, {self.scaling.model.name}: {self.animal_species} "
            f"({self.animal_body_weight_kg:g} kg) -> {self.species} ({self.body_weight_kg:g} kg)",
            f"  matched: {self.metric} of {self.output} ({self.exposure_unit}) after the animal "
            f"dose {self.animal_dose:.6g} {u} ({self.animal_dose / self.animal_body_weight_kg:.6g} "
            f"{u}/kg); {n} draws ({self.n_failed} failed); method: {self.method}",
        ]
        for label, d in (
            ("exponents fixed", self.doses),
            ("exponents uncertain", self.doses_with_uncertainty),
        ):
            m, lo, hi = self._q(d)
            bw = self.body_weight_kg
            lines.append(
                f"  human dose, {label}: {m:.4g} {u} ({pct} interval {lo:.4g} to {hi:.4g}); "
                f"per kg {m / bw:.4g} ({lo / bw:.4g} to {hi / bw:.4g}) {u}/kg"
            )
        if self.exponent_sd:
            sds = ", ".join(f"{k} {v:g}" for k, v in self.exponent_sd.items())
            lines.append(f"  exponent SDs: {sds}")
        lines.append(
            f"  BSA (FDA Km {KM_FACTORS[km_species(self.animal_species)]:g} -> "
            f"{KM_FACTORS[km_species(self.species)]:g}): {self.bsa_dose:.4g} {u} "
            f"({self.bsa_dose_per_kg:.4g} {u}/kg)"
        )
        lines.append(str(self.scaling))
        return "\n".join(lines)


# ---- input checks ----------------------------------------------------------------------------
def _source(source: Any, model: Model | None, n_draws: int) -> tuple[Model, ParameterTable]:
    from ldpk.inference import Fit

    if isinstance(source, Fit):
        if model is not None:
            raise DataError("first_in_human(): a Fit brings its model; give model= only with a parameter table")  # fmt: skip
        return source.model, _rows(source.parameter_table(n_draws), n_draws)
    if not isinstance(model, Model):
        raise DataError(
            "first_in_human(): source is not an ldpk.Fit, so give the animal model as "
            "model= (e.g. ldpk.load_model('msc_pbpk').for_species('mouse'))"
        )
    if not isinstance(source, Mapping):
        raise DataError(
            "first_in_human(): source must be an ldpk.Fit, a ParameterTable or a mapping "
            f"parameter -> values (model units), got {type(source).__name__}"
        )
    table = source if isinstance(source, ParameterTable) else ParameterTable.from_mapping(source)
    unknown = [k for k in table if k not in model.parameter_names]
    if unknown:
        raise DataError(
            f"first_in_human(): unknown parameter(s) {unknown} in source for model "
            f"{model.name!r}; parameters: {', '.join(model.parameter_names)}"
        )
    return model, _rows(table, n_draws)


def _rows(table: ParameterTable, n_draws: int) -> ParameterTable:
    """One set repeated ``n_draws`` times (a point estimate: only the exponents vary), more
    than ``n_draws`` thinned evenly to ``n_draws``, else all."""
    if table.n == 1:
        return table.subset(np.zeros(n_draws, dtype=int))
    if table.n > n_draws:
        return table.subset(np.round(np.linspace(0, table.n - 1, n_draws)).astype(int))
    return table


def _exposure(model: Model, exposure: Any) -> tuple[str, str]:
    if (
        not isinstance(exposure, Sequence)
        or isinstance(exposure, str)
        or len(exposure) != 2
        or not all(isinstance(x, str) for x in exposure)
    ):
        raise DataError(
            "first_in_human(): exposure must be (output, metric), e.g. ('In111_lung', 'auc'); "
            f"got {exposure!r}"
        )
    output, metric = exposure
    if output not in model.output_names:
        raise DataError(f"first_in_human(): exposure output {output!r} is not an output of {model.name}; outputs: {', '.join(model.output_names)}")  # fmt: skip
    if metric not in MATCHABLE_METRICS:
        raise DataError(
            f"first_in_human(): exposure metric {metric!r} cannot be matched by a dose (it must "
            f"not decrease as the dose grows); metrics: {', '.join(MATCHABLE_METRICS)}"
        )
    return output, metric


def _regimen(model: Model, regimen: Any) -> list[Bolus | Infusion]:
    doses = [regimen] if isinstance(regimen, Bolus | Infusion) else regimen
    if isinstance(doses, str | Mapping) or not isinstance(doses, Sequence) or not doses:
        raise DataError("first_in_human(): animal_regimen must be a Bolus, an Infusion or a list of them (model amount and time units)")  # fmt: skip
    default = model.default_route or (model.route_names[0] if len(model.routes) == 1 else None)
    out: list[Bolus | Infusion] = []
    for i, d in enumerate(doses):
        if not isinstance(d, Bolus | Infusion):
            raise DataError(f"first_in_human(): animal_regimen[{i}] is {type(d).__name__}; give Bolus or Infusion doses")  # fmt: skip
        a = d.amount
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a) or a <= 0:  # fmt: skip
            raise DataError(f"first_in_human(): animal_regimen[{i}].amount must be a positive, finite amount ({model.amount_unit or 'model unit'}), got {a!r}")  # fmt: skip
        route = d.route if d.route is not None else default
        if route is None:
            raise DataError(f"first_in_human(): animal_regimen[{i}] names no route and {model.name} has several without a default_route; routes: {', '.join(model.route_names)}")  # fmt: skip
        if route not in model.route_names:
            raise DataError(f"first_in_human(): animal_regimen[{i}] doses route {route!r}; routes of {model.name}: {', '.join(model.route_names)}")  # fmt: skip
        if isinstance(d, Infusion) and d.rate is not None and d.duration is None:
            d.record()  # its own checks (rate > 0)
            d = dataclasses.replace(d, rate=None, duration=float(a) / float(d.rate))
        out.append(dataclasses.replace(d, route=route))
    return out


def _sds(scaling: SpeciesScaling, exponent_sd: Any) -> dict[str, float]:
    def check(k: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise DataError(f"first_in_human(): exponent_sd for {k} must be a finite number >= 0, got {v!r}")  # fmt: skip
        return float(v)

    allo = scaling.allometric
    if isinstance(exponent_sd, Mapping):
        bad = [k for k in exponent_sd if k not in allo]
        if bad:
            raise DataError(
                f"first_in_human(): exponent_sd names {bad}, which are not scaled "
                f"allometrically; allometrically scaled parameters: {', '.join(allo) or '(none)'}"
            )
        sds = {k: check(k, v) for k, v in exponent_sd.items()}
    else:
        s = check("every parameter", exponent_sd)
        sds = dict.fromkeys(allo, s)
    return {k: v for k, v in sds.items() if v > 0}


def _proportional(model: Model, regimen: Sequence[Bolus | Infusion], output: str, metric: str) -> bool:  # fmt: skip
    """Whether the exposure is proportional to a common factor on every dose amount: a model
    linear in its states (exactly or piecewise), zero initial amounts, a linear output, a
    metric proportional to the curve, and no infusion whose rate the route fixes."""
    if metric not in PROPORTIONAL_METRICS:
        return False
    if not (model.is_linear_system or model.is_piecewise_linear):
        return False
    for c in model.compartments:
        if c.initial is not None and not (c.initial.is_constant and c.initial.constant_value() == 0.0):  # fmt: skip
            return False
    out = next(o for o in model.outputs if o.name == output)
    if not piecewise_linear_in(out.expr, set(model.compartment_names), model.discontinuities):
        return False
    return not any(isinstance(d, Infusion) and d.modelled == "rate" for d in regimen)


def _dose_scaled(model: Model, regimen: Sequence[Bolus | Infusion]) -> tuple[Model, str, list[Any]]:  # fmt: skip
    """``model`` with one more parameter, a factor on every dose amount (through the routes'
    bioavailability), and the regimen to give it: an infusion of a given duration goes
    through a copy of its route whose modelled duration is that duration, so the factor
    scales its rate and keeps its duration (F with a given rate would lengthen it)."""
    taken = {n.casefold() for n in (*model.parameter_names, *model.covariate_names, *(d.name for d in model.derived), *model.compartment_names, *model.output_names)}  # fmt: skip
    name = _SCALE
    while name.casefold() in taken:
        name += "_"
    scope = {*model.parameter_names, *model.covariate_names, *(d.name for d in model.derived), name}  # fmt: skip
    where = f"{model.source}: first_in_human dose factor"

    def bio(r: Any) -> Any:
        src = name if r.bioavailability is None else f"({r.bioavailability.source}) * {name}"
        return compile_expr(src, scope, where)

    routes = [dataclasses.replace(r, bioavailability=bio(r)) for r in model.routes]
    by_name = {r.name: r for r in model.routes}
    doses: list[Any] = []
    clones: dict[tuple[str, float], str] = {}
    for d in regimen:
        if isinstance(d, Infusion) and d.duration is not None:
            key = (d.route, float(d.duration))
            if key not in clones:
                clone = f"{d.route}__fih{len(clones)}"
                clones[key] = clone
                r = by_name[d.route]
                routes.append(
                    dataclasses.replace(
                        r, name=clone, bioavailability=bio(r), rate=None,
                        duration=compile_expr(float(d.duration), scope, where),
                    )
                )  # fmt: skip
            d = dataclasses.replace(d, route=clones[key], duration=None, rate=None, modelled="duration")  # fmt: skip
        doses.append(d)
    p = Parameter(name, 1.0, "1", "first-in-human dose factor on every dose amount")
    m = dataclasses.replace(model, parameters=(*model.parameters, p), routes=tuple(routes))
    return m, name, doses


# ---- simulations --------------------------------------------------------------------------------
class _Runner:
    """Exposure of one output and metric for a table of parameter sets, through ldpk.sweep."""

    def __init__(self, output: str, metric: str, times: np.ndarray, options: Mapping[str, Any], method: str, ode: ODEOptions | None, progress: bool) -> None:  # fmt: skip
        self.output, self.metric, self.times = output, metric, times
        self.kw = dict(
            outputs=[output], metrics=[metric], metric_options=dict(options),
            time_courses=False, method=method, ode=ode, progress=progress,
        )  # fmt: skip

    def __call__(self, model: Model, table: Mapping[str, np.ndarray], regimen: Sequence[Any], chunk: int | None = None) -> tuple[np.ndarray, Any]:  # fmt: skip
        k = len(next(iter(table.values())))
        if chunk and k < chunk:  # padded to a whole chunk: the compiled shape stays
            table = {c: np.concatenate([v, np.repeat(v[-1:], chunk - k)]) for c, v in table.items()}  # fmt: skip
        t = ParameterTable.from_mapping(table)
        ds = sweep(model, t, {"regimen": list(regimen)}, self.times, chunk_size=chunk or t.n, **self.kw)  # fmt: skip
        e = np.asarray(ds[f"{self.output}_{self.metric}"], dtype=float)[:k, 0]
        ok = np.asarray(ds["status"])[:k, 0] == 0
        return np.where(ok, e, np.nan), ds[f"{self.output}_{self.metric}"].attrs.get("unit", "")


def _solve(run: _Runner, model: Model, name: str, doses: Sequence[Any], table: dict[str, np.ndarray], target: np.ndarray, guess: float, chunk: int) -> np.ndarray:  # fmt: skip
    """Per set, the factor on every dose amount that gives exposure ``target`` (NaN where
    none is found) in ``model``, a :func:`_dose_scaled` model (factor parameter ``name``,
    regimen ``doses``): bracket on a log grid around ``guess``, then Illinois false position
    on log exposure against log factor, all sets in every sweep (chunks of ``chunk`` sets:
    one compiled shape for every step)."""
    m = model
    n = len(target)
    lt = np.log(np.where(target > 0, target, np.nan))

    def g_at(u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        tab = {k: v[rows] for k, v in table.items()} | {name: np.exp(u)}
        e, _ = run(m, tab, doses, chunk=chunk)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.where(e > 0, e, 0.0)) - lt[rows]

    ua = np.full(n, np.nan)
    ub = np.full(n, np.nan)
    ga = np.full(n, np.nan)
    gb = np.full(n, np.nan)
    u0 = math.log(guess)
    for ks in (_BRACKET, _WIDER):
        todo = np.flatnonzero(np.isfinite(lt) & ~(np.isfinite(ua) & np.isfinite(ub)))
        if not todo.size:
            break
        us = u0 + math.log(10.0) * ks
        rows = np.repeat(todo, len(us))
        gs = g_at(np.tile(us, len(todo)), rows).reshape(len(todo), len(us))
        for j, i in enumerate(todo):
            g = gs[j]
            below = np.flatnonzero(g <= 0)
            above = np.flatnonzero(g >= 0)
            if below.size and (np.isnan(ga[i]) or g[below[-1]] > ga[i]):
                ua[i], ga[i] = us[below[-1]], g[below[-1]]
            if above.size and (np.isnan(gb[i]) or g[above[0]] < gb[i]):
                ub[i], gb[i] = us[above[0]], g[above[0]]
    ok = np.isfinite(ua) & np.isfinite(ub) & (ua <= ub)
    ua, ub = np.where(ok, ua, 0.0), np.where(ok, ub, 0.0)
    ga, gb = np.where(ok, ga, -1.0), np.where(ok, gb, 1.0)
    done = ~ok | (ga == 0) | (gb == 0) | (ub - ua <= _TOL_LOG_DOSE)
    side = np.zeros(n, dtype=int)  # Illinois: the side kept last time (-1 a, +1 b)
    for _ in range(_MAX_ITER):
        if done.all():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            u = ub - gb * (ub - ua) / (gb - ga)
        mid = 0.5 * (ua + ub)
        u = np.where(np.isfinite(u) & (u > ua) & (u < ub), u, mid)
        u = np.where(done, ua, u)
        g = g_at(u, np.arange(n))
        g = np.where(np.isnan(g), -np.inf, g)  # a failed or zero exposure: below the target
        hit = ~done & (np.abs(g) <= _TOL_LOG_EXPOSURE)
        up = ~done & ~hit & (g > 0)
        lo = ~done & ~hit & (g < 0)
        ga = np.where(up & (side == 1), ga / 2.0, ga)
        gb = np.where(lo & (side == -1), gb / 2.0, gb)
        ub, gb = np.where(up, u, ub), np.where(up, g, gb)
        ua, ga = np.where(lo, u, ua), np.where(lo & np.isfinite(g), g, np.where(lo, -1e300, ga))
        side = np.where(up, 1, np.where(lo, -1, side))
        ua, ub = np.where(hit, u, ua), np.where(hit, u, ub)
        done = done | hit | (ub - ua <= _TOL_LOG_DOSE)
    u = np.where(ga == 0, ua, np.where(gb == 0, ub, 0.5 * (ua + ub)))
    return np.where(ok & done, np.exp(u), np.nan)


def first_in_human(
    source: Any,
    exposure: tuple[str, str],
    animal_regimen: Any,
    times: Sequence[float] | np.ndarray,
    *,
    model: Model | None = None,
    species: str = "human",
    body_weight_kg: float | None = None,
    exponents: Mapping[str, float | None] | None = None,
    source_species: str | None = None,
    exponent_sd: float | Mapping[str, float] = 0.0,
    n_draws: int = 200,
    seed: int = 0,
    ci: float = 0.9,
    metric_options: Mapping[str, Any] | None = None,
    method: str = "auto",
    ode: ODEOptions | None = None,
    progress: bool = False,
) -> FirstInHuman:
    """The human dose that gives the exposure an animal regimen gives, per posterior draw.

    Parameters
    ----------
    source: an :class:`ldpk.Fit` of the animal model (``fit.parameter_table(n_draws)``: its
        population draws), or a :class:`~ldpk.ParameterTable` or mapping parameter -> values
        (model units) of animal parameter sets, with ``model=``. One set (a MAP fit, a point
        estimate) is repeated ``n_draws`` times, so that only the exponents vary; a table of
        more than ``n_draws`` sets is thinned evenly to ``n_draws``.
    exposure: (output, metric) to match, e.g. ``("In111_lung", "auc")``; metrics of
        :mod:`ldpk.exposure` that grow with the dose (:data:`MATCHABLE_METRICS`), computed
        on ``times`` (``metric_options``: their options, e.g. ``{"threshold": 1e3}``).
    animal_regimen: the animal doses (Bolus or Infusion, model amount and time units). The
        human regimen is the same schedule with every amount times one factor (infusions
        keep their durations; one given by rate is turned into its duration first).
    times: the output times (model time unit) the metric is computed on, for both species.
    model: the animal model, when ``source`` is not a Fit; its ``species`` is the animal.
    species, body_weight_kg, exponents: the target species, its body weight (kg; default the
        table's reference) and exponent overrides, as for :func:`scale_species`;
        ``source_species``: the animal, for a model that states no ``species``.
    exponent_sd: the SD of each allometric exponent (one number for every parameter scaled
        allometrically, or a mapping by parameter): per draw b ~ N(b, sd), drawn with
        ``numpy.random.default_rng(seed)``.
    ci: the central interval reported (0.9: 5th to 95th percentile).
    method, ode, progress: as for :func:`ldpk.sweep`.

    A model linear in the dose (a linear or piecewise-linear system, zero initial amounts,
    a linear output, a metric proportional to the curve) takes one human sweep at the animal
    dose, and each draw's dose follows by proportion. Any other model (saturable
    elimination, expansion, ``time_above``) is solved per draw by bracketing on a log grid
    around the clearance-scaled dose and false position on log exposure (tolerance 1e-10
    in log exposure), assuming the exposure does not decrease as the dose grows; every step
    is one sweep over all draws.

    Returns a :class:`FirstInHuman` (``print()`` it for the summary and every assumption).
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, numbers.Integral) or n_draws < 1:
        raise DataError(f"first_in_human(): n_draws must be a positive integer, got {n_draws!r}")  # fmt: skip
    if isinstance(ci, bool) or not isinstance(ci, numbers.Real) or not 0 < ci < 1:
        raise DataError(f"first_in_human(): ci must be a probability between 0 and 1 (e.g. 0.9), got {ci!r}")  # fmt: skip
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataError(f"first_in_human(): seed must be an integer, got {seed!r}")
    animal, table = _source(source, model, int(n_draws))
    output, metric = _exposure(animal, exposure)
    regimen = _regimen(animal, animal_regimen)
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise DataError("first_in_human(): times must be at least two strictly increasing, finite times (model time unit)")  # fmt: skip
    scaling = scale_species(animal, species, body_weight_kg=body_weight_kg, exponents=exponents, source_species=source_species)  # fmt: skip
    sds = _sds(scaling, exponent_sd)
    km_species(scaling.source_species, "first_in_human(): animal species")
    km_species(scaling.target_species, "first_in_human(): species")
    run = _Runner(output, metric, t, metric_options or {}, method, ode, progress)

    # Animal and human run through one model structure (the animal's, with a dose factor when
    # root finding) with every parameter in the table: one compiled kernel, one chunk shape.
    n = table.n
    proportional = _proportional(animal, regimen, output, metric)
    if proportional:
        sim, name, doses = animal, "", list(regimen)
    else:
        sim, name, doses = _dose_scaled(animal, regimen)
    unit_factor = {name: np.ones(n)} if name else {}
    e_animal, unit = run(sim, dict(table) | unit_factor, doses, chunk=n)
    human = scaling.model
    ratio = scaling.ratio
    rng = np.random.default_rng(int(seed))
    z = rng.standard_normal((n, len(sds)))
    b_draws = {p: scaling.exponents[p] + sds[p] * z[:, j] for j, p in enumerate(sds)}
    fixed: dict[str, np.ndarray] = {}
    uncertain: dict[str, np.ndarray] = {}
    for p in animal.parameter_names:
        if p not in scaling.exponents:  # from the target's physiology table
            fixed[p] = uncertain[p] = np.full(n, float(human.parameter(p).value))
            continue
        v = np.broadcast_to(np.asarray(table[p] if p in table else animal.parameter(p).value, dtype=float), (n,))  # fmt: skip
        fixed[p] = v * ratio ** scaling.exponents[p]
        uncertain[p] = v * ratio ** b_draws[p] if p in sds else fixed[p]
    both = {k: np.concatenate([fixed[k], uncertain[k]]) for k in fixed} if sds else fixed
    target = np.concatenate([e_animal, e_animal]) if sds else e_animal
    if proportional:
        e_ref, _ = run(sim, both, doses, chunk=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where((target > 0) & (e_ref > 0), target / e_ref, np.nan)
        how = "proportional (linear in the dose: one human sweep at the animal dose)"
    else:
        both[name] = np.ones(len(target))
        factor = _solve(run, sim, name, doses, both, target, ratio**0.75, n)
        how = "root finding (bracketing and false position on log exposure, per draw)"
    factor = np.where(np.isfinite(factor) & (factor > 0), factor, np.nan)
    dose0 = float(regimen[0].amount)
    doses = factor[:n] * dose0
    doses_u = factor[n:] * dose0 if sds else doses
    failed = int(np.sum(~np.isfinite(doses) | ~np.isfinite(doses_u)))
    if failed == n:
        raise SolverError(
            f"first_in_human(): no draw gave a human dose: the animal {metric} of {output} "
            f"was {'not positive' if not np.any(e_animal > 0) else 'not reached by any human dose'} "
            "(check the output, the times and the regimen)"
        )
    per_kg = dose0 / scaling.source_body_weight_kg
    bsa = bsa_dose(per_kg, km_species(scaling.source_species), km_species(scaling.target_species))  # fmt: skip
    return FirstInHuman(
        output=output,
        metric=metric,
        exposure_unit=unit,
        dose_unit=animal.amount_unit,
        animal_species=scaling.source_species,
        species=scaling.target_species,
        animal_body_weight_kg=scaling.source_body_weight_kg,
        body_weight_kg=scaling.target_body_weight_kg,
        animal_dose=dose0,
        animal_exposure=e_animal,
        doses=doses,
        doses_with_uncertainty=doses_u,
        exponent_sd=sds,
        exponent_draws=b_draws,
        ci=float(ci),
        method=how,
        bsa_dose=bsa * scaling.target_body_weight_kg,
        scaling=scaling,
        n_failed=failed,
    )
