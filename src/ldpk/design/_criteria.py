"""Criteria of a FIM (PopED's conventions): ln det, D-criterion, standard errors and RSE%,
efficiency, power of a Wald test, and shrinkage of the empirical Bayes estimates.

Every criterion that needs det(FIM) or FIM⁻¹ first checks that the FIM is invertible: a
singular or near-singular FIM raises :class:`DataError` naming the parameters the design
cannot separate (the large entries of the eigenvector of the smallest eigenvalue of the
FIM scaled to unit diagonal), never NaN or -inf.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from ldpk.design._fim import FisherInformation, group_moments, prepare_groups
from ldpk.design._spec import Design, check_design
from ldpk.errors import DataError
from ldpk.model import Model
from ldpk.solve import ODEOptions

#: Smallest eigenvalue, relative to the largest, of the FIM scaled to unit diagonal (a
#: correlation-like matrix) below which the FIM counts as singular: its inverse would carry
#: no correct digit beyond about 1e-16 / RCOND.
RCOND = 1e-10


def check_invertible(fim: FisherInformation) -> None:
    """Raise :class:`DataError` if ``fim`` is singular or near-singular (see module
    docstring), naming the parameters involved."""
    F = np.asarray(fim.matrix, dtype=float)
    names = fim.names
    if not np.all(np.isfinite(F)):
        bad = [n for n, row in zip(names, F, strict=True) if not np.all(np.isfinite(row))]
        raise DataError(f"the FIM has non-finite entries for parameter(s) {', '.join(bad)}")
    d = np.diag(F)
    if np.any(d <= 0):
        bad = [n for n, v in zip(names, d, strict=True) if v <= 0]
        raise DataError(
            f"the FIM is singular: the design carries no information on {', '.join(bad)} "
            "(hold them fixed with Design(fixed=...) or change the design)"
        )
    s = 1.0 / np.sqrt(d)
    w, v = np.linalg.eigh(F * s[:, None] * s[None, :])
    if w[0] <= RCOND * w[-1]:
        vec = v[:, 0]
        big = np.abs(vec) >= 0.1 * np.max(np.abs(vec))
        involved = ", ".join(f"{n} ({c:+.2f})" for n, c, b in zip(names, vec, big, strict=True) if b)  # fmt: skip
        raise DataError(
            f"the FIM is {'singular' if w[0] <= 0 else 'near-singular'} (smallest eigenvalue "
            f"{w[0]:.3g} of the unit-diagonal FIM, largest {w[-1]:.3g}): the design cannot "
            f"separate {involved} (the direction of least information); add or move samples, "
            "or hold one of them fixed"
        )


def ln_det(fim: FisherInformation) -> float:
    """ln det FIM (PopED's ofv for D-optimality); dimensionless up to the units of the
    parameters."""
    check_invertible(fim)
    sign, val = np.linalg.slogdet(fim.matrix)
    return float(val)


def d_criterion(fim: FisherInformation) -> float:
    """The D-criterion det(FIM)^(1/p), p the number of parameters."""
    return float(np.exp(ln_det(fim) / len(fim.names)))


def covariance(fim: FisherInformation) -> np.ndarray:
    """FIM⁻¹, the asymptotic covariance of the estimates (units of ψ_a·ψ_b)."""
    check_invertible(fim)
    return np.linalg.inv(fim.matrix)


def standard_errors(fim: FisherInformation) -> np.ndarray:
    """Asymptotic standard errors sqrt(diag FIM⁻¹), in the units (and on the scale) of each
    parameter: a fixed effect on the design's scale, ω² as a variance, residual parameters
    in the design's convention."""
    return np.sqrt(np.diag(covariance(fim)))


def rse_percent(fim: FisherInformation) -> np.ndarray:
    """Relative standard errors, % : 100·SE/|value| (PopED): of β on the design's scale (so a
    log-scale β's RSE is relative to the log value), of a variance ω² that of the variance.
    A parameter whose value is 0 gets inf (the relative error is unbounded)."""
    se = standard_errors(fim)
    val = np.abs(np.asarray(fim.values, dtype=float))
    with np.errstate(divide="ignore"):
        return np.where(val > 0, 100.0 * se / np.where(val > 0, val, 1.0), np.inf)


def efficiency(fim: FisherInformation, reference: FisherInformation) -> float:
    """D-efficiency of ``fim`` relative to ``reference``: (det₁/det₀)^(1/p). Both must be
    over the same parameters."""
    if tuple(fim.names) != tuple(reference.names):
        raise DataError(
            f"efficiency(): the FIMs are over different parameters: {list(fim.names)} and "
            f"{list(reference.names)}"
        )
    return float(np.exp((ln_det(fim) - ln_det(reference)) / len(fim.names)))


def wald_power(
    fim: FisherInformation, parameter: str, h0: float = 0.0, alpha: float = 0.05
) -> float:
    """Power (a probability, 0 to 1) of the two-sided Wald test of H0: ``parameter`` = ``h0``
    at level ``alpha`` when the true value is the FIM's (Retout 2007, PopED):
    W = (h0 − β)/SE, power = 1 − Φ(W + z) + Φ(W − z), z = Φ⁻¹(1 − alpha/2)."""
    if not 0 < alpha < 1:
        raise DataError(f"wald_power(alpha=): a level between 0 and 1, got {alpha!r}")
    i = fim.index(parameter)
    se = standard_errors(fim)[i]
    nd = NormalDist()
    z = nd.inv_cdf(1 - alpha / 2)
    w = (h0 - float(fim.values[i])) / se
    return float(1 - nd.cdf(w + z) + nd.cdf(w - z))


def shrinkage(
    model: Model,
    design: Design,
    *,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> np.ndarray:
    """Expected shrinkage of the empirical Bayes estimates of η (PopED), per group, on the
    variance scale: shrinkage = diag(FIM_map⁻¹ Ω⁻¹) with FIM_map = Zᵀ R⁻¹ Z + Ω⁻¹ the
    Bayesian FIM of one subject's η (FO, at η = 0: Z = ∂f/∂η, R the residual variance at the
    typical prediction, residual parameters fixed).

    Returns an array (groups, η) in the order of ``design.groups`` and ``design.omega2``
    (parameters with ω² = 0 have no η and are left out); dimensionless, 0 (none) to 1
    (estimates all shrunk to 0). On the SD scale it is 1 − sqrt(1 − shrinkage)."""
    check_design(model, design)
    keep = [k for k, v in design.omega2.items() if float(v) > 0]
    if not keep:
        raise DataError("shrinkage(): the design has no random effect with ω² > 0")
    sims = prepare_groups(model, design, method=method, ode=ode)
    idx = [design.eta_names.index(k) for k in keep]
    omega = np.asarray([float(design.omega2[k]) for k in keep])
    res = design.residual
    out = []
    for i, (g, sim) in enumerate(zip(design.groups, sims, strict=True)):
        m = group_moments(sim, design, ode=ode, label=g.label(i))
        r = np.asarray(res.variance(m.E, np.asarray(res.values)))
        Z = m.Z[:, idx]
        fim_map = (Z / r[:, None]).T @ Z + np.diag(1.0 / omega)
        names = tuple(f"eta_{k}" for k in keep)
        check_invertible(FisherInformation(fim_map, names, np.zeros(len(keep)), "map"))
        out.append(np.diag(np.linalg.inv(fim_map)) / omega)
    return np.asarray(out)
