"""Optimal sampling times: the k times of each group that maximise ln det FIM (D-optimality),
chosen in continuous windows by gradients (with multiple starts) or on a candidate grid by an
exchange algorithm, under windows, a minimum spacing and (optionally) replicates.

The FIM depends on a group's times only through the FO moments at each time (E, J, Z and,
for the full FIM, ∂Z/∂β; :class:`ldpk.design._fim.GroupMoments`), and the moments at one
time do not depend on the other times. So:

- the **exchange** method computes the moments once at every candidate time of a group (one
  prepared simulator) and evaluates any choice of candidates by algebra alone;
- the **gradient** method differentiates ln det FIM in the times by the chain rule: exact
  (JAX autodiff through :func:`ldpk.design._fim.moment_information`) in the moments, and
  central differences of the moments in time (the prepared simulator compiles the times into
  its schedule, so it is not differentiable in them). The differences use a step of 1e-6
  times the latest window end, one-sided next to time 0 and to dose times (the prediction
  jumps at a bolus), so their relative error is about 1e-6: enough to steer the optimiser;
  every reported ln det is computed exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc

from ldpk.design._criteria import ln_det
from ldpk.design._fim import (
    KINDS,
    FisherInformation,
    fisher_information,
    group_moments,
    moment_information,
)
from ldpk.design._spec import Design, check_design
from ldpk.errors import DataError
from ldpk.model import Model
from ldpk.solve import ODEOptions, prepare

#: Optimisers (``optimise_times(method=...)``): 'auto' is 'exchange' with a grid, else
#: 'gradient'.
METHODS = ("auto", "gradient", "exchange")

#: Design criteria (``optimise_times(criterion=...)``): 'D', ln det FIM at the design's
#: parameter values (local D-optimality); 'ED', the expectation of ln det FIM over draws of
#: the parameters from a prior or a posterior (``samples=``; PopED's ED criterion on the log
#: scale, "ELD", as in Atkinson's Bayesian D-optimality): robust to not knowing them.
CRITERIA = ("D", "ED")

#: Relative step of the central differences of the moments in time (times the latest window
#: end): truncation error ~ (step/time scale)², rounding of the simulator's schedule ~1e-12
#: of the latest time over the step.
STEP = 1e-6


@dataclass(frozen=True)
class OptimisedTimes:
    """The result of :func:`optimise_times`.

    ``design``: the optimised :class:`Design` (the start's groups with new times, model time
    unit). ``start``: the design it replaces. ``fim``, ``fim_start``: their FIMs.
    ``ln_det``, ``ln_det_start``: the criterion of each, ln det FIM for 'D', the mean of ln
    det FIM over the parameter samples for 'ED'. ``efficiency``: D-efficiency of the
    optimised design against the start, exp((ln_det − ln_det_start)/p), p the number of
    estimated parameters (≥ 1 up to round-off when the start meets the constraints).
    ``method``: 'gradient' or 'exchange'. ``starts``: optimiser runs; ``converged``: how many
    of them ended by their convergence test (not by the iteration limit or a failed line
    search). ``criterion``: 'D' or 'ED'; ``samples``: the number of parameter samples the
    criterion averages over (1 for 'D'); ``fim`` and ``fim_start`` are always at the
    design's own parameter values."""

    design: Design
    start: Design
    fim: FisherInformation
    fim_start: FisherInformation
    ln_det: float
    ln_det_start: float
    efficiency: float
    method: str
    starts: int
    converged: int
    criterion: str = "D"
    samples: int = 1

    @property
    def times(self) -> tuple[np.ndarray, ...]:
        """The optimised sampling times of each group (model time unit)."""
        return tuple(np.asarray(g.times, dtype=float) for g in self.design.groups)

    @property
    def d_criterion(self) -> float:
        """det(FIM)^(1/p) of the optimised design."""
        return float(np.exp(self.ln_det / len(self.fim.names)))

    @property
    def d_criterion_start(self) -> float:
        """det(FIM)^(1/p) of the start."""
        return float(np.exp(self.ln_det_start / len(self.fim.names)))


