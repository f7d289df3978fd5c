"""The population Fisher information matrix of a design, first-order (FO) approximation.

Individual parameters θ_i = g(β, η_i), η_i ~ N(0, Ω) with Ω diagonal. The model output f is
linearised in η at η = 0 (no η-ε interaction): E = f(g(β, 0)), Z = ∂f/∂η at η = 0,
V = Z Ω Zᵀ + diag(residual variance at E). Each group contributes n times the Gaussian
information of y ~ N(E, V):

    F_ab = ∂E/∂ψ_aᵀ V⁻¹ ∂E/∂ψ_b + ½ tr(V⁻¹ ∂V/∂ψ_a V⁻¹ ∂V/∂ψ_b)

over ψ = (β, ω², residual parameters). The 'full' FIM keeps every term; the 'reduced' one
(PopED's default ``fim.calc.type = 1``, PFIM's population FIM) drops ∂V/∂β, so its fixed
block is N·JᵀV⁻¹J and its β-λ cross block is zero. Derivatives are JAX autodiff through the
model's prepared simulator, not finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.design._spec import Design, check_design
from ldpk.errors import DataError, SolverError
from ldpk.model import Model
from ldpk.solve import ODEOptions, Simulator, prepare

#: FIM kinds (``fisher_information(kind=...)``).
KINDS = ("reduced", "full")


@dataclass(frozen=True)
class FisherInformation:
    """A population FIM: ``matrix`` (p, p), NumPy float64, for the parameters ``names`` (fixed
    effects, then ``omega2_<name>``, then residual parameters) at ``values`` (β on the
    design's scale, ω² variances, residual parameters in the design's convention).
    ``kind``: 'reduced' or 'full'. Its units are those of 1/(ψ_a·ψ_b).
    ``np.asarray(fim)`` is the matrix."""

    matrix: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray
    kind: str

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.matrix if dtype is None else self.matrix.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.matrix.shape

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in :attr:`names`."""
        if name not in self.names:
            raise DataError(f"no parameter {name!r} in the FIM; parameters: {', '.join(self.names)}")  # fmt: skip
        return self.names.index(name)


@dataclass(frozen=True)
class GroupMoments:
    """The FO moments of one group at η = 0 (model units): ``E`` (T,) the typical prediction,
    ``J`` (T, n_β) = ∂E/∂β, ``Z`` (T, n_η) = ∂f/∂η, ``dZ`` (T, n_η, n_β) = ∂Z/∂β (None unless
    asked for), ``times`` (T,)."""

    E: np.ndarray
    J: np.ndarray
    Z: np.ndarray
    dZ: np.ndarray | None
    times: np.ndarray


def _theta(design: Design, beta: Any, eta: Any) -> dict[str, Any]:
    """Individual parameter values θ = g(β, η) by name."""
    out = {}
    etas = design.eta_names
    for i, name in enumerate(design.fixed_effects):
        b = beta[i]
        e = eta[etas.index(name)] if name in etas else 0.0
        scale = design.scale_of(name)
        if scale == "natural":
            out[name] = b * jnp.exp(e)
        elif scale == "log":
            out[name] = jnp.exp(b + e)
        else:
            out[name] = b + e
    return out


def _derivative_ops(sim: Simulator, ode: ODEOptions | None) -> tuple[Callable, Callable]:
    """(first, second): the Jacobian transform that works through the kernel, and the one
    to take a Jacobian of that. The exact kernel's matrix exponential has a custom VJP
    (reverse, then forward over it, as jax.hessian); the ODE kernel per its gradient option."""
    grad = (ode or ODEOptions()).gradient if sim.kernel == "ode" else "reverse-vjp"
    if grad == "forward":
        return jax.jacfwd, jax.jacfwd
    if grad == "reverse":
        return jax.jacrev, jax.jacrev
    return jax.jacrev, jax.jacfwd


