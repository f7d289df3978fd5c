"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788) of ldpk's fits.

For each replicate: draw every population parameter (typical values, between-subject SDs,
residual SDs) and every subject's effects from the prior of the fit config, simulate a data
set with the design of a bundled example study (same animals, doses, times, organs, units,
LLOQs), fit it with NUTS and record, per population parameter, the rank of the true value
among the posterior draws and whether the central 90 % interval contains it. A calibrated
method covers the truth in 90 % of replicates (binomial 95 % range for 100 replicates:
84-96 %) and has uniform ranks.

Writes ``benchmarks/results/sbc_<study>.json``. Usage::

    python benchmarks/sbc.py mitochondria_iv_biodistribution --replicates 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import yaml
from numpyro.infer import Predictive

import ldpk
from ldpk.data import example_data_dir, read_study
from ldpk.population import PopulationModel, fit_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_info, machine_info, write_json_atomic  # noqa: E402


def load_study(name: str) -> tuple[ldpk.Model, ldpk.Dataset, dict, np.ndarray]:
    """The example study's model, dataset (read with the config's ``data:`` options), fit
    config (see examples/data/README.md) and each observation's lower limit of quantification
    (the file's LLOQ column; -inf where none)."""
    folder = example_data_dir()
    cfg = yaml.safe_load((folder / f"{name}.fit.yaml").read_text())
    truth = json.loads((folder / f"{name}.truth.json").read_text())
    model = ldpk.load_model(truth["model"])
    species = str(truth.get("species", "")).split(" ")[0]
    if species and model.species and species != model.species:
        model = model.for_species(species)  # e.g. msc_pbpk (human file) fitted to mice
    path = folder / f"{name}.csv"
    ds = read_study(model, path, **(cfg.get("data") or {}))
    frame = pd.read_csv(path)
    cols = {c.upper(): c for c in frame.columns}
    lloq = np.full(ds.n_obs, -np.inf)
    if "LLOQ" in cols:
        lloq = pd.to_numeric(frame[cols["LLOQ"]], errors="coerce").to_numpy(float)[ds.row - 1]
        lloq = np.where(np.isfinite(lloq), lloq, -np.inf)
    return model, ds, cfg, lloq


def replicate(model, ds, cfg, lloq, key) -> tuple[dict, ldpk.Dataset]:
    """True values drawn from the prior of the fit config, and a data set with the study's
    design simulated from them: every observation below its LLOQ is censored (M3), as the
    assay would report it."""
    spec = fit_spec(model, ds, {k: v for k, v in cfg.items() if k not in ("fit", "data")})
    pm = PopulationModel(model, ds, spec)
    draw = Predictive(pm, num_samples=1)(key, None)
    truth = {k: np.asarray(v[0]) for k, v in draw.items()}
    sim = np.zeros(ds.n_obs)
    for out in spec.errors:
        sel = np.flatnonzero(ds.output == model.output_names.index(out))
        sim[sel] = truth[f"obs_{out}"]
    below = sim < lloq
    data = dataclasses.replace(
        ds,
        dv=np.where(below, lloq, sim),
        censored=below.astype(ds.censored.dtype),
        limit=np.where(below, lloq, np.nan),
    )
    return truth, data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="example study name (examples/data/<study>.csv)")
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    model, ds, cfg, lloq = load_study(args.study)
    fit_cfg = {k: v for k, v in cfg.items() if k not in ("fit", "data")}
    key = jax.random.PRNGKey(args.seed)
    rows = []
    t_start = time.perf_counter()
    for r in range(args.replicates):
        truth, data = replicate(model, ds, cfg, lloq, jax.random.fold_in(key, r))
        t0 = time.perf_counter()
        try:
            f = ldpk.fit(
                model, data, config=fit_cfg, chains=args.chains, warmup=args.warmup,
                samples=args.samples, seed=r, progress=False,
            )  # fmt: skip
        except ldpk.LdpkError as exc:
            rows.append({"replicate": r, "error": str(exc)})
            print(f"replicate {r}: failed: {exc}", flush=True)
            continue
        summary = f.summary()
        row = {"replicate": r, "seconds": time.perf_counter() - t0, "params": {}}
        n_div = int(np.asarray(f.posterior["sample_stats"]["diverging"]).sum())
        row["divergences"] = n_div
        for name in f.parameter_names():
            draws = f.draws(name).reshape(-1)
            true = float(truth[name])
            lo, hi = np.quantile(draws, [0.05, 0.95])
            row["params"][name] = {
                "true": true,
                "rank": int(np.sum(draws < true)),
                "n_draws": int(draws.size),
                "covered_90": bool(lo <= true <= hi),
                "r_hat": float(summary.loc[name, "r_hat"]),
                "ess_bulk": float(summary.loc[name, "ess_bulk"]),
            }
        rows.append(row)
        cov = np.mean([p["covered_90"] for p in row["params"].values()])
        print(f"replicate {r}: {row['seconds']:.1f} s, {n_div} divergences, covered {cov:.0%}", flush=True)  # fmt: skip

    ok = [r for r in rows if "params" in r]
    names = sorted({n for r in ok for n in r["params"]})
    coverage = {n: float(np.mean([r["params"][n]["covered_90"] for r in ok if n in r["params"]])) for n in names}  # fmt: skip
    overall = float(np.mean([p["covered_90"] for r in ok for p in r["params"].values()]))
    result = {
        "study": args.study,
        "model": model.name,
        "method": f"NUTS {args.chains} chains x {args.warmup} warm-up + {args.samples} draws",
        "replicates": args.replicates,
        "failed": len(rows) - len(ok),
        "coverage_90_per_parameter": coverage,
        "coverage_90_overall": overall,
        "target": "0.85 <= coverage <= 0.95",
        "wall_s": time.perf_counter() - t_start,
        "machine": machine_info(("jax", "numpyro", "arviz")),
        "git": git_info(),
        "rows": rows,
    }
    path = write_json_atomic(args.out / f"sbc_{args.study}.json", result)
    print(json.dumps({k: result[k] for k in ("coverage_90_per_parameter", "coverage_90_overall", "failed")}, indent=1))  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
