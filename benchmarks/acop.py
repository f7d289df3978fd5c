"""ACOP 2016 Oral_1CPTMM: parameter recovery of a nonlinear (ODE) population model.

120 simulated subjects (4 dose levels, single then multiple oral doses, 58 concentrations
each), one compartment, first-order absorption KA, Michaelis-Menten elimination VM·C/(KM + C),
volume V; 30 % between-subject variability, 20 % proportional residual error (nlmixr2data
``Oral_1CPTMM``, Schoemaker et al. 2019). The data carry every subject's true V, VM, KM, KA, so
the fit is checked against the truth: typical values against the geometric means of the true
individual parameters, individual estimates (the posterior of ``<P>_i``) against the true
ones (Pearson correlation of the logs), between-subject SDs against the SDs of the true logs.

Fitted with ``models/one_compartment_mm.yaml`` (same structure and parameterisation) and a
fit config adding priors: log-normal centred on the model's defaults with SD 1 on the log
scale, half-normal(0.6) on each between-subject SD, proportional error.

The cost of one log-density gradient decides the method: the script measures it first for
the ODE solvers, tolerances and gradient modes of :class:`ldpk.ODEOptions`, estimates the cost
of NUTS and runs NUTS only if that fits the time budget (``--budget-s``), else the Laplace
approximation at the MAP and SVI, and says so in the output.

Writes ``benchmarks/results/acop.json``, keeping the results of the other methods from the file's
earlier runs (marked ``reused_from`` with their commit)::

    .venv/bin/python benchmarks/acop.py [--method auto|nuts|laplace|svi] [--budget-s 1200]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CompileTimer,
    git_info,
    load_average,
    machine_info,
    posterior_functions,
    write_json_atomic,
)

PARAMS = ("V", "VM", "KM", "KA")
#: Columns the fit sees (the true-parameter columns V, VM, KM, KA are left out, so that they
#: can never be read as covariates).
FIT_COLUMNS = ["ID", "TIME", "DV", "MDV", "AMT", "EVID", "CMT"]
DEFAULTS = {"V": 70.0, "VM": 1000.0, "KM": 250.0, "KA": 1.0}


def config() -> dict:
    params = {
        p: {"prior": {"dist": "lognormal", "loc": math.log(v), "scale": 1.0}, "iiv": 0.3}
        for p, v in DEFAULTS.items()
    }
    return {"parameters": params, "error": {"cp": {"model": "proportional"}}}


def reference_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("LDPK_REFERENCE_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def load(path: Path) -> tuple[Any, Any, dict]:
    """The model, the dataset (fit columns only) and the true individual parameters, ordered
    as the dataset's subjects."""
    import pandas as pd

    import ldpk

    frame = pd.read_csv(path)
    model = ldpk.load_model("one_compartment_mm")
    ds = ldpk.read_data(model, frame[FIT_COLUMNS])
    first = frame.groupby("ID").first()
    truth = {p: first.loc[list(ds.subjects), p].to_numpy(dtype=float) for p in PARAMS}
    return model, ds, truth


def potential(model, ds, ode) -> tuple[Any, Any, Any]:
    """(jitted potential, jitted value-and-gradient, a starting point) of the ACOP posterior
    (see ``_common.posterior_functions``)."""
    from ldpk.population import PopulationModel, fit_spec

    pm = PopulationModel(model, ds, fit_spec(model, ds, config()), ode=ode)
    return posterior_functions(pm, ds.dv)


