"""Exposure metrics of simulated time courses (non-compartmental analysis on a grid).

Every metric takes ``t`` of shape (T,), strictly increasing (model time unit), and ``y`` of
shape (..., T): time along the last axis, any leading batch dimensions. It returns an array of
shape (...) (``trough``, ``amount_at`` and ``fraction_at`` with a vector ``at`` of shape (K,):
(..., K)). The functions are pure ``jax.numpy``: they work under ``jax.jit`` and ``jax.vmap``
and give no NaN (values or gradients) where ``y`` has zeros, e.g. before an absorption lag.
Options that change the computation's structure (``method``, ``n_terminal``,
``extrapolate``) are static Python values; the others (``threshold``, ``after``, ``at``,
``dose``) may be traced.

Areas use the standard NCA "linear-up/log-down" rule: a log trapezoid over an interval where
``y`` falls and both ends are positive (exact for a mono-exponential), a linear trapezoid
elsewhere. ``METRICS`` maps each metric's name to a :class:`Metric` (function, description,
unit rule); :func:`compute` evaluates several by name, with units.

This module sits below ``ldpk.solve``: it imports nothing from ldpk but ``ldpk.errors``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ldpk.errors import DataError

METHODS = ("linear-up/log-down", "linear")


def _prep(t: ArrayLike, y: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``t`` and ``y`` as arrays, after checking their shapes (static, so safe under jit)."""
    t, y = jnp.asarray(t), jnp.asarray(y)
    t, y = (x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float) for x in (t, y))
    if t.ndim != 1 or t.shape[0] < 2 or y.ndim < 1 or y.shape[-1] != t.shape[0]:
        raise DataError(f"exposure: t must have shape (T,) with T >= 2 and y shape (..., T); got t {t.shape}, y {y.shape}")  # fmt: skip
    return t, y


