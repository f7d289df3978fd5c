"""Figures (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldpk._io import atomic_path
from ldpk.solve import Simulation


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_simulation(
    sim: Simulation,
    path: str | Path | None = None,
    *,
    log: bool = False,
    title: str | None = None,
    band: tuple[float, float] = (5.0, 95.0),
) -> Any:
    """Outputs (one panel each) and compartment amounts over time.

    A batch of parameter sets is drawn as its median with a ``band`` percentile interval.
    Returns the matplotlib Figure; saves it as PNG when ``path`` is given (atomically)."""
    plt = _plt()
    m = sim.model
    t = np.asarray(sim.times)
    x = np.asarray(sim.states)
    y = np.asarray(sim.outputs)
    batched = x.ndim > 2
    panels = [(o.name, o.unit, y[..., i]) for i, o in enumerate(m.outputs)]
    n = len(panels) + 1
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), squeeze=False)
    flat = axes.ravel()

    def draw(ax: Any, values: Any, label: str | None = None, color: Any = None) -> None:
        if batched:
            v = values.reshape(-1, values.shape[-1])
            lo, mid, hi = np.percentile(v, [band[0], 50, band[1]], axis=0)
            (line,) = ax.plot(t, mid, label=label, color=color)
            ax.fill_between(t, lo, hi, alpha=0.25, color=line.get_color(), linewidth=0)
        else:
            ax.plot(t, values, label=label, color=color)

    for ax, (name, unit, values) in zip(flat, panels, strict=False):
        draw(ax, values)
        ax.set_title(name)
        ax.set_ylabel(f"{name} [{unit}]" if unit else name)
    ax = flat[len(panels)]
    for i, c in enumerate(m.compartments):
        draw(ax, x[..., i], label=c.name)
    ax.set_title("compartment amounts")
    unit = m.compartments[0].unit or m.amount_unit
    ax.set_ylabel(f"amount [{unit}]" if unit else "amount")
    ax.legend(fontsize=8, frameon=False)
    for a in flat[:n]:
        a.set_xlabel(f"time [{m.time_unit}]")
        if log:
            a.set_yscale("log")
        a.grid(alpha=0.3)
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
    _plt().close(fig)
    return Path(path)