def gradient_timings(model, ds, variants: list[dict], repeats: int = 5) -> list[dict]:
    """Seconds per potential and per gradient evaluation (best of ``repeats`` at perturbed
    points), compile seconds, and the potential's difference from the tightest variant."""
    import jax

    import ldpk

    rows = []
    for v in variants:
        ode = ldpk.ODEOptions(**v)
        la = load_average()
        with CompileTimer() as ct:
            pot, vg, x0 = potential(model, ds, ode)
            val = float(pot(x0))
            jax.block_until_ready(vg(x0))
        xs = [x0 + 0.05 * jax.random.normal(jax.random.PRNGKey(i), x0.shape) for i in range(repeats)]  # fmt: skip
        tp, tg = [], []
        for x in xs:
            t = time.perf_counter()
            jax.block_until_ready(pot(x))
            tp.append(time.perf_counter() - t)
            t = time.perf_counter()
            jax.block_until_ready(vg(x))
            tg.append(time.perf_counter() - t)
        rows.append({
            **v, "potential_at_start": val, "potential_s": min(tp), "gradient_s": min(tg),
            "gradient_s_median": float(np.median(tg)), "compile_s": ct.seconds,
            "n_variables": int(x0.size), "load_average": la,
        })  # fmt: skip
        print(f"  {v}: potential {min(tp) * 1e3:.1f} ms, gradient {min(tg) * 1e3:.1f} ms, compile {ct.seconds:.1f} s, load {la}")  # fmt: skip
    tight = rows[0]["potential_at_start"]
    for r in rows:
        r["potential_minus_first"] = r["potential_at_start"] - tight
    return rows


def recovery(draws: Any, truth: dict) -> dict:
    """Typical values vs geometric means of the truth, individual estimates (posterior medians
    of ``<P>_i``) vs truth, and between-subject SDs vs the SDs of the true logs. ``draws``: a
    :class:`ldpk.Fit` or a mapping of variable name to draws (draws first)."""
    get = draws.draws if hasattr(draws, "draws") else (lambda n: np.asarray(draws[n]))
    out = {}
    for p in PARAMS:
        d = get(p)
        gm = float(np.exp(np.mean(np.log(truth[p]))))
        ind = np.median(get(f"{p}_i"), axis=0)
        lo, hi = np.quantile(get(f"{p}_i"), [0.05, 0.95], axis=0)
        om = get(f"omega_{p}")
        out[p] = {
            "typical_median": float(np.median(d)),
            "typical_q05": float(np.quantile(d, 0.05)),
            "typical_q95": float(np.quantile(d, 0.95)),
            "true_geometric_mean": gm,
            "relative_difference": float(np.median(d)) / gm - 1.0,
            "omega_median": float(np.median(om)),
            "omega_q05": float(np.quantile(om, 0.05)),
            "omega_q95": float(np.quantile(om, 0.95)),
            "true_sd_log": float(np.std(np.log(truth[p]), ddof=1)),
            "sd_log_individual_estimates": float(np.std(np.log(ind), ddof=1)),
            "individual_correlation_log": float(
                np.corrcoef(np.log(ind), np.log(truth[p]))[0, 1]
            ),  # fmt: skip
            "individual_median_abs_log_error": float(
                np.median(np.abs(np.log(ind / truth[p])))
            ),  # fmt: skip
            "individual_90pct_coverage": float(np.mean((truth[p] >= lo) & (truth[p] <= hi))),
        }
    sig = get("sigma_prop_cp")
    out["sigma_prop_cp"] = {
        "median": float(np.median(sig)),
        "q05": float(np.quantile(sig, 0.05)),
        "q95": float(np.quantile(sig, 0.95)),
        "true": 0.2,
    }
    return out


