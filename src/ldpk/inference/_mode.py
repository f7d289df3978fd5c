"""The joint posterior mode (MAP) by BFGS in the unconstrained space, its Hessian, and the
check for degenerate modes (sites in a far tail of their prior)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.extend.core import jaxpr_as_fun
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import constrain_fn, potential_energy

from ldpk._compiled import jit
from ldpk.errors import DataError
from ldpk.population import PopulationModel

#: A latent site (other than subject or study effects) whose value at the joint mode lies in
#: a tail of its prior holding less than this mass marks the mode as degenerate (typically a
#: residual SD collapsed to 0 because each subject's effect fits its one observation of an
#: output exactly: the joint density is unbounded there).
PRIOR_TAIL = 1e-6


class _Progress:
    """A progress bar for a phase of the fit without a known length (an optimiser's
    evaluations), or with one (``total``): the evaluations done and, for searches, the best
    potential so far. Each phase reads "(compiling)" until its first step. Does nothing unless
    ``enabled``."""

    def __init__(self, enabled: bool, desc: str, total: int | None = None, unit: str = " evaluations") -> None:  # fmt: skip
        self.bar, self.desc = None, desc
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"{desc} (compiling)", unit=unit, leave=False)

    def phase(self, desc: str, total: int | None = None) -> None:
        """Start the next phase on the same bar (its count restarts)."""
        self.desc = desc
        if self.bar is not None:
            self.bar.reset(total=total)
            self.bar.set_description(f"{desc} (compiling)")

    def step(self, best: float | None = None) -> None:
        if self.bar is not None:
            if self.bar.n == 0:
                self.bar.set_description(self.desc, refresh=False)
            self.bar.update(1)
            if best is not None and np.isfinite(best) and self.bar.n % 10 == 1:
                self.bar.set_postfix_str(f"-log posterior {best:.6g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class _Mode:
    """The MAP in the unconstrained space (``flat``, ``unravel``), its constrained ``values``,
    the Laplace covariance ``cov`` (None if the Hessian is not positive definite), the
    model's ``postprocess`` (unconstrained dict -> constrained sites) and the Hessian of the
    potential there (None if not computed)."""

    flat: Any
    unravel: Any
    values: dict[str, Any]
    cov: np.ndarray | None
    postprocess: Any
    hessian: np.ndarray | None = None
    #: sites held at the start's values because the joint mode put them in a prior tail
    held: tuple[str, ...] = ()
    #: the potential's value and gradient, (flat unconstrained x, data) -> (U, dU/dx), as
    #: the evaluation of one traced jaxpr: NUTS calls it (see :func:`_reused_gradient`), so
    #: the model is traced and differentiated once for the search and the sampler
    value_and_grad: Any = None

    def positions(self) -> dict[str, Any]:
        """Each site's positions in the flat vector (float arrays shaped as the sites)."""
        return self.unravel(jnp.arange(self.flat.size, dtype=float))


def _to_latent(pm: PopulationModel) -> Any:
    """Unconstrained latent sites -> constrained ones, by the priors' transforms alone (no
    solve, no deterministic sites)."""
    return partial(constrain_fn, pm.priors, (), {})


