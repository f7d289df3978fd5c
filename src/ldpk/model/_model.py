"""The immutable ``Model``: compartments, parameters, covariates, derived quantities, flows,
routes, outputs and references. A JAX pytree whose leaves are the parameter values."""

from __future__ import annotations

import dataclasses
import keyword
import math
import numbers
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from ldpk.errors import LdpkError, ModelError
from ldpk.model._expr import (
    CONSTANTS,
    FUNCTIONS,
    Expr,
    _short,
    check_unit_text,
    compile_expr,
    describe_char,
    lookalike_hint,
    piecewise_linear_in,
)

PRIOR_DISTRIBUTIONS = {
    "normal": ("loc", "scale"),
    "lognormal": ("loc", "scale"),
    "halfnormal": ("scale",),
    "uniform": ("low", "high"),
    "beta": ("a", "b"),
    "gamma": ("shape", "rate"),
    "fixed": (),
}


@dataclass(frozen=True)
class Prior:
    """A prior for a parameter. ``lognormal`` uses loc/scale of log(value)."""

    dist: str
    args: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"dist": self.dist, **dict(self.args)}


@dataclass(frozen=True)
class Compartment:
    name: str
    unit: str = ""
    description: str = ""
    initial: Expr | None = None


@dataclass(frozen=True)
class Parameter:
    """A model parameter. ``value`` is the typical value in ``unit``; ``iiv`` is the standard
    deviation of a log-normal between-subject random effect (None: no variability)."""

    name: str
    value: Any
    unit: str
    description: str = ""
    prior: Prior | None = None
    iiv: float | None = None
    lower: float | None = None
    upper: float | None = None
    physiology: tuple[str, float] | None = None  # (table path, factor to the parameter unit)
    #: Allometric exponent b of body weight for species scaling (value × (BW_t/BW_s)^b; the
    #: model file's `allometry:` key, 0.0 for `allometry: none`); None: the default by unit.
    allometry: float | None = None


@dataclass(frozen=True)
class Covariate:
    """A subject- or time-varying data item available to expressions (last value carried
    forward between data records)."""

    name: str
    unit: str = ""
    description: str = ""
    default: float | None = None


@dataclass(frozen=True)
class Derived:
    name: str
    expr: Expr
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class Flow:
    """Transfer from ``source`` to ``target`` (either None: input from outside, or loss).
    Exactly one of ``k`` (first-order rate constant, 1/time) and ``rate`` (amount/time)."""

    source: str | None
    target: str | None
    k: Expr | None = None
    rate: Expr | None = None
    description: str = ""


@dataclass(frozen=True)
class Route:
    """A dose route: the target compartment and optional lag time (time), bioavailability
    (fraction), modelled infusion rate (amount/time) and modelled duration (time)."""

    name: str
    target: str
    lag: Expr | None = None
    bioavailability: Expr | None = None
    rate: Expr | None = None
    duration: Expr | None = None
    description: str = ""


@dataclass(frozen=True)
class Output:
    """A model output. ``decay``: it is radioactivity of the model's ``tracer`` nuclide, so a
    prediction of raw (not decay-corrected) data multiplies it by the decay factor."""

    name: str
    expr: Expr
    unit: str = ""
    description: str = ""
    decay: bool = False