def svi_from_map(model, ds, ode, map_values: dict, steps: int, seed: int, draws: int = 1000) -> dict:  # fmt: skip
    """Mean-field SVI (numpyro AutoNormal, Adam 0.01) on ldpk's population model, started at
    the MAP with the between-subject SDs at their moment estimates, as ldpk's own SVI starts
    (``ldpk.inference._moment_start``). Returns draws of every latent and ``<P>_i`` site, the
    loss trace and timings."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI, Predictive, Trace_ELBO, autoguide
    from numpyro.infer.initialization import init_to_value
    from numpyro.optim import Adam

    from ldpk.inference import _moment_start  # the start of ldpk's own SVI
    from ldpk.population import PopulationModel, fit_spec

    pm = PopulationModel(model, ds, fit_spec(model, ds, config()), ode=ode)
    dv = jnp.asarray(ds.dv)
    init = {k: jnp.asarray(v) for k, v in map_values.items() if k in (*PARAMS, "sigma_prop_cp") or k.startswith(("omega_", "eta_"))}  # fmt: skip
    guide = autoguide.AutoNormal(pm, init_loc_fn=init_to_value(values=_moment_start(pm, init)))
    svi = SVI(pm, guide, Adam(0.01), Trace_ELBO())
    k_run, k_draw = jax.random.split(jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    res = svi.run(k_run, steps, dv, progress_bar=False)
    t_svi = time.perf_counter() - t0
    latent = Predictive(guide, params=res.params, num_samples=draws)(k_draw, dv)
    det = Predictive(pm, posterior_samples=latent, return_sites=[f"{p}_i" for p in PARAMS])(k_draw, None)  # fmt: skip
    losses = np.asarray(res.losses)
    return {
        "draws": {k: np.asarray(v) for k, v in {**latent, **det}.items()},
        "loss_every_100": losses[::100].tolist() + [float(losses[-1])],
        "svi_s": t_svi,
        "total_s": time.perf_counter() - t0,
        "steps": steps,
    }


def earlier_results(path: Path) -> dict:
    """The results of other methods in an earlier results file, each marked ``reused_from``
    (its commit and date) unless it already is, so runs of one method keep the others'."""
    import json

    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    mark = {"commit": old.get("git", {}).get("commit"), "date_utc": old.get("machine", {}).get("date_utc")}  # fmt: skip
    return {name: {**r, "reused_from": r.get("reused_from", mark)} for name, r in old.get("results", {}).items()}  # fmt: skip


