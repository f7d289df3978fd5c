"""Reparameterisation of the between-subject effects for NUTS: which parameters to sample
centred, and the centring transform on the flat unconstrained vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to

from ldpk.inference._mode import _Mode
from ldpk.population import PopulationModel, prior_distribution

#: parameterization='auto' samples P centred when its standardised subject effects have a
#: mean conditional posterior variance at the MAP (1 / Hessian diagonal) below this (prior
#: variance 1): there each subject's data say more about its P_i than the population does.
AUTO_CENTRE_VARIANCE = 0.5


def _centred_parameters(pm: PopulationModel, mode: _Mode, parameterization: str | Mapping[str, str]) -> tuple[str, ...]:  # fmt: skip
    """The parameters with between-subject variability that NUTS samples centred: all of them
    ('centred'), none ('noncentred'), those a mapping names 'centred' and, of those it names
    'auto' or not at all, as 'auto'; or ('auto') those whose standardised effects z_i have
    a mean conditional posterior variance 1 / H_ii (H the Hessian of the potential at the
    MAP) below AUTO_CENTRE_VARIANCE (none without a Hessian). In the normal-normal model,
    var(z_i | θ, ω, data) = s^2 / (s^2 + ω^2) with s the data's standard error of log P_i:
    below 1/2 where the data know P_i better than the population does, which is where the
    centred form samples well and the non-centred one needs small steps (Betancourt &
    Girolami 2015, arXiv:1312.0906). The conditional variance needs only the Hessian's
    diagonal, so it exists where the joint mode's Hessian is not positive definite (the
    CAR-T study)."""
    names = tuple(pm.spec.iiv)
    if isinstance(parameterization, Mapping):  # names checked by fit()
        choice = {p: parameterization.get(p, "auto") for p in names}
    else:
        choice = dict.fromkeys(names, parameterization)
    auto: set[str] = set()
    if "auto" in choice.values() and mode.hessian is not None:
        pos = mode.positions()
        curv = np.diag(mode.hessian)
        var = np.where(curv > 0, 1.0 / np.where(curv > 0, curv, 1.0), np.inf)
        auto = {p for p in names if var[np.asarray(pos[f"eta_{p}"]).astype(int)].mean() < AUTO_CENTRE_VARIANCE}  # fmt: skip
    return tuple(p for p in names if choice[p] == "centred" or (choice[p] == "auto" and p in auto))


@dataclass(frozen=True)
class _Centring:
    """The centred parameterisation for NUTS, on the flat unconstrained vector: for each
    parameter P with between-subject variability, the standardised effects z_i (site
    ``eta_P``) are replaced by w_i = u_P + ω_P z_i, with u_P the unconstrained typical value
    (log θ_P for a positive one), so that w_i is log P_i up to covariate factors. The density
    in w is that in z times |dz/dw| = ω_P^-n per parameter. ``eta``, ``theta``, ``omega``: the
    positions of each parameter's sites in the flat vector (``theta`` None where P has no
    sampled typical value); ``to_omega``: each ω site's transform from unconstrained values."""

    eta: tuple[np.ndarray, ...]
    theta: tuple[int | None, ...]
    omega: tuple[int, ...]
    to_omega: tuple[Any, ...]

    @staticmethod
    def of(pm: PopulationModel, mode: _Mode, names: Sequence[str]) -> _Centring | None:
        """The centring of the parameters ``names`` (None if there are none)."""
        if not names:
            return None
        pos = mode.positions()
        return _Centring(
            eta=tuple(np.asarray(pos[f"eta_{p}"]).astype(int) for p in names),
            theta=tuple(int(pos[p]) if p in pos else None for p in names),
            omega=tuple(int(pos[f"omega_{p}"]) for p in names),
            to_omega=tuple(biject_to(prior_distribution(pm.spec.iiv[p]).support) for p in names),
        )

    def _parts(self, v: Any) -> Any:
        for e, t, o, f in zip(self.eta, self.theta, self.omega, self.to_omega, strict=True):
            yield e, (0.0 if t is None else v[t]), f(v[o])

    def to_noncentred(self, w: Any) -> Any:
        x = w
        for e, centre, omega in self._parts(w):
            x = x.at[e].set((w[e] - centre) / omega)
        return x

    def to_centred(self, x: Any) -> Any:
        w = x
        for e, centre, omega in self._parts(x):
            w = w.at[e].set(centre + omega * x[e])
        return w

    def log_det(self, w: Any) -> Any:
        """-log |dz/dw| = Σ_P n log ω_P."""
        return sum(e.size * jnp.log(omega) for e, _, omega in self._parts(w))