@dataclass(frozen=True)
class Model:
    """An immutable compartment model. A JAX pytree: the leaves are the parameter values and
    the static part is everything else (``structure``), so a model with new values never
    retraces a jitted function, and models that differ only in values stack and vmap."""

    name: str
    compartments: tuple[Compartment, ...]
    parameters: tuple[Parameter, ...]
    flows: tuple[Flow, ...]
    outputs: tuple[Output, ...] = ()
    routes: tuple[Route, ...] = ()
    derived: tuple[Derived, ...] = ()
    covariates: tuple[Covariate, ...] = ()
    description: str = ""
    time_unit: str = "h"
    amount_unit: str = ""
    references: tuple[str, ...] = ()
    notes: str = ""
    tracer: str | None = None
    species: str | None = None
    discontinuities: tuple[Expr, ...] = ()
    source: str = "<python>"
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    #: The route of a data-file dose without CMT or ROUTE (a name in ``routes``; None: only a
    #: model with one route has one, its only route).
    default_route: str | None = None

    # ---- names -------------------------------------------------------------------------
    @property
    def compartment_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.compartments)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def route_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.routes)

    @property
    def sink_compartments(self) -> tuple[str, ...]:
        """Compartments with no outflow (amounts accumulate; no steady state exists)."""
        outflow = {f.source for f in self.flows if f.source is not None}
        return tuple(c for c in self.compartment_names if c not in outflow)

    @property
    def is_linear(self) -> bool:
        """True when every flow is first order with a rate constant free of states and time."""
        return all(f.rate is None for f in self.flows)

    @property
    def is_linear_system(self) -> bool:
        """True when dx/dt = K x with K free of states and time: every flow is `k:`
        (``is_linear``), or the `rate:` flows are linear and homogeneous in the states with
        coefficients of parameters, covariates and derived quantities only (``KDEG *
        liver_int`` into a pool that counts a flux without taking it from its source).
        Solved exactly by matrix exponentials (the 'exact' kernel). Decided from the syntax
        (see ``piecewise_linear_in``)."""
        if self.is_linear:
            return True
        states = set(self.compartment_names)
        return all(
            piecewise_linear_in(f.rate, states, ()) for f in self.flows if f.rate is not None
        )

    @property
    def is_piecewise_linear(self) -> bool:
        """True for a model that is not a linear system but whose `rate:` flows are linear
        in the states with coefficients that switch only at its declared
        ``discontinuities`` (``where(t < TMAX, RHO * effector, 0.0)``): between switch times
        x' = K x with K constant, solved exactly by the 'exact' kernel (see
        ``piecewise_linear_in``)."""
        if not self.discontinuities or self.is_linear_system:
            return False
        states = set(self.compartment_names)
        return all(
            piecewise_linear_in(f.rate, states, self.discontinuities)
            for f in self.flows
            if f.rate is not None
        )

    def states_for(self, outputs: Sequence[str]) -> tuple[str, ...]:
        """The compartments that ``outputs`` depend on, in model order: those the outputs
        read, and upstream of them every compartment whose amount changes theirs (the source
        of a flow into one, the amounts a `rate:` flow into or out of one reads). Predicting
        only these outputs needs only these states (``simulate(outputs=...)``)."""
        unknown = [o for o in outputs if o not in self.output_names]
        if unknown:
            raise ModelError(
                f"{self.source}: no output(s) {unknown}; outputs: {', '.join(self.output_names)}"
            )
        cmts = set(self.compartment_names)
        by_name = {o.name: o for o in self.outputs}
        need = {c for o in outputs for c in by_name[o].expr.names & cmts}
        todo = list(need)
        while todo:
            c = todo.pop()
            for f in self.flows:
                if c not in (f.source, f.target):
                    continue
                new = {f.source} if f.k is not None else {f.source, *(f.rate.names & cmts)}
                for d in new - need - {None}:
                    need.add(d)
                    todo.append(d)
        return tuple(c for c in self.compartment_names if c in need)

    @property
    def structure(self) -> Model:
        """This model without its values (see :func:`structure`): the static part of the
        pytree, equal for models that differ only in parameter values."""
        return structure(self)

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        hint = lookalike_hint(str(name), self.parameter_names)
        raise ModelError(
            f"{self.source}: no parameter {name!r}{hint}; parameters: "
            f"{', '.join(self.parameter_names)}"
        )

    def with_values(self, **values: Any) -> Model:
        """A copy with some parameter values replaced."""
        unknown = set(values) - set(self.parameter_names)
        if unknown:
            hint = lookalike_hint(str(sorted(unknown)[0]), self.parameter_names)
            raise ModelError(
                f"{self.source}: unknown parameter(s) {sorted(unknown)}{hint}; "
                f"parameters: {', '.join(self.parameter_names)}"
            )
        params = tuple(
            dataclasses.replace(p, value=values[p.name]) if p.name in values else p
            for p in self.parameters
        )
        return dataclasses.replace(self, parameters=params)

    def for_species(
        self,
        name: str,
        *,
        body_weight_kg: float | None = None,
        allometry: bool = False,
        exponents: Mapping[str, float | None] | None = None,
    ) -> Model:
        """The model re-parameterised for another species: every parameter bound to the
        physiology tables (``value: {physiology: PATH}``) takes that species' value, at
        ``body_weight_kg`` (kg; default the table's reference weight, see
        ``physiology.scale_to``). The other parameters keep their values unless ``allometry``
        is True: then every parameter is scaled as :func:`ldpk.model.scaling.scale_species`
        does (value × (BW_target/BW_source)^b, ``exponents`` overriding b per parameter) and
        this returns its ``.model`` (print ``scale_species(...)`` to see every assumption)."""
        from ldpk.model.physiology import lookup, scale_to

        if allometry:
            from ldpk.model.scaling import scale_species

            return scale_species(
                self, name, body_weight_kg=body_weight_kg, exponents=exponents
            ).model
        if exponents is not None:
            raise ModelError(
                f"{self.source}: for_species(exponents=...) applies to allometric scaling only; "
                "give allometry=True as well, or leave exponents out"
            )
        table = name if body_weight_kg is None else scale_to(name, body_weight_kg)
        params = tuple(
            dataclasses.replace(p, value=lookup(table, p.physiology[0]).value * p.physiology[1])
            if p.physiology
            else p
            for p in self.parameters
        )
        extra = tuple((k, v) for k, v in self.extra if k != "body_weight_kg")
        if body_weight_kg is not None:
            extra += (("body_weight_kg", float(body_weight_kg)),)
        return dataclasses.replace(self, parameters=params, species=name, extra=extra)

    def __post_init__(self) -> None:
        validate(self)