@dataclass(frozen=True)
class _Space:
    """Where one group's k times may lie: ``lo``, ``hi`` (k,) the window of each sample
    (all equal for a shared window), ``shared`` whether one window holds all k samples
    (then sorted times t_j = lo + j·spacing + (hi − lo − (k−1)·spacing)·c_(j)),
    ``spacing`` the smallest gap between consecutive samples, ``candidates`` the grid
    (sorted, inside the windows) or None, ``allowed`` (k, G) which candidates each sample
    may take."""

    lo: np.ndarray
    hi: np.ndarray
    shared: bool
    spacing: float
    candidates: np.ndarray | None
    allowed: np.ndarray | None

    @property
    def k(self) -> int:
        return len(self.lo)


def _pair(w: Any, where: str) -> tuple[float, float]:
    try:
        a = np.asarray(w, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a window is a pair (lo, hi) of times, got {w!r}") from None
    if a.shape != (2,):
        raise DataError(f"{where}: a window is a pair (lo, hi) of times, got {w!r}")
    lo, hi = float(a[0]), float(a[1])
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi < lo:
        raise DataError(f"{where}: a window needs finite times 0 <= lo <= hi, got ({lo:g}, {hi:g})")  # fmt: skip
    return lo, hi


def _per_group(value: Any, n_groups: int, what: str) -> list[Any]:
    """``value`` given once for every group (a (lo, hi) pair for ``windows``, a list of times
    for ``grid``) or as one entry per group."""
    if value is None:
        return [None] * n_groups
    try:
        arr = np.asarray(value, dtype=float)
        once = arr.shape == (2,) if what == "windows" else arr.ndim == 1
    except (TypeError, ValueError):
        once = False
    if once:
        return [value] * n_groups
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence | np.ndarray):
        raise DataError(f"optimise_times({what}=): give one entry per group, got {value!r}")
    if len(value) != n_groups:
        raise DataError(f"optimise_times({what}=): {len(value)} entries for {n_groups} group(s); give one per group")  # fmt: skip
    return list(value)


def _spaces(
    design: Design, windows: Any, grid: Any, min_spacing: float, replicates: bool
) -> list[_Space]:
    """Check the constraints (before anything compiles) and describe each group's space."""
    n = len(design.groups)
    out = []
    for i, (g, w, c) in enumerate(
        zip(
            design.groups,
            _per_group(windows, n, "windows"),
            _per_group(grid, n, "grid"),
            strict=True,
        )  # fmt: skip
    ):
        where = f"optimise_times: {g.label(i)}"
        k = len(g.times)
        cand = None
        if c is not None:
            try:
                cand = np.asarray(c, dtype=float)
            except (TypeError, ValueError):
                raise DataError(f"{where}: the grid must be a list of times, got {c!r}") from None
            if cand.ndim != 1 or cand.size == 0:
                raise DataError(f"{where}: the grid must be a non-empty list of times")
            if not np.all(np.isfinite(cand)) or np.any(cand < 0):
                raise DataError(f"{where}: grid times must be finite and >= 0, got {[float(x) for x in cand if not np.isfinite(x) or x < 0]}")  # fmt: skip
            cand = np.unique(cand)
        if w is None:
            ref = cand if cand is not None else np.asarray(g.times, dtype=float)
            w = (float(ref.min()), float(ref.max()))
        try:
            per_sample = np.asarray(w, dtype=float).ndim == 2
        except (TypeError, ValueError):
            per_sample = False
        if per_sample:
            if len(w) != k:
                raise DataError(f"{where}: {len(w)} per-sample windows for {k} sampling times")  # fmt: skip
            pairs = [_pair(p, f"{where}.windows[{j}]") for j, p in enumerate(w)]
            lo = np.array([p[0] for p in pairs])
            hi = np.array([p[1] for p in pairs])
            gaps = lo[1:] - hi[:-1]
            for j, gap in enumerate(gaps):
                if gap < min_spacing or (gap <= 0 and not replicates):
                    raise DataError(
                        f"{where}: per-sample windows must be in time order and apart by at "
                        f"least min_spacing = {min_spacing:g} (more than 0 without replicates); "
                        f"windows[{j}] ends at {hi[j]:g} and windows[{j + 1}] starts at {lo[j + 1]:g}"
                    )  # fmt: skip
            shared = False
        else:
            lo1, hi1 = _pair(w, f"{where}.windows")
            if cand is None and k > 1 and hi1 - lo1 < (k - 1) * min_spacing:
                raise DataError(
                    f"{where}: {k} samples at least {min_spacing:g} apart need a window of "
                    f"{(k - 1) * min_spacing:g}; ({lo1:g}, {hi1:g}) is shorter"
                )
            if cand is None and k > 1 and hi1 == lo1 and not replicates:
                raise DataError(f"{where}: {k} distinct samples do not fit in the window ({lo1:g}, {hi1:g})")  # fmt: skip
            lo, hi, shared = np.full(k, lo1), np.full(k, hi1), True
        allowed = None
        if cand is not None:
            allowed = (cand[None, :] >= lo[:, None] - 1e-12 * (1 + hi[:, None])) & (cand[None, :] <= hi[:, None] * (1 + 1e-12) + 1e-300)  # fmt: skip
            keep = allowed.any(axis=0)
            cand, allowed = cand[keep], allowed[:, keep]
            if not shared:
                empty = [j for j in range(k) if not allowed[j].any()]
                if empty:
                    raise DataError(f"{where}: no grid time lies in the window of sample(s) {empty}")  # fmt: skip
            elif not replicates and _most_apart(cand, min_spacing) < k:
                raise DataError(
                    f"{where}: {k} sampling times but only {_most_apart(cand, min_spacing)} grid "
                    f"times in the window ({lo[0]:g}, {hi[0]:g}) at least {min_spacing:g} apart "
                    "and distinct; give more candidates or allow replicates=True"
                )
        out.append(_Space(lo, hi, shared, float(min_spacing), cand, allowed))
    return out