def convergence(fit) -> dict:
    import arviz as az

    names = [*PARAMS, *(f"omega_{p}" for p in PARAMS), "sigma_prop_cp"]
    rhat = az.rhat(fit.posterior, var_names=names)
    ess = az.ess(fit.posterior, var_names=names, method="bulk")
    stats = fit.posterior["sample_stats"]
    return {
        "r_hat": {n: float(np.asarray(rhat[n])) for n in names},
        "ess_bulk": {n: float(np.asarray(ess[n])) for n in names},
        "divergences": int(np.asarray(stats["diverging"]).sum()),
        "mean_leapfrog_steps": float(np.asarray(stats["n_steps"]).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="folder holding acop_oral_1cpt_mm.csv")  # fmt: skip
    ap.add_argument("--method", default="auto", choices=["auto", "nuts", "laplace", "svi"])
    ap.add_argument("--budget-s", type=float, default=1200.0, help="most seconds NUTS may take")  # fmt: skip
    ap.add_argument("--solver", default="tsit5")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (mg)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--svi-steps", type=int, default=2000, help="SVI after Laplace (0: none)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-timings", action="store_true", help="skip the gradient timing table")  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/acop.json")
    args = ap.parse_args(argv)

    import jax

    import ldpk

    path = reference_dir(args.data) / "acop_oral_1cpt_mm.csv"
    model, ds, truth = load(path)
    print(f"{ds.n_subjects} subjects, {ds.n_obs} observations")
    chosen = {"solver": args.solver, "rtol": args.rtol, "atol": args.atol, "gradient": "sensitivity"}  # fmt: skip
    variants = [
        {"solver": "kvaerno5", "rtol": 1e-8, "atol": 1e-8, "gradient": "reverse"},
        {"solver": "kvaerno5", "rtol": 1e-8, "atol": 1e-8, "gradient": "sensitivity"},
        {"solver": "kvaerno5", "rtol": 1e-6, "atol": 1e-6, "gradient": "reverse"},
        {"solver": "kvaerno5", "rtol": 1e-6, "atol": 1e-6, "gradient": "sensitivity"},
        {"solver": "tsit5", "rtol": 1e-6, "atol": 1e-6, "gradient": "reverse"},
        {"solver": "tsit5", "rtol": 1e-6, "atol": 1e-6, "gradient": "sensitivity"},
    ]
    if chosen not in variants:
        variants.append(chosen)
    timings = [] if args.skip_timings else gradient_timings(model, ds, variants)
    row = next((r for r in timings if all(r[k] == chosen[k] for k in chosen)), None)
    ode = ldpk.ODEOptions(**chosen)

    # NUTS cost: iterations x leapfrog steps per iteration x gradient; chains share the cores.
    # 2^5 - 1 = 31 steps is typical for hierarchical posteriors of this size (adapted
    # diagonal mass matrix); the measured number, if NUTS runs, is in the output.
    cores = min(len(os.sched_getaffinity(0)), args.chains)
    nuts_estimate = None
    if row is not None:
        n_grad = args.chains * (args.warmup + args.samples) * 31
        nuts_estimate = n_grad * row["gradient_s"] / cores
    method = args.method
    if method == "auto":
        method = "nuts" if nuts_estimate is not None and nuts_estimate <= args.budget_s else "laplace"  # fmt: skip
    reason = (
        f"estimated NUTS time {nuts_estimate:.0f} s ({args.chains} chains x {args.warmup + args.samples} iterations x ~31 gradients x {row['gradient_s'] * 1e3:.0f} ms / {cores} cores) vs budget {args.budget_s:.0f} s"  # fmt: skip
        if nuts_estimate is not None
        else "chosen on the command line"
    )
    print(f"method: {method} ({reason})")

    results: dict[str, Any] = {}
    la = load_average()
    t0 = time.perf_counter()
    with CompileTimer() as ct:
        fit = ldpk.fit(
            model, ds, config=config(), method=method, ode=ode, chains=args.chains,
            warmup=args.warmup, samples=args.samples, seed=args.seed, progress=False, draws=2000,
        )  # fmt: skip
    results[method] = {
        "recovery": recovery(fit, truth),
        "timings_s": {**fit.timings, "wall": time.perf_counter() - t0, "compile": ct.seconds},
        "load_average_before": la,
        "load_average_after": load_average(),
    }
    if method == "nuts":
        results[method]["convergence"] = convergence(fit)
    elif method == "laplace" and args.svi_steps > 0:  # a comparison for Laplace
        la = load_average()
        svi = svi_from_map(model, ds, ode, fit.map_values, args.svi_steps, args.seed)
        results["svi_from_map"] = {
            "recovery": recovery(svi["draws"], truth),
            "timings_s": {"svi": svi["svi_s"], "total": svi["total_s"]},
            "steps": svi["steps"],
            "loss_every_100": svi["loss_every_100"],
            "load_average_before": la,
            "load_average_after": load_average(),
            "note": "numpyro SVI (AutoNormal, Adam 0.01) on ldpk's PopulationModel, from the MAP with the between-subject SDs reset to the SD of the MAP's individual log-effects (benchmarks/acop.py: svi_from_map)",  # fmt: skip
        }
    results = earlier_results(args.out) | results
    for name, r in results.items():
        for p in PARAMS:
            q = r["recovery"][p]
            print(f"{name} {p}: typical {q['typical_median']:.4g} [{q['typical_q05']:.4g}, {q['typical_q95']:.4g}] vs true GM {q['true_geometric_mean']:.4g} ({100 * q['relative_difference']:+.1f} %); omega {q['omega_median']:.3f} vs {q['true_sd_log']:.3f}; corr(log) {q['individual_correlation_log']:.3f}")  # fmt: skip
    result = {
        "what": "ACOP Oral_1CPTMM: one compartment, first-order absorption, Michaelis-Menten elimination; recovery of the true population and individual parameters",  # fmt: skip
        "machine": machine_info(["numpyro", "arviz"]),
        "git": git_info(ROOT),
        "data": str(path),
        "n_subjects": ds.n_subjects,
        "n_observations": ds.n_obs,
        "config": config(),
        "priors_note": "typical values: lognormal centred on the model file's defaults (near the true geometric means) with SD 1 on the log scale; omega: halfnormal(0.6); sigma_prop: halfnormal(0.5)",  # fmt: skip
        "ode": chosen,
        "gradient_timings": timings,
        "method": method,
        "method_reason": reason,
        "nuts_estimate_s": nuts_estimate,
        "results": results,
        "map": {
            k: v
            for k, v in fit.map_values.items()
            if k in (*PARAMS, "sigma_prop_cp") or k.startswith("omega_")
        },  # fmt: skip
        "map_note": "the joint mode of (typical values, omega, standardised effects): in these non-centred coordinates the standardised effects' N(0, 1) prior pulls them to 0 and omega grows to compensate, up to its prior's scale, so the MAP's omegas (and the Laplace approximation around them) overstate the between-subject variability; the individual parameters and typical values are not affected in this way",  # fmt: skip
        "host_devices": jax.local_device_count(),
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
