"""Laplace approximations: the normal approximation at the MAP (no subject effects), and the
marginal (integrated) Laplace approximation of NONMEM's LAPLACIAN and TMB, subject effects
integrated out about their conditional mode."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from ldpk._compiled import jit
from ldpk.errors import DataError
from ldpk.inference._mode import (
    _coordinate_names,
    _directions,
    _Mode,
    _prior_hessian,
    _Progress,
    _to_latent,
)
from ldpk.inference._predict import _with_deterministic
from ldpk.inference._settings import FitOptions
from ldpk.population import PopulationModel


def _laplace(pm: PopulationModel, key: Any, opts: FitOptions, mode: _Mode) -> tuple:
    """Draws of the normal approximation at the MAP (unconstrained space), transformed. Where
    the Hessian there is not positive definite, the prior's curvature stands in along the
    flat directions, with a warning naming them (see :func:`_with_prior_curvature`)."""
    import warnings

    cov = mode.cov
    if cov is None:
        if mode.hessian is None:
            raise DataError("no Hessian at the MAP, so there is no Laplace approximation; try method='nuts'")  # fmt: skip
        prior = _prior_hessian(pm, mode.flat, mode.unravel)
        hess, flat = _with_prior_curvature(np.asarray(mode.hessian), prior)
        names = _coordinate_names(mode.unravel, mode.flat.size)
        warnings.warn(_flat_text("the posterior", "the MAP", flat, names), stacklevel=3)
        cov = np.linalg.inv(hess)
    x = jax.random.multivariate_normal(key, mode.flat, jnp.asarray(cov), (opts.draws,))
    latent = jit(jax.vmap(lambda v: _to_latent(pm)(mode.unravel(v))))(x)
    return _with_deterministic(pm, latent, key), {}


# ---- marginal (integrated) Laplace ---------------------------------------------------------
#: Inner Newton iterations at most, and the tolerance on the largest |dU/d eta| that ends them.
_INNER_ITERS = 50
_INNER_GTOL = 1e-8
#: Largest |dU/d eta| at which the inner problem counts as converged (and ``trouble`` names
#: no subject).
_INNER_CONVERGED = 1e-5
#: Largest Newton step in any standardised subject effect (they are N(0, 1) a priori).
_MAX_ETA_STEP = 5.0
#: Relative step of the central differences of the marginal gradient (unconstrained space).
_HESSIAN_STEP = 1e-4


class _Marginal:
    """The marginal (integrated) Laplace approximation of a population model, as NONMEM's
    LAPLACIAN and TMB: the standardised subject effects eta (sites ``eta_<P>``, shape
    (n_subjects, n_iiv)) are integrated out by a Laplace approximation about their conditional
    mode, leaving

        U_m(theta) = U(theta, eta_hat) + 1/2 sum_i log det H_i - (n_eta / 2) log 2 pi,

    with U numpyro's potential energy, theta every other latent site (unconstrained space;
    study effects included), eta_hat(theta) = argmin_eta U(theta, eta) and H_i the Hessian of U
    in subject i's effects. A subject's predictions depend only on its own effects, so the
    Hessian in eta is block diagonal: its blocks come from n_iiv Hessian-vector products with
    "colouring" vectors (1 at component k of every subject, 0 elsewhere). The functions below
    take the data (dv, censored) as arguments, so their compiled forms do not embed them."""

    def __init__(self, pm: PopulationModel, mode: _Mode) -> None:
        self.pm = pm
        z = mode.unravel(mode.flat)
        self.eta_sites = tuple(f"eta_{p}" for p in pm.spec.iiv)
        theta = {k: v for k, v in z.items() if k not in self.eta_sites}
        self.theta0, self.unravel_theta = ravel_pytree(theta)
        self.eta0 = jnp.stack([z[s] for s in self.eta_sites], axis=-1)
        self.postprocess = _to_latent(pm)
        ds, names = pm.dataset, pm.model.output_names
        self.n_subjects = ds.n_subjects
        self.obs_subject = {
            f"obs_{o}": np.asarray(ds.subject[ds.output == names.index(o)]) for o in pm.spec.errors
        }  # fmt: skip

    def params(self, th: Any, eta: Any) -> dict:
        """Unconstrained sites from theta (flat) and eta (n_subjects, n_iiv)."""
        return {**self.unravel_theta(th), **{s: eta[:, j] for j, s in enumerate(self.eta_sites)}}

    def potential(self, th: Any, eta: Any, data: tuple) -> Any:
        return potential_energy(self.pm, data, {}, self.params(th, eta))

    def prior_potential(self, th: Any) -> Any:
        """The priors' part of the potential at theta (subject effects at 0): its Hessian is
        the prior's curvature in the unconstrained space."""
        return potential_energy(self.pm.priors, (), {}, self.params(th, jnp.zeros_like(self.eta0)))  # fmt: skip

    def grad_eta(self, th: Any, eta: Any, data: tuple) -> Any:
        return jax.grad(self.potential, argnums=1)(th, eta, data)

    def blocks(self, th: Any, eta: Any, data: tuple) -> Any:
        """The diagonal blocks of d²U/d eta² (n_subjects, n_iiv, n_iiv), from n_iiv
        Hessian-vector products with colouring vectors."""
        n = eta.shape[1]
        colours = jnp.broadcast_to(jnp.eye(n)[:, None, :], (n, *eta.shape))

        def hvp(v: Any) -> Any:
            return jax.jvp(lambda e: self.grad_eta(th, e, data), (eta,), (v,))[1]

        h = jnp.transpose(jax.vmap(hvp)(colours), (1, 2, 0))  # [i, a, k] = d²U/d eta_ia d eta_ik
        return 0.5 * (h + jnp.swapaxes(h, 1, 2))

    def subject_terms(self, th: Any, eta: Any, data: tuple) -> Any:
        """U split by subject: the part of the potential that depends on each subject's effects
        (its N(0, 1) prior and its observations' log-likelihood), shape (n_subjects,). U minus
        their sum depends on theta only; the inner line search compares subjects one by one."""
        from numpyro import handlers
        from numpyro.infer.util import constrain_fn

        values = constrain_fn(self.pm, data, {}, self.params(th, eta))
        trace = handlers.trace(handlers.substitute(self.pm, data=values)).get_trace(*data)
        u = 0.5 * jnp.sum(eta**2, axis=1)
        for name, site in trace.items():
            if site["type"] == "sample" and site["is_observed"]:
                lp = site["fn"].log_prob(site["value"])
                u = u - jax.ops.segment_sum(lp, self.obs_subject[name], self.n_subjects)
        return u

    def newton(self, th: Any, eta0: Any, data: tuple) -> tuple[Any, Any]:
        """eta_hat(theta) by damped Newton from eta0: per-subject steps along the block Newton
        direction (eigenvalues of each block taken in absolute value and floored, so the step
        descends; at most ``_MAX_ETA_STEP``), halved per subject until that subject's part of U
        satisfies the Armijo condition. Stops when max |dU/d eta| <= ``_INNER_GTOL`` or no
        subject can improve. Returns (eta_hat, converged)."""
        u0 = self.subject_terms(th, eta0, data)
        s = eta0.shape[0]

        def body(carry: tuple) -> tuple:
            eta, u, k, _, _ = carry
            g = self.grad_eta(th, eta, data)
            w, v = jnp.linalg.eigh(self.blocks(th, eta, data))
            w = jnp.maximum(jnp.abs(w), 1e-6)
            d = -jnp.einsum("sij,sj->si", v, jnp.einsum("sji,sj->si", v, g) / w)
            big = jnp.max(jnp.abs(d), axis=1, keepdims=True)
            d = d * jnp.minimum(1.0, _MAX_ETA_STEP / jnp.maximum(big, 1e-300))
            slope = jnp.sum(g * d, axis=1)
            gmax = jnp.max(jnp.abs(g))
            conv = gmax <= _INNER_GTOL
            # Where the predicted decrease -slope/2 is below what U resolves in floating point
            # (the quadratic region, where Newton steps are reliable), take the full step.
            tiny = -slope <= 1e-10 * jnp.maximum(1.0, jnp.abs(u))

            def ls_cond(c: tuple) -> Any:
                return ~jnp.all(c[1]) & (c[2] < 30)

            def ls_body(c: tuple) -> tuple:
                t, acc, j = c
                trial = self.subject_terms(th, eta + t[:, None] * d, data)
                ok = trial <= u + 1e-4 * t * slope  # NaN fails
                return jnp.where(acc | ok, t, 0.5 * t), acc | ok, j + 1

            init = (jnp.ones(s), conv | tiny, 0)
            t, acc, _ = jax.lax.while_loop(ls_cond, ls_body, init)
            t = jnp.where(acc & ~conv, t, 0.0)
            stalled = jnp.all(t == 0.0)
            eta = eta + t[:, None] * d
            return eta, self.subject_terms(th, eta, data), k + 1, conv | stalled, gmax

        def cond(carry: tuple) -> Any:
            return (carry[2] < _INNER_ITERS) & ~carry[3]

        init = (eta0, u0, 0, False, jnp.inf)
        eta, _, _, _, gmax = jax.lax.while_loop(cond, body, init)
        return eta, gmax <= _INNER_CONVERGED

    def value_and_grad(self, th: Any, eta_hat: Any, data: tuple) -> tuple[Any, Any]:
        """U_m(theta) and its gradient, given eta_hat = eta_hat(theta). One Newton step from
        eta_hat (held constant), eta* = eta_hat - H^-1 dU/d eta, equals eta_hat at the optimum
        and its derivative is the implicit-function derivative d eta_hat / d theta; U(theta,
        eta*) + 1/2 log det H(theta, eta*) is differentiated through it. Forward mode over
        theta for eta* and log det H (the exact kernel's matrix exponential has a custom
        reverse rule whose backward pass can be differentiated forwards only), reverse mode
        for U itself."""
        eh = jax.lax.stop_gradient(eta_hat)

        def pieces(th: Any) -> tuple[Any, Any]:
            g = self.grad_eta(th, eh, data)
            es = eh - jnp.linalg.solve(self.blocks(th, eh, data), g[..., None])[..., 0]
            sign, logdet = jnp.linalg.slogdet(self.blocks(th, es, data))
            return es, 0.5 * jnp.sum(jnp.where(sign > 0, logdet, jnp.nan))

        basis = jnp.eye(th.size, dtype=th.dtype)
        (es, half), (d_es, d_half) = jax.vmap(
            lambda v: jax.jvp(pieces, (th,), (v,)), out_axes=((None, None), (0, 0))
        )(basis)  # fmt: skip
        u, (g_th, g_eta) = jax.value_and_grad(self.potential, argnums=(0, 1))(th, es, data)
        value = u + half - 0.5 * eh.size * jnp.log(2 * jnp.pi)
        return value, g_th + jnp.einsum("psn,sn->p", d_es, g_eta) + d_half

    def conditional(self, th: Any, eta0: Any, z: Any, data: tuple) -> tuple[Any, Any, Any]:
        """eta_hat(theta) (Newton from eta0), a draw eta_hat + H^-1/2 z of the normal
        approximation of the subject effects given theta, block by block (``z``: standard
        normal, (n_subjects, n_iiv)), and whether the inner problem converged to a positive
        definite Hessian."""
        eta, ok = self.newton(th, eta0, data)
        w, v = jnp.linalg.eigh(self.blocks(th, eta, data))
        draw = eta + jnp.einsum("sij,sj->si", v, z / jnp.sqrt(jnp.maximum(w, 1e-12)))
        return eta, draw, ok & jnp.all(w > 0)

    def constrained(self, th: Any, eta: Any) -> dict:
        """Constrained latent sites at (theta, eta)."""
        return self.postprocess(self.params(th, eta))

    def trouble(self, th: Any, eta: Any, data: tuple) -> str:
        """Host side, for messages: the subjects whose effects at ``eta`` are not a smooth
        minimum of U given theta (gradient above ``_INNER_CONVERGED``, or a block of the Hessian that is not
        positive definite), with both numbers, or '' if there are none."""
        g = np.abs(np.asarray(jit(self.grad_eta)(th, eta, data))).max(axis=1)
        w = np.linalg.eigvalsh(np.asarray(jit(self.blocks)(th, eta, data))).min(axis=1)
        bad = np.flatnonzero((g > _INNER_CONVERGED) | ~(w > 0))
        ids = self.pm.dataset.subjects
        return "; ".join(f"ID {ids[i]} (largest |dU/d eta| {g[i]:.2g}, smallest curvature {w[i]:.3g})" for i in bad)  # fmt: skip