def _most_apart(cand: np.ndarray, spacing: float) -> int:
    """How many of the sorted ``cand`` can be chosen distinct and ``spacing`` apart (greedy)."""
    count, last = 0, -np.inf
    for t in cand:
        if t > last and t - last >= spacing:
            count, last = count + 1, t
    return count


def _dose_times(regimen: Sequence[Any]) -> np.ndarray:
    """Times at which a prediction may jump or kink: dose times and infusion ends (from the
    regimen's ``time``, ``every``, ``count``, ``duration`` or ``amount``/``rate``)."""
    out = []
    for d in regimen:
        get = d.get if isinstance(d, Mapping) else lambda name, default=None, d=d: getattr(d, name, default)  # fmt: skip
        t = get("time", 0.0)
        if t is None:
            continue
        every, count = float(get("every", 0.0) or 0.0), int(get("count", 1) or 1)
        dur = get("duration", None)
        if dur is None and get("rate", None):
            dur = float(get("amount", 0.0)) / float(get("rate"))
        for j in range(count if every > 0 else 1):
            out.append(float(t) + j * every)
            if dur:
                out.append(float(t) + j * every + float(dur))
    return np.asarray(out, dtype=float)


def _stencil(
    t: np.ndarray, h: float, doses: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (k, 3), difference weights (k, 3) and the index of the zero offset (k,) of a
    second-order derivative in time at each of ``t``: central, or one-sided where time 0 or
    a dose lies within a step."""
    central = (np.array([-h, 0.0, h]), np.array([-1.0, 0.0, 1.0]) / (2 * h), 1)
    forward = (np.array([0.0, h, 2 * h]), np.array([-3.0, 4.0, -1.0]) / (2 * h), 0)
    backward = (np.array([-2 * h, -h, 0.0]), np.array([1.0, -4.0, 3.0]) / (2 * h), 2)
    offs, wts, zero = [], [], []
    for x in t:
        if x - h < 0 or np.any((doses > x - h) & (doses <= x)):
            o, w, z = forward
        elif np.any((doses > x) & (doses <= x + h)) and x - 2 * h >= 0:
            o, w, z = backward
        else:
            o, w, z = central
        offs.append(o)
        wts.append(w)
        zero.append(z)
    return np.asarray(offs), np.asarray(wts), np.asarray(zero)


_FIELDS = ("E", "J", "Z", "dZ")


class _Problem:
    """The moments of each group at given times and ln det FIM from them."""

    def __init__(self, model: Model, design: Design, kind: str, kernel: str, ode: ODEOptions | None) -> None:  # fmt: skip
        self.model, self.design, self.kind, self.kernel, self.ode = model, design, kind, kernel, ode
        self.est = np.flatnonzero(np.asarray(design.estimated()))
        design_ = design

        def info(E: Any, J: Any, Z: Any, dZ: Any) -> Any:
            return moment_information(E, J, Z, dZ, design_, kind)

        self._info = info
        self._batch = jax.jit(self._batched)
        self._grad = jax.jit(jax.value_and_grad(self._linear))

    def moments(self, i: int, times: np.ndarray) -> dict[str, np.ndarray]:
        """The moments of group ``i`` at ``times`` (any order, repeats allowed): rows in the
        order of ``times``."""
        g = self.design.groups[i]
        uniq, inv = np.unique(np.asarray(times, dtype=float), return_inverse=True)
        sim = prepare(
            self.model, list(g.regimen), uniq, covariates=g.covariates, method=self.kernel,
            ode=self.ode, outputs=[self.design.output],
        )  # fmt: skip
        m = group_moments(sim, self.design, second=self.kind == "full", ode=self.ode, label=g.label(i))  # fmt: skip
        dZ = m.dZ if m.dZ is not None else np.zeros((len(uniq), m.Z.shape[1], m.J.shape[1]))
        return {"E": m.E[inv], "J": m.J[inv], "Z": m.Z[inv], "dZ": dZ[inv]}

    def _total(self, parts: list[Any]) -> Any:
        F = sum(float(g.n) * p for g, p in zip(self.design.groups, parts, strict=True))
        Fe = F[jnp.ix_(self.est, self.est)]
        sign, val = jnp.linalg.slogdet(Fe)
        return jnp.where(sign > 0, val, -jnp.inf)

    def _batched(self, fixed: Any, n: float, E: Any, J: Any, Z: Any, dZ: Any) -> Any:
        """ln det of ``fixed`` + n·(one group's information) for a batch of moment sets."""

        def one(E: Any, J: Any, Z: Any, dZ: Any) -> Any:
            Fe = (fixed + n * self._info(E, J, Z, dZ))[jnp.ix_(self.est, self.est)]
            sign, val = jnp.linalg.slogdet(Fe)
            return jnp.where((sign > 0) & jnp.isfinite(val), val, -jnp.inf)

        return jax.vmap(one)(E, J, Z, dZ)

    def _linear(self, taus: list[Any], t0: list[Any], m0: list[dict], m1: list[dict]) -> Any:
        """ln det FIM with each group's moments linear in its times about ``t0``: at
        ``taus = t0`` its value is ln det FIM and its gradient that of ln det in the times."""
        parts = []
        for tau, t, a, b in zip(taus, t0, m0, m1, strict=True):
            d = tau - t
            m = {f: a[f] + d.reshape(-1, *([1] * (a[f].ndim - 1))) * b[f] for f in _FIELDS}
            parts.append(self._info(m["E"], m["J"], m["Z"], m["dZ"]))
        return self._total(parts)

    def value_and_grad(self, times: list[np.ndarray], h: float) -> tuple[float, list[np.ndarray]]:
        """ln det FIM at ``times`` (one array per group) and its gradient in them."""
        m0, m1 = [], []
        for i, t in enumerate(times):
            offs, wts, zero = _stencil(t, h, _dose_times(self.design.groups[i].regimen))
            m = self.moments(i, (t[:, None] + offs).ravel())
            k = len(t)
            m = {f: v.reshape(k, 3, *v.shape[1:]) for f, v in m.items()}
            rows = np.arange(k)
            m0.append({f: jnp.asarray(v[rows, zero]) for f, v in m.items()})
            m1.append({f: jnp.asarray(np.einsum("ks,ks...->k...", wts, v)) for f, v in m.items()})
        t0 = [jnp.asarray(t) for t in times]
        val, grad = self._grad(t0, t0, m0, m1)
        return float(val), [np.asarray(g) for g in grad]

    def exchange_values(self, fixed: np.ndarray, i: int, m: dict, sets: np.ndarray) -> np.ndarray:
        """ln det FIM for each row of ``sets`` (indices into the rows of ``m``, group ``i``'s
        moments at its candidates), the other groups contributing ``fixed``."""
        arrays = [jnp.asarray(m[f][sets]) for f in _FIELDS]
        return np.asarray(self._batch(jnp.asarray(fixed), float(self.design.groups[i].n), *arrays))

    def information(self, i: int, m: dict, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._info(*(jnp.asarray(m[f][rows]) for f in _FIELDS)))


class _Average:
    """The criterion averaged over parameter samples: one :class:`_Problem` per sample (the
    design with that sample's values), each group's moments and information stacked over
    samples. With one sample it is the D criterion of that design."""

    def __init__(self, problems: list[_Problem]) -> None:
        self.problems = problems

    def value_and_grad(self, times: list[np.ndarray], h: float) -> tuple[float, list[np.ndarray]]:  # fmt: skip
        vals, grads = zip(*(p.value_and_grad(times, h) for p in self.problems), strict=True)
        n = len(self.problems)
        return float(np.mean(vals)), [sum(g[i] for g in grads) / n for i in range(len(times))]

    def moments(self, i: int, times: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [p.moments(i, times) for p in self.problems]

    def information(self, i: int, m: list[dict], rows: np.ndarray) -> np.ndarray:
        return np.stack([p.information(i, mm, rows) for p, mm in zip(self.problems, m, strict=True)])  # fmt: skip

    def exchange_values(self, fixed: np.ndarray, i: int, m: list[dict], sets: np.ndarray) -> np.ndarray:  # fmt: skip
        vals = [p.exchange_values(f, i, mm, sets) for p, f, mm in zip(self.problems, fixed, m, strict=True)]  # fmt: skip
        return np.mean(vals, axis=0)


def _sample_designs(design: Design, samples: Any) -> list[Design]:
    """The design once per parameter sample: ``samples`` maps FIM parameter names (fixed
    effects, ``omega2_<P>``, residual names) to arrays of equal length; names not given keep
    the design's values. Checked before anything compiles."""
    if not isinstance(samples, Mapping) or not samples:
        raise DataError("optimise_times(criterion='ED'): give samples= a mapping parameter name -> values (draws from a prior or posterior)")  # fmt: skip
    names = design.all_names
    cols, n = {}, None
    for k, v in samples.items():
        if k not in names:
            raise DataError(f"optimise_times(samples=): {k!r} is not a parameter of the design; parameters: {', '.join(names)}")  # fmt: skip
        try:
            a = np.asarray(v, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"optimise_times(samples=): {k!r} is not numeric") from None
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise DataError(f"optimise_times(samples=): {k!r} needs finite values (at least one)")  # fmt: skip
        if k.startswith(("omega2_", "sigma")) and np.any(a < 0):
            raise DataError(f"optimise_times(samples=): {k!r} is a variance or SD; values must be >= 0")  # fmt: skip
        if n is not None and a.size != n:
            raise DataError(f"optimise_times(samples=): {k!r} has {a.size} values, the others {n}; give the same number of draws for every parameter")  # fmt: skip
        n, cols[k] = a.size, a
    out = []
    res = design.residual
    for j in range(n):
        fe = {k: cols[k][j] if k in cols else v for k, v in design.fixed_effects.items()}
        om = {k: cols[f"omega2_{k}"][j] if f"omega2_{k}" in cols else v for k, v in design.omega2.items()}  # fmt: skip
        vals = dict(zip(res.names, res.values, strict=True))
        vals.update({k: cols[k][j] for k in res.names if k in cols})
        it = iter(vals[k] for k in res.names)
        add = next(it) if res.additive is not None else None
        prop = next(it) if res.proportional is not None else None
        out.append(replace(design, fixed_effects=fe, omega2=om, residual=replace(res, additive=add, proportional=prop)))  # fmt: skip
    return out


def expected_ln_det(
    model: Model,
    design: Design,
    samples: Mapping[str, Any],
    *,
    kind: str = "reduced",
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> float:
    """The ED criterion of ``design``: the mean of ln det FIM over parameter ``samples``
    (a mapping of FIM parameter names — fixed effects, ``omega2_<P>``, residual names — to
    equal-length arrays of draws from a prior or a posterior, on the design's scales and
    conventions; names not given keep the design's values). Raises :class:`DataError`, naming
    the parameters, if the FIM is singular at any sample."""
    check_design(model, design)
    if kind not in KINDS:
        raise DataError(f"expected_ln_det(kind=): {kind!r}; valid: {', '.join(KINDS)}")
    designs = _sample_designs(design, samples)
    return float(np.mean([ln_det(fisher_information(model, d, kind=kind, method=method, ode=ode)) for d in designs]))  # fmt: skip


def _with_times(design: Design, times: Sequence[np.ndarray]) -> Design:
    groups = [replace(g, times=tuple(float(x) for x in np.sort(t))) for g, t in zip(design.groups, times, strict=True)]  # fmt: skip
    return replace(design, groups=groups)


def _gradient(
    problem: _Average,
    spaces: list[_Space],
    design: Design,
    starts: int,
    seed: int,
    replicates: bool,
) -> tuple[list[np.ndarray], int, int]:
    """Multi-start L-BFGS-B in the box [0, 1]^k of each group (see :class:`_Space`): the
    constraints hold for every point of the box, and a bound is hit exactly where the
    optimum is at a window end. Returns (best times, runs, converged runs)."""
    h = STEP * max(float(s.hi.max()) for s in spaces)
    a, width, sizes = [], [], []
    for s in spaces:
        k = s.k
        if s.shared:
            span = s.hi[0] - s.lo[0]
            gap = s.spacing if (s.spacing > 0 or replicates or k == 1) else min(4 * h, span / (2 * k))  # fmt: skip
            a.append(s.lo + gap * np.arange(k))
            width.append(np.full(k, span - (k - 1) * gap))
        else:
            a.append(s.lo)
            width.append(s.hi - s.lo)
        sizes.append(k)
    cuts = np.cumsum(sizes)[:-1]

    def to_times(x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        times, perms = [], []
        for s, c, aa, w in zip(spaces, np.split(x, cuts), a, width, strict=True):
            perm = np.argsort(c, kind="stable") if s.shared else np.arange(len(c))
            times.append(aa + w * c[perm])
            perms.append(perm)
        return times, perms

    def from_times(times: Sequence[Any]) -> np.ndarray:
        out = []
        for t, aa, w in zip(times, a, width, strict=True):
            t = np.sort(np.asarray(t, dtype=float))
            out.append(np.clip(np.where(w > 0, (t - aa) / np.where(w > 0, w, 1.0), 0.5), 0.0, 1.0))  # fmt: skip
        return np.concatenate(out)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        times, perms = to_times(x)
        val, grads = problem.value_and_grad(times, h)
        gx = []
        for perm, g, w in zip(perms, grads, width, strict=True):
            out = np.empty_like(g)
            out[perm] = w * g
            gx.append(out)
        gx = np.concatenate(gx)
        if not np.isfinite(val) or not np.all(np.isfinite(gx)):
            return 1e30, np.zeros_like(x)
        return -val, -gx

    dim = int(sum(sizes))
    x0 = [from_times([g.times for g in design.groups])]
    if starts > 1:
        x0 += list(qmc.LatinHypercube(d=dim, rng=np.random.default_rng(seed)).random(starts - 1))
    best, best_val, converged = None, -np.inf, 0
    for x in x0:
        res = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * dim, options={"maxiter": 300, "ftol": 1e-13, "gtol": 1e-9})  # fmt: skip
        converged += int(res.success)
        if res.fun < 1e30 and -res.fun > best_val:
            best, best_val = res.x, -res.fun
    if best is None:
        best = x0[0]
    return to_times(best)[0], len(x0), converged


def _exchange(
    problem: _Average, spaces: list[_Space], design: Design, replicates: bool
) -> tuple[list[np.ndarray], int]:
    """Fedorov-type exchange on each group's candidates: from the start's times (each moved to
    the nearest candidate that keeps the constraints, else the earliest ones that do), swap
    the one sample for the one candidate that most increases ln det FIM, over all groups,
    until no swap increases it by more than 1e-10. Returns (times, converged)."""
    moms = [problem.moments(i, s.candidates) for i, s in enumerate(spaces)]
    chosen = [_snap(np.asarray(g.times, dtype=float), s, replicates) for g, s in zip(design.groups, spaces, strict=True)]  # fmt: skip
    infos = [problem.information(i, m, c) for i, (m, c) in enumerate(zip(moms, chosen, strict=True))]  # fmt: skip
    current = -np.inf
    for _ in range(100 * sum(s.k for s in spaces) + 100):
        best = (current, None, None)
        for i, (s, m) in enumerate(zip(spaces, moms, strict=True)):
            fixed = sum(float(g.n) * f for j, (g, f) in enumerate(zip(design.groups, infos, strict=True)) if j != i)  # fmt: skip
            G = len(s.candidates)
            sets = np.repeat(chosen[i][None, :], s.k * G, axis=0).reshape(s.k, G, s.k)
            sets[np.arange(s.k)[:, None], np.arange(G)[None, :], np.arange(s.k)[:, None]] = np.arange(G)[None, :]  # fmt: skip
            sets = sets.reshape(-1, s.k)
            ok = s.allowed.reshape(-1) & _feasible(s, sets, replicates)
            vals = np.where(ok, problem.exchange_values(np.asarray(fixed) + np.zeros(infos[0].shape), i, m, sets), -np.inf)  # fmt: skip
            j = int(np.argmax(vals))
            if vals[j] > best[0]:
                best = (float(vals[j]), i, sets[j])
        val, i, new = best
        if i is None or not (val > current + 1e-10 * max(1.0, abs(current)) or not np.isfinite(current)):  # fmt: skip
            times = [s.candidates[c] for s, c in zip(spaces, chosen, strict=True)]
            return times, 1
        chosen[i] = new
        infos[i] = problem.information(i, moms[i], new)
        current = val
    return [s.candidates[c] for s, c in zip(spaces, chosen, strict=True)], 0


def _feasible(s: _Space, sets: np.ndarray, replicates: bool) -> np.ndarray:
    """Whether each row of candidate indices keeps the spacing (and, without replicates,
    distinct times); per-sample windows keep their order, so sorting keeps each sample's
    window."""
    t = np.sort(s.candidates[sets], axis=1)
    gaps = np.diff(t, axis=1)
    ok = np.all(gaps >= s.spacing * (1 - 1e-12), axis=1)
    if not replicates:
        ok &= np.all(gaps > 0, axis=1)
    if not s.shared:
        ok &= np.all(np.sort(sets, axis=1) == sets, axis=1) | (s.k == 1)
    return ok


def _snap(times: np.ndarray, s: _Space, replicates: bool) -> np.ndarray:
    """Candidate indices near ``times`` that keep the constraints (sorted samples)."""
    cand, out, last = s.candidates, [], -np.inf
    for j, t in enumerate(np.sort(times)):
        ok = s.allowed[j] & (cand - last >= s.spacing * (1 - 1e-12)) & ((cand > last) | replicates)  # fmt: skip
        if not ok.any():
            return _earliest(s, replicates)
        idx = np.flatnonzero(ok)
        pick = int(idx[np.argmin(np.abs(cand[idx] - t))])
        out.append(pick)
        last = cand[pick]
    return np.asarray(out)


def _earliest(s: _Space, replicates: bool) -> np.ndarray:
    cand, out, last = s.candidates, [], -np.inf
    for j in range(s.k):
        ok = s.allowed[j] & (cand - last >= s.spacing * (1 - 1e-12)) & ((cand > last) | replicates)  # fmt: skip
        pick = int(np.flatnonzero(ok)[0])
        out.append(pick)
        last = cand[pick]
    return np.asarray(out)


def optimise_times(
    model: Model,
    design: Design,
    *,
    windows: Any = None,
    grid: Any = None,
    min_spacing: float = 0.0,
    replicates: bool = False,
    criterion: str = "D",
    samples: Mapping[str, Any] | None = None,
    kind: str = "reduced",
    starts: int = 8,
    seed: int = 0,
    method: str = "auto",
    kernel: str = "auto",
    ode: ODEOptions | None = None,
) -> OptimisedTimes:
    """Choose each group's sampling times to maximise ln det FIM (D-optimality), keeping the
    number of times k of each group of ``design``, its doses, sizes and parameters.

    ``windows``: where the times may lie (model time unit): one (lo, hi) for every group, or
    one entry per group, each a (lo, hi) pair shared by the group's k samples or a list of k
    pairs, one per sample (in time order, apart by at least ``min_spacing``). None: the
    range of the group's grid, else of its starting times. ``grid``: candidate times, one
    list for every group or one per group (model time unit). ``min_spacing``: smallest gap
    between consecutive samples of a group (time unit, ≥ 0). ``replicates``: allow equal
    times (needs ``min_spacing=0``); without them the gradient method keeps samples 4e-6 of
    the latest window end apart. ``criterion``: 'D' (ln det FIM at the design's values) or
    'ED' (the mean of ln det FIM over ``samples``, a mapping of FIM parameter names to
    equal-length arrays of draws, e.g. from a posterior; see :func:`expected_ln_det`: each
    sample costs one FIM per evaluation, so 10-50 draws are the usual budget). ``kind``: the FIM,
    'reduced' or 'full' (:func:`fisher_information`). ``method``: 'gradient' (continuous
    windows, multi-start L-BFGS-B, ``starts`` runs: the start design and Latin-hypercube
    points seeded by ``seed``), 'exchange' (on the grid), or 'auto' (exchange with a grid,
    else gradient). ``kernel``, ``ode``: the simulator, as ``method``/``ode`` of
    :func:`ldpk.simulate`.

    The result is never worse than a start that meets the constraints (the exchange starts
    from the start's times moved to the grid). Raises :class:`DataError` for bad inputs
    before anything compiles, and, naming the parameters, when the start's FIM or the
    optimum's is singular (:func:`ldpk.design.check_invertible`)."""
    check_design(model, design)
    if kind not in KINDS:
        raise DataError(f"optimise_times(kind=): {kind!r}; valid: {', '.join(KINDS)}")
    if criterion not in CRITERIA:
        raise DataError(f"optimise_times(criterion=): {criterion!r}; valid: {', '.join(CRITERIA)}")  # fmt: skip
    if method not in METHODS:
        raise DataError(f"optimise_times(method=): {method!r}; valid: {', '.join(METHODS)}")
    if isinstance(starts, bool) or not isinstance(starts, (int, np.integer)) or starts < 1:
        raise DataError(f"optimise_times(starts=): a positive number of runs, got {starts!r}")
    if isinstance(min_spacing, bool) or not isinstance(min_spacing, (int, float, np.integer, np.floating)) or not np.isfinite(min_spacing) or min_spacing < 0:  # fmt: skip
        raise DataError(f"optimise_times(min_spacing=): a finite time >= 0, got {min_spacing!r}")  # fmt: skip
    if replicates and min_spacing > 0:
        raise DataError("optimise_times: replicates=True (equal times) contradicts min_spacing > 0")  # fmt: skip
    if criterion == "ED":
        designs = _sample_designs(design, samples)
    elif samples is not None:
        raise DataError("optimise_times(samples=): samples are for criterion='ED'; the D criterion uses the design's values")  # fmt: skip
    else:
        designs = [design]
    if method == "auto":
        method = "exchange" if grid is not None else "gradient"
    if method == "exchange" and grid is None:
        raise DataError("optimise_times(method='exchange'): give the candidate times, grid=")
    spaces = _spaces(design, windows, grid if method == "exchange" else None, float(min_spacing), bool(replicates))  # fmt: skip
    if not np.asarray(design.estimated()).any():
        raise DataError("Design.fixed: every parameter is held fixed; nothing to estimate")

    fim0 = fisher_information(model, design, kind=kind, method=kernel, ode=ode)
    ld0 = ln_det(fim0)  # a singular start raises, naming the parameters
    problem = _Average([_Problem(model, d, kind, kernel, ode) for d in designs])
    if criterion == "ED":
        ld0 = expected_ln_det(model, design, samples, kind=kind, method=kernel, ode=ode)
    if method == "gradient":
        times, runs, converged = _gradient(problem, spaces, design, int(starts), int(seed), bool(replicates))  # fmt: skip
    else:
        times, converged = _exchange(problem, spaces, design, bool(replicates))
        runs = 1
    new = _with_times(design, times)
    fim = fisher_information(model, new, kind=kind, method=kernel, ode=ode)
    ld = ln_det(fim) if criterion == "D" else expected_ln_det(model, new, samples, kind=kind, method=kernel, ode=ode)  # fmt: skip
    if ld < ld0 and _meets(design, spaces, replicates) and method == "gradient":
        new, fim, ld = design, fim0, ld0  # round-off: keep the start
    p = len(fim.names)
    return OptimisedTimes(new, design, fim, fim0, ld, ld0, float(np.exp((ld - ld0) / p)), method, runs, converged, criterion, len(designs))  # fmt: skip


def _meets(design: Design, spaces: list[_Space], replicates: bool) -> bool:
    """Whether the design's times meet the constraints of ``spaces``."""
    for g, s in zip(design.groups, spaces, strict=True):
        t = np.sort(np.asarray(g.times, dtype=float))
        if np.any(t < s.lo - 1e-12) or np.any(t > s.hi + 1e-12):
            return False
        gaps = np.diff(t)
        if np.any(gaps < s.spacing) or (not replicates and np.any(gaps <= 0)):
            return False
    return True