def _prior_extremes(pm: PopulationModel, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The latent sites other than subject and study effects whose ``values`` (constrained)
    lie in a tail of their prior holding less than :data:`PRIOR_TAIL` of its mass."""
    from numpyro import handlers

    def tails(values: dict) -> dict:  # one compiled function, not an operation at a time
        trace = handlers.trace(handlers.substitute(handlers.seed(pm.priors, 0), data=values)).get_trace()  # fmt: skip
        masses = {}
        for name, site in trace.items():
            if site["type"] == "sample" and not name.startswith("eta_"):
                cdf = site["fn"].cdf(site["value"])
                masses[name] = jnp.min(jnp.minimum(cdf, 1.0 - cdf))
        return masses

    masses = jax.device_get(jit(tails)({k: jnp.asarray(v) for k, v in values.items()}))
    return tuple(name for name, m in masses.items() if m < PRIOR_TAIL)


def _map(
    pm: PopulationModel,
    data: tuple,
    key: Any,
    hessian: str | None = "exact",
    hold_extremes: bool = False,
    progress: bool = False,
) -> _Mode:
    """MAP estimate by BFGS on the unconstrained potential, started from the prior medians
    (standardised between-subject effects at 0) and searched in two stages (the SDs of the
    effects held first, see ``two_stage``), and the Hessian there: ``hessian`` 'exact'
    (JAX, forward over reverse), 'fd' (central differences of the compiled gradient: no
    second compilation, for starting points) or None. ``data``: the model's arguments (dv,
    censored).

    The joint mode of a hierarchical model can be degenerate: where each subject has one
    observation of an output (destructive sampling), its effect can fit that observation
    exactly and the output's residual SD runs to 0, where the joint density is unbounded.
    NUTS started there adapted a step size of 5e-9 and never moved. With ``hold_extremes``,
    sites that the mode puts in a prior tail of mass < :data:`PRIOR_TAIL` are held at the
    start's values (medians of 31 prior draws) and the rest searched again, while more run
    off: a starting point and scales for samplers. ``_Mode.held`` names them. ``progress``
    shows the search's evaluations and best potential, then the Hessian's columns."""
    bar = _Progress(progress, "MAP search")
    try:
        return _search_mode(pm, data, key, hessian, hold_extremes, bar)
    finally:
        bar.close()


def _search_mode(pm: PopulationModel, data: tuple, key: Any, hessian: str | None, hold_extremes: bool, bar: _Progress) -> _Mode:  # fmt: skip
    """:func:`_map`'s work, reporting to ``bar``."""

    # Starting values from the priors alone (pm.priors, no solve) in one compiled function:
    # numpyro's initialize_model runs the model op by op, and each operation compiled on its
    # own (3-4 s per process on the one-compartment benchmark, the solve's operations
    # included). BFGS below checks the density at the start.
    def medians(key: Any) -> dict:  # each latent site's median of 31 prior draws, unconstrained
        from numpyro import handlers

        # the key numpyro's initialize_model(key, ...) seeds its first try with: the same start
        seeded = handlers.seed(pm.priors, jax.random.split(key)[1])
        at_median = handlers.substitute(seeded, substitute_fn=init_to_median(num_samples=31))
        trace = handlers.trace(at_median).get_trace()
        return {
            name: biject_to(site["fn"].support).inv(site["value"])
            for name, site in trace.items()
            if site["type"] == "sample"
        }

    z0 = {k: (jnp.zeros_like(v) if k.startswith("eta_") else v) for k, v in jit(medians)(key).items()}  # fmt: skip
    flat0, unravel = ravel_pytree(z0)

    def potential(x: Any, data: tuple) -> Any:
        return potential_energy(pm, data, {}, unravel(x))

    # The model is traced once, to a jaxpr that the search and NUTS evaluate (see _Mode)
    traced = jaxpr_as_fun(jax.make_jaxpr(jax.value_and_grad(potential))(flat0, data))

    def evaluated(x: Any, data: tuple) -> tuple[Any, Any]:
        return tuple(traced(x, *jax.tree.leaves(data)))

    value_and_grad = jit(evaluated)

    best: dict[str, Any] = {"value": np.inf, "x": None}

    def host(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = value_and_grad(jnp.asarray(x), data)
        v, g = float(v), np.asarray(g, dtype=float)
        # A point where the density or its gradient is not finite (a failed solve, an
        # overflow) is +inf for the line search, which then steps back; it used to end the
        # search with a NaN value, reported as no finite density at all.
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            bar.step()
            return np.inf, np.zeros_like(g)
        if v < best["value"]:
            best.update(value=v, x=np.array(x))
        bar.step(best["value"])
        return v, g

    pos = unravel(jnp.arange(flat0.size, dtype=float))  # each site's positions in flat0

    def search(held: tuple[str, ...], start: Any = None) -> Any:
        """BFGS over the sites not ``held`` from ``start`` (default: the prior medians); held
        sites stay at the prior medians."""
        fixed = np.zeros(flat0.size, dtype=bool)
        for name in held:
            fixed[np.asarray(pos[name]).astype(int)] = True
        start = np.array(flat0 if start is None else start)
        start[fixed] = np.asarray(flat0)[fixed]
        best.update(value=np.inf, x=None)

        def free(y: np.ndarray) -> tuple[float, np.ndarray]:
            x = start.copy()
            x[~fixed] = y
            v, g = host(x)
            return v, g[~fixed]

        # SciPy's BFGS with JAX gradients: robust line search, converges to |grad| < 1e-6.
        res = scipy.optimize.minimize(free, start[~fixed], jac=True, method="BFGS", options={"gtol": 1e-6, "maxiter": 5000})  # fmt: skip
        if best["x"] is None:
            raise DataError("the MAP search found no finite posterior density from the prior medians; check the data units, the error model and the priors")  # fmt: skip
        if np.isfinite(res.fun) and res.fun <= best["value"]:
            x = start.copy()
            x[~fixed] = res.x
            return jnp.asarray(x)
        return jnp.asarray(best["x"])

    # Constrained latent sites at the mode from the priors' transforms alone (no solve);
    # ``postprocess`` adds the deterministic sites (P_i, predictions) and is only traced.
    to_latent = jit(_to_latent(pm))
    sds = tuple(k for k in z0 if k.startswith("omega_"))  # between-subject and -study SDs

    def two_stage(held: tuple[str, ...]) -> Any:
        """The subject effects first with the SDs held at their prior medians, then every
        site from there. Searched jointly from the start, the SDs grow while the standardised
        effects are still near 0, and the search can end in a subject's implausible
        explanation or stall on a kink: on the CAR-T example study, from four starts, at
        potentials 1770-1786 (one with patient 15 expanding at 3.8 /d), against 1748.7-1748.9
        from all four by the two stages."""
        if not set(sds) - set(held):
            return search(held)
        return search(held, start=search(held + sds))

    held: tuple[str, ...] = ()
    x = two_stage(held)
    values = to_latent(unravel(x))
    while hold_extremes and (more := tuple(n for n in _prior_extremes(pm, values) if n not in held)):  # fmt: skip
        held += more
        x = two_stage(held)
        values = to_latent(unravel(x))
    postprocess = partial(constrain_fn, pm, data, {}, return_deterministic=True)
    cov = h = None
    if hessian == "exact":
        bar.phase("MAP Hessian", total=1)
        h = np.asarray(jit(jax.hessian(potential))(x, data))
        bar.step()
    elif hessian == "fd":
        bar.phase("MAP Hessian", total=2 * x.size)

        def grad(v: np.ndarray) -> np.ndarray:
            # the raw gradient: host() turns non-finite values into +inf with a zero gradient
            bar.step()
            return np.asarray(value_and_grad(jnp.asarray(v), data)[1])

        h = _fd_hessian(grad, np.asarray(x))
    if hessian is not None:
        h = 0.5 * (h + h.T)
        try:
            np.linalg.cholesky(h)
            cov = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            pass
    return _Mode(x, unravel, values, cov, postprocess, h, held, evaluated)


def _fd_hessian(grad: Any, x: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """Hessian by central differences of ``grad`` (step rel·max(1, |x_i|) per coordinate)."""
    h = np.empty((x.size, x.size))
    for i in range(x.size):
        step = rel * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = step
        h[:, i] = (grad(x + e) - grad(x - e)) / (2 * step)
    return h


#: Data information along a direction below this fraction of the prior's marks a parameter
#: (or combination) the data do not inform: its posterior SD there is at least
#: 1/sqrt(1 + 0.05) = 98 % of the prior's.
WEAK_DATA_INFORMATION = 0.05


def _prior_hessian(pm: PopulationModel, flat: Any, unravel: Any) -> np.ndarray:
    """The priors' Hessian at ``flat`` (unconstrained, every latent site of ``unravel``)."""
    return np.asarray(jit(jax.hessian(lambda v: potential_energy(pm.priors, (), {}, unravel(v))))(flat))  # fmt: skip


def _weakly_informed(hessian: np.ndarray, prior: np.ndarray, names: list[str], sites: Any) -> list[str]:  # fmt: skip
    """Sentences naming the typical values (or their combinations, e.g. CL1 + CL2) that the
    data do not inform, from the curvature at the mode: the posterior's Hessian ``hessian``
    (unconstrained coordinates named by ``names``, as ``site`` or ``site[i]``; the
    coordinates not judged, subject effects ``eta_*`` among them, integrated out by the Schur
    complement) against the priors' Hessian ``prior`` there. A
    direction whose data information (posterior minus prior curvature) is below
    :data:`WEAK_DATA_INFORMATION` of the prior's is one where the posterior is the prior.
    Only the sites in ``sites`` (typical values, covariate effects) are judged: between-subject
    and residual SDs at a joint mode are not a fair test."""
    h, prior = np.asarray(hessian, dtype=float), np.asarray(prior, dtype=float)
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(prior))):
        return []
    site_of = [n.split("[")[0] for n in names]
    judged = np.array([s in sites and not s.startswith("eta_") for s in site_of])
    if not judged.any():
        return []
    # the judged sites' curvature with every other coordinate (subject effects, SDs)
    # integrated out: the Schur complement H_jj - H_jo H_oo^-1 H_oj
    other = ~judged
    h_jj = h[np.ix_(judged, judged)]
    if other.any():
        try:
            h_jj = h_jj - h[np.ix_(judged, other)] @ np.linalg.solve(h[np.ix_(other, other)], h[np.ix_(other, judged)])  # fmt: skip
        except np.linalg.LinAlgError:
            return []
    h, p = h_jj, prior[np.ix_(judged, judged)]
    if not np.all(np.linalg.eigvalsh(p) > 0):
        return []  # a flat or improper prior: no yardstick
    # generalised eigenproblem (h - p) v = lam p v through p = L L^T
    chol = np.linalg.cholesky(p)
    inv = np.linalg.inv(chol)
    lam, u = np.linalg.eigh(inv @ (h - p) @ inv.T)
    weak = lam < WEAK_DATA_INFORMATION
    if not weak.any():
        return []
    vectors = inv.T @ u[:, weak]
    labels = [n for n, j in zip(names, judged, strict=True) if j]
    return [
        f"the data hardly inform {_directions(vectors, labels)} (sampler's coordinates: logs of positive parameters; the posterior's curvature at the mode is the prior's, within {WEAK_DATA_INFORMATION:.0%}): the estimate there is the prior's. A sum or product of parameters may be all the design determines (e.g. two parallel clearances), or the observations may carry no signal (all zero, all censored). Give informative priors, fix a parameter, or add data that tell them apart"
    ]


def _coordinate_names(unravel: Any, size: int) -> list[str]:
    """The name of each coordinate of a flat vector: its site, with an index for arrays."""
    names = [""] * size
    for site, pos in unravel(jnp.arange(size, dtype=float)).items():
        pos = np.atleast_1d(np.asarray(pos).astype(int))
        for k, i in enumerate(pos.ravel()):
            names[i] = site if pos.size == 1 else f"{site}[{k}]"
    return names


def _directions(vectors: np.ndarray, names: list[str]) -> str:
    """Directions (columns of ``vectors``) in words: each as its main coordinates with signs,
    e.g. 'CL1 + CL2' or 'KA' (unconstrained coordinates: logs of positive parameters)."""
    out = []
    for v in vectors.T:
        big = np.flatnonzero(np.abs(v) >= 0.3 * np.max(np.abs(v)))
        big = big[np.argsort(-np.abs(v[big]))][:4]
        sign0 = np.sign(v[big[0]])
        terms = [("" if k == 0 else (" + " if np.sign(v[i]) == sign0 else " - ")) + names[i] for k, i in enumerate(big)]  # fmt: skip
        out.append("".join(terms))
    return "; ".join(f"({d})" if " " in d else d for d in out)
