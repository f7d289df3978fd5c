"""Writing results: tables (CSV or Parquet) and figures, always atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldpk._io import atomic_path
from ldpk.errors import DataError
from ldpk.solve import Simulation


def write_table(frame: Any, path: str | Path, protect: tuple[str | Path, ...] = ()) -> Path:
    """Write a pandas DataFrame as CSV or Parquet (by suffix), atomically. Refuses to write
    over any of ``protect`` (the user's inputs)."""
    path = Path(path)
    for p in protect:
        if Path(p).exists() and path.exists() and path.resolve() == Path(p).resolve():
            raise DataError(f"{path}: refusing to overwrite an input file; choose another --out")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise DataError(f"{path}: output must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise DataError(
                    "writing .parquet needs pyarrow: pip install 'ldpk[parquet]'"
                ) from None
        else:
            frame.to_csv(tmp, index=False)
    return path


def simulation_frame(sim: Simulation) -> Any:
    """A long-format table of a simulation: one row per (parameter set,) time, with every
    compartment amount and output as columns."""
    import pandas as pd

    x = np.asarray(sim.states)
    y = np.asarray(sim.outputs)
    t = np.asarray(sim.times)
    batch = x.shape[:-2]
    cols: dict[str, Any] = {}
    if batch:
        idx = np.indices(batch + (len(t),)).reshape(len(batch) + 1, -1)
        for k in range(len(batch)):
            cols[f"set{k}" if len(batch) > 1 else "set"] = idx[k]
        cols["time"] = np.broadcast_to(t, batch + (len(t),)).ravel()
    else:
        cols["time"] = t
    for i, c in enumerate(sim.model.compartment_names):
        cols[c] = x[..., i].ravel()
    for i, o in enumerate(sim.model.output_names):
        cols[o] = y[..., i].ravel()
    return pd.DataFrame(cols)


def simulation_demo(out_dir: str | Path, n_subjects: int = 1000, seed: int = 0) -> list[Path]:
    """The demo: theophylline-like oral dosing (320 mg every 12 h, 6 doses) in the built-in
    one-compartment model, for the typical subject and a virtual population with the model's
    between-subject variability. Writes simulation.csv, population.csv and simulation.png."""
    import pandas as pd

    from ldpk.dosing import Bolus
    from ldpk.model import load_model
    from ldpk.plots import plot_simulation
    from ldpk.solve import simulate

    out = Path(out_dir)
    model = load_model("one_compartment")
    doses = [Bolus(320.0, time=0.0, route="oral", every=12.0, count=6)]
    times = np.arange(0.0, 96.0 + 1e-9, 0.25)
    typical = simulate(model, None, doses, times)
    rng = np.random.default_rng(seed)
    params = {
        p.name: p.value * np.exp(p.iiv * rng.standard_normal(n_subjects))
        for p in model.parameters
        if p.iiv
    }
    pop = simulate(model, params, doses, times)
    cp = np.asarray(pop["cp"])
    q = np.percentile(cp, [5, 50, 95], axis=0)
    quant = pd.DataFrame({"time": times, "cp_p05": q[0], "cp_median": q[1], "cp_p95": q[2]})
    written = [
        write_table(simulation_frame(typical), out / "simulation.csv"),
        write_table(quant, out / "population.csv"),
    ]
    plot_simulation(
        pop, out / "simulation.png", title=f"{model.name}: 320 mg oral q12h, {n_subjects} subjects"
    )
    written.append(out / "simulation.png")
    return written