def _areas(t: jax.Array, y: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    """Per-interval areas under y and under t·y, each of shape (..., T-1). Where the log rule
    applies, the AUMC piece is the exact integral of t·y for y exponential over the interval
    (the log-trapezoid AUMC formula), not a log trapezoid of t·y."""
    if method not in METHODS:
        raise DataError(f"exposure: unknown AUC method {method!r}; valid: {', '.join(METHODS)}")
    h, t0, t1 = jnp.diff(t), t[:-1], t[1:]
    y0, y1 = y[..., :-1], y[..., 1:]
    auc, aumc = 0.5 * (y0 + y1) * h, 0.5 * (t0 * y0 + t1 * y1) * h
    if method == "linear":
        return auc, aumc
    log = (y1 < y0) & (y1 > 0)  # falling with both ends positive
    d, c1 = jnp.where(log, y0 - y1, 1.0), jnp.where(log, y1, 1.0)  # dummies keep NaN out
    ln = jnp.log1p(d / c1)  # ln(y0/y1) > 0, accurate when y0 ≈ y1
    a = d * h / ln
    m = t0 * a + h * (a - h * c1) / ln  # ∫ t·y over the interval for y exponential in it
    return jnp.where(log, a, auc), jnp.where(log, m, aumc)


def _interp(t: jax.Array, y: jax.Array, at: ArrayLike) -> jax.Array:
    """y linearly interpolated at ``at`` (scalar or (K,)); NaN outside [t[0], t[-1]]."""
    at = jnp.asarray(at, dtype=t.dtype)
    i = jnp.clip(jnp.searchsorted(t, at, side="right") - 1, 0, t.shape[0] - 2)
    w = (at - t[i]) / (t[i + 1] - t[i])
    y0, y1 = jnp.take(y, i, axis=-1), jnp.take(y, i + 1, axis=-1)
    return jnp.where((at >= t[0]) & (at <= t[-1]), y0 + w * (y1 - y0), jnp.nan)


def auc(t: ArrayLike, y: ArrayLike, method: str = "linear-up/log-down") -> jax.Array:
    """Area under y from t[0] to t[-1] (unit of y × time unit), by the linear-up/log-down
    rule (``method="linear"``: linear trapezoids throughout)."""
    t, y = _prep(t, y)
    return _areas(t, y, method)[0].sum(axis=-1)


def lambda_z(t: ArrayLike, y: ArrayLike, n_terminal: int = 3) -> jax.Array:
    """Terminal rate constant (1/time unit): minus the least-squares slope of ln y against t
    over the last ``n_terminal`` grid points. NaN when it is not positive and finite or when
    any of those points is <= 0."""
    t, y = _prep(t, y)
    if not 2 <= n_terminal <= t.shape[0]:
        raise DataError(f"exposure: n_terminal must be between 2 and the number of times ({t.shape[0]}); got {n_terminal!r}")  # fmt: skip
    tt, yy = t[-n_terminal:], y[..., -n_terminal:]
    positive = jnp.all(yy > 0, axis=-1)
    ly = jnp.log(jnp.where(yy > 0, yy, 1.0))
    dt = tt - tt.mean()
    lz = -jnp.sum(dt * (ly - ly.mean(axis=-1, keepdims=True)), axis=-1) / jnp.sum(dt * dt)
    return jnp.where(positive & (lz > 0) & jnp.isfinite(lz), lz, jnp.nan)


def auc_inf(
    t: ArrayLike, y: ArrayLike, n_terminal: int = 3, method: str = "linear-up/log-down"
) -> jax.Array:
    """Area under y from t[0] to infinity (unit of y × time unit): :func:`auc` plus
    C_last/λz, λz from :func:`lambda_z` (NaN where λz is)."""
    t, y = _prep(t, y)
    return auc(t, y, method) + y[..., -1] / lambda_z(t, y, n_terminal)


def cmax(t: ArrayLike, y: ArrayLike) -> jax.Array:
    """Maximum of y on the grid (unit of y)."""
    return _prep(t, y)[1].max(axis=-1)


def tmax(t: ArrayLike, y: ArrayLike) -> jax.Array:
    """Time of the first maximum of y on the grid (time unit)."""
    t, y = _prep(t, y)
    return t[jnp.argmax(y, axis=-1)]


def cmin(t: ArrayLike, y: ArrayLike, after: ArrayLike | None = None) -> jax.Array:
    """Minimum of y on the grid (unit of y), over the times >= ``after`` if given (NaN if
    there are none)."""
    t, y = _prep(t, y)
    if after is None:
        return y.min(axis=-1)
    keep = t >= after
    return jnp.where(keep.any(), jnp.where(keep, y, jnp.inf).min(axis=-1), jnp.nan)


def trough(t: ArrayLike, y: ArrayLike, at: ArrayLike) -> jax.Array:
    """y at time(s) ``at`` (e.g. just before the next dose) by linear interpolation (unit of
    y); NaN outside the grid."""
    return _interp(*_prep(t, y), at)


def time_above(t: ArrayLike, y: ArrayLike, threshold: ArrayLike) -> jax.Array:
    """Total time with y > ``threshold`` (time unit), crossing times interpolated linearly
    between grid points (exact for piecewise-linear y). ``threshold`` is a scalar or
    broadcasts against the batch shape (...)."""
    t, y = _prep(t, y)
    e = y - jnp.asarray(threshold, dtype=y.dtype)[..., None]
    e0, e1, h = e[..., :-1], e[..., 1:], jnp.diff(t)
    above0, above1 = e0 > 0, e1 > 0
    cross = above0 != above1
    part = jnp.where(above0, e0, e1) / jnp.where(cross, jnp.abs(e0 - e1), 1.0)
    return jnp.sum(h * jnp.where(cross, part, above0), axis=-1)


def mrt(
    t: ArrayLike,
    y: ArrayLike,
    extrapolate: bool = True,
    n_terminal: int = 3,
    method: str = "linear-up/log-down",
) -> jax.Array:
    """Mean residence time AUMC/AUC (time unit), time measured from t = 0. AUMC is the area
    under t·y: the exact log-trapezoid AUMC formula where the AUC uses the log rule, linear
    trapezoids of t·y elsewhere. With ``extrapolate`` both go to infinity (AUC + C_last/λz,
    AUMC + t_last·C_last/λz + C_last/λz², NaN where λz is); else both stop at t[-1]. NaN where
    the AUC is 0."""
    t, y = _prep(t, y)
    a, m = (x.sum(axis=-1) for x in _areas(t, y, method))
    if extrapolate:
        c, lz = y[..., -1], lambda_z(t, y, n_terminal)
        a, m = a + c / lz, m + t[-1] * c / lz + c / lz**2
    return m / jnp.where(a == 0, jnp.nan, a)


def amount_at(t: ArrayLike, y: ArrayLike, at: ArrayLike) -> jax.Array:
    """Amount at time(s) ``at`` by linear interpolation, for y a compartment's amount (amount
    unit); NaN outside the grid."""
    return _interp(*_prep(t, y), at)


def fraction_at(t: ArrayLike, y: ArrayLike, at: ArrayLike, dose: ArrayLike) -> jax.Array:
    """Fraction of ``dose`` (same amount unit as y) present at time(s) ``at``, by linear
    interpolation (dimensionless); NaN outside the grid."""
    return amount_at(t, y, at) / dose


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(t, y, **options)``, a description, and ``unit(output_unit,
    time_unit, amount_unit)`` giving the unit of its result."""

    fn: Callable[..., jax.Array]
    description: str
    unit: Callable[[str, str, str], str]

    @property
    def options(self) -> dict[str, bool]:
        """The metric's options (the keyword arguments after t and y): name → required."""
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return {p.name: p.default is inspect.Parameter.empty for p in params}


def _same(u: str, tu: str, au: str) -> str:
    return u


def _time(u: str, tu: str, au: str) -> str:
    return tu


def _area(u: str, tu: str, au: str) -> str:
    return f"{u}*{tu}"


METRICS: dict[str, Metric] = {
    "auc": Metric(auc, "area under the curve over the grid", _area),
    "auc_inf": Metric(auc_inf, "area under the curve extrapolated to infinity", _area),
    "lambda_z": Metric(lambda_z, "terminal rate constant", lambda u, tu, au: f"1/{tu}"),
    "cmax": Metric(cmax, "maximum on the grid", _same),
    "tmax": Metric(tmax, "time of the first maximum", _time),
    "cmin": Metric(cmin, "minimum on the grid (after a time, optionally)", _same),
    "trough": Metric(trough, "value at given time(s), e.g. before the next dose", _same),
    "time_above": Metric(time_above, "total time above a threshold", _time),
    "mrt": Metric(mrt, "mean residence time AUMC/AUC", _time),
    "amount_at": Metric(amount_at, "amount at given time(s)", lambda u, tu, au: au),
    "fraction_at": Metric(fraction_at, "fraction of the dose at given time(s)", lambda *_: "1"),
}


class Exposure(NamedTuple):
    """One metric's result: its value (shape (...)) and unit."""

    value: jax.Array
    unit: str


def compute(
    t: ArrayLike,
    y: ArrayLike,
    names: str | Sequence[str],
    *,
    output_unit: str,
    time_unit: str,
    amount_unit: str | None = None,
    **options: Any,
) -> dict[str, Exposure]:
    """The metrics ``names`` (keys of :data:`METRICS`) of y(t), each with its unit.
    ``output_unit`` is y's unit, ``amount_unit`` that of ``amount_at`` (default
    ``output_unit``). Each metric gets the ``options`` it takes (``threshold=``, ``at=``,
    ``dose=``, ``after=``, ``n_terminal=``, ``extrapolate=``, ``method=``) and ignores the
    rest. Raises :class:`~ldpk.errors.DataError` before any computation for an unknown
    metric, an option no metric takes, or a required option missing."""
    names = [names] if isinstance(names, str) else list(names)
    if unknown := [n for n in names if n not in METRICS]:
        raise DataError(f"exposure: unknown metric(s) {', '.join(map(repr, unknown))}; valid: {', '.join(METRICS)}")  # fmt: skip
    known = {o for m in METRICS.values() for o in m.options}
    if unknown := sorted(set(options) - known):
        raise DataError(f"exposure: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")  # fmt: skip
    for name in names:
        opts = METRICS[name].options
        if missing := [o for o, required in opts.items() if required and o not in options]:
            raise DataError(f"exposure: metric {name!r} needs option(s) {', '.join(missing)}; its options: {', '.join(opts)}")  # fmt: skip
    au = output_unit if amount_unit is None else amount_unit
    out = {}
    for name in names:
        m = METRICS[name]
        kw = {o: options[o] for o in m.options if o in options}
        out[name] = Exposure(m.fn(t, y, **kw), m.unit(output_unit, time_unit, au))
    return out
