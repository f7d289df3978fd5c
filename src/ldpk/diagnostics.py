"""Convergence checks and goodness-of-fit quantities for a :class:`~ldpk.inference.Fit`.

Thresholds follow Vehtari et al. 2021 (Bayesian Analysis 16:667, rank-normalised R-hat and
ESS) and Betancourt 2017 (arXiv:1701.02434, divergences and E-BFMI)."""

from __future__ import annotations

from typing import Any

import numpy as np

RHAT_MAX = 1.01
ESS_MIN = 400
EBFMI_MIN = 0.3
#: Share of NUTS iterations at the maximum tree depth above which the fit is flagged.
MAX_DEPTH_SHARE = 0.05
#: Gap between two groups of chain means, in within-chain SDs, above which the chains are
#: reported as sitting in different modes (chains sampling one mode differ in their means
#: by about an SD divided by the square root of their effective sample sizes).
MODE_GAP = 4.0


def convergence_warnings(fit: Any) -> list[str]:
    """Every convergence problem of a NUTS fit, each as a sentence saying what to try.

    Checks: R-hat ≤ 1.01 and bulk and tail ESS ≥ 400 for every population parameter and
    between-subject effect (with chains whose means split by more than ``MODE_GAP``
    within-chain SDs named as sampling different modes), no divergent transitions, E-BFMI ≥ 0.3 in every chain, at most 5 %
    of iterations at the maximum tree depth. Fits by SVI, MAP or Laplace carry no MCMC
    diagnostics; for them the list says so. Every method's list starts with the typical
    values the data hardly inform, judged from the curvature at the mode (the posterior's
    ``ldpk_weakly_informed`` attribute)."""
    weak = [w for w in str(fit.posterior.attrs.get("ldpk_weakly_informed", "")).split("\n") if w]
    return weak + _sampler_warnings(fit)


def _sampler_warnings(fit: Any) -> list[str]:
    """:func:`convergence_warnings` from the sampler's diagnostics."""
    import arviz as az

    if fit.method != "nuts":
        return [f"method {fit.method!r} gives an approximation without MCMC diagnostics; confirm with method='nuts' before relying on intervals"]  # fmt: skip
    tree = fit.posterior
    post = tree["posterior"]
    names = [n for n in post.data_vars if n != "pred"]
    out = []
    n_chains = post.sizes["chain"]
    if n_chains > 1:
        rhat = az.rhat(tree, var_names=names)
        worst = _worst(rhat, max)
        if worst and worst[1] > RHAT_MAX:
            # ka/k flip-flop is a cause only for a model with a first-order absorption rate
            absorption = any(n.upper() == "KA" for n in fit.model.parameter_names)
            example = " (e.g. ka/k flip-flop: tighten the prior on the absorption rate)" if absorption else ""  # fmt: skip
            out.append(
                f"R-hat up to {worst[1]:.3f} (> {RHAT_MAX}) for {worst[0]}: chains disagree. Run "
                f"longer (warmup=2000, samples=2000), or check for several modes{example}."
            )
            if (modes := _separated_chains(post, names)) is not None:
                out.append(modes)
    for method, label in (("bulk", "bulk"), ("tail", "tail")):
        ess = az.ess(tree, var_names=names, method=method)
        worst = _worst(ess, min)
        if worst and worst[1] < ESS_MIN:
            out.append(
                f"{label} ESS down to {worst[1]:.0f} (< {ESS_MIN}) for {worst[0]}: too few "
                "effective draws for stable intervals. Draw more samples or chains."
            )
    stats = tree["sample_stats"] if "sample_stats" in tree.children else None
    if stats is not None and "diverging" in stats:
        n_div = int(np.asarray(stats["diverging"]).sum())
        if n_div:
            out.append(
                f"{n_div} divergent transitions: the sampler missed part of the posterior. Raise "
                "target_accept (0.95), try the other parameterization ('noncentred' when the "
                "data say little about each subject, 'centred' when they say much), or give "
                "more informative priors on ω (between-subject SDs) and residual error."
            )
    if stats is not None and "tree_depth" in stats:
        depth = fit.options.max_tree_depth
        share = float(np.mean(np.asarray(stats["tree_depth"]) >= depth))
        if share > MAX_DEPTH_SHARE:
            out.append(
                f"{share:.0%} of iterations hit the maximum tree depth ({depth}): the sampler "
                "needs very small steps somewhere, which makes it slow. With rich data per "
                "subject (longitudinal imaging, dense sampling) try "
                "parameterization='centred'; with strongly correlated parameters, "
                "dense_mass=True; or make weakly identified parameters' priors more informative."
            )
    if stats is not None and "energy" in stats:
        e = np.asarray(stats["energy"])
        bfmi = np.square(np.diff(e, axis=1)).mean(axis=1) / e.var(axis=1)
        if np.any(bfmi < EBFMI_MIN):
            out.append(
                f"E-BFMI {bfmi.min():.2f} (< {EBFMI_MIN}) in some chain: the momentum resampling "
                "explores the energy poorly, usually from heavy tails or a funnel. Try the other "
                "parameterization ('centred' or 'noncentred') or tighten priors on variance "
                "parameters."
            )
    return out


