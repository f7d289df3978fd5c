"""Figures (matplotlib): simulations, fit diagnostics, sensitivity indices and parameter sweeps.

Figures are made object-oriented (``matplotlib.figure.Figure``), outside pyplot: no screen is
needed, matplotlib's backend is never changed, and no figure is left in pyplot's registry
(the two ArviZ figures, which ArviZ makes with pyplot, are taken out of it). A returned
Figure is saved with ``fig.savefig`` and shows in a notebook as any Figure does."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldpk._io import atomic_path
from ldpk.errors import DataError
from ldpk.solve import Simulation


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: Any = None, layout: Any = None, squeeze: bool = True) -> tuple[Any, Any]:  # fmt: skip
    """``pyplot.subplots`` without pyplot: a new Figure not known to pyplot, and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _colors() -> list[Any]:
    """The colours of matplotlib's property cycle (its current rcParams)."""
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _detach(fig: Any) -> Any:
    """Take a figure that pyplot made (ArviZ's) out of pyplot's registry, as the others are;
    its backend is left as it is."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:  # (a no-op for a figure pyplot does not know)
        plt.close(fig)
    return fig


def plot_simulation(
    sim: Simulation,
    path: str | Path | None = None,
    *,
    log: bool = False,
    title: str | None = None,
    band: tuple[float, float] = (5.0, 95.0),
    max_amount_lines: int = 12,
) -> Any:
    """Outputs over time, one panel per unit (one line per output, e.g. per organ), and the
    compartment amounts (when there are at most ``max_amount_lines`` compartments).

    A batch of parameter sets is drawn as its median with a ``band`` percentile interval.
    Returns the matplotlib Figure; saves it as PNG when ``path`` is given (atomically)."""
    m = sim.model
    t = np.asarray(sim.times)
    x = np.asarray(sim.states)
    y = np.asarray(sim.outputs)
    batched = x.ndim > 2
    groups: dict[str, list[int]] = {}
    for i, o in enumerate(m.outputs):
        groups.setdefault(o.unit, []).append(i)
    panels: list[tuple[str, str, list[tuple[str, Any]]]] = [
        (
            m.outputs[idx[0]].name if len(idx) == 1 else unit or "outputs",
            unit,
            [(m.outputs[i].name, y[..., i]) for i in idx],
        )
        for unit, idx in groups.items()
    ]
    if len(m.compartments) <= max_amount_lines or not panels:
        unit = m.compartments[0].unit or m.amount_unit
        amounts = [(c.name, x[..., i]) for i, c in enumerate(m.compartments)]
        panels.append(("compartment amounts", unit, amounts))
    n = len(panels)
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = _subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    flat = axes.ravel()
    colors = _colors()

    def draw(ax: Any, values: Any, label: str, color: Any) -> None:
        if batched:
            v = values.reshape(-1, values.shape[-1])
            lo, mid, hi = np.percentile(v, [band[0], 50, band[1]], axis=0)
            ax.plot(t, mid, label=label, color=color)
            ax.fill_between(t, lo, hi, alpha=0.2, color=color, linewidth=0)
        else:
            ax.plot(t, values, label=label, color=color)

    for ax, (name, unit, lines) in zip(flat, panels, strict=False):
        for j, (label, values) in enumerate(lines):
            style = "-" if j < len(colors) else "--"
            draw(ax, values, label, colors[j % len(colors)])
            ax.lines[-1].set_linestyle(style)
        ax.set_title(name)
        quantity = lines[0][0] if len(lines) == 1 else "amount" if name == "compartment amounts" else "value"  # fmt: skip
        ax.set_ylabel(f"{quantity} [{unit}]" if unit and unit != "1" else quantity)
        if len(lines) > 1:
            ax.legend(fontsize=7, frameon=False, ncol=2 if len(lines) > 6 else 1)
        ax.set_xlabel(f"time [{m.time_unit}]")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for a in flat[n:]:
        a.set_visible(False)
    subtitle = f" — median and {band[0]:g}-{band[1]:g}th percentiles" if batched else ""
    fig.suptitle((title or m.name) + subtitle)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    _detach(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Fit diagnostics: goodness of fit, visual predictive check, posterior predictive, trace, rank.
# ---------------------------------------------------------------------------------------------

#: Data spanning more than this ratio (max/min of the positive values) get log axes.
LOG_SPAN = 100.0
#: Posterior draws used for the percentile bands (thinned evenly beyond this).
MAX_BAND_DRAWS = 1000


def _flat_draws(values: Any) -> np.ndarray:
    """(chain, draw, ...) → (chain·draw, ...)."""
    v = np.asarray(values)
    return v.reshape(-1, *v.shape[2:])


def _thin(n: int, most: int) -> np.ndarray:
    """Indices of at most ``most`` evenly spaced draws out of ``n``."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(int))


def posterior_predictive_draws(fit: Any) -> np.ndarray:
    """Simulated observations (posterior predictive, residual error included) as one array of
    shape (draws, n_obs) in the order of ``fit.dataset``'s observations. Outputs without an
    error model (not fitted) are NaN."""
    tree = fit.posterior
    ds = fit.dataset
    names = ds.output_names
    pp = tree["posterior_predictive"]
    out_idx = np.asarray(ds.output)
    n_draws = pp.sizes["chain"] * pp.sizes["draw"]
    sims = np.full((n_draws, ds.n_obs), np.nan)
    for o in fit.spec.errors:
        key = f"obs_{o}"
        if key not in pp:
            continue
        sel = np.flatnonzero(out_idx == names.index(o))
        sims[:, sel] = _flat_draws(pp[key].values)
    return sims


def population_predictions(fit: Any) -> np.ndarray:
    """Population predictions (PRED): each observation predicted with the typical parameter
    values at their posterior medians, every between-subject and study effect at zero, and the
    subject's covariates applied. Vector of length n_obs, in the observation unit."""
    import jax.numpy as jnp

    post = fit.posterior["posterior"]
    pop = {
        name: jnp.asarray(np.median(_flat_draws(post[name].values), axis=0))
        for name in post.data_vars
        if not ({"subject", "study", "obs"} & set(post[name].dims)) and not name.startswith("eta_")
    }
    pm = fit.population
    z = {p: jnp.zeros(fit.dataset.n_subjects) for p in fit.spec.iiv}
    indiv = pm.individual_parameters(pop, z, None)
    return np.asarray(pm.predict_observations(indiv), dtype=float)