def prepare_groups(
    model: Model,
    design: Design,
    *,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> list[Simulator]:
    """Check ``design`` against ``model`` and prepare one simulator per group (input errors
    are raised here, before anything compiles)."""
    check_design(model, design)
    sims = []
    for i, g in enumerate(design.groups):
        try:
            sims.append(
                prepare(
                    model,
                    list(g.regimen),
                    np.asarray(g.times, dtype=float),
                    covariates=g.covariates,
                    method=method,
                    ode=ode,
                    outputs=[design.output],
                )  # fmt: skip
            )
        except DataError as e:
            raise DataError(f"Design.{g.label(i)}: {e}") from e
    return sims


def group_moments(
    sim: Simulator,
    design: Design,
    *,
    second: bool = False,
    ode: ODEOptions | None = None,
    label: str = "group",
) -> GroupMoments:
    """The FO moments of one prepared group (see :class:`GroupMoments`); ``second``: also
    ∂Z/∂β (for the full FIM)."""
    n_beta, n_eta = len(design.fixed_effects), len(design.eta_names)
    beta0 = jnp.asarray([float(v) for v in design.fixed_effects.values()])
    p0 = jnp.concatenate([beta0, jnp.zeros(n_eta)])
    out = design.output

    def f(p: Any) -> tuple[Any, Any]:
        theta = _theta(design, p[:n_beta], p[n_beta:])
        y = sim.run(theta, check=False).output(out)
        return y, y

    d1, d2 = _derivative_ops(sim, ode)
    if second:

        def first(p: Any) -> tuple[Any, Any]:
            jac, y = d1(f, has_aux=True)(p)
            return jac, (jac, y)

        hess, (jac, y) = d2(first, has_aux=True)(p0)
        dZ = np.asarray(hess)[:, n_beta:, :n_beta]
    else:
        jac, y = d1(f, has_aux=True)(p0)
        dZ = None
    E, jac = np.asarray(y), np.asarray(jac)
    if not (np.all(np.isfinite(E)) and np.all(np.isfinite(jac)) and (dZ is None or np.all(np.isfinite(dZ)))):  # fmt: skip
        bad = sorted({design.all_names[j] for j in range(n_beta) if not np.all(np.isfinite(jac[:, j]))} | {f"eta_{design.eta_names[j]}" for j in range(n_eta) if not np.all(np.isfinite(jac[:, n_beta + j]))})  # fmt: skip
        times = [float(t) for t, ok in zip(sim.times, np.isfinite(E) & np.all(np.isfinite(jac), axis=1), strict=True) if not ok]  # fmt: skip
        raise SolverError(
            f"Design.{label}: the prediction of {out!r} or its derivatives are not finite at "
            f"times {times or 'of the derivatives'} (parameters involved: {', '.join(bad) or 'all'}); "
            "check the parameter values (e.g. KA equal to CL/V in a closed form) and the times"
        )
    return GroupMoments(E, jac[:, :n_beta], jac[:, n_beta:], dZ, np.asarray(sim.times))


def moment_information(E: Any, J: Any, Z: Any, dZ: Any, design: Design, kind: str) -> Any:
    """The information of one subject over all of ``design.all_names`` from its FO moments
    at η = 0 (see :class:`GroupMoments`; ``dZ`` only for ``kind='full'``), as a JAX
    expression: differentiable in the moments (the time derivatives of a design go through
    it, :mod:`ldpk.design._optimise`). A V that is not positive definite gives NaN here;
    :func:`group_information` checks it first."""
    res = design.residual
    sigma = jnp.asarray(res.values)
    E = jnp.asarray(E)
    T = E.shape[0]
    r = res.variance(E, sigma)
    dr_dE = jax.vmap(jax.grad(lambda e: jnp.asarray(res.variance(e, sigma), dtype=float)))(E)
    dr_ds = jnp.asarray(jax.jacfwd(lambda s: res.variance(E, s))(sigma)).reshape(T, -1)
    omega = jnp.asarray([float(v) for v in design.omega2.values()])
    n_beta, n_eta, n_sig = J.shape[1], Z.shape[1], len(res.values)
    V = (Z * omega) @ Z.T + jnp.diag(r)
    dE = jnp.concatenate([J, jnp.zeros((T, n_eta + n_sig))], axis=1)
    dV = []
    for k in range(n_beta):
        if kind == "full":
            A = (dZ[:, :, k] * omega) @ Z.T
            dV.append(A + A.T + jnp.diag(dr_dE * J[:, k]))
        else:
            dV.append(jnp.zeros((T, T)))
    dV += [jnp.outer(Z[:, j], Z[:, j]) for j in range(n_eta)]
    dV += [jnp.diag(dr_ds[:, s]) for s in range(n_sig)]
    chol = jax.scipy.linalg.cho_factor(V, lower=True)
    VinvdE = jax.scipy.linalg.cho_solve(chol, dE)
    A = jax.vmap(lambda d: jax.scipy.linalg.cho_solve(chol, d))(jnp.stack(dV))  # V⁻¹ ∂V/∂ψ_a
    fim = dE.T @ VinvdE + 0.5 * jnp.einsum("aij,bji->ab", A, A)
    return 0.5 * (fim + fim.T)


def observation_variance(E: Any, Z: Any, design: Design) -> np.ndarray:
    """V = Z Ω Zᵀ + diag(residual variance at E), NumPy (model output units squared)."""
    res = design.residual
    r = np.asarray(res.variance(jnp.asarray(E), jnp.asarray(res.values)))
    omega = np.asarray([float(v) for v in design.omega2.values()])
    return (np.asarray(Z) * omega) @ np.asarray(Z).T + np.diag(r * np.ones(len(E)))


def check_variance(V: np.ndarray) -> None:
    """Raise :class:`DataError` unless V is positive definite."""
    try:
        np.linalg.cholesky(V)
    except np.linalg.LinAlgError:
        raise DataError(
            "the variance of the observations V = Z Ω Zᵀ + residual is not positive definite "
            "(is the residual error zero at some sampling time, e.g. a proportional error "
            "where the prediction is 0 before the dose?)"
        ) from None


def _group_information(m: GroupMoments, design: Design, kind: str) -> np.ndarray:
    """The information of one subject of a group over all of ``design.all_names``."""
    check_variance(observation_variance(m.E, m.Z, design))
    return np.asarray(moment_information(m.E, m.J, m.Z, m.dZ, design, kind))


def fisher_information(
    model: Model,
    design: Design,
    *,
    kind: str = "reduced",
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> FisherInformation:
    """The population Fisher information matrix of ``design`` for ``model`` under the FO
    approximation (module docstring): the sum over groups of n times one subject's
    information, over the estimated parameters in the order fixed effects, ω², residual
    parameters (see :class:`Design`).

    ``kind``: 'reduced' (block-diagonal; PopED's default, PFIM's) or 'full'. ``method`` and
    ``ode``: the kernel, as for :func:`ldpk.simulate`. Predictions come from the same
    prepared simulator as :func:`ldpk.simulate`; derivatives from JAX autodiff.

    Raises :class:`DataError` for design entries the model lacks (before anything compiles)
    and :class:`SolverError` where a prediction or derivative is not finite. The FIM itself
    may be singular (a design that cannot estimate everything): the criteria
    (:func:`ldpk.design.ln_det`, :func:`ldpk.design.rse_percent`, ...) raise then."""
    if kind not in KINDS:
        raise DataError(f"fisher_information(kind=): {kind!r}; valid: {', '.join(KINDS)}")
    sims = prepare_groups(model, design, method=method, ode=ode)
    est = np.asarray(design.estimated())
    if not est.any():
        raise DataError("Design.fixed: every parameter is held fixed; nothing to estimate")
    total = np.zeros((len(est), len(est)))
    for i, (g, sim) in enumerate(zip(design.groups, sims, strict=True)):
        m = group_moments(sim, design, second=kind == "full", ode=ode, label=g.label(i))
        total += float(g.n) * _group_information(m, design, kind)
    names = tuple(n for n, e in zip(design.all_names, est, strict=True) if e)
    values = np.asarray([v for v, e in zip(design.all_values, est, strict=True) if e])
    return FisherInformation(total[np.ix_(est, est)], names, values, kind)