def _separated_chains(post: Any, names: list[str]) -> str | None:
    """A sentence naming two groups of chains that sample different places (modes): the
    variable whose chain means split with the largest gap, in within-chain SDs, if that gap
    is above ``MODE_GAP``; else None."""
    best = None
    for name in names:
        da = post[name]
        x = np.asarray(da.values, dtype=float)  # (chain, draw, ...)
        means, sds = x.mean(axis=1), x.std(axis=1)
        order = np.argsort(means, axis=0)
        sorted_means = np.take_along_axis(means, order, axis=0)
        gaps = np.diff(sorted_means, axis=0) / np.maximum(sds.max(axis=0), 1e-300)
        if not np.isfinite(gaps).any():
            continue
        k, *elem = np.unravel_index(np.nanargmax(gaps), gaps.shape)
        gap = float(gaps[(k, *elem)])
        if gap > MODE_GAP and (best is None or gap > best[0]):
            chains = order[(slice(None), *elem)]
            label = name
            if elem:
                dims = da.dims[2:]
                label += "[" + ", ".join(
                    f"{d} {da.coords[d].values[i]}" if d in da.coords else str(i)
                    for d, i in zip(dims, elem, strict=True)
                ) + "]"  # fmt: skip
            lo, hi = sorted(chains[: k + 1].tolist()), sorted(chains[k + 1 :].tolist())
            sel = (slice(None), *elem)
            best = (gap, label, lo, hi, means[sel], float(sds[sel].max()))
    if best is None:
        return None
    gap, label, lo, hi, m, sd = best
    return (
        f"chains {', '.join(map(str, lo))} and chains {', '.join(map(str, hi))} sample "
        f"different places, probably different modes: {label} averages "
        f"{np.mean(m[lo]):.3g} in the first and {np.mean(m[hi]):.3g} in the second (within-"
        f"chain SD up to {sd:.3g}). Longer runs rarely fix this. Compare the two "
        "explanations of the data (for a subject effect, that subject's data), then rule out "
        "the implausible one with priors or the model, or add data that tell them apart."
    )


def _worst(values: Any, pick: Any) -> tuple[str, float] | None:
    """(variable[index], value) of the worst entry of an ArviZ diagnostic DataTree/Dataset."""
    best = None
    ds = (
        values["posterior"]
        if hasattr(values, "children") and "posterior" in values.children
        else values
    )
    for name, da in ds.data_vars.items():
        arr = np.asarray(da.values, dtype=float)
        if not np.isfinite(arr).any():
            continue
        idx = np.nanargmax(arr) if pick is max else np.nanargmin(arr)
        v = float(arr.ravel()[idx])
        index = ", ".join(str(int(i)) for i in np.unravel_index(idx, arr.shape))
        label = name if arr.size == 1 else f"{name}[{index}]"
        if best is None or pick(v, best[1]) == v and v != best[1]:
            best = (label, v)
    return best
