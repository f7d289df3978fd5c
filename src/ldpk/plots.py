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
    max_amount_lines: int = 12,
) -> Any:
    """Outputs over time, one panel per unit (one line per output, e.g. per organ), and the
    compartment amounts (when there are at most ``max_amount_lines`` compartments).

    A batch of parameter sets is drawn as its median with a ``band`` percentile interval.
    Returns the matplotlib Figure; saves it as PNG when ``path`` is given (atomically)."""
    plt = _plt()
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
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    flat = axes.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

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
        ax.set_ylabel(unit or "value")
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
    _plt().close(fig)
    return Path(path)
