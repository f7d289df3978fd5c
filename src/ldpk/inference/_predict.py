"""Evaluating the model over posterior draws: deterministic sites of latent draws, chunked
vectorised evaluation bounded by memory (:func:`_over_draws`), and the records for predicting
observed subjects at new times."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from ldpk._compiled import jit
from ldpk.model import Model
from ldpk.population import PopulationModel


def _with_times(model: Model, rec: Any, times: np.ndarray) -> Any:
    """A subject's dose and reset records with observation records at ``times`` instead of
    theirs (covariate values come from the dose records, last value carried forward)."""
    from ldpk.dosing import make_records

    rows = []
    for i in np.flatnonzero(np.isin(rec.evid, (1, 3, 4))):
        row = {k: getattr(rec, k)[i] for k in ("time", "evid", "amt", "rate", "ii", "addl", "ss")}
        row["route"] = _route_name(model, int(rec.route[i]))
        row.update(dict(zip(model.covariate_names, rec.cov[i], strict=True)))
        rows.append(row)
    rows += [{"time": t, "evid": 2} for t in times]  # covariates carried from the dose records
    rows.sort(key=lambda r: (r["time"], r["evid"] == 2))
    return make_records(model, rows, where=rec.where)


def _route_name(model: Model, index: int) -> str:
    names = model.route_names
    return (
        names[index] if index < len(names) else f"cmt:{model.compartment_names[index - len(names)]}"
    )


def _with_deterministic(pm: PopulationModel, latent: dict, key: Any) -> dict:
    """Latent draws plus the model's deterministic sites, as (1 chain, draws, ...) arrays."""
    out = Predictive(pm, posterior_samples=latent)(key, None)
    out = {**latent, **{k: v for k, v in out.items() if not k.startswith("obs_")}}
    return {k: np.asarray(v)[None] for k, v in out.items()}


#: Memory (bytes) that one chunk of posterior draws may take when predictions and
#: log-likelihoods are computed for the DataTree (vectorised within a chunk).
CHUNK_BYTES = 256 * 2**20


def _draw_bytes(pm: PopulationModel, states: int) -> int:
    """Memory of one draw's largest kernel intermediates with ``states`` compartments solved:
    about observations × states² float64 values (transition matrices), with a few
    temporaries each (8 × 8 bytes)."""
    return 8 * 8 * max(pm.dataset.n_obs, 1) * states * states


def _draws_per_chunk(pm: PopulationModel) -> int:
    """Draws evaluated together (see :func:`_draw_bytes`)."""
    return max(1, CHUNK_BYTES // _draw_bytes(pm, len(pm.model.compartments)))


def _over_draws(fn: Any, latent: dict, key: Any, data: tuple, chunk: int) -> Any:
    """fn(latent_chunk, key, data) over the draws (leading axis of ``latent``), ``chunk`` draws
    at a time (vectorised within, sequential across chunks), results concatenated; compiled
    per call. ``fn`` is a new closure in every fit: as a static argument of a module-level
    jit, each fit's closure, and through it its model and compiled functions, stayed in
    that jit's cache for the life of the process (8 MB per MAP fit of the theophylline
    model, without bound)."""
    return jit(partial(_chunked, fn, chunk))(latent, key, data)


def _chunked(fn: Any, chunk: int, latent: dict, key: Any, data: tuple) -> Any:
    n = next(iter(latent.values())).shape[0]
    chunk = min(chunk, n)
    k = -(-n // chunk)
    idx = jnp.minimum(jnp.arange(k * chunk), n - 1).reshape(k, chunk)  # the last chunk padded
    keys = jax.random.split(key, k)
    out = jax.lax.map(
        lambda a: fn(jax.tree.map(lambda v: v[a[0]], latent), a[1], data), (idx, keys)
    )
    return jax.tree.map(lambda v: v.reshape(k * chunk, *v.shape[2:])[:n], out)