def _bare(m: Model, values: Sequence[Any]) -> Model:
    """``m`` with its parameter values replaced by ``values``, built without validating again
    (the structure is ``m``'s, already valid)."""
    params = tuple(
        dataclasses.replace(p, value=v) for p, v in zip(m.parameters, values, strict=True)
    )
    obj = object.__new__(Model)
    for f in dataclasses.fields(Model):
        object.__setattr__(obj, f.name, getattr(m, f.name))
    object.__setattr__(obj, "parameters", params)
    return obj


def structure(m: Model) -> Model:
    """The model without its values (every parameter value None): hashable, and equal for two
    models that differ only in values. It is the static part of the pytree and the key of the
    compiled kernels. Cached on the model."""
    cached = m.__dict__.get("_structure")
    if cached is None:
        cached = _bare(m, (None,) * len(m.parameters))
        object.__setattr__(cached, "_structure", cached)
        object.__setattr__(m, "_structure", cached)
    return cached


def _flatten(m: Model) -> tuple[tuple[Any, ...], Model]:
    return tuple(p.value for p in m.parameters), structure(m)


def _unflatten(aux: Model, children: Sequence[Any]) -> Model:
    m = _bare(aux, tuple(children))
    object.__setattr__(m, "_structure", aux)  # aux is a structure (see _flatten)
    return m


jax.tree_util.register_pytree_node(Model, _flatten, _unflatten)


# ---- validation --------------------------------------------------------------------------
def _names_in_order(items: Sequence[Derived], src: str = "<python>") -> list[Derived]:
    """Topological order of derived quantities; raises on cycles (iteratively: a chain of any
    length never exhausts Python's recursion limit)."""
    by_name = {d.name: d for d in items}
    order: list[Derived] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in items:
        if state.get(root.name):
            continue
        path = [root.name]
        state[root.name] = 1
        todo = [iter(sorted(by_name[root.name].expr.names & by_name.keys()))]
        while todo:
            dep = next(todo[-1], None)
            if dep is None:
                todo.pop()
                done = path.pop()
                state[done] = 2
                order.append(by_name[done])
                continue
            s = state.get(dep, 0)
            if s == 2:
                continue
            if s == 1:
                loop = [*path[path.index(dep) :], dep]
                if len(loop) > 12:
                    loop = [*loop[:5], f"... ({len(loop) - 10} more) ...", *loop[-5:]]
                cycle = " -> ".join(loop)
                raise ModelError(
                    f"{src}: derived.{dep}: derived quantities form a cycle: {cycle}; each is "
                    "defined through the others, so none has a value: break the cycle"
                )
            state[dep] = 1
            path.append(dep)
            todo.append(iter(sorted(by_name[dep].expr.names & by_name.keys())))
    return order


#: Names no compartment, parameter, covariate, derived quantity or output may take, in any
#: letter case: the columns and dimensions ldpk's tables and results use (simulation tables,
#: ``Simulation.to_xarray``, sweeps, fits), with what uses them.
RESERVED_NAMES: dict[str, str] = {
    "time": "the time column of simulation tables and the time dimension of results",
    "time_of": "the time coordinate of simulations of several subjects",
    "id": "the subject ID column of data files",
    "subject": "the subject dimension of results and posteriors",
    "set": "the parameter-set column of simulation tables and dimension of sweeps",
    "regimen": "the regimen dimension of sweeps",
    "status": "the per-set status variable of sweeps",
    "trial": "the trial dimension of virtual trials",
    "chain": "the chain dimension of posteriors",
    "draw": "the draw dimension of posteriors",
    "obs": "the observation dimension of fits",
    "pred": "the predictions stored in a fit's posterior",
}
_SUFFIX = {"compartment": "_cmt", "parameter": "_par", "covariate": "_cov", "derived quantity": "_der", "output": "_out"}  # fmt: skip
_RESERVED_PATTERN = re.compile(r"^set\d+$", re.IGNORECASE)  # set0, set1...: simulation tables
_SECTIONS = {
    "compartment": "compartments", "parameter": "parameters", "covariate": "covariates",
    "derived quantity": "derived", "output": "outputs",
}  # fmt: skip


