"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788) of ldpk's fits.

For each replicate: draw every population parameter (typical values, between-subject SDs,
residual SDs) and every subject's effects from the prior of the fit config, simulate a data
set with the design of a bundled example study (same animals, doses, times, organs, units;
observations below the file's LLOQ are censored), fit it (NUTS, or ``--method laplace``) and
record, per population parameter, the rank of the true value among evenly thinned draws and
whether the central 90 % interval contains it. A calibrated method covers the truth in 90 %
of replicates (binomial 95 % range for 100 replicates: 84-96 %) and has uniform ranks.

Each replicate is appended to ``benchmarks/results/sbc_<study>.partial.jsonl`` as it
finishes, so an interrupted run resumes where it stopped (same method, seed and sampler
settings); the summary goes to ``benchmarks/results/sbc_<study>.json``. Replicates refit the
same design, so after the first one the compiled functions come from JAX's persistent cache.

Cost (2-core CI machine): the EV study's config samples the between-subject effects centred
(``fit: parameterization: centred``); non-centred, NUTS needed step sizes of about 6e-3 to
5e-2 and 143-1023 leapfrog steps per iteration on this design, centred 15. One replicate
with 1 chain x (300 + 300) then takes about 1-2 min (the first one, compiling, about 4 min;
replicates with divergences longer), so 100 replicates take a few hours on 2 cores. Running
again with ``--replicates`` at the number finished summarises those without fitting more.
Usage::

    python benchmarks/sbc.py ev_89zr_pet --replicates 100 --chains 1 --warmup 300 --samples 300
    python benchmarks/sbc.py mitochondria_iv_biodistribution --method laplace --samples 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import arviz as az
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
    ap.add_argument("--method", default="nuts", choices=["nuts", "laplace"], help="nuts, or the marginal Laplace approximation (draws = --samples)")  # fmt: skip
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--summarise-only", action="store_true", help="fit nothing: summarise the rows the results file holds")  # fmt: skip
    ap.add_argument("--skip", type=int, nargs="*", default=[], help="replicates to leave for later (e.g. one that another process is running)")  # fmt: skip
    ap.add_argument("--descending", action="store_true", help="replicates from the last down: a second process on the same results file then works from the other end")  # fmt: skip
    args = ap.parse_args(argv)

    model, ds, cfg, lloq = load_study(args.study)
    # the ldpk commit each row was computed with (the code can change between resumed runs)
    commit = (git_info() or {}).get("commit")
    fit_cfg = {k: v for k, v in cfg.items() if k != "data"}  # fit: options apply (sizes from here)
    key = jax.random.PRNGKey(args.seed)
    method = (
        f"NUTS {args.chains} chain(s) x ({args.warmup} warm-up + {args.samples} draws), started from the Laplace approximation at the MAP"
        if args.method == "nuts"
        else f"marginal Laplace approximation, {args.samples} draws"
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"sbc_{args.study}.partial.jsonl"
    rows = _resume(partial, method, args.seed)
    t_start = time.perf_counter()
    with partial.open("a") as log:
        if not rows:
            log.write(json.dumps({"method": method, "seed": args.seed}) + "\n")
        order = range(args.replicates)
        for r in [] if args.summarise_only else reversed(order) if args.descending else order:
            if r in args.skip or r in _done(partial):  # done earlier, or by another process
                continue
            row = {**_one(model, ds, cfg, fit_cfg, lloq, key, r, args), "commit": commit}
            # Before fits freed their compiled functions, the EV run died after 27 fits in one
            # process ("LLVM ERROR: Unable to allocate section memory"); kept as a guard, the
            # persistent cache gives the next replicate its compiled functions back.
            jax.clear_caches()
            log.write(json.dumps(row) + "\n")
            log.flush()
            if "error" in row:
                print(f"replicate {r}: failed: {row['error']}", flush=True)
                continue
            cov = np.mean([p["covered_90"] for p in row["params"].values()])
            print(f"replicate {r}: {row['seconds']:.1f} s, {row['divergences']} divergences, covered {cov:.0%}", flush=True)  # fmt: skip

    # every row in the file (a second process may have added some), the first per replicate
    rows = list({r["replicate"]: r for r in reversed(_resume(partial, method, args.seed))}.values())  # fmt: skip
    rows = sorted((r for r in rows if r["replicate"] < args.replicates), key=lambda r: r["replicate"])  # fmt: skip
    result = {
        "study": args.study,
        "model": model.name,
        "method": method,
        "replicates": args.replicates,
        **summarise(rows),
        "target": "coverage of the central 90 % interval between 0.85 and 0.95 (binomial 95 % range for 100 replicates: 0.84-0.96); ranks uniform",  # fmt: skip
        "wall_s_this_run": time.perf_counter() - t_start,
        "machine": machine_info(("jax", "numpyro", "arviz")),
        "git": git_info(),
        "rows": rows,
    }
    path = write_json_atomic(args.out / f"sbc_{args.study}.json", result)
    print(json.dumps({k: result[k] for k in ("coverage_90_per_parameter", "coverage_90_overall", "rank_uniformity_p", "failed")}, indent=1))  # fmt: skip
    print(f"wrote {path}")
    return 0


#: Draws kept (evenly thinned) for the rank statistic: ranks 0..THIN, nearly independent
#: draws as Talts et al. require.
THIN = 99


def _one(model, ds, cfg, fit_cfg, lloq, key, r: int, args) -> dict:
    """Replicate r: simulate, fit, and per population parameter the rank of the truth among
    thinned draws and whether the central 90 % interval covers it."""
    truth, data = replicate(model, ds, cfg, lloq, jax.random.fold_in(key, r))
    t0 = time.perf_counter()
    try:
        sampler = (
            {"chains": args.chains, "warmup": args.warmup, "samples": args.samples}
            if args.method == "nuts"
            else {"draws": args.samples}
        )  # fmt: skip
        f = ldpk.fit(model, data, config=fit_cfg, method=args.method, seed=r, progress=False, **sampler)  # fmt: skip
    except ldpk.LdpkError as exc:
        return {"replicate": r, "error": str(exc)}
    stats = f.posterior["sample_stats"] if "sample_stats" in f.posterior.children else None
    row = {
        "replicate": r,
        "seconds": time.perf_counter() - t0,
        "divergences": int(np.asarray(stats["diverging"]).sum()) if stats is not None else 0,
        "mean_leapfrog_steps": float(np.asarray(stats["n_steps"]).mean())
        if stats is not None
        else None,  # fmt: skip
        "n_censored": int(np.sum(data.censored != 0)),
        # parameters NUTS sampled centred (parameterization 'auto' decides per replicate)
        "centred": f.posterior.attrs.get("ldpk_centred"),
        # sites the start held at prior medians because the joint mode was degenerate
        "start_held": f.posterior.attrs.get("ldpk_start_held", ""),
        "params": {},
    }
    if "warmup_sample_stats" in f.posterior.children:  # where a slow replicate spent its time
        row["warmup_leapfrog_steps"] = int(np.asarray(f.posterior["warmup_sample_stats"]["n_steps"]).sum())  # fmt: skip
        row["timings"] = dict(f.timings)
    if stats is not None:  # a stuck chain shows here (bulk ESS of 1-5)
        ess = az.ess(f.posterior, var_names=f.parameter_names(), method="bulk")  # the group
        row["min_bulk_ess"] = min(float(np.asarray(v)) for v in ess.data_vars.values())
    for name in f.parameter_names():
        draws = f.draws(name).reshape(-1)
        true = float(truth[name])
        lo, hi = np.quantile(draws, [0.05, 0.95])
        thinned = draws[np.linspace(0, draws.size - 1, THIN).round().astype(int)]
        row["params"][name] = {
            "true": true,
            "median": float(np.median(draws)),
            "rank": int(np.sum(thinned < true)),
            "covered_90": bool(lo <= true <= hi),
        }
    return row


def _done(partial: Path) -> set[int]:
    """Replicates with a row in the results file so far."""
    return {json.loads(line).get("replicate", -1) for line in partial.read_text().splitlines() if line.strip()}  # fmt: skip


def _resume(partial: Path, method: str, seed: int) -> list[dict]:
    """Rows of an earlier, interrupted run with the same method and seed (none if the file
    is absent or empty). A file of another method or seed is never touched: it used to be
    deleted, and ``--summarise-only`` without the run's sampler options deleted the rows of
    a run in progress."""
    if not partial.exists():
        return []
    lines = [json.loads(x) for x in partial.read_text().splitlines() if x.strip()]
    if not lines:
        return []
    if lines[0] != {"method": method, "seed": seed}:
        raise SystemExit(
            f"{partial} holds replicates of {lines[0].get('method')!r} (seed {lines[0].get('seed')}), "
            f"not {method!r} (seed {seed}): give the same --method, --chains, --warmup, --samples "
            "and --seed to resume or summarise them, or move the file away to start afresh"
        )
    return lines[1:]


def summarise(rows: list[dict]) -> dict:
    """Coverage per parameter and overall, and a chi-square test of uniform ranks (10 bins)."""
    from scipy import stats

    ok = [r for r in rows if "params" in r]
    names = sorted({n for r in ok for n in r["params"]})
    coverage = {n: float(np.mean([r["params"][n]["covered_90"] for r in ok])) for n in names}
    uniform = {}
    for n in names:
        ranks = np.array([r["params"][n]["rank"] for r in ok])
        counts = np.histogram(ranks, bins=10, range=(0, THIN + 1))[0]
        uniform[n] = float(stats.chisquare(counts).pvalue) if len(ranks) >= 20 else None
    return {
        "completed": len(ok),
        "failed": len(rows) - len(ok),
        "coverage_90_per_parameter": coverage,
        "coverage_90_overall": float(np.mean(list(coverage.values()))) if coverage else None,
        "rank_uniformity_p": uniform,
        "divergent_replicates": int(sum(r["divergences"] > 0 for r in ok)),
        # replicates whose chain mixed poorly (bulk ESS < 100 for some parameter), of those
        # that recorded it
        "low_ess_replicates": int(sum(r.get("min_bulk_ess", np.inf) < 100 for r in ok)),
        "start_held_replicates": int(sum(bool(r.get("start_held")) for r in ok)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