def observation_table(fit: Any, band: tuple[float, float] = (5.0, 95.0)) -> Any:
    """One row per fitted observation (pandas DataFrame), in data order of ``fit.dataset``.

    Columns: ``ID``, ``TIME`` (model time unit), ``OUTPUT``, ``UNIT`` (of the observation, see
    :func:`observation_units`), ``DV`` (the observation, or the limit when censored), ``CENS`` (1 below a lower limit, -1 above an upper limit, 0 not
    censored), ``PRED`` (population prediction, see :func:`population_predictions`), ``IPRED``,
    ``IPRED_P05``, ``IPRED_P95`` (posterior median and ``band`` percentiles of the individual
    prediction), ``PP_MEDIAN``, ``PP_P05``, ``PP_P95`` (the same of the posterior predictive,
    i.e. with residual error), ``IWRES`` (individual weighted residual
    (DV − IPRED)/SD with the residual SD at the posterior medians of the error parameters; on
    the log scale for log-normal error; computed at the limit for censored points) and ``ROW``
    (1-based row of the observation in the data file)."""
    import pandas as pd

    ds = fit.dataset
    pred = fit.draws("pred")
    sims = posterior_predictive_draws(fit)
    lo, hi = band
    ip = np.percentile(pred, [50, lo, hi], axis=0)
    with np.errstate(all="ignore"):
        pp = np.nanpercentile(sims, [50, lo, hi], axis=0) if np.isfinite(sims).any() else np.full((3, ds.n_obs), np.nan)  # fmt: skip
    iwres = _iwres(fit, ip[0])
    tag = f"{lo:02g}", f"{hi:02g}"
    return pd.DataFrame(
        {
            "ID": [ds.subjects[i] for i in ds.subject],
            "TIME": ds.time,
            "OUTPUT": [ds.output_names[i] for i in ds.output],
            "UNIT": observation_units(fit),
            "DV": ds.dv,
            "CENS": ds.censored,
            "PRED": population_predictions(fit),
            "IPRED": ip[0],
            f"IPRED_P{tag[0]}": ip[1],
            f"IPRED_P{tag[1]}": ip[2],
            "PP_MEDIAN": pp[0],
            f"PP_P{tag[0]}": pp[1],
            f"PP_P{tag[1]}": pp[2],
            "IWRES": iwres,
            "ROW": ds.row,
        }
    )


def _iwres(fit: Any, ipred: np.ndarray) -> np.ndarray:
    """Individual weighted residuals at the posterior medians (see :func:`observation_table`)."""
    ds = fit.dataset
    post = fit.posterior["posterior"]
    names = ds.output_names
    out = np.full(ds.n_obs, np.nan)

    def med(name: str) -> float:
        return float(np.median(post[name].values)) if name in post else 0.0

    for o, err in fit.spec.errors.items():
        sel = np.flatnonzero(np.asarray(ds.output) == names.index(o))
        dv, f = ds.dv[sel], ipred[sel]
        a = med(f"sigma_add_{o}") if err.uses_additive else 0.0
        b = med(f"sigma_prop_{o}") if err.uses_proportional else 0.0
        with np.errstate(all="ignore"):
            if err.kind == "lognormal":
                r = (np.log(dv) - np.log(np.maximum(f, 1e-300))) / b
                r = np.where(dv > 0, r, np.nan)
            else:
                r = (dv - f) / np.sqrt(a**2 + (b * f) ** 2)
        out[sel] = r
    return out


def _log_scale(*values: Any) -> bool:
    """True when the positive finite values span more than ``LOG_SPAN``."""
    v = np.concatenate([np.ravel(np.asarray(x, dtype=float)) for x in values])
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > LOG_SPAN


def _time_bins(t: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of every time and the bin centres (median time in the bin).

    Each distinct time is its own bin when there are at most ``max_bins`` of them (nominal
    sampling times, as in destructive biodistribution designs). Otherwise neighbouring times
    less than 12 % apart (plus 0.2 % of the whole span) are merged, which recovers nominal times
    recorded with scatter (0.25, 0.27 h | 0.5, 0.52 h | ...), keeping only the ``max_bins`` - 1
    widest gaps; when one group then holds over half of the points (times spread evenly), bins
    of about equal numbers of points are used instead."""
    t = np.asarray(t, dtype=float)
    uniq = np.unique(t)
    if uniq.size <= max_bins:
        return np.searchsorted(uniq, t), uniq
    shifted = uniq - uniq[0] + 0.002 * (uniq[-1] - uniq[0])
    gaps = np.diff(np.log(shifted))
    cut = np.flatnonzero(gaps > np.log(1.12))
    cut = np.sort(cut[np.argsort(gaps[cut])[::-1][: max_bins - 1]])  # the widest gaps
    group = np.zeros(uniq.size, dtype=np.int64)
    group[cut + 1] = 1
    idx = np.cumsum(group)[np.searchsorted(uniq, t)]
    if not (cut.size and np.bincount(idx).max() <= 0.5 * t.size):
        edges = np.unique(np.quantile(t, np.linspace(0, 1, max_bins + 1)))
        idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
        idx = np.searchsorted(np.unique(idx), idx)
    centres = np.array([np.median(t[idx == k]) for k in range(idx.max() + 1)])
    return idx, centres


def _grid(n: int, ncol: int = 3, w: float = 5.0, h: float = 3.8) -> tuple[Any, Any]:
    ncol = max(1, min(n, ncol))
    nrow = int(np.ceil(n / ncol))
    fig, axes = _subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False, layout="constrained")  # fmt: skip
    flat = axes.ravel()
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat


def observation_units(fit: Any) -> np.ndarray:
    """The unit of every observation (strings, length n_obs): the dataset's own per-observation
    units if it records them (``Dataset.units``); else, where the data were converted from the
    output's unit (``Dataset.scale`` not 1, e.g. %ID/g from a %ID output through the organ
    weight), the UNIT column of the source table when there is one; else the output's unit."""
    ds = fit.dataset
    own = getattr(ds, "units", None)
    if own is not None:
        return np.asarray(own, dtype=object)
    out = np.array([fit.model.outputs[i].unit for i in ds.output], dtype=object)
    scaled = ~np.isclose(ds.obs_scale, 1.0)
    if scaled.any():
        col = _source_column(ds.source, "unit")
        rows = np.asarray(ds.row) - 1
        if col is not None and rows.max() < len(col):
            out[scaled] = col[rows[scaled]]
        else:
            out[scaled] = "data unit"
    return out


def _source_column(source: str, name: str) -> np.ndarray | None:
    """A column (case-insensitive) of the study table at ``source``, or None."""
    from ldpk.data import read_table

    try:
        frame = read_table(source)
    except Exception:  # not a file (e.g. a DataFrame) or unreadable: no column
        return None
    cols = {str(c).lower(): c for c in frame.columns}
    return frame[cols[name]].astype(str).to_numpy(dtype=object) if name in cols else None


def _unit_of(units: np.ndarray, fit: Any, i: int) -> str:
    """The unit of output ``i``'s observations ('mixed units' if they differ)."""
    found = sorted(set(units[np.asarray(fit.dataset.output) == i]))
    return found[0] if len(found) == 1 else "mixed units"


def _observed_outputs(fit: Any) -> list[tuple[int, Any]]:
    """(index, Output) of every model output with observations, in model order."""
    used = set(np.asarray(fit.dataset.output).tolist())
    return [(i, o) for i, o in enumerate(fit.model.outputs) if i in used]