def _check_names(src: str, groups: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Every compartment, parameter, covariate, derived quantity and output needs a name that
    is a valid identifier as Python reads it, is not reserved, and differs from every other
    such name also when letter case is ignored (output tables have one column per compartment
    and per output, data columns are matched ignoring case, and expressions see one namespace).
    ``groups``: (kind, names) with kind a key of ``_SECTIONS``."""
    seen: dict[str, tuple[str, str]] = {}  # casefolded name -> (kind, name)
    for kind, names in groups:
        section = _SECTIONS[kind]
        for n in names:
            at = f"{src}: {section}.{n}"
            if not isinstance(n, str):
                raise ModelError(
                    f"{src}: {section}: the {kind} name {n!r} is not text; names are "
                    "identifiers that start with a letter or '_'"
                )
            if not n.isidentifier() or keyword.iskeyword(n):
                raise ModelError(
                    f"{at}: {kind} name {n!r} is not a valid identifier (letters, digits and "
                    "'_', not starting with a digit, and not a Python keyword such as 'in' or "
                    "'lambda')"
                )
            norm = unicodedata.normalize("NFKC", n)
            if norm != n:
                odd = [describe_char(c) for c in n if unicodedata.normalize("NFKC", c) != c]
                raise ModelError(
                    f"{at}: {kind} name {n!r} contains {', '.join(odd)}, which expressions read "
                    f"as {norm!r} (Python normalises names): name it {norm!r}"
                )
            if n == "t":
                raise ModelError(f"{at}: {kind} name 't' is reserved (it is time in expressions); rename it")  # fmt: skip
            low = n.casefold()
            if low in RESERVED_NAMES or _RESERVED_PATTERN.match(n):
                what = RESERVED_NAMES.get(low, "a parameter-set column of simulation tables")
                raise ModelError(
                    f"{at}: {kind} name {n!r} is reserved in any letter case ({what}); rename "
                    f"it, e.g. {n + _SUFFIX[kind]!r}. Reserved: "
                    f"{', '.join(RESERVED_NAMES)}, set0, set1, ... and t"
                )
            if n in FUNCTIONS or n in CONSTANTS:
                what = f"function {n}()" if n in FUNCTIONS else f"constant {n}"
                raise ModelError(f"{at}: {kind} name {n!r} is the expression {what}; rename it")
            if low in seen:
                other_kind, other = seen[low]
                case = "" if other == n else " (ignoring letter case)"
                raise ModelError(
                    f"{at}: the name {n!r} is used twice{case}: as {kind} and as {other_kind} "
                    f"{other!r} ({_SECTIONS[other_kind]}.{other}); every compartment, parameter, "
                    "covariate, derived quantity and output needs its own name, also ignoring "
                    "letter case (output tables have one column per compartment and per output, "
                    "and data columns are matched ignoring case): rename one of them"
                )
            seen[low] = (kind, n)


def validate(m: Model) -> None:
    """Structural checks; raises ModelError naming the source, the entry and the fix."""
    src = m.source
    for kind, names in (("output", m.output_names), ("route", m.route_names)):
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ModelError(f"{src}: {kind} name(s) {dup} appear twice in {list(names)}")
    _check_names(
        src,
        [
            ("compartment", m.compartment_names),
            ("parameter", m.parameter_names),
            ("covariate", m.covariate_names),
            ("derived quantity", tuple(d.name for d in m.derived)),
            ("output", m.output_names),
        ],
    )
    cmt_fold = {c.casefold(): c for c in m.compartment_names}
    for o in m.output_names:
        if o.casefold().startswith("amount_") and o.casefold()[7:] in cmt_fold:
            raise ModelError(
                f"{src}: outputs.{o}: the name {o!r} is the variable that holds the amount in "
                f"compartment {cmt_fold[o.casefold()[7:]]!r} in results (Simulation.to_xarray); "
                "rename the output"
            )
    for where, unit in (
        ("time_unit", m.time_unit),
        ("amount_unit", m.amount_unit),
        *((f"compartments.{c.name}.unit", c.unit) for c in m.compartments),
        *((f"parameters.{p.name}.unit", p.unit) for p in m.parameters),
        *((f"covariates.{c.name}.unit", c.unit) for c in m.covariates),
        *((f"derived.{d.name}.unit", d.unit) for d in m.derived),
        *((f"outputs.{o.name}.unit", o.unit) for o in m.outputs),
    ):
        check_unit_text(str(unit), f"{src}: {where}")
    if not m.compartments:
        raise ModelError(f"{src}: a model needs at least one compartment")
    for p in m.parameters:
        if not p.unit:
            raise ModelError(
                f"{src}: parameters.{p.name} has no unit; add e.g. `unit: 1/h` "
                "(use `unit: '1'` for dimensionless quantities)"
            )
    cmts = set(m.compartment_names)
    for i, f in enumerate(m.flows):
        for end, name in (("from", f.source), ("to", f.target)):
            if name is not None and name not in cmts:
                hint = lookalike_hint(str(name), m.compartment_names)
                raise ModelError(
                    f"{src}: flows[{i}].{end} names compartment {name!r}, which does not "
                    f"exist{hint}; compartments: {', '.join(m.compartment_names)}"
                )
        if (f.k is None) == (f.rate is None):
            raise ModelError(f"{src}: flows[{i}] needs exactly one of `k:` and `rate:`")
        if f.source is None and f.target is None:
            raise ModelError(f"{src}: flows[{i}] needs `from:` or `to:`")
        if f.k is not None and f.source is None:
            raise ModelError(
                f"{src}: flows[{i}] is a first-order flow (`k:`) without a source; an input "
                "from outside needs `rate:` (amount per time)"
            )
    for r in m.routes:
        if r.target not in cmts:
            hint = lookalike_hint(str(r.target), m.compartment_names)
            raise ModelError(
                f"{src}: routes.{r.name}.target is {r.target!r}, which is not a "
                f"compartment{hint}; compartments: {', '.join(m.compartment_names)}"
            )
    if m.default_route is not None and m.default_route not in m.route_names:
        dr = m.default_route
        hint = lookalike_hint(str(dr), m.route_names) if isinstance(dr, str) else ""
        raise ModelError(
            f"{src}: default_route is {_short(dr)}, which is not a route of the model{hint}; "
            f"routes: {', '.join(m.route_names) or '(none): declare one under `routes:`'}"
        )
    if m.tracer is not None:
        from ldpk.tracer import nuclide

        try:
            nuclide(m.tracer)
        except LdpkError as exc:
            raise ModelError(f"{src}: tracer: {exc}") from None
    for o in m.outputs:
        if o.decay and m.tracer is None:
            raise ModelError(
                f"{src}: outputs.{o.name} has `decay: true` but the model declares no "
                "`tracer:` nuclide (e.g. `tracer: 111In`)"
            )
    order = _names_in_order(m.derived, src)  # raises on cycles
    # Name scopes: what each kind of expression may refer to.
    static = set(m.parameter_names) | set(m.covariate_names)
    available: set[str] = set(static)
    for d in order:
        bad = d.expr.names - available - {x.name for x in m.derived}
        if bad:
            raise ModelError(
                f"{src}: derived.{d.name} uses {sorted(bad)}, which derived quantities cannot use "
                "(states and time are not allowed there)"
            )
        available.add(d.name)
    states = set(m.compartment_names)
    for i, f in enumerate(m.flows):
        if f.k is not None and f.k.names - available:
            bad = sorted(f.k.names - available)
            raise ModelError(
                f"{src}: flows[{i}].k uses {bad}: a rate constant may use parameters, covariates "
                "and derived quantities only; use `rate:` for state- or time-dependent flows"
            )
    for r in m.routes:
        for attr in ("lag", "bioavailability", "rate", "duration"):
            e = getattr(r, attr)
            if e is not None and e.names - available:
                raise ModelError(
                    f"{src}: routes.{r.name}.{attr} uses {sorted(e.names - available)}; "
                    f"valid names: {', '.join(sorted(available))}"
                )
    for c in m.compartments:
        if c.initial is not None and c.initial.names - available:
            raise ModelError(
                f"{src}: compartments.{c.name}.initial uses {sorted(c.initial.names - available)}; "
                f"valid names: {', '.join(sorted(available))}"
            )
    del states


def scope(m: Model, kind: str) -> dict[str, str]:
    """Names an expression of ``kind`` may use ('static', 'dynamic'), mapped to what they are."""
    names = {p.name: "parameter" for p in m.parameters}
    names |= {c.name: "covariate" for c in m.covariates}
    names |= {d.name: "derived" for d in m.derived}
    if kind == "dynamic":
        names |= {c.name: "compartment amount" for c in m.compartments}
        names["t"] = "time"
    return names


def derived_order(m: Model) -> list[Derived]:
    return _names_in_order(m.derived, m.source)


# ---- construction helpers used by the loader and by Python users --------------------------
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _num(value: Any, where: str, finite: bool = True) -> float:
    """``value`` as a float: a number (Python or NumPy) or a numeric string (YAML 1.1 reads
    1.0e11, without an exponent sign, as a string). NaN is refused, and so is ±inf unless
    ``finite`` is False (bounds)."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = value.strip()
    elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ModelError(f"{where}: expected a number, got {_short(value)}")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond the float64 range
        out = math.inf
    if math.isnan(out) or (finite and math.isinf(out)):
        if isinstance(value, numbers.Integral):
            shown = f"an integer of about {int(int(value).bit_length() * 0.30103) + 1} digits"
        else:
            shown = _short(value) if isinstance(value, str) else repr(out)
        raise ModelError(
            f"{where}: {shown} is not a finite number; give a finite value "
            "(float64: at most about 1.8e308 in magnitude)"
        )
    return out


def _iiv(value: Any, where: str) -> float | None:
    """The SD of log P between subjects (>= 0), or None."""
    if value is None:
        return None
    out = _num(value, where)
    if out < 0:
        raise ModelError(f"{where}: {out!r} is negative; the between-subject SD is >= 0")
    return out


def _discontinuities(raw: Any, scope: set[str], source: str) -> tuple[Expr, ...]:
    """Times at which a `rate:` flow switches (e.g. `where(t < TMAX, ...)`), as expressions of
    parameters and covariates; the ODE step-size controller steps onto them exactly."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raw = [raw]
    return tuple(
        compile_expr(e, scope, f"{source}: discontinuities[{i}]") for i, e in enumerate(raw)
    )


def _physiology_binding(value: Any, species: Any, where: str) -> tuple[str, float, float] | None:
    """``{physiology: PATH, factor: F}`` -> (PATH, F, table value × F), else None."""
    if not isinstance(value, Mapping):
        return None
    if set(value) - {"physiology", "factor"} or "physiology" not in value:
        raise ModelError(
            f"{where}.value: a number, or {{physiology: PATH, factor: F}} such as "
            "{physiology: liver.weight, factor: 0.001} (g to kg)"
        )
    if species is None:
        raise ModelError(
            f"{where}.value refers to the physiology tables: add `species:` (e.g. mouse)"
        )
    from ldpk.model.physiology import lookup

    factor = _num(value.get("factor", 1.0), f"{where}.value.factor")
    try:
        v = lookup(str(species), str(value["physiology"]))
    except LdpkError as exc:
        raise ModelError(f"{where}.value: {exc}") from None
    return str(value["physiology"]), factor, v.value * factor


def _allometry(entry: Mapping[str, Any], binding: Any, where: str) -> float | None:
    """The `allometry:` key of a parameter entry: an exponent b (a number), or `none` (or
    null): not scaled (0.0); absent: None (the default by unit applies)."""
    if "allometry" not in entry:
        return None
    raw = entry["allometry"]
    if binding:
        raise ModelError(
            f"{where}.allometry: the parameter is bound to the physiology tables, so another "
            "species takes that table's value; remove `allometry:` (or give a number as "
            "`value:` to scale it allometrically)"
        )
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == "none"):
        return 0.0
    try:
        return _num(raw, f"{where}.allometry")
    except ModelError:
        raise ModelError(
            f"{where}.allometry: {_short(raw)} is not an exponent; give a number (e.g. 0.75 for "
            "a clearance, 1 for a volume, -0.25 for a rate constant) or `none` (not scaled)"
        ) from None


def make_prior(spec: Any, where: str) -> Prior:
    if isinstance(spec, Prior):
        return spec
    if not isinstance(spec, Mapping) or "dist" not in spec:
        raise ModelError(
            f"{where}: a prior is a mapping with `dist:` and its arguments, e.g. "
            "{dist: lognormal, loc: 0.1, scale: 0.5}; "
            f"distributions: {', '.join(sorted(PRIOR_DISTRIBUTIONS))}"
        )
    dist = spec["dist"]
    if dist not in PRIOR_DISTRIBUTIONS:
        raise ModelError(
            f"{where}: unknown prior {dist!r}; valid: {', '.join(sorted(PRIOR_DISTRIBUTIONS))}"
        )
    want = PRIOR_DISTRIBUTIONS[dist]
    got = set(spec) - {"dist"}
    if got != set(want):
        raise ModelError(f"{where}: prior {dist} takes {list(want)}, got {sorted(got)}")
    return Prior(dist, tuple((k, _num(spec[k], f"{where}.{k}")) for k in want))


def build_model(spec: Mapping[str, Any], source: str = "<python>") -> Model:
    """Build a Model from a mapping with the model-file layout (see ``models/README.md``)."""
    if not isinstance(spec, Mapping):
        raise ModelError(f"{source}: a model file must be a mapping at top level")
    known = {
        "name", "description", "time_unit", "amount_unit", "compartments", "parameters",
        "covariates", "derived", "flows", "routes", "outputs", "references", "notes",
        "example", "tracer", "species", "discontinuities", "default_route",
    }  # fmt: skip
    unknown = set(spec) - known
    if unknown:
        raise ModelError(
            f"{source}: unknown top-level entr{'y' if len(unknown) == 1 else 'ies'} "
            f"{sorted(unknown)}; valid: {', '.join(sorted(known))}"
        )

    def mapping(key: str) -> Mapping[str, Any]:
        v = spec.get(key) or {}
        if not isinstance(v, Mapping):
            raise ModelError(f"{source}: `{key}` must be a mapping of name -> entry")
        return v

    def entry(key: str, name: str, v: Any, allowed: set[str]) -> Mapping[str, Any]:
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            raise ModelError(f"{source}: {key}.{name} must be a mapping")
        bad = set(v) - allowed
        if bad:
            raise ModelError(
                f"{source}: {key}.{name} has unknown field(s) {sorted(bad)}; "
                f"valid: {', '.join(sorted(allowed))}"
            )
        return v

    pnames = list(mapping("parameters"))
    cnames = list(mapping("covariates"))
    dnames = list(mapping("derived"))
    states = list(mapping("compartments"))
    # Names first: a reserved, invalid or colliding name is reported as such, not as an
    # unknown name in some expression.
    _check_names(
        source,
        [
            ("compartment", states),
            ("parameter", pnames),
            ("covariate", cnames),
            ("derived quantity", dnames),
            ("output", list(mapping("outputs"))),
        ],
    )
    static_scope = set(pnames) | set(cnames) | set(dnames)
    dynamic_scope = static_scope | set(states) | {"t"}

    parameters = []
    for n, v in mapping("parameters").items():
        v = entry(
            "parameters",
            n,
            v,
            {"value", "unit", "description", "prior", "iiv", "lower", "upper", "allometry"},
        )
        if "value" not in v:
            raise ModelError(f"{source}: parameters.{n} needs `value:`")
        unit = v.get("unit")
        binding = _physiology_binding(v["value"], spec.get("species"), f"{source}: parameters.{n}")
        value = binding[2] if binding else _num(v["value"], f"{source}: parameters.{n}.value")
        parameters.append(
            Parameter(
                name=n,
                value=value,
                physiology=binding[:2] if binding else None,
                unit="" if unit is None else str(unit),
                description=str(v.get("description", "")),
                prior=make_prior(v["prior"], f"{source}: parameters.{n}.prior")
                if "prior" in v
                else None,
                iiv=_iiv(v.get("iiv"), f"{source}: parameters.{n}.iiv"),
                lower=_num(v["lower"], f"{source}: parameters.{n}.lower", finite=False)
                if "lower" in v
                else None,
                upper=_num(v["upper"], f"{source}: parameters.{n}.upper", finite=False)
                if "upper" in v
                else None,
                allometry=_allometry(v, binding, f"{source}: parameters.{n}"),
            )
        )
    covariates = []
    for n, v in mapping("covariates").items():
        v = entry("covariates", n, v, {"unit", "description", "default"})
        default = v.get("default")
        covariates.append(
            Covariate(
                n,
                str(v.get("unit", "")),
                str(v.get("description", "")),
                None if default is None else _num(default, f"{source}: covariates.{n}.default"),
            )
        )
    derived = []
    for n, v in mapping("derived").items():
        if not isinstance(v, Mapping):
            v = {"expr": v}
        v = entry("derived", n, v, {"expr", "unit", "description"})
        expr = compile_expr(v.get("expr"), static_scope, f"{source}: derived.{n}")
        if n in expr.names:
            raise ModelError(
                f"{source}: derived.{n}: {expr.source!r} refers to {n} itself, so {n} has no "
                f"value; a derived quantity is defined by parameters, covariates and other "
                "derived quantities, never by itself"
            )
        derived.append(
            Derived(
                n,
                expr,
                str(v.get("unit", "")),
                str(v.get("description", "")),
            )
        )
    compartments = []
    for n, v in mapping("compartments").items():
        v = entry("compartments", n, v, {"unit", "description", "initial"})
        init = v.get("initial")
        compartments.append(
            Compartment(
                n,
                str(v.get("unit", "")),
                str(v.get("description", "")),
                None
                if init is None
                else compile_expr(init, static_scope, f"{source}: compartments.{n}.initial"),
            )
        )
    flows = []
    raw_flows = spec.get("flows") or []
    if not isinstance(raw_flows, list):
        raise ModelError(f"{source}: `flows` must be a list of {{from, to, k | rate}} entries")
    for i, v in enumerate(raw_flows):
        v = entry("flows", f"[{i}]", v, {"from", "to", "k", "rate", "description"})
        where = f"{source}: flows[{i}]"
        flows.append(
            Flow(
                source=v.get("from"),
                target=v.get("to"),
                # Compiled with every name in scope so that validate() can say to use `rate:`.
                k=compile_expr(v["k"], dynamic_scope, f"{where}.k") if "k" in v else None,
                rate=compile_expr(v["rate"], dynamic_scope, f"{where}.rate")
                if "rate" in v
                else None,
                description=str(v.get("description", "")),
            )
        )
    routes = []
    for n, v in mapping("routes").items():
        if isinstance(v, str):
            v = {"target": v}
        v = entry(
            "routes", n, v, {"target", "lag", "bioavailability", "rate", "duration", "description"}
        )
        if "target" not in v:
            raise ModelError(f"{source}: routes.{n} needs `target:` (a compartment)")
        exprs = {
            a: compile_expr(v[a], static_scope, f"{source}: routes.{n}.{a}") if a in v else None
            for a in ("lag", "bioavailability", "rate", "duration")
        }
        routes.append(
            Route(n, str(v["target"]), description=str(v.get("description", "")), **exprs)
        )
    outputs = []
    for n, v in mapping("outputs").items():
        if not isinstance(v, Mapping):
            v = {"expr": v}
        v = entry("outputs", n, v, {"expr", "unit", "description", "decay"})
        if not isinstance(v.get("decay", False), bool):
            raise ModelError(f"{source}: outputs.{n}.decay must be true or false")
        outputs.append(
            Output(
                n,
                compile_expr(v.get("expr"), dynamic_scope, f"{source}: outputs.{n}"),
                str(v.get("unit", "")),
                str(v.get("description", "")),
                bool(v.get("decay", False)),
            )
        )
    refs = spec.get("references") or []
    if isinstance(refs, str):
        refs = [refs]
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ModelError(f"{source}: the model needs a `name:`")
    extra = tuple((k, spec[k]) for k in ("example",) if k in spec)
    return Model(
        name=name,
        description=str(spec.get("description", "")).strip(),
        time_unit=str(spec.get("time_unit", "h")),
        amount_unit=str(spec.get("amount_unit", "")),
        compartments=tuple(compartments),
        parameters=tuple(parameters),
        covariates=tuple(covariates),
        derived=tuple(derived),
        flows=tuple(flows),
        routes=tuple(routes),
        outputs=tuple(outputs),
        references=tuple(str(r) for r in refs),
        notes=str(spec.get("notes", "")).strip(),
        tracer=None if spec.get("tracer") is None else str(spec["tracer"]),
        species=None if spec.get("species") is None else str(spec["species"]),
        discontinuities=_discontinuities(spec.get("discontinuities"), static_scope, source),
        source=source,
        extra=extra,
        default_route=_default_route(spec.get("default_route"), source),
    )


def _default_route(value: Any, source: str) -> str | None:
    """The `default_route:` entry: a route name (checked against the routes by validate())."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelError(
            f"{source}: default_route is {_short(value)}; give the name of one of the "
            "model's routes (e.g. `default_route: iv`)"
        )
    return value.strip()
