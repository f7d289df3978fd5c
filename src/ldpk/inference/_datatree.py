"""Conversion of draws to an ArviZ DataTree: posterior, posterior predictive, log likelihood,
observed and constant data, sample statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive, log_likelihood

from ldpk.inference._predict import _draws_per_chunk, _over_draws
from ldpk.population import PopulationModel


def _to_datatree(
    pm: PopulationModel, data: tuple, samples: dict, extra: dict, key: Any, method: str
) -> Any:
    """Posterior, posterior predictive, log likelihood, observed and constant data as a DataTree."""
    import arviz as az

    ds = pm.dataset
    chains, draws = next(iter(samples.values())).shape[:2]
    flat = {k: jnp.asarray(v).reshape(chains * draws, *np.shape(v)[2:]) for k, v in samples.items()}
    latent = {k: v for k, v in flat.items() if not k.startswith("obs_")}

    sites = [f"obs_{o}" for o in pm.spec.errors]

    def chunk_of_draws(latent: dict, key: Any, data: tuple) -> tuple[dict, dict]:
        pp = Predictive(pm, posterior_samples=latent, return_sites=sites, parallel=True)
        return pp(key, None, data[1]), log_likelihood(pm, latent, *data, parallel=True)

    pp, ll = _over_draws(chunk_of_draws, latent, key, data, _draws_per_chunk(pm))

    def shaped(d: Mapping[str, Any]) -> dict:
        return {k: np.asarray(v).reshape(chains, draws, *np.shape(v)[1:]) for k, v in d.items()}

    names = pm.model.output_names
    dims: dict[str, list[str]] = {"pred": ["obs"]}
    coords: dict[str, Any] = {"subject": list(map(str, ds.subjects)), "obs": np.arange(ds.n_obs)}
    for n in samples:
        if n.startswith("eta_study_"):
            dims[n] = ["study"]
            coords["study"] = list(map(str, ds.study_names or ("all",)))
        elif n.startswith("eta_") or n.endswith("_i"):
            dims[n] = ["subject"]
    observed = {}
    for o in pm.spec.errors:
        sel = np.flatnonzero(ds.output == names.index(o))
        dims[f"obs_{o}"] = [f"obs_id_{o}"]  # not the variable's own name (it would be a coordinate)
        coords[f"obs_id_{o}"] = sel
        observed[f"obs_{o}"] = ds.dv[sel]
    post = {k: np.asarray(v) for k, v in samples.items()}
    groups: dict[str, Any] = {
        "posterior": post,
        "posterior_predictive": shaped(pp),
        "log_likelihood": shaped(ll),
        "observed_data": observed,
        "constant_data": {
            "obs_subject": ds.subject,
            "obs_time": ds.time,
            "obs_output": ds.output,
            "obs_censored": ds.censored,
            "obs_row": ds.row,
        },  # fmt: skip
    }
    if extra and method == "nuts":
        extra = dict(extra)
        if warm := extra.pop("warmup", None):  # ArviZ's group for the warm-up's statistics
            groups["warmup_sample_stats"] = {k: np.asarray(v) for k, v in warm.items()}
        groups["sample_stats"] = {k: np.asarray(v) for k, v in extra.items()}
    for k in ("obs_subject", "obs_time", "obs_output", "obs_censored", "obs_row"):
        dims[k] = ["obs"]
    tree = az.from_dict(groups, coords=coords, dims=dims, save_warmup=True)
    tree.attrs["ldpk_method"] = method
    tree.attrs["ldpk_model"] = pm.model.name
    return tree