def _scatter_obs(ax: Any, x: Any, y: Any, cens: Any, color: Any = "C0", label: str | None = None) -> None:  # fmt: skip
    """Observations as filled circles; censored ones as open triangles at their limit (pointing
    down below a lower limit, up above an upper limit)."""
    cens = np.asarray(cens)
    ok = cens == 0
    ax.scatter(np.asarray(x)[ok], np.asarray(y)[ok], s=14, alpha=0.7, color=color, label=label, linewidths=0)  # fmt: skip
    for c, marker, text in ((1, "v", "below limit"), (-1, "^", "above limit")):
        m = cens == c
        if m.any():
            ax.scatter(np.asarray(x)[m], np.asarray(y)[m], s=30, marker=marker, facecolors="none", edgecolors="crimson", label=f"censored ({text})")  # fmt: skip


def plot_goodness_of_fit(
    fit: Any, path: str | Path | None = None, *, table: Any = None, title: str | None = None
) -> Any:
    """Goodness of fit, one row per observed output: observed vs population prediction (PRED)
    and vs individual prediction (IPRED, posterior median) with the identity line, and the
    individual weighted residuals vs time and vs IPRED (lines at 0 and ±2). Censored points are
    open red triangles at their limit. Axes are logarithmic where the data span more than two
    decades. ``table``: a precomputed :func:`observation_table`. Returns the Figure; saves a
    PNG when ``path`` is given."""
    tab = observation_table(fit) if table is None else table
    outs = _observed_outputs(fit)
    units = observation_units(fit)
    fig, axes = _subplots(len(outs), 4, figsize=(17, 3.6 * len(outs)), squeeze=False, layout="constrained")  # fmt: skip
    tu = fit.model.time_unit
    for row, (i, o) in zip(axes, outs, strict=True):
        d = tab[tab["OUTPUT"] == o.name]
        u = _unit_of(units, fit, i)
        unit = f" [{u}]" if u else ""
        log = _log_scale(d["DV"], d["IPRED"])
        for ax, col, label in ((row[0], "PRED", "population prediction"), (row[1], "IPRED", "individual prediction")):  # fmt: skip
            _scatter_obs(ax, d[col], d["DV"], d["CENS"])
            both = np.concatenate([d[col].to_numpy(float), d["DV"].to_numpy(float)])
            both = both[np.isfinite(both) & ((both > 0) if log else True)]
            if both.size:
                lim = (both.min(), both.max())
                ax.plot(lim, lim, color="k", lw=1)
            ax.set_xlabel(f"{label}{unit}")
            ax.set_ylabel(f"observed{unit}")
            ax.set_title(f"{o.name}: observed vs {col}")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
        for ax, x, xlabel in ((row[2], d["TIME"], f"time [{tu}]"), (row[3], d["IPRED"], f"individual prediction{unit}")):  # fmt: skip
            _scatter_obs(ax, x, d["IWRES"], d["CENS"])
            ax.axhline(0, color="k", lw=1)
            for s in (-2, 2):
                ax.axhline(s, color="k", lw=0.8, ls="--")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("IWRES")
            ax.set_title(f"{o.name}: residuals")
        if log:
            row[3].set_xscale("log")
        for ax in row:
            ax.grid(alpha=0.3)
        if (d["CENS"] != 0).any():
            row[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"{fit.model.name}: goodness of fit ({fit.method})")
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_vpc(
    fit: Any,
    path: str | Path | None = None,
    *,
    percentiles: tuple[float, float, float] = (5.0, 50.0, 95.0),
    ci: float = 90.0,
    max_bins: int = 12,
    title: str | None = None,
) -> Any:
    """Visual predictive check, one panel per observed output. In each time bin (every distinct
    time when there are at most ``max_bins``), the ``percentiles`` of the simulated observations
    (posterior predictive) are computed per posterior draw; bands show the ``ci`` % interval of
    each over the draws (blue for the outer, red for the median) and solid lines their medians.
    The observed points are drawn over them with the observed percentiles as dashed lines
    (uncensored points only; censored points are open red triangles at their limit, and the
    simulations are not censored). Returns the Figure; saves a PNG when ``path`` is given."""
    ds = fit.dataset
    sims = posterior_predictive_draws(fit)
    sims = sims[_thin(sims.shape[0], MAX_BAND_DRAWS)]
    outs = _observed_outputs(fit)
    units = observation_units(fit)
    fig, flat = _grid(len(outs))
    lo_ci, hi_ci = (100 - ci) / 2, (100 + ci) / 2
    colors = ("tab:blue", "tab:red", "tab:blue")
    for ax, (i, o) in zip(flat, outs, strict=False):
        sel = np.flatnonzero(np.asarray(ds.output) == i)
        t, dv, cens = ds.time[sel], ds.dv[sel], ds.censored[sel]
        s = sims[:, sel]
        idx, centres = _time_bins(t, max_bins)
        nb = len(centres)
        band = np.full((3, 3, nb), np.nan)  # (percentile, [ci lo, median, ci hi], bin)
        obs_p = np.full((3, nb), np.nan)
        for k in range(nb):
            m = idx == k
            if not np.isfinite(s[:, m]).any():
                continue
            per_draw = np.nanpercentile(s[:, m], percentiles, axis=1)  # (3, draws)
            band[:, :, k] = np.nanpercentile(per_draw, [lo_ci, 50, hi_ci], axis=1)
            ok = m & (cens == 0)
            if ok.any():
                obs_p[:, k] = np.percentile(dv[ok], percentiles)
        for j, p in enumerate(percentiles):
            ax.fill_between(centres, band[j, 0], band[j, 2], color=colors[j], alpha=0.2, linewidth=0)  # fmt: skip
            label = f"simulated {p:g}th" if j == 1 else f"simulated {percentiles[0]:g}th/{percentiles[2]:g}th" if j == 0 else None  # fmt: skip
            ax.plot(centres, band[j, 1], color=colors[j], lw=1.2, label=label)
            ax.plot(centres, obs_p[j], color="k", lw=1.2, ls="--", label="observed percentiles" if j == 0 else None)  # fmt: skip
        _scatter_obs(ax, t, dv, cens, color="0.35", label="observed")
        ax.set_title(o.name)
        ax.set_xlabel(f"time [{fit.model.time_unit}]")
        ax.set_ylabel(_unit_of(units, fit, i) or "value")
        if _log_scale(dv, band[:, 1]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if len(flat):
        flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"{fit.model.name}: visual predictive check ({ci:g} % bands)")
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_posterior_predictive(
    fit: Any,
    path: str | Path | None = None,
    *,
    band: tuple[float, float] = (5.0, 95.0),
    max_bins: int = 20,
    title: str | None = None,
) -> Any:
    """Posterior predictive over time, per organ/output: the median and ``band`` percentile
    interval of the simulated observations pooled by time (each distinct time, or up to
    ``max_bins`` bins of about equal size) against the observed values. Outputs sharing a unit
    share a panel (one colour per output), as in :func:`plot_simulation`. Returns the Figure;
    saves a PNG when ``path`` is given."""
    ds = fit.dataset
    sims = posterior_predictive_draws(fit)
    sims = sims[_thin(sims.shape[0], MAX_BAND_DRAWS)]
    groups: dict[str, list[tuple[int, Any]]] = {}
    units = observation_units(fit)
    for i, o in _observed_outputs(fit):
        groups.setdefault(_unit_of(units, fit, i), []).append((i, o))
    fig, flat = _grid(len(groups), ncol=2, w=6.0, h=4.2)
    colors = _colors()
    for ax, (unit, members) in zip(flat, groups.items(), strict=False):
        values = []
        for j, (i, o) in enumerate(members):
            color = colors[j % len(colors)]
            sel = np.flatnonzero(np.asarray(ds.output) == i)
            t, dv, cens = ds.time[sel], ds.dv[sel], ds.censored[sel]
            idx, centres = _time_bins(t, max_bins)
            q = np.full((3, len(centres)), np.nan)
            for k in range(len(centres)):
                v = sims[:, sel[idx == k]]
                if np.isfinite(v).any():
                    q[:, k] = np.nanpercentile(v, [50, band[0], band[1]])
            ls = "-" if j < len(colors) else "--"
            ax.plot(centres, q[0], color=color, ls=ls, label=o.name if len(members) > 1 else f"median, {band[0]:g}-{band[1]:g}th pct.")  # fmt: skip
            ax.fill_between(centres, q[1], q[2], color=color, alpha=0.2, linewidth=0)
            _scatter_obs(ax, t, dv, cens, color=color)
            values += [dv, q[0]]
        name = members[0][1].name if len(members) == 1 else unit or "outputs"
        ax.set_title(name)
        ax.set_ylabel(unit or "value")
        ax.set_xlabel(f"time [{fit.model.time_unit}]")
        if _log_scale(*values):
            ax.set_yscale("log")
        ax.legend(fontsize=7, frameon=False, ncol=2 if len(members) > 6 else 1)
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{fit.model.name}: posterior predictive vs observed")
    if path is not None:
        save_figure(fig, path)
    return fig