def _marginal_laplace(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode) -> tuple:  # fmt: skip
    """Marginal Laplace: theta_hat = argmin U_m by BFGS (JAX gradients) from the joint MAP's
    theta, the covariance H_m^-1 from central differences of the gradient of U_m, and draws
    theta_s ~ N(theta_hat, H_m^-1), eta_s ~ N(eta_hat(theta_s), H_etaeta(theta_s)^-1).
    Returns (draws as for _with_deterministic, values at the mode, timings, and the
    curvature at the mode: (Hessian, the priors' Hessian, coordinate names)) ."""
    bar = _Progress(opts.progress, "Laplace: marginal mode")
    try:
        return _marginal_laplace_run(pm, data, key, opts, mode, bar)
    finally:
        bar.close()


def _marginal_laplace_run(pm: PopulationModel, data: tuple, key: Any, opts: FitOptions, mode: _Mode, bar: _Progress) -> tuple:  # fmt: skip
    """:func:`_marginal_laplace`'s work, reporting to ``bar``."""
    import warnings

    m = _Marginal(pm, mode)
    conditional = jit(m.conditional)
    value_and_grad = jit(m.value_and_grad)
    zero = jnp.zeros_like(m.eta0)
    t0 = time.perf_counter()
    best = {"value": np.inf, "eta": m.eta0}

    def host(x: np.ndarray, keep: bool = True) -> tuple[float, np.ndarray]:
        x = jnp.asarray(x)
        eta = conditional(x, best["eta"], zero, data)[0]
        v, g = value_and_grad(x, eta, data)
        v = float(v)
        if not np.isfinite(v):
            bar.step()
            return np.inf, np.zeros(x.size)
        if keep and v < best["value"]:
            best.update(value=v, eta=eta)
        bar.step(best["value"] if keep else None)
        return v, np.asarray(g, dtype=float)

    # started from the joint MAP's theta, the subject effects from the joint MAP's
    res = scipy.optimize.minimize(host, np.asarray(m.theta0), jac=True, method="BFGS", options={"gtol": 1e-6, "maxiter": 5000})  # fmt: skip
    if not np.isfinite(res.fun):
        eta = conditional(jnp.asarray(m.theta0), m.eta0, zero, data)[0]
        raise DataError(f"the marginal Laplace objective is not finite at the joint MAP's population parameters: the subject effects' conditional posterior has no smooth mode for {m.trouble(m.theta0, eta, data) or 'some subject'}. The Laplace approximation needs one per subject; a likelihood with kinks (e.g. a switch time such as a CAR-T Tmax passing an observation time) or several modes breaks it; use method='nuts'")  # fmt: skip
    x = np.asarray(res.x)
    eta_hat, _, ok = conditional(jnp.asarray(x), best["eta"], zero, data)
    p = x.size
    bar.phase("Laplace: Hessian", total=2 * p)

    def fd_hessian(rel: float) -> np.ndarray:  # central differences of the marginal gradient
        hess = np.empty((p, p))
        for j in range(p):
            step = rel * max(1.0, abs(x[j]))
            e = np.zeros(p)
            e[j] = step
            hess[:, j] = (host(x + e, keep=False)[1] - host(x - e, keep=False)[1]) / (2 * step)
        return 0.5 * (hess + hess.T)

    hess = fd_hessian(_HESSIAN_STEP)
    if not _positive_definite(hess):
        # The inner Newton solves' tolerance makes the gradient slightly noisy: differences
        # over a 10x longer step average the noise out before the curvature is doubted.
        bar.phase("Laplace: Hessian (longer steps)", total=2 * p)
        hess = fd_hessian(10 * _HESSIAN_STEP)
    prior = np.asarray(jit(jax.hessian(m.prior_potential))(jnp.asarray(x)))
    names = _coordinate_names(m.unravel_theta, p)
    curvature = (hess, prior, names)
    if not _positive_definite(hess):
        curvature = None  # the warning below names the flat directions
        hess, flat = _with_prior_curvature(hess, prior)
        warnings.warn(_flat_text("the marginal posterior (subject effects integrated out)", "its mode", flat, names), stacklevel=3)  # fmt: skip
    chol = np.linalg.cholesky(hess)
    if not bool(ok):
        warnings.warn(f"marginal Laplace: the subject effects' conditional mode did not converge at the population mode for {m.trouble(jnp.asarray(x), eta_hat, data) or 'some subject'}; the approximation is doubtful there: compare with method='nuts'", stacklevel=3)  # fmt: skip
    timings = {"laplace_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    k_theta, k_eta, k_det = jax.random.split(key, 3)
    cov = np.linalg.inv(chol).T @ np.linalg.inv(chol)
    xs = jax.random.multivariate_normal(k_theta, jnp.asarray(x), jnp.asarray(cov), (opts.draws,))
    zs = jax.random.normal(k_eta, (opts.draws, *m.eta0.shape))
    # One draw per call of the compiled conditional problem: vmapped, the Newton iterations
    # and line searches (while loops) run every draw as long as the slowest and were several
    # times slower on CPU (theophylline: 26 s for 1000 draws against 4 s one by one).
    xs_host, zs_host = np.asarray(xs), np.asarray(zs)  # (indexing jax arrays dispatches)
    bar.phase("Laplace: draws", total=opts.draws)
    out = []
    for i in range(opts.draws):
        out.append(conditional(xs_host[i], eta_hat, zs_host[i], data))
        bar.step()
    etas = jnp.stack([o[1] for o in out])
    bad = int(np.sum(~np.asarray([o[2] for o in out])))
    if bad:
        warnings.warn(f"marginal Laplace: for {bad} of {opts.draws} draws of the population parameters the subject effects' conditional mode did not converge to a positive definite Hessian", stacklevel=3)  # fmt: skip
    latent = jit(jax.vmap(m.constrained))(xs, etas)
    samples = _with_deterministic(pm, latent, k_det)
    timings["sampling_s"] = time.perf_counter() - t0
    values = jit(m.constrained)(jnp.asarray(x), eta_hat)
    return samples, values, timings, curvature


def _positive_definite(h: np.ndarray) -> bool:
    if not np.all(np.isfinite(h)):
        return False
    try:
        np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        return False
    return True


#: An eigenvalue of the marginal Hessian below this fraction of the largest counts as flat.
FLAT_CURVATURE = 1e-8


def _with_prior_curvature(hess: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hess`` with each eigenvalue that is not clearly positive (below
    :data:`FLAT_CURVATURE` times the largest) replaced by the prior's curvature along its
    eigenvector (1 where the prior has none): along those directions the data say nothing,
    or the mode is a saddle, and the approximation takes the prior's width. Returns the
    matrix and the replaced eigenvectors (columns)."""
    w, v = np.linalg.eigh(np.where(np.isfinite(hess), hess, 0.0))
    flat = w <= FLAT_CURVATURE * max(float(np.max(np.abs(w))), 1e-300)
    curv = np.einsum("ik,ij,jk->k", v, prior, v)
    w = np.where(flat, np.where(curv > 0, curv, 1.0), w)
    return (v * w) @ v.T, v[:, flat]


def _flat_text(what: str, where: str, flat: np.ndarray, names: list[str]) -> str:
    """The warning for a Laplace approximation regularised by :func:`_with_prior_curvature`."""
    return (
        f"Laplace: {what} is flat or curved the wrong way at {where} along "
        f"{_directions(flat, names)} (sampler's coordinates: logs of positive parameters): the "
        "data do not determine these parameters (or their combination) apart. The "
        "approximation uses the prior's width along those directions; give them informative "
        "priors or fix them (`fixed: true`), or use method='nuts'"
    )
