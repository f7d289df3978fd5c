"""Describing a design: groups (arms), the residual error model and the population parameters.

Everything here is checked in Python, before any kernel is prepared or compiled; checks that
need the model (parameter, output, covariate names) are in :func:`check_design`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldpk.dosing import Bolus, Infusion, Reset
from ldpk.errors import DataError
from ldpk.model import Model

#: How an individual parameter θ_i depends on its fixed effect β and its random effect η_i:
#: 'natural' θ = β·e^η (β on the natural scale, PFIM's μ and PopED's usual form), 'log'
#: θ = e^(β + η) (β on the log scale), 'additive' θ = β + η (also for parameters without η,
#: such as a covariate effect entering the model through an expression).
SCALES = ("natural", "log", "additive")

#: Conventions of the residual parameters (``Residual(convention=...)``).
CONVENTIONS = ("variance", "sd")


@dataclass(frozen=True)
class Group:
    """One group (arm) of a design: ``n`` subjects given ``regimen`` and sampled at ``times``.

    ``n``: number of subjects (> 0; a float is allowed, as PopED's group sizes). ``times``:
    sampling times in the model's time unit, non-negative and non-decreasing (repeated
    times are repeated samples). ``regimen``: ldpk doses (:class:`ldpk.Bolus`,
    :class:`ldpk.Infusion`, :class:`ldpk.Reset` or mappings with their fields), amounts in
    the model's amount unit. ``covariates``: covariate values of the group's subjects, model
    units (names of the model's ``covariates:``; missing ones take their defaults).
    ``name``: a label used in messages."""

    n: float
    times: Sequence[float]
    regimen: Sequence[Bolus | Infusion | Reset | Mapping[str, Any]] = ()
    covariates: Mapping[str, float] | None = None
    name: str | None = None

    def label(self, index: int) -> str:
        return f"groups[{index}]" + (f" ({self.name!r})" if self.name else "")


@dataclass(frozen=True)
class Residual:
    """The residual error model of the observed output f (FO: evaluated at the typical
    prediction E, with no η-ε interaction).

    ``additive`` and ``proportional`` give the error's parts (either may be None: absent).
    ``convention``:

    - ``'variance'`` (PopED): the parameters are variances, y = f·(1 + ε_prop) + ε_add,
      Var = σ²_add + σ²_prop·f²; FIM names ``sigma2_add``, ``sigma2_prop``.
    - ``'sd'`` (PFIM): the parameters are standard deviations, Var = (σ_add + σ_prop·f)²
      (PFIM's σ_inter and σ_slope); FIM names ``sigma_add``, ``sigma_prop``.

    Units: ``additive`` those of the output (squared for 'variance'), ``proportional``
    dimensionless. ``estimate``: whether the residual parameters are in the FIM (else held
    fixed at these values)."""

    additive: float | None = None
    proportional: float | None = None
    convention: str = "variance"
    estimate: bool = True

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise DataError(
                f"Residual.convention: {self.convention!r} is not a convention; valid: "
                f"{', '.join(CONVENTIONS)}"
            )
        if self.additive is None and self.proportional is None:
            raise DataError("Residual: give `additive`, `proportional` or both")
        for what in ("additive", "proportional"):
            v = getattr(self, what)
            if v is not None and (not np.isfinite(v) or v < 0):
                raise DataError(f"Residual.{what}: must be a finite number >= 0, got {v!r}")
        if not any(v for v in (self.additive, self.proportional)):
            raise DataError("Residual: the residual error is zero (give a positive part)")

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the residual parameters present (additive first)."""
        base = "sigma2" if self.convention == "variance" else "sigma"
        out = []
        if self.additive is not None:
            out.append(f"{base}_add")
        if self.proportional is not None:
            out.append(f"{base}_prop")
        return tuple(out)

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(float(v) for v in (self.additive, self.proportional) if v is not None)

    def variance(self, f: Any, sigma: Any) -> Any:
        """Residual variance at predictions ``f`` for the residual parameters ``sigma`` (in
        the order of :attr:`names`). Works on JAX arrays (differentiable)."""
        parts = iter(sigma)
        add = next(parts) if self.additive is not None else 0.0
        prop = next(parts) if self.proportional is not None else 0.0
        if self.convention == "variance":
            return add + prop * f**2
        return (add + prop * f) ** 2


@dataclass(frozen=True)
class Design:
    """A population design and the population parameters it is evaluated at.

    ``groups``: the :class:`Group` s (arms); their FIMs add, each times its ``n``.
    ``output``: the name of the observed model output. ``residual``: its :class:`Residual`.
    ``fixed_effects``: β, by model parameter name, on the scale ``scale`` says; model
    parameters not named here keep the model's values and are not estimated.
    ``omega2``: variances ω² of the random effects η (Ω diagonal), by parameter name (each
    must be in ``fixed_effects``); a parameter not named has no random effect.
    ``scale``: 'natural' (θ = β·e^η, default), 'log' (θ = e^(β + η)) or 'additive'
    (θ = β + η); one for all, or a mapping by parameter name (missing names: 'natural').
    ``fixed``: FIM parameter names (``CL``, ``omega2_CL``, ``sigma2_prop``, ...) held at
    their values instead of estimated; a zero ω² is always held.

    The FIM's parameters are, in order: the fixed effects (in the order of
    ``fixed_effects``), ``omega2_<name>`` (in the order of ``omega2``), then the residual
    parameters (:attr:`Residual.names`), each only where estimated."""

    groups: Sequence[Group]
    output: str
    fixed_effects: Mapping[str, float]
    residual: Residual
    omega2: Mapping[str, float] = field(default_factory=dict)
    scale: str | Mapping[str, str] = "natural"
    fixed: Sequence[str] = ()

    def __post_init__(self) -> None:
        groups = tuple(self.groups)
        if not groups:
            raise DataError("Design.groups: give at least one group")
        for i, g in enumerate(groups):
            if not isinstance(g, Group):
                raise DataError(f"Design.groups[{i}]: must be a Group, got {type(g).__name__}")
            where = f"Design.{g.label(i)}"
            n = g.n
            if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
                raise DataError(f"{where}.n: must be a number of subjects, got {n!r}")
            if not np.isfinite(n) or n <= 0:
                raise DataError(f"{where}.n: must be a positive number of subjects, got {n!r}")
            try:
                t = np.asarray(g.times, dtype=float)
            except (TypeError, ValueError):
                raise DataError(f"{where}.times: sampling times must be numbers, got {g.times!r}") from None  # fmt: skip
            if t.ndim != 1 or t.size == 0:
                raise DataError(f"{where}.times: give a non-empty list of sampling times")
            if not np.all(np.isfinite(t)) or np.any(t < 0):
                bad = [float(x) for x in t if not np.isfinite(x) or x < 0]
                raise DataError(f"{where}.times: sampling times must be finite and >= 0, got {bad}")  # fmt: skip
            if np.any(np.diff(t) < 0):
                j = int(np.argmax(np.diff(t) < 0))
                raise DataError(
                    f"{where}.times: sampling times must be sorted (non-decreasing); "
                    f"times[{j + 1}] = {t[j + 1]} comes after {t[j]}"
                )
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "fixed_effects", dict(self.fixed_effects))
        object.__setattr__(self, "omega2", dict(self.omega2))
        object.__setattr__(self, "fixed", tuple(self.fixed))
        if not self.fixed_effects:
            raise DataError("Design.fixed_effects: give at least one fixed effect")
        for k, v in self.fixed_effects.items():
            if not np.isfinite(float(v)):
                raise DataError(f"Design.fixed_effects.{k}: must be finite, got {v!r}")
        for k, v in self.omega2.items():
            if k not in self.fixed_effects:
                raise DataError(
                    f"Design.omega2.{k}: {k} has no fixed effect; give it in fixed_effects "
                    f"(fixed effects: {', '.join(self.fixed_effects)})"
                )
            if not np.isfinite(float(v)) or float(v) < 0:
                raise DataError(f"Design.omega2.{k}: a variance must be finite and >= 0, got {v!r}")  # fmt: skip
        scales = self.scale if isinstance(self.scale, Mapping) else None
        if scales is None and self.scale not in SCALES:
            raise DataError(f"Design.scale: {self.scale!r} is not a scale; valid: {', '.join(SCALES)}")  # fmt: skip
        for k, s in (scales or {}).items():
            if k not in self.fixed_effects:
                raise DataError(f"Design.scale.{k}: {k} is not a fixed effect; fixed effects: {', '.join(self.fixed_effects)}")  # fmt: skip
            if s not in SCALES:
                raise DataError(f"Design.scale.{k}: {s!r} is not a scale; valid: {', '.join(SCALES)}")  # fmt: skip
        for k in self.fixed_effects:
            if self.scale_of(k) == "natural" and self.fixed_effects[k] == 0 and k in self.omega2:
                raise DataError(f"Design.fixed_effects.{k}: 0 on the natural scale leaves η no effect (θ = β·e^η)")  # fmt: skip
        names = self.all_names
        for k in self.fixed:
            if k not in names:
                raise DataError(f"Design.fixed: {k!r} is not a parameter of the design; parameters: {', '.join(names)}")  # fmt: skip

    def scale_of(self, name: str) -> str:
        """The scale of fixed effect ``name`` (see :data:`SCALES`)."""
        if isinstance(self.scale, Mapping):
            return self.scale.get(name, "natural")
        return self.scale

    @property
    def eta_names(self) -> tuple[str, ...]:
        """Parameters with a random effect, in the order of ``omega2``."""
        return tuple(self.omega2)

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every population parameter, estimated or not, in FIM order."""
        return (
            *self.fixed_effects,
            *(f"omega2_{k}" for k in self.omega2),
            *self.residual.names,
        )

    @property
    def all_values(self) -> tuple[float, ...]:
        return (
            *(float(v) for v in self.fixed_effects.values()),
            *(float(v) for v in self.omega2.values()),
            *self.residual.values,
        )

    def estimated(self) -> tuple[bool, ...]:
        """Whether each of :attr:`all_names` is estimated."""
        held = set(self.fixed)
        if not self.residual.estimate:
            held |= set(self.residual.names)
        held |= {f"omega2_{k}" for k, v in self.omega2.items() if float(v) == 0}
        return tuple(n not in held for n in self.all_names)


def check_design(model: Model, design: Design) -> None:
    """Raise :class:`DataError` for a design entry the model does not have (a parameter, the
    output, a covariate), naming the entry and the valid names. Nothing compiles here."""
    if not isinstance(design, Design):
        raise DataError(f"design must be an ldpk.design.Design, got {type(design).__name__}")
    params = model.parameter_names
    for what, names in (("fixed_effects", design.fixed_effects), ("omega2", design.omega2)):
        for k in names:
            if k not in params:
                raise DataError(
                    f"Design.{what}.{k}: model {model.name!r} has no parameter {k!r}; "
                    f"parameters: {', '.join(params)}"
                )
    if design.output not in model.output_names:
        raise DataError(
            f"Design.output: model {model.name!r} has no output {design.output!r}; "
            f"outputs: {', '.join(model.output_names) or '(none)'}"
        )
    for i, g in enumerate(design.groups):
        for k, v in (g.covariates or {}).items():
            if k not in model.covariate_names:
                raise DataError(
                    f"Design.{g.label(i)}.covariates.{k}: model {model.name!r} has no "
                    f"covariate {k!r}; covariates: {', '.join(model.covariate_names) or '(none)'}"
                )
            if not np.isfinite(float(v)):
                raise DataError(f"Design.{g.label(i)}.covariates.{k}: must be finite, got {v!r}")  # fmt: skip
