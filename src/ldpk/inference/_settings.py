"""Fit settings: :class:`FitOptions`, and reading them (and ODE options) from a fit config's
``fit:`` and ``ode:`` sections and keyword overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ldpk.errors import ModelError
from ldpk.solve import ODEOptions

METHODS = ("nuts", "svi", "map", "laplace")
GUIDES = ("normal", "fullrank", "lowrank")
PARAMETERIZATIONS = ("auto", "noncentred", "centred")


@dataclass(frozen=True)
class FitOptions:
    """Sampler settings. ``chains``, ``warmup`` and ``samples`` per chain for NUTS;
    ``target_accept``; ``parameterization`` of the between-subject effects for NUTS:
    'noncentred' (sampled as standardised z, P_i = θ exp(ω z_i), best when each subject's
    data say little about its own parameters, as in destructive sampling), 'centred'
    (sampled as log P_i, best when each subject's data pin its parameters down, as in rich
    longitudinal designs, where non-centred sampling needs tiny steps) or 'auto' (default:
    per parameter P, centred where the subject effects of P have a mean conditional
    posterior variance at the MAP below :data:`AUTO_CENTRE_VARIANCE`, else
    non-centred; the choice is in the posterior's ``ldpk_centred`` attribute), or a mapping
    from parameter names to one of these (the others 'auto'; ``{ALPHA: noncentred}`` in a
    fit config's ``fit:`` section); the posterior is the same, reported as z (``eta_P``)
    either way. ``dense_mass``: adapt a
    dense mass matrix (correlated parameters) instead of a diagonal one;
    ``max_tree_depth``: NUTS trees of at most 2^depth - 1 leapfrog steps per iteration, and
    ``warmup_max_tree_depth`` the same during warm-up only (None: ``max_tree_depth``; a
    lower cap bounds the cost of the first warm-up iterations, where the mass matrix is not
    yet adapted); ``svi_steps`` and ``guide`` ('normal' mean-field, 'fullrank', 'lowrank')
    for SVI; ``draws`` from SVI guides and Laplace approximations (for the marginal Laplace
    approximation: population parameters from the normal approximation of their marginal
    posterior, each with subject effects from the normal approximation of their conditional
    posterior); ``seed`` (a fixed seed gives identical results); ``progress`` bars."""

    chains: int = 4
    warmup: int = 1000
    samples: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    warmup_max_tree_depth: int | None = None
    parameterization: str | Mapping[str, str] = "auto"
    dense_mass: bool = False
    svi_steps: int = 5000
    guide: str = "normal"
    learning_rate: float = 0.01
    draws: int = 1000
    seed: int = 0
    progress: bool = True
    init_from_map: bool = True


def _ode_options(section: Mapping[str, Any], where: str = "fit config") -> ODEOptions:
    """:class:`~ldpk.ODEOptions` from a fit config's ``ode:`` section (e.g. ``solver: tsit5``,
    ``rtol: 1.0e-6``, ``max_steps: 10000``); unknown keys or values raise ModelError naming
    ``where``."""
    valid = set(ODEOptions.__dataclass_fields__)
    if not isinstance(section, Mapping) or set(section) - valid:
        bad = sorted(set(section) - valid) if isinstance(section, Mapping) else section
        raise ModelError(f"{where}: ode: unknown entries {bad}; valid: {', '.join(sorted(valid))}")  # fmt: skip
    try:
        out = ODEOptions(**section)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: ode: {exc}") from exc
    return out


def _options(opts: FitOptions, from_config: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> FitOptions:  # fmt: skip
    """FitOptions with the config's ``fit:`` entries, then keyword overrides, applied."""
    valid = set(FitOptions.__dataclass_fields__)
    bad = set(from_config) - valid
    if bad:
        raise ModelError(f"{where}: fit: unknown options {sorted(bad)}; valid: {', '.join(sorted(valid))}")  # fmt: skip
    bad = set(overrides) - valid
    if bad:
        raise TypeError(f"unknown fit options {sorted(bad)}; valid: {', '.join(sorted(valid))}")
    opts = FitOptions(**{**opts.__dict__, **from_config, **overrides})
    if opts.guide not in GUIDES:
        raise ValueError(f"guide must be one of {', '.join(GUIDES)}, got {opts.guide!r}")
    choices = opts.parameterization
    per = choices.values() if isinstance(choices, Mapping) else [choices]
    if not all(isinstance(c, str) and c in PARAMETERIZATIONS for c in per):
        raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, or a mapping from parameter names to one of them; got {choices!r}")  # fmt: skip
    return opts