def _pc_figure(pc: Any) -> Any:
    """The matplotlib Figure of an arviz-plots PlotCollection."""
    viz = pc.viz
    for key in ("figure", "chart"):
        try:
            return viz[key].item()
        except (KeyError, AttributeError, ValueError):
            continue
    raise RuntimeError("cannot find the figure of the arviz-plots PlotCollection")


def _tight_margins(fig: Any, **spacing: float) -> None:
    """Margins of about 0.7 in (title) and 0.55 in (axis labels) whatever the figure height."""
    h = fig.get_size_inches()[1]
    fig.subplots_adjust(top=1 - 0.75 / h, bottom=0.55 / h, left=0.07, right=0.98, **spacing)


def plot_trace(
    fit: Any, path: str | Path | None = None, *, var_names: list[str] | None = None
) -> Any:
    """Marginal densities (left, one line per chain) and traces (right) of the population
    parameters (``fit.parameter_names()`` unless ``var_names``), by ArviZ's
    ``plot_trace_dist``. Returns the Figure; saves a PNG when ``path`` is given."""
    import arviz as az

    names = var_names or fit.parameter_names()
    pc = az.plot_trace_dist(fit.posterior, var_names=names, backend="matplotlib", figure_kwargs={"figsize": (12, 1.7 * len(names) + 1)})  # fmt: skip
    fig = _detach(_pc_figure(pc))
    fig.suptitle(f"{fit.model.name}: posterior traces ({fit.method})")
    _tight_margins(fig, wspace=0.4, hspace=0.45)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_rank(
    fit: Any, path: str | Path | None = None, *, var_names: list[str] | None = None
) -> Any:
    """Rank plots (fractional-rank Δ-ECDF per chain, ArviZ's ``plot_rank``) of the population
    parameters: with chains that sample the same distribution each line stays inside the
    envelope near zero. Meaningful with more than one chain. Returns the Figure; saves a PNG
    when ``path`` is given."""
    import arviz as az

    names = var_names or fit.parameter_names()
    ncol = min(4, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    pc = az.plot_rank(fit.posterior, var_names=names, backend="matplotlib", col_wrap=ncol, figure_kwargs={"figsize": (3.8 * ncol, 2.9 * nrow + 0.6)})  # fmt: skip
    fig = _detach(_pc_figure(pc))
    fig.suptitle(f"{fit.model.name}: rank plots ({fit.posterior['posterior'].sizes['chain']} chains)")  # fmt: skip
    _tight_margins(fig, wspace=0.25, hspace=0.55)
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Sensitivity analysis (ldpk.sensitivity): Sobol' and Morris indices, local sensitivities.
# ---------------------------------------------------------------------------------------------


def _axes(ax: Any) -> tuple[Any, Any]:
    if ax is None:
        fig, ax = _subplots(figsize=(7, 4))
        return fig, ax
    return ax.figure, ax


def plot_indices(ds: Any, ax: Any = None) -> Any:
    """Bars per parameter of Sobol' ``S1`` and ``ST`` with their confidence intervals, or
    of Morris ``mu_star`` (with its interval) and ``sigma``; for indices at each time
    (``metric=None``), lines over time instead (first: solid, second: dashed). ``ds``: the
    Dataset of :func:`ldpk.sensitivity.sobol` or :func:`ldpk.sensitivity.morris`. Returns the
    matplotlib Figure (drawn on ``ax`` if given)."""
    if "S1" in ds:
        pairs = (("S1", "S1_conf"), ("ST", "ST_conf"))
        ylabel = "Sobol' index (fraction of variance)"
    elif "mu_star" in ds:
        pairs = (("mu_star", "mu_star_conf"), ("sigma", None))
        unit = ds.attrs.get("metric_unit", "")
        ylabel = f"elementary effect ({unit})" if unit else "elementary effect"
    else:
        raise DataError("plot_indices: expected the Dataset of sobol() (S1, ST) or morris() (mu_star, sigma)")  # fmt: skip
    fig, ax = _axes(ax)
    names = [str(p) for p in ds["parameter"].values]
    if "time" in ds.dims:
        t = np.asarray(ds["time"])
        for i, name in enumerate(names):
            color = f"C{i % 10}"
            for (key, conf), style in zip(pairs, ("-", "--"), strict=True):
                v = np.asarray(ds[key].isel(parameter=i))
                ax.plot(t, v, style, color=color, label=f"{name} {key}")
                if conf is not None:
                    c = np.asarray(ds[conf].isel(parameter=i))
                    ax.fill_between(t, v - c, v + c, color=color, alpha=0.15, lw=0)
        unit = ds.attrs.get("time_unit", "")
        ax.set_xlabel(f"time ({unit})" if unit else "time")
    else:
        x = np.arange(len(names))
        width = 0.38
        for j, (key, conf) in enumerate(pairs):
            err = None if conf is None else np.asarray(ds[conf])
            ax.bar(x + (j - 0.5) * width, np.asarray(ds[key]), width, yerr=err, capsize=3, label=key)  # fmt: skip
        ax.set_xticks(x, names)
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xlabel("parameter")
    ax.set_ylabel(ylabel)
    what = ds.attrs.get("metric") or "output"
    ax.set_title(f"{ds.attrs.get('model', '')}: {ds.attrs.get('output', '')} {what}".strip(": "))
    ax.legend(fontsize="small")
    return fig


def plot_local(da: Any, output: str | None = None, ax: Any = None) -> Any:
    """Local sensitivities ∂log y/∂log θ of ``output`` (default: the first in ``da``) over
    time, one line per parameter (``da`` from :func:`ldpk.sensitivity.local`). Returns the matplotlib
    Figure (drawn on ``ax`` if given)."""
    outs = [str(o) for o in da["output"].values]
    output = outs[0] if output is None else output
    if output not in outs:
        raise DataError(f"plot_local: no output {output!r}; outputs: {', '.join(outs)}")
    fig, ax = _axes(ax)
    t = np.asarray(da["time"])
    sel = da.sel(output=output)
    for p in sel["parameter"].values:
        ax.plot(t, np.asarray(sel.sel(parameter=p)), label=str(p))
    unit = da.attrs.get("time_unit", "")
    ax.set_xlabel(f"time ({unit})" if unit else "time")
    ax.set_ylabel(f"d log {output} / d log parameter")
    ax.set_title(f"{da.attrs.get('model', '')}: local sensitivity of {output}".strip(": "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------------
# Sweeps (ldpk.sweep): time-course bands, metric distributions, metric against dose.
# ---------------------------------------------------------------------------------------------

#: Beyond this many distinct values of a dose coordinate, :func:`plot_metric_vs_dose` bins
#: them (bins of about equal numbers of sets).
MAX_DOSE_LEVELS = 30


def _label(name: str, unit: str | None) -> str:
    """``'name [unit]'``, or ``'name'`` without a unit."""
    return f"{name} [{unit}]" if unit else name


def _nanpercentile(values: Any, q: Sequence[float], axis: int | None = None) -> np.ndarray:
    """``np.nanpercentile`` without the warning of an all-NaN slice (that slice is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(np.asarray(values, dtype=float), q, axis=axis)


def _check_band(band: Any, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise DataError(f"{what}: band must be two percentiles (low, high), e.g. (5, 95); got {band!r}") from None  # fmt: skip
    if not 0.0 <= lo < hi <= 100.0:
        raise DataError(f"{what}: band must satisfy 0 <= low < high <= 100, got {band!r}")
    return lo, hi


def _regimen_names(ds: Any) -> list[str]:
    return [r.decode() if isinstance(r, bytes) else str(r) for r in ds["regimen"].values]


def _sweep_time_unit(ds: Any) -> str:
    return str(ds["time"].attrs.get("unit") or ds.attrs.get("time_unit") or "")


def _sweep_subtitle(ds: Any, band: tuple[float, float]) -> str:
    failed = int(ds.attrs.get("n_failed", 0) or 0)
    note = f"; {failed} failed sets left out" if failed else ""
    return f"median and {band[0]:g}-{band[1]:g}th percentiles over {ds.sizes['set']} parameter sets{note}"  # fmt: skip


def _metric_variables(ds: Any) -> list[str]:
    """The sweep's metric variables (dims (set, regimen), a ``metric`` attribute)."""
    return [
        str(v) for v in ds.data_vars if "metric" in ds[v].attrs and ds[v].dims == ("set", "regimen")
    ]


def _pick_metrics(ds: Any, names: str | Sequence[str] | None, what: str) -> list[str]:
    """Metric variables by variable name (``'cp_auc'``) or metric name (``'auc'``: that
    metric of every output); all of them when ``names`` is None."""
    have = _metric_variables(ds)
    if names is None:
        if not have:
            raise DataError(f"{what}: the sweep has no metric variables (it was run with metrics=[])")  # fmt: skip
        return have
    out: list[str] = []
    for name in [names] if isinstance(names, str) else list(names):
        found = [name] if name in have else [v for v in have if ds[v].attrs["metric"] == name]
        if not found:
            metrics = sorted({str(ds[v].attrs["metric"]) for v in have})
            raise DataError(
                f"{what}: no metric {name!r} in the sweep; metric variables: "
                f"{', '.join(have) or 'none'} (or a metric name: {', '.join(metrics) or 'none'})"
            )
        out += [v for v in found if v not in out]
    return out


def plot_sweep(
    ds: Any,
    path: str | Path | None = None,
    *,
    outputs: str | Sequence[str] | None = None,
    band: tuple[float, float] = (5.0, 95.0),
    log: bool | None = None,
) -> Any:
    """Time courses of a sweep (the Dataset of :func:`ldpk.sweep`): one panel per output
    (default: every output with time courses), and in it, per regimen, the median over the
    parameter sets (a line, labelled with the regimen's name) and the ``band`` percentile
    interval (shaded, its edges as thin lines). Sets that failed (NaN) are left out of the
    percentiles. Axes are labelled with the units of the Dataset's attrs (time: model time
    unit). ``log``: a log y axis (default: when the positive values span more than
    ``LOG_SPAN``). Returns the Figure; saves it (atomically) when ``path`` is given."""
    lo_q, hi_q = _check_band(band, "plot_sweep")
    have = [str(v) for v in ds.data_vars if ds[v].dims == ("set", "regimen", "time")]
    if outputs is None:
        if not have:
            raise DataError("plot_sweep: the sweep has no time courses (it was run with time_courses=False); plot its metrics with plot_sweep_metrics")  # fmt: skip
        outputs = have
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    if missing := [o for o in outputs if o not in have]:
        raise DataError(f"plot_sweep: no time courses of {missing} in the sweep; time courses: {', '.join(have) or 'none'}")  # fmt: skip
    if not outputs:
        raise DataError("plot_sweep: give at least one output")
    t = np.asarray(ds["time"], dtype=float)
    regs = _regimen_names(ds)
    tu = _sweep_time_unit(ds)
    fig, flat = _grid(len(outputs), ncol=2, w=6.4, h=4.4)
    for a in flat[len(outputs) :]:
        a.remove()
    colors = _colors()
    for ax, o in zip(flat, outputs, strict=False):
        values = []
        for j, r in enumerate(regs):
            lo, mid, hi = _nanpercentile(ds[o].isel(regimen=j), [lo_q, 50.0, hi_q], axis=0)
            color = colors[j % len(colors)]
            ls = "-" if j < len(colors) else "--"
            ax.fill_between(t, lo, hi, color=color, alpha=0.18, linewidth=0)
            for edge, q in ((lo, lo_q), (hi, hi_q)):
                ax.plot(t, edge, color=color, lw=0.6, alpha=0.7, ls=ls, label=f"_{r} {q:g}th percentile")  # fmt: skip
            ax.plot(t, mid, color=color, lw=1.8, ls=ls, label=r)
            values += [lo, mid, hi]
        description = ds[o].attrs.get("description")
        ax.set_title(f"{o}: {description}" if description else o, fontsize=10)
        ax.set_xlabel(_label("time", tu))
        ax.set_ylabel(_label(o, ds[o].attrs.get("unit")))
        if log if log is not None else _log_scale(*values):
            ax.set_yscale("log", nonpositive="mask")  # zeros (before absorption): gaps
        ax.legend(fontsize=7, frameon=False, ncol=2 if len(regs) > 6 else 1)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{ds.attrs.get('model', 'sweep')}\n{_sweep_subtitle(ds, (lo_q, hi_q))}", fontsize=11
    )
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_sweep_metrics(
    ds: Any, path: str | Path | None = None, *, metrics: str | Sequence[str] | None = None
) -> Any:
    """Distributions of a sweep's exposure metrics over its parameter sets: one panel per
    metric variable (``metrics``: variable names such as ``'cp_auc'`` or metric names such
    as ``'auc'``; default all), one box per regimen (median, quartiles, whiskers to 1.5 IQR,
    outliers as points; failed (NaN) sets left out). The y axis carries the metric's unit and
    is logarithmic when the values are all positive and span more than ``LOG_SPAN``. Returns
    the Figure; saves it (atomically) when ``path`` is given."""
    names = _pick_metrics(ds, metrics, "plot_sweep_metrics")
    regs = _regimen_names(ds)
    width = max(5.0, min(12.0, 1.0 + 0.55 * len(regs)))
    fig, flat = _grid(len(names), ncol=2 if width <= 7.0 else 1, w=width, h=4.2)
    for a in flat[len(names) :]:
        a.remove()
    colors = _colors()
    rotate = len(regs) > 4 or max(len(r) for r in regs) > 10
    for ax, var in zip(flat, names, strict=False):
        v = np.asarray(ds[var], dtype=float)
        data = [col[np.isfinite(col)] for col in v.T]
        box = ax.boxplot(
            data,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "k", "gid": "median"},
            flierprops={"markersize": 3, "alpha": 0.5},
        )
        ax.set_xticks(np.arange(1, len(regs) + 1), regs)  # (boxplot's tick_labels: matplotlib 3.9)
        for j, patch in enumerate(box["boxes"]):
            patch.set_facecolor(colors[j % len(colors)])
            patch.set_alpha(0.45)
        finite = np.concatenate(data) if data else np.array([])
        if finite.size and np.all(finite > 0) and _log_scale(finite):
            ax.set_yscale("log")
        attrs = ds[var].attrs
        ax.set_title(attrs.get("description") or var, fontsize=10)
        ax.set_ylabel(_label(var, attrs.get("unit")))
        ax.set_xlabel("regimen")
        if rotate:
            ax.tick_params(axis="x", labelrotation=30)
            for lab in ax.get_xticklabels():
                lab.set_horizontalalignment("right")
        ax.grid(alpha=0.3, axis="y")
    failed = int(ds.attrs.get("n_failed", 0) or 0)
    note = f"; {failed} failed sets left out" if failed else ""
    fig.suptitle(f"{ds.attrs.get('model', 'sweep')}\nexposure over {ds.sizes['set']} parameter sets{note}", fontsize=11)  # fmt: skip
    if path is not None:
        save_figure(fig, path)
    return fig


def _parse_regimen_name(name: str) -> tuple[str, float, str] | None:
    """(route, dose, schedule) of a name made by :func:`ldpk.regimens` ('iv 1e+06 weekly'),
    or None."""
    parts = name.split(" ", 2)
    if len(parts) < 2 or not parts[0]:
        return None
    try:
        dose = float(parts[1])
    except ValueError:
        return None
    if not math.isfinite(dose):
        return None
    return parts[0], dose, parts[2] if len(parts) == 3 else ""


def _dose_levels(x: np.ndarray, v: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(dose, metric values) per distinct dose, or per bin of about equal size (median dose
    of the bin) beyond ``MAX_DOSE_LEVELS`` distinct doses."""
    ok = np.isfinite(x)
    x, v = x[ok], v[ok]
    levels = np.unique(x)
    if levels.size <= MAX_DOSE_LEVELS:
        return [(float(d), v[x == d]) for d in levels]
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, MAX_DOSE_LEVELS + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return [(float(np.median(x[idx == k])), v[idx == k]) for k in np.unique(idx)]


def plot_metric_vs_dose(
    ds: Any, metric: str, path: str | Path | None = None, *, dose: str | None = None
) -> Any:
    """A sweep's exposure ``metric`` (a variable such as ``'cp_auc'``, or a metric name such
    as ``'auc'`` when one output has it) against dose: the median over the parameter sets
    (line with points) and the 5-95th percentile band.

    The dose is the parameter coordinate named ``dose`` when the sweep has one (one line per
    regimen; beyond ``MAX_DOSE_LEVELS`` distinct values, sets are binned by dose); otherwise
    it is read from the regimen names that :func:`ldpk.regimens` makes ('route dose
    [schedule]'), one line per route and schedule, in the model's amount unit. Both axes are
    logarithmic when all doses and values are positive. DataError when no dose can be found.
    Returns the Figure; saves it (atomically) when ``path`` is given."""
    what = "plot_metric_vs_dose"
    names = _pick_metrics(ds, metric, what)
    if len(names) != 1:
        raise DataError(f"{what}: metric {metric!r} is computed for several outputs; name one variable: {', '.join(names)}")  # fmt: skip
    var = names[0]
    v = np.asarray(ds[var], dtype=float)  # (set, regimen)
    regs = _regimen_names(ds)
    groups: dict[str, list[tuple[float, np.ndarray]]] = {}
    if dose is not None and dose in ds.coords and ds[dose].dims == ("set",):
        x = np.asarray(ds[dose], dtype=float)
        for j, r in enumerate(regs):
            groups[r] = _dose_levels(x, v[:, j])
        xlabel = _label(dose, ds[dose].attrs.get("unit"))
    else:
        for j, r in enumerate(regs):
            parsed = _parse_regimen_name(r)
            if parsed is None:
                coord = f"no parameter coordinate {dose!r}, and " if dose is not None else ""
                raise DataError(
                    f"{what}: cannot find the doses: {coord}regimen {r!r} is not named "
                    "'route dose [schedule]' as ldpk.regimens() names regimens; give dose= the "
                    "name of a parameter coordinate that holds the dose"
                )
            route, amount, schedule = parsed
            groups.setdefault(f"{route} {schedule}".strip(), []).append((amount, v[:, j]))
        xlabel = _label("dose", ds.attrs.get("amount_unit"))
    fig, ax = _subplots(figsize=(6.8, 4.6), layout="constrained")
    colors = _colors()
    xs, ys = [], []
    for j, (label, points) in enumerate(groups.items()):
        points = sorted(points, key=lambda p: p[0])
        d = np.array([p[0] for p in points])
        q = np.array([_nanpercentile(p[1], [5.0, 50.0, 95.0]) for p in points]).reshape(-1, 3).T
        color = colors[j % len(colors)]
        ls = "-" if j < len(colors) else "--"
        ax.fill_between(d, q[0], q[2], color=color, alpha=0.18, linewidth=0)
        for edge, pct in ((q[0], 5), (q[2], 95)):
            ax.plot(d, edge, color=color, lw=0.6, alpha=0.7, ls=ls, label=f"_{label} {pct}th percentile")  # fmt: skip
        ax.plot(d, q[1], marker="o", ms=4, color=color, lw=1.6, ls=ls, label=label)
        xs.append(d)
        ys.append(q)
    x_all = np.concatenate(xs)
    y_all = np.concatenate([y.ravel() for y in ys])
    y_all = y_all[np.isfinite(y_all)]
    if x_all.size and np.all(x_all > 0) and y_all.size and np.all(y_all > 0):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.12, which="minor")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_label(var, ds[var].attrs.get("unit")))
    ax.set_title(f"{ds.attrs.get('model', 'sweep')}: {var} vs dose\nmedian and 5-95th percentiles over {ds.sizes['set']} parameter sets", fontsize=10)  # fmt: skip
    if len(groups) > 1 or dose is not None:
        ax.legend(fontsize=7, frameon=False, ncol=2 if len(groups) > 6 else 1)
    ax.grid(alpha=0.3, which="major")
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_dose_response(selection: Any, path: str | Path | None = None) -> Any:
    """Attainment against dose of a :func:`ldpk.design.select_dose` result, one colour per
    schedule: the smoothed median over trials (line) with its interval (band), the
    ``1 - confidence`` quantile that the dose solves (dashed), the unsmoothed median at the
    simulated levels (points), the target (grey line) and each selected dose (dotted). The dose
    axis is logarithmic. Returns the Figure; saves it (atomically) when ``path`` is given."""
    curve, levels, table = selection.curve, selection.levels, selection.table
    fig, ax = _subplots(figsize=(6.8, 4.6), layout="constrained")
    colors = _colors()
    dose = np.asarray(curve["dose"], dtype=float)
    for j, s in enumerate(curve["schedule"].values):
        c = curve.sel(schedule=s)
        color = colors[j % len(colors)]
        label = str(s) if curve.sizes["schedule"] > 1 else "median over trials"
        ax.fill_between(dose, c["lower"], c["upper"], color=color, alpha=0.18, linewidth=0)
        ax.plot(dose, c["median"], color=color, lw=1.8, label=label)
        ax.plot(dose, c["at_confidence"], color=color, lw=1.0, ls="--",
                label=f"{1 - selection.confidence:.0%} quantile over trials" if j == 0 else None)  # fmt: skip
        pts = levels.where(levels["schedule"] == s, drop=True)
        ax.plot(np.asarray(pts["dose"]), np.asarray(pts["median"]), "o", ms=4, color=color,
                label="simulated levels (unsmoothed)" if j == 0 else None)  # fmt: skip
        d = float(table.loc[str(s), "dose"])
        if np.isfinite(d):
            ax.axvline(d, color=color, lw=1.0, ls=":")
            ax.annotate(f"{d:.3g}", (d, 0.02), color=color, fontsize=8, rotation=90, ha="right", va="bottom")  # fmt: skip
    ax.axhline(selection.target, color="0.4", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_label("dose", selection.dose_unit))
    ax.set_ylabel("fraction of subjects attaining")
    ax.set_title(f"{selection.criterion}\ntarget {selection.target:.0%} of subjects in {selection.confidence:.0%} of trials; band: {selection.interval:.0%} over {selection.trial.sizes['trial']} trials", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, frameon=False, loc="best")
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_first_in_human(result: Any, path: str | Path | None = None, bins: int = 30) -> Any:
    """The human dose of :func:`ldpk.design.first_in_human` (``result``: its
    :class:`~ldpk.design.FirstInHuman`): histograms of the per-draw doses with the allometric
    exponents fixed and uncertain (log dose axis, model amount unit), their medians and
    central intervals, and the body-surface-area (FDA Km) dose as a vertical line. Returns
    the Figure; saves it (atomically) when ``path`` is given."""
    sets = [("exponents fixed", np.asarray(result.doses, dtype=float))]
    if result.exponent_sd:
        sets.append(("exponents uncertain", np.asarray(result.doses_with_uncertainty, dtype=float)))  # fmt: skip
    finite = np.concatenate([d[np.isfinite(d) & (d > 0)] for _, d in sets])
    if not finite.size:
        raise DataError("plot_first_in_human: no finite positive dose to plot")
    lo = min(float(finite.min()), float(result.bsa_dose))
    hi = max(float(finite.max()), float(result.bsa_dose))
    if hi <= lo * (1 + 1e-9):  # one value: a band around it
        lo, hi = lo / 1.2, hi * 1.2
    edges = np.geomspace(lo / 1.05, hi * 1.05, bins + 1)
    fig, ax = _subplots(figsize=(6.8, 4.2), layout="constrained")
    colors = _colors()
    pct = f"{100 * result.ci:g}%"
    unit = result.dose_unit or "amount"
    for j, (label, d) in enumerate(sets):
        d = d[np.isfinite(d) & (d > 0)]
        q = np.quantile(d, [0.5, (1 - result.ci) / 2, (1 + result.ci) / 2])
        c = colors[j % len(colors)]
        ax.hist(d, bins=edges, color=c, alpha=0.45, label=f"{label}: median {q[0]:.3g} ({pct} {q[1]:.3g} to {q[2]:.3g})")  # fmt: skip
        ax.axvline(q[0], color=c, lw=1.6)
        for x in q[1:]:
            ax.axvline(x, color=c, lw=0.9, ls=":")
    ax.axvline(result.bsa_dose, color="k", lw=1.4, ls="--", label=f"BSA (FDA Km): {result.bsa_dose:.3g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(_label(f"{result.species} dose", unit))
    ax.set_ylabel("draws")
    ax.set_title(
        f"First-in-human dose: {result.metric} of {result.output} matched to the "
        f"{result.animal_species} dose {result.animal_dose:.3g} {unit}",
        fontsize=10,
    )
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Trial designs (ldpk.design, `ldpk design`): prediction bands, target attainment, sampling
# times. The dose-selection figure is plot_dose_response above.
# ---------------------------------------------------------------------------------------------

#: Most outputs :func:`plot_prediction_bands` draws (one panel each).
MAX_BAND_PANELS = 12


def plot_prediction_bands(
    bands: Any,
    path: str | Path | None = None,
    *,
    outputs: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Prediction bands of a virtual trial (``bands``: the Dataset of
    :func:`ldpk.design.prediction_intervals`): one panel per output (at most
    :data:`MAX_BAND_PANELS`; ``outputs`` picks them), and in it, per regimen, the median over
    trials of the subjects' middle percentile (the one nearest 50; line), of the lowest and
    highest percentiles (band), and the central interval over trials of the middle one
    (dashed). Time in the model's time unit, values in each output's unit; a log axis when
    the values span more than :data:`LOG_SPAN`. Returns the Figure; saves it (atomically)
    when ``path`` is given."""
    import xarray as xr

    who = "plot_prediction_bands"
    if not isinstance(bands, xr.Dataset) or "outputs" not in bands.attrs or "percentile" not in bands.dims:  # fmt: skip
        raise DataError(f"{who}: give the Dataset of ldpk.design.prediction_intervals")
    available = list(bands.attrs["outputs"])
    shown = available if outputs is None else list(outputs)
    if bad := [o for o in shown if o not in available]:
        raise DataError(f"{who}: no output {bad[0]!r} in the prediction intervals; valid: {', '.join(available)}")  # fmt: skip
    shown = shown[:MAX_BAND_PANELS]
    if not shown:
        raise DataError(f"{who}: no output to draw")
    q = np.asarray(bands["percentile"].values, dtype=float)
    mid = int(np.argmin(np.abs(q - 50.0)))
    t = np.asarray(bands["time"].values, dtype=float)
    fig, axes = _grid(len(shown), ncol=2, w=6.0, h=4.0)
    colors = _colors()
    for ax, o in zip(axes, shown, strict=False):
        med, lower, upper = (bands[f"{o}_{s}"] for s in ("median", "lower", "upper"))
        values = []
        for j, r in enumerate(bands["regimen"].values):
            c = colors[j % len(colors)]
            m = np.asarray(med.sel(regimen=r).values, dtype=float)  # (percentile, time)
            if len(q) > 1:
                ax.fill_between(t, m[0], m[-1], color=c, alpha=0.18, linewidth=0)
            ax.plot(t, m[mid], color=c, lw=1.8, label=str(r))
            for edge in (lower, upper):
                ax.plot(t, np.asarray(edge.sel(regimen=r).values, dtype=float)[mid], color=c, lw=0.8, ls="--")  # fmt: skip
            values += [m]
        ax.set_title(o, fontsize=10)
        ax.set_xlabel(_label("time", str(bands["time"].attrs.get("unit") or "")))
        ax.set_ylabel(_label(o, str(med.attrs.get("unit") or "")))
        if _log_scale(*values):
            ax.set_yscale("log", nonpositive="mask")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    band = f"{q[0]:g}th-{q[-1]:g}th" if len(q) > 1 else ""
    sub = f"median over {bands.attrs.get('n_trials', '?')} trials of the subjects' {q[mid]:g}th percentile" + (f" and {band} percentiles (band)" if band else "") + f"; dashed: its {100 * float(bands.attrs.get('interval', 0.9)):g}% interval over trials"  # fmt: skip
    fig.suptitle(f"{title}\n{sub}" if title else sub, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_attainment(results: Any, path: str | Path | None = None, *, title: str | None = None) -> Any:  # fmt: skip
    """Probability of target attainment (``results``: an :class:`ldpk.design.Attainment`, or
    a mapping target name -> Attainment): one panel per target, and in it, per regimen, the
    median over trials of the fraction of subjects meeting the target (point) with its
    central interval over trials (bar) and the mean (cross); fractions 0-1. Returns the
    Figure; saves it (atomically) when ``path`` is given."""
    from collections.abc import Mapping

    items = dict(results) if isinstance(results, Mapping) else {getattr(results, "criterion", "target"): results}  # fmt: skip
    if not items or not all(hasattr(a, "summary") and hasattr(a, "criterion") for a in items.values()):  # fmt: skip
        raise DataError("plot_attainment: give an ldpk.design.Attainment or a mapping name -> Attainment (of ldpk.design.attainment)")  # fmt: skip
    fig, axes = _grid(len(items), ncol=2, w=5.5, h=3.6)
    for ax, (name, a) in zip(axes, items.items(), strict=False):
        s = a.summary
        regs = [str(r) for r in s["regimen"].values]
        x = np.arange(len(regs))
        med = np.asarray(s["median"].values, dtype=float)
        err = np.vstack([med - np.asarray(s["lower"].values, dtype=float), np.asarray(s["upper"].values, dtype=float) - med])  # fmt: skip
        ax.errorbar(x, med, yerr=np.clip(err, 0, None), fmt="o", capsize=4, label=f"median, {100 * float(a.interval):g}% interval")  # fmt: skip
        ax.plot(x, np.asarray(s["mean"].values, dtype=float), "x", color="k", label="mean")
        ax.set_xticks(x, regs)
        ax.set_xlim(-0.6, len(regs) - 0.4)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("fraction of subjects")
        ax.set_title(f"{name}: {a.criterion}" if name != a.criterion else name, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_sampling_times(
    model: Any,
    design: Any,
    optimised: Any = None,
    path: str | Path | None = None,
    *,
    t_end: float | None = None,
    regimen_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Sampling times of a population design (``design``: an :class:`ldpk.design.Design`):
    per group, the typical prediction of the sampled output (at the design's fixed effects,
    the model's values otherwise) under the group's regimen, with the design's sampling times
    (circles) and, with ``optimised`` (an :class:`ldpk.design.OptimisedTimes`), the optimised
    ones (triangles) on it. The prediction runs from 0 to ``t_end`` (default: the latest
    sampling time; model time unit); ``regimen_names`` labels the groups' regimens. Returns
    the Figure; saves it (atomically) when ``path`` is given."""
    from ldpk.solve import simulate

    groups = list(design.groups)
    if regimen_names is not None and len(regimen_names) != len(groups):
        raise DataError(f"plot_sampling_times: {len(regimen_names)} regimen names for {len(groups)} groups")  # fmt: skip
    ends = [float(max(g.times)) for g in groups]
    if optimised is not None:
        ends += [float(max(g.times)) for g in optimised.design.groups]
    end = max([*ends, float(t_end or 0.0)])
    unit = next((o.unit for o in model.outputs if o.name == design.output), "")
    fig, axes = _grid(len(groups), ncol=2, w=6.0, h=4.0)
    for gi, (ax, g) in enumerate(zip(axes, groups, strict=False)):
        grid = np.unique(np.concatenate([np.linspace(0.0, end, 401), np.asarray(g.times, dtype=float)]))  # fmt: skip
        sim = simulate(model, dict(design.fixed_effects), list(g.regimen), grid, covariates=g.covariates, outputs=[design.output])  # fmt: skip
        y = np.asarray(sim.output(design.output), dtype=float).reshape(-1)
        ax.plot(grid, y, color="0.3", lw=1.4, label="typical prediction")
        t0 = np.asarray(g.times, dtype=float)
        ax.plot(t0, np.interp(t0, grid, y), "o", mfc="none", ms=8, label="start")
        if optimised is not None:
            t1 = np.asarray(optimised.design.groups[gi].times, dtype=float)
            ax.plot(t1, np.interp(t1, grid, y), "^", ms=7, label=f"optimised (efficiency {optimised.efficiency:.3g})")  # fmt: skip
        if _log_scale(y):
            ax.set_yscale("log", nonpositive="mask")
        reg = f", regimen {regimen_names[gi]}" if regimen_names is not None else ""
        ax.set_title(f"{g.name or f'group {gi + 1}'}: n = {float(g.n):g}{reg}", fontsize=10)
        ax.set_xlabel(_label("time", model.time_unit))
        ax.set_ylabel(_label(design.output, unit))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"Sampling times of {design.output}", fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig
