"""Bayesian fitting: ldpk (numpyro NUTS) against PyStan 3 on the same population model and data.

The problem: 12 subjects, one oral dose of 320 mg each at t = 0 and 10 plasma concentrations per
subject (0.25 ... 24 h); a one-compartment model with first-order absorption (CL, V, KA),
log-normal between-subject variability on CL and V (non-centred, ``P_i = P · exp(ω z_i)``,
``z_i ~ N(0, 1)``) and proportional residual error. The data set is simulated inside this script
with a fixed seed from the analytic solution (NumPy, neither tool), and the true values are
written to the results. (The shipped ``theo_sd`` table was not used: its pre-dose observations
are positive where the model predicts 0, which a proportional error model cannot fit, and a
simulated set has known true values and the balanced design of the prototype measurements.)

Both tools fit the same posterior: the same priors (log-normal on CL, V, KA with the model
library's locations and scale 1; half-normal(0.5) on ω_CL, ω_V and on the proportional SD),
4 chains × 1000 warm-up + 1000 draws, target acceptance 0.8, maximum tree depth 10. NUTS can
sample the between-subject effects in two coordinate systems of that one posterior:
non-centred (z_i) or centred (log P_i). Stan samples the coordinates its program declares:
the reference programs are non-centred, as in the prototype measurements;
``one_cpt_oral_*_centred.stan`` are the centred ones (``--stan-parameterizations``). ldpk runs
with its default, ``parameterization='auto'``, which chooses per parameter from the curvature
of the posterior at the MAP (centred here: ten samples per subject pin CL_i and V_i down), or
with ``--ldpk-parameterizations`` given. The headline speedups compare ldpk's default with the
reference Stan program; ``like_for_like`` compares runs that sampled the same coordinates. Starting points: ldpk's NUTS chains start from draws of the Laplace approximation at the
MAP (found by BFGS from the prior medians); Stan's from the prior medians jittered by 10 %
(``--stan-init``; with Stan's default random inits, uniform(-2, 2) on the unconstrained scale, a
chain can start and stay in the flip-flop mode KA < CL/V and R-hat is 1.5). Two versions:

* closed form: ldpk's analytic kernel (``kernel="analytic"``, sums of exponentials over the
  model's transfer paths, what ``kernel="auto"`` picks for this model) and the analytic
  solution in ``benchmarks/stan/one_cpt_oral_closed.stan``;
* ODE: ldpk's ODE kernel (diffrax, ``kernel="ode"``, ``--ode-solver``, default Dopri5) and
  ``ode_rk45_tol`` (Dormand-Prince 5(4)) in ``benchmarks/stan/one_cpt_oral_ode.stan`` (and
  ``ode_bdf_tol`` with ``--stan-bdf``), both at rtol = atol = 1e-6 (Stan's defaults for
  ode_rk45).

Each measurement runs in its own subprocess, started once the 1-minute load average has fallen
below ``SETTLE_LOAD`` (at most 2 minutes' wait: the process before leaves it high). ldpk, three
fresh processes: a cold fit with the persistent caches off (``LDPK_NO_CACHE=1``); a fit that
fills new, empty persistent caches (JAX's compilation cache and ldpk's executables, see
``ldpk._compiled``); a warm fit reading them, then a second fit in that process. ldpk's time
to result is the warm fit (the first fit of a process, once the model has been compiled
before: what a user sees on the second run of a script), its compile time the cold fit minus
the warm one; ``import arviz`` (which ``fit`` does on first use, 5-30 s) is done before
timing, as ``import stan`` is.
Stan: ``stan.build`` with httpstan's cached model deleted (compile time), ``stan.build`` again
(cached) and ``model.sample`` (time to result). Chains run in parallel in both: ldpk over
``--host-devices`` JAX CPU devices (``LDPK_HOST_DEVICES``; if a parallel fit fails, the script
records the error and repeats with sequential chains), PyStan over httpstan's process pool (one
process per core). ldpk's ODE kernel is differentiated with ``ODEOptions(gradient=...)``
(``--ode-gradient``, default 'sensitivity' where ldpk has the option: with the reverse-mode
default, the MAP's Hessian, forward over reverse through diffrax, fails).

Reported per tool and version: time to result, compile time, min bulk ESS over the population
parameters (and over every parameter, between-subject effects included), ESS/s, max R-hat
(converged when ≤ 1.01), divergences; the speedups PyStan time ÷ ldpk time; and whether the
posteriors agree: for each population parameter |Δmean| ≤ 4·sqrt(mcse_ldpk² + mcse_stan²) (the
criterion; |Δmean| / posterior sd is recorded too).

Run from the repository root (needs the ``bench`` extra: ``pip install -e .[bench]``)::

    .venv/bin/python benchmarks/inference_vs_stan.py            # full run (tens of minutes)
    .venv/bin/python benchmarks/inference_vs_stan.py --quick    # smoke run, 4 × (150 + 150)

Writes ``benchmarks/results/inference_vs_stan.json`` (``--out`` to change; ``--quick`` writes to a
temporary folder unless ``--out`` is given) and prints a markdown summary. Timings are only
meaningful on an otherwise idle machine: the load average is recorded before every measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    RESULTS_DIR,
    CompileTimer,
    fmt_num,
    git_info,
    load_average,
    machine_info,
    markdown_table,
    settle,
    write_json_atomic,
)

# ---- the benchmark problem ------------------------------------------------------------------
SEED = 20240617  # data simulation
FIT_SEED = 1  # both samplers
N_SUBJECTS = 12
DOSE = 320.0  # mg, oral bolus at t = 0
TIMES = np.array([0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0])  # h
TRUE = {"CL": 2.75, "V": 31.8, "KA": 1.59, "omega_CL": 0.3, "omega_V": 0.2, "sigma_prop_cp": 0.1}
# Priors, identical in both tools: log-normal(loc, scale) on typical values (the model library's
# one_compartment priors), half-normal(scale) on omega and on the proportional error SD.
PRIOR_LOC = {"CL": 1.0116, "V": 3.4595, "KA": 0.4637}
PRIOR_SCALE = {"CL": 1.0, "V": 1.0, "KA": 1.0}
OMEGA_SCALE = {"CL": 0.5, "V": 0.5}
SIGMA_SCALE = 0.5
RTOL = ATOL = 1e-6  # both ODE integrators
MAX_NUM_STEPS = 100_000
POPULATION = ("CL", "V", "KA", "omega_CL", "omega_V", "sigma_prop_cp")
RHAT_MAX = 1.01
QUIET_LOAD = 1.3  # 1-min load average below which timings on the 2-core machine are valid
SETTLE_LOAD = 0.8  # each process starts once the 1-min load is below this (at most 2 min)
AGREE_K = 4.0  # |Δmean| ≤ AGREE_K · sqrt(mcse_ldpk² + mcse_stan²)

STAN_FILES = {
    ("closed_form", "noncentred"): "one_cpt_oral_closed.stan",
    ("ode", "noncentred"): "one_cpt_oral_ode.stan",
    ("closed_form", "centred"): "one_cpt_oral_closed_centred.stan",
    ("ode", "centred"): "one_cpt_oral_ode_centred.stan",
}
LDPK_KERNEL = {"closed_form": "analytic", "ode": "ode"}

MODEL: dict[str, Any] = {
    "name": "bench_1cmt_oral",
    "description": "One compartment, first-order absorption (Bayesian fitting benchmark)",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {
        "depot": {"unit": "mg", "description": "absorption depot"},
        "central": {"unit": "mg", "description": "central compartment"},
    },
    "parameters": {
        name: {
            "value": TRUE[name],
            "unit": unit,
            "description": desc,
            "prior": {"dist": "lognormal", "loc": PRIOR_LOC[name], "scale": PRIOR_SCALE[name]},
        }
        for name, unit, desc in (
            ("CL", "L/h", "clearance"),
            ("V", "L", "volume of distribution"),
            ("KA", "1/h", "absorption rate constant"),
        )
    },
    "flows": [
        {"from": "depot", "to": "central", "k": "KA"},
        {"from": "central", "k": "CL / V"},
    ],
    "routes": {"oral": {"target": "depot"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
}
FIT_CONFIG: dict[str, Any] = {
    "parameters": {
        name: {"iiv": {"dist": "halfnormal", "scale": OMEGA_SCALE[name]}} for name in OMEGA_SCALE
    },
    "error": {
        "cp": {
            "model": "proportional",
            "proportional": {"dist": "halfnormal", "scale": SIGMA_SCALE},
        }
    },
}


def simulate_data() -> dict[str, Any]:
    """The data set (fixed seed), from the analytic solution with NumPy: per subject CL and V
    log-normal around the true typical values, DV = C · (1 + σ ε)."""
    rng = np.random.default_rng(SEED)
    eta = rng.standard_normal((N_SUBJECTS, 2))
    cl = TRUE["CL"] * np.exp(TRUE["omega_CL"] * eta[:, 0])
    v = TRUE["V"] * np.exp(TRUE["omega_V"] * eta[:, 1])
    ka, k = TRUE["KA"], cl / v
    t = TIMES[None, :]
    conc = DOSE * ka / (v * (ka - k))[:, None] * (np.exp(-k[:, None] * t) - np.exp(-ka * t))
    dv = conc * (1.0 + TRUE["sigma_prop_cp"] * rng.standard_normal(conc.shape))
    return {"CL_i": cl, "V_i": v, "conc": conc, "dv": dv}


def nonmem_frame(sim: dict[str, Any]) -> Any:
    """The data set as a NONMEM-style table for ldpk (dose into CMT 1 = depot)."""
    import pandas as pd

    rows = []
    for i in range(N_SUBJECTS):
        rows.append({"ID": i + 1, "TIME": 0.0, "DV": 0.0, "AMT": DOSE, "EVID": 1, "CMT": 1})
        for t, y in zip(TIMES, sim["dv"][i], strict=True):
            rows.append({"ID": i + 1, "TIME": t, "DV": y, "AMT": 0.0, "EVID": 0, "CMT": 2})
    return pd.DataFrame(rows)


def stan_data(sim: dict[str, Any], version: str, use_bdf: bool = False) -> dict[str, Any]:
    n_t = TIMES.size
    data: dict[str, Any] = {
        "N": N_SUBJECTS,
        "n_obs": N_SUBJECTS * n_t,
        "start": [1 + i * n_t for i in range(N_SUBJECTS)],
        "end": [(i + 1) * n_t for i in range(N_SUBJECTS)],
        "dose": [DOSE] * N_SUBJECTS,
        "time": np.tile(TIMES, N_SUBJECTS).tolist(),
        "dv": sim["dv"].reshape(-1).tolist(),
        "prior_loc": [PRIOR_LOC[p] for p in ("CL", "V", "KA")],
        "prior_scale": [PRIOR_SCALE[p] for p in ("CL", "V", "KA")],
        "omega_scale": [OMEGA_SCALE[p] for p in ("CL", "V")],
        "sigma_scale": SIGMA_SCALE,
    }
    if version == "ode":
        data.update(rtol=RTOL, atol=ATOL, max_num_steps=MAX_NUM_STEPS, use_bdf=int(use_bdf))
    return data


def stan_inits(chains: int, centred: bool = False) -> list[dict[str, Any]]:
    """Stan's starting points: the prior medians (typical values exp(loc), ω and σ at the
    half-normal median 0.674·scale), between-subject effects 0 (centred: log P_i = log P),
    each value multiplied by exp(0.1·N(0, 1)) per chain (fixed seed). ldpk's MAP search starts from the same medians;
    Stan's default (uniform(-2, 2) on the unconstrained scale) can start chains in the
    flip-flop mode (KA < CL/V), where they stay."""
    rng = np.random.default_rng(SEED + 1)
    med = {p: math.exp(PRIOR_LOC[p]) for p in PRIOR_LOC}
    med |= {f"omega_{p}": 0.674 * OMEGA_SCALE[p] for p in OMEGA_SCALE}
    med["sigma_prop_cp"] = 0.674 * SIGMA_SCALE
    out = []
    for _ in range(chains):
        d: dict[str, Any] = {k: v * math.exp(0.1 * rng.standard_normal()) for k, v in med.items()}
        if centred:
            d |= {f"log_{p}_i": [math.log(d[p])] * N_SUBJECTS for p in ("CL", "V")}
        else:
            d |= {"eta_CL": [0.0] * N_SUBJECTS, "eta_V": [0.0] * N_SUBJECTS}
        out.append(d)
    return out


# ---- summaries (the same ArviZ code for both tools) -------------------------------------------
def summarise(tree: Any) -> dict[str, Any]:
    """Per population parameter mean, sd, MCSE, bulk and tail ESS and R-hat; min bulk ESS and
    max R-hat over population parameters and over every parameter (eta_* included)."""
    import arviz as az

    names = [*POPULATION, "eta_CL", "eta_V"]
    s = az.summary(tree, var_names=names, kind="all", round_to="none")
    pop = s.loc[list(POPULATION)]
    params = {
        name: {
            k: float(pop.loc[name, k])
            for k in ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
        }
        for name in POPULATION
    }
    return {
        "parameters": params,
        "min_ess_bulk": float(pop["ess_bulk"].min()),
        "min_ess_bulk_all": float(s["ess_bulk"].min()),
        "max_r_hat": float(pop["r_hat"].max()),
        "max_r_hat_all": float(s["r_hat"].max()),
    }


# ---- workers (each in its own process) --------------------------------------------------------
def _ldpk_worker(args: argparse.Namespace) -> dict[str, Any]:
    import arviz  # noqa: F401  (imported by fit(); a one-time start-up cost like `import stan`)
    import jax

    import ldpk

    model = ldpk.build_model(MODEL)
    ds = ldpk.read_data(model, nonmem_frame(simulate_data()))
    ode_kw: dict[str, Any] = {"solver": args.ode_solver, "rtol": RTOL, "atol": ATOL}
    if args.ode_gradient != "default":
        ode_kw["gradient"] = args.ode_gradient  # ODEOptions.gradient, where ldpk has it
    ode = ldpk.ODEOptions(max_steps=MAX_NUM_STEPS, **ode_kw)
    fits = []
    fit = None
    executables = getattr(getattr(ldpk, "_compiled", None), "stats", {})  # where ldpk has it
    for _ in range(args.fits):
        before = dict(executables)
        load = load_average()
        with CompileTimer() as ct:
            t0 = time.perf_counter()
            fit = ldpk.fit(
                model, ds, config=FIT_CONFIG, method="nuts", chains=args.chains,
                warmup=args.warmup, samples=args.samples, seed=FIT_SEED, progress=False,
                kernel=LDPK_KERNEL[args.version], ode=ode, parameterization=args.parameterization,
            )  # fmt: skip
            wall = time.perf_counter() - t0
        ss = fit.posterior["sample_stats"]
        fits.append({
            "wall_s": wall,
            "map_s": fit.timings.get("map_s"),
            "warmup_s": fit.timings.get("warmup_s"),
            "sampling_s": fit.timings.get("sampling_s"),
            "other_s": wall - sum(fit.timings.get(k, 0.0) for k in ("map_s", "warmup_s", "sampling_s")),  # fmt: skip
            "jax_compile_s": ct.seconds,
            "load_average_before": load,
            "divergences": int(np.asarray(ss["diverging"]).sum()),
            "leapfrog_steps_draws": int(np.asarray(ss["n_steps"]).sum()),
            # compiled functions loaded from ldpk's executables cache, compiled and stored
            # there, or compiled as by jax.jit (see ldpk._compiled)
            "executables": {k: v - before.get(k, 0) for k, v in executables.items()},
        })  # fmt: skip
    assert fit is not None
    return {
        "devices": len(jax.devices()),
        "chain_method": "parallel" if jax.local_device_count() >= args.chains else "sequential",
        "fits": fits,
        "summary": summarise(fit.posterior),
        "centred": fit.posterior.attrs.get("ldpk_centred", ""),
    }


def _stan_worker(args: argparse.Namespace) -> dict[str, Any]:
    import arviz as az
    import httpstan.cache
    import httpstan.models
    import stan

    file = STAN_FILES[args.version, args.parameterization]
    code = (HERE / "stan" / file).read_text()
    data = stan_data(simulate_data(), args.version, use_bdf=args.stan_solver == "bdf")
    out: dict[str, Any] = {"stan_file": f"benchmarks/stan/{file}"}
    if args.compile:
        name = httpstan.models.calculate_model_name(code)
        with contextlib.suppress(FileNotFoundError, KeyError):
            httpstan.cache.delete_model_directory(name)
        out["load_average_before_compile"] = load_average()
        t0 = time.perf_counter()
        stan.build(code, data=data, random_seed=FIT_SEED)
        out["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = stan.build(code, data=data, random_seed=FIT_SEED)
    out["build_cached_s"] = time.perf_counter() - t0
    out["load_average_before"] = load_average()
    kw: dict[str, Any] = {}
    if args.stan_init == "prior-median":
        kw["init"] = stan_inits(args.chains, centred=args.parameterization == "centred")
    t0 = time.perf_counter()
    fit = model.sample(num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples, **kw)  # fmt: skip
    out["sampling_s"] = time.perf_counter() - t0

    def by_chain(name: str) -> np.ndarray:
        # fit._draws is (flat parameters, draws, chains); fit[name] would merge chains and draws
        x = np.transpose(fit._draws[list(fit._parameter_indexes(name))], (2, 1, 0))
        return x[..., 0] if name in POPULATION else x  # (chains, draws[, subjects])

    post = {p: by_chain(p) for p in (*POPULATION, "eta_CL", "eta_V")}
    tree = az.from_dict({"posterior": post})
    out["divergences"] = int(np.asarray(fit["divergent__"]).sum())
    out["leapfrog_steps_draws"] = int(np.asarray(fit["n_leapfrog__"]).sum())
    out["summary"] = summarise(tree)
    return out


def _ode_has_gradient() -> bool:
    """Whether this ldpk's ODEOptions has the ``gradient`` field (added after 0.1.0)."""
    import ldpk

    return "gradient" in ldpk.ODEOptions.__dataclass_fields__


# ---- orchestration ----------------------------------------------------------------------------
def _spawn(
    tool: str, version: str, args: argparse.Namespace, env: dict[str, str], extra: list[str]
) -> dict[str, Any]:
    """Run one worker in a fresh process; its result, or its error and output tail."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--version", version,
            "--worker-out", str(out), "--chains", str(args.chains), "--warmup", str(args.warmup),
            "--samples", str(args.samples), "--ode-solver", args.ode_solver,
            "--ode-gradient", args.ode_gradient, "--stan-init", args.stan_init, *extra,
        ]  # fmt: skip
        full_env = {**os.environ, **env}
        label = f"{tool} {version} {' '.join(extra)} {' '.join(f'{k}={v}' for k, v in env.items())}"
        settle(SETTLE_LOAD)
        print(f"  running {label.strip()} (load {load_average()})", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout + proc.stderr)[-4000:]
            print(f"  FAILED ({proc.returncode}):\n{tail}", file=sys.stderr, flush=True)
            return {"error": tail, "returncode": proc.returncode, "env": env}
        res = json.loads(out.read_text())
        res["process_wall_s"] = wall
        res["env"] = env
        return res


def run_ldpk(version: str, args: argparse.Namespace, param: str) -> dict[str, Any]:
    """Three fresh processes: a cold fit with the persistent cache off (LDPK_NO_CACHE=1); a fit
    that fills a new persistent cache; a warm fit reading it, repeated in the same process.
    Chains in parallel over ``--host-devices`` devices; if that fails, sequential (1 device)."""
    attempts = []
    for devices in dict.fromkeys([args.host_devices, 1]):
        base = {"LDPK_HOST_DEVICES": str(devices)}
        flags = ["--parameterization", param]
        cold = _spawn("ldpk", version, args, {**base, "LDPK_NO_CACHE": "1"}, ["--fits", "1", *flags])  # fmt: skip
        if "error" in cold:
            attempts.append({"host_devices": devices, "error": cold["error"]})
            continue
        if args.cold_only:
            return {"host_devices": devices, "failed_attempts": attempts, "cold": cold}
        with tempfile.TemporaryDirectory(prefix="ldpk-bench-cache-") as cache:
            env = {**base, "LDPK_CACHE_DIR": cache}
            fill = _spawn("ldpk", version, args, env, ["--fits", "1", *flags])
            warm = _spawn("ldpk", version, args, env, ["--fits", "2", *flags])
        return {
            "host_devices": devices, "failed_attempts": attempts,
            "cold": cold, "fill_cache": fill, "warm": warm,
        }  # fmt: skip
    return {"failed_attempts": attempts, "error": "every attempt failed"}


def run_stan(version: str, args: argparse.Namespace, solver: str, param: str) -> dict[str, Any]:
    flags = ["--compile", "--stan-solver", solver, "--parameterization", param]
    return _spawn("stan", version, args, {}, flags)


def ldpk_row(version: str, res: dict[str, Any], param: str) -> dict[str, Any]:
    """Time to result: the warm fit (first fit of a fresh process with the persistent cache
    filled); compile time: the cold fit (cache off) minus that. With --cold-only, the cold fit
    is the time to result and compile time is not measured."""
    stages = ("cold",) if "warm" not in res and "error" not in res else ("cold", "fill_cache", "warm")  # fmt: skip
    bad = [k for k in stages if k not in res or "error" in res[k]]
    if "error" in res or bad:
        return {"tool": "ldpk", "version": version, "parameterization": param, "error": {"failed": bad, **res}}  # fmt: skip
    cold = res["cold"]["fits"][0]
    if "warm" in res:
        fill = res["fill_cache"]["fits"][0]
        warm, repeat = res["warm"]["fits"]
        proc = res["warm"]
        compile_s = cold["wall_s"] - warm["wall_s"]
    else:
        fill = repeat = None
        warm, proc, compile_s = cold, res["cold"], None
    summ = proc["summary"]
    return {
        "tool": "ldpk",
        "version": version,
        "method": f"kernel={LDPK_KERNEL[version]}",
        "parameterization": param,
        # what NUTS sampled centred ('auto' decides per parameter from the MAP)
        "centred": proc.get("centred", ""),
        "chain_method": proc["chain_method"],
        "host_devices": res["host_devices"],
        "time_to_result_s": warm["wall_s"],
        "compile_s": compile_s,
        "cold_only": "warm" not in res,
        "fits": {"cold": cold, "fill_cache": fill, "warm": warm, "warm_repeat": repeat},
        "min_ess_bulk": summ["min_ess_bulk"],
        "min_ess_bulk_all": summ["min_ess_bulk_all"],
        "ess_per_s": summ["min_ess_bulk"] / warm["wall_s"],
        "max_r_hat": summ["max_r_hat"],
        "max_r_hat_all": summ["max_r_hat_all"],
        "converged": summ["max_r_hat_all"] <= RHAT_MAX,
        "divergences": warm["divergences"],
        "load_average_before": warm["load_average_before"],
        "failed_attempts": res["failed_attempts"],
        "summary": summ,
    }


def stan_row(version: str, res: dict[str, Any], solver: str, param: str) -> dict[str, Any]:
    if "error" in res:
        return {"tool": "pystan", "version": version, "solver": solver, "parameterization": param, "error": res}  # fmt: skip
    summ = res["summary"]
    method = {"closed_form": "analytic", "rk45": "ode_rk45_tol", "bdf": "ode_bdf_tol"}
    return {
        "tool": "pystan",
        "version": version,
        "method": method["closed_form" if version == "closed_form" else solver],
        "parameterization": param,
        "centred": "CL,V" if param == "centred" else "",
        "stan_file": res["stan_file"],
        "time_to_result_s": res["sampling_s"],
        "compile_s": res.get("compile_s"),
        "build_cached_s": res["build_cached_s"],
        "min_ess_bulk": summ["min_ess_bulk"],
        "min_ess_bulk_all": summ["min_ess_bulk_all"],
        "ess_per_s": summ["min_ess_bulk"] / res["sampling_s"],
        "max_r_hat": summ["max_r_hat"],
        "max_r_hat_all": summ["max_r_hat_all"],
        "converged": summ["max_r_hat_all"] <= RHAT_MAX,
        "divergences": res["divergences"],
        "leapfrog_steps_draws": res["leapfrog_steps_draws"],
        "load_average_before": res["load_average_before"],
        "load_average_before_compile": res.get("load_average_before_compile"),
        "summary": summ,
    }


def agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per population parameter: |Δmean|, its Monte Carlo SE, |Δmean|/sd; ok when both runs
    converged and |Δmean| ≤ AGREE_K · sqrt(mcse_a² + mcse_b²) for every parameter."""
    out: dict[str, Any] = {"criterion": f"|mean_ldpk - mean_stan| <= {AGREE_K:g} * sqrt(mcse_ldpk^2 + mcse_stan^2)"}  # fmt: skip
    per = {}
    for p in POPULATION:
        x, y = a["summary"]["parameters"][p], b["summary"]["parameters"][p]
        d = abs(x["mean"] - y["mean"])
        se = math.hypot(x["mcse_mean"], y["mcse_mean"])
        sd = 0.5 * (x["sd"] + y["sd"])
        per[p] = {
            "mean_ldpk": x["mean"], "mean_stan": y["mean"], "abs_diff": d,
            "mcse_combined": se, "z": d / se, "diff_over_sd": d / sd,
            "ok": d <= AGREE_K * se, "within_0.2_sd": d <= 0.2 * sd,
        }  # fmt: skip
    out["parameters"] = per
    out["both_converged"] = bool(a["converged"] and b["converged"])
    # MCSE is only meaningful for converged chains: without convergence, no verdict
    out["ok"] = out["both_converged"] and all(v["ok"] for v in per.values())
    out["all_within_0.2_sd"] = all(v["within_0.2_sd"] for v in per.values())
    out["max_z"] = max(v["z"] for v in per.values())
    out["max_diff_over_sd"] = max(v["diff_over_sd"] for v in per.values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 chains × (150 + 150): a smoke run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--versions", nargs="+", default=["closed_form", "ode"], choices=["closed_form", "ode"])  # fmt: skip
    ap.add_argument("--tools", nargs="+", default=["ldpk", "stan"], choices=["ldpk", "stan"])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--ode-solver", default="dopri5", help="ldpk's ODE solver (dopri5 = Stan's rk45 method; tsit5, kvaerno5)")  # fmt: skip
    ap.add_argument("--ode-gradient", default=None, help="ldpk's ODEOptions.gradient (reverse, forward, sensitivity; 'default' leaves it unset); default: sensitivity where ldpk has it")  # fmt: skip
    ap.add_argument("--host-devices", type=int, default=4, help="JAX CPU devices for ldpk (LDPK_HOST_DEVICES); ≥ chains runs chains in parallel")  # fmt: skip
    ap.add_argument("--stan-init", default="prior-median", choices=["prior-median", "random"], help="Stan's starting points: jittered prior medians (default) or Stan's uniform(-2, 2) on the unconstrained scale")  # fmt: skip
    ap.add_argument("--cold-only", action="store_true", help="ldpk: only the cold fit (no persistent-cache runs): time to result includes compilation")  # fmt: skip
    ap.add_argument("--keep-from", type=Path, default=None, help="take the rows of tools/versions not run now from this earlier results file (marked reused_from with its commit and date)")  # fmt: skip
    ap.add_argument("--stan-bdf", action="store_true", help="also run Stan's ODE version with ode_bdf_tol")  # fmt: skip
    ap.add_argument("--ldpk-parameterizations", nargs="+", default=["auto"], choices=["auto", "noncentred", "centred"], help="ldpk's NUTS parameterization(s) (default: ldpk's default, 'auto')")  # fmt: skip
    ap.add_argument("--stan-parameterizations", nargs="+", default=["noncentred", "centred"], choices=["noncentred", "centred"], help="the Stan programs to run: non-centred (the reference program) and centred")  # fmt: skip
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ldpk", "stan"], help=argparse.SUPPRESS)
    ap.add_argument("--version", choices=["closed_form", "ode"], help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--fits", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--stan-solver", default="rk45", choices=["rk45", "bdf"], help=argparse.SUPPRESS)  # fmt: skip
    ap.add_argument("--parameterization", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = 150 if args.quick else 1000
    args.warmup = args.warmup or n
    args.samples = args.samples or n
    if args.ode_gradient is None:
        args.ode_gradient = "sensitivity" if _ode_has_gradient() else "default"

    if args.worker:
        res = _ldpk_worker(args) if args.worker == "ldpk" else _stan_worker(args)
        write_json_atomic(args.worker_out, res)
        return 0

    out = args.out
    if out is None:
        out = (Path(tempfile.mkdtemp()) if args.quick else RESULTS_DIR) / "inference_vs_stan.json"
    sim = simulate_data()
    settings = {
        "chains": args.chains, "warmup": args.warmup, "samples": args.samples,
        "target_accept": 0.8, "max_tree_depth": 10, "seed": FIT_SEED,
        "ode_rtol": RTOL, "ode_atol": ATOL, "ode_max_num_steps": MAX_NUM_STEPS,
        "ldpk_ode_solver": args.ode_solver, "ldpk_ode_gradient": args.ode_gradient,
        "ldpk_host_devices": args.host_devices, "ldpk_cold_only": args.cold_only,
        "stan_init": args.stan_init,
        "ldpk_init": "MAP by BFGS from the prior medians, chains from draws of the Laplace approximation",
    }  # fmt: skip
    problem = {
        "model": "one compartment, first-order absorption; log-normal IIV on CL, V; proportional error",  # fmt: skip
        "data": f"simulated inside the script (seed {SEED}) from the analytic solution",
        "n_subjects": N_SUBJECTS, "dose_mg": DOSE, "times_h": TIMES,
        "true_values": TRUE, "true_individual": {"CL_i": sim["CL_i"], "V_i": sim["V_i"]},
        "priors": {
            "typical": {p: f"lognormal({PRIOR_LOC[p]}, {PRIOR_SCALE[p]})" for p in PRIOR_LOC},
            "omega": {p: f"halfnormal({OMEGA_SCALE[p]})" for p in OMEGA_SCALE},
            "sigma_prop_cp": f"halfnormal({SIGMA_SCALE})",
        },
        "ldpk_model": MODEL, "ldpk_config": FIT_CONFIG,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for version in args.versions:
        print(f"{version}:", file=sys.stderr, flush=True)
        if "ldpk" in args.tools:
            for param in args.ldpk_parameterizations:
                raw[f"ldpk_{version}_{param}"] = r = run_ldpk(version, args, param)
                rows.append(ldpk_row(version, r, param))
        if "stan" in args.tools:
            solvers = ["rk45", "bdf"] if version == "ode" and args.stan_bdf else ["rk45"]
            for solver, param in itertools.product(solvers, args.stan_parameterizations):
                raw[f"stan_{version}_{solver}_{param}"] = r = run_stan(version, args, solver, param)
                rows.append(stan_row(version, r, solver, param))
    failed = [f"{r['tool']} {r['version']} {r['parameterization']}" for r in rows if "error" in r]

    if args.keep_from:  # rows not run now, from an earlier results file
        old = json.loads(args.keep_from.read_text())
        ran = {_key(r) for r in rows}
        origin = {"commit": old["git"]["commit"], "date_utc": old["machine"]["date_utc"]}
        for r in old["rows"]:
            if _key(r) not in ran:
                rows.append({**r, "reused_from": r.get("reused_from", origin)})
        for k, v in old["raw"].items():
            raw.setdefault(k, v)

    def find(tool: str, version: str, centred: str | None = None, param: str | None = None) -> dict[str, Any] | None:  # fmt: skip
        """The first successful row of ``tool`` and ``version`` with that parameterisation:
        requested (``param``) or sampled centred (``centred``: 'CL,V' or '')."""
        for r in rows:
            if r["tool"] != tool or r["version"] != version or "error" in r:
                continue
            if r.get("method", "").startswith("ode_bdf"):
                continue
            if param is not None and r.get("parameterization", "noncentred") != param:
                continue
            if centred is not None and r.get("centred", "") != centred:
                continue
            return r
        return None

    results: dict[str, Any] = {
        "benchmark": "inference_vs_stan",
        "machine": machine_info(extra_packages=("numpyro", "arviz", "pystan", "httpstan")),
        "git": git_info(),
        "problem": problem,
        "settings": settings,
        "rows": rows,
        "raw": raw,
        "agreement": {},
    }
    results["like_for_like"] = {}
    for version in ("closed_form", "ode"):
        # Headline: ldpk as a user runs it (its default, parameterization='auto') against the
        # reference (non-centred) Stan program.
        a, b = find("ldpk", version, param="auto"), find("pystan", version, param="noncentred")
        key = "speedup_closed_form" if version == "closed_form" else "speedup_ode"
        results[key] = b["time_to_result_s"] / a["time_to_result_s"] if a and b else None
        # Without ldpk's MAP start: the whole fit after the MAP (NUTS and post-processing).
        w = a["fits"]["warm"] if a else None
        nuts = b["time_to_result_s"] / (w["wall_s"] - w["map_s"]) if a and b else None
        results[f"{key}_without_map"] = nuts
        if a and b:
            results["agreement"][version] = agreement(a, b)
        # Like for like: both tools sampling the same coordinates.
        for centred, label in (("", "noncentred"), ("CL,V", "centred")):
            a, b = find("ldpk", version, centred=centred), find("pystan", version, centred=centred)
            if a and b:
                results["like_for_like"][f"{version}_{label}"] = {
                    "speedup": b["time_to_result_s"] / a["time_to_result_s"],
                    "ldpk_parameterization": a.get("parameterization", "noncentred"),
                    "agreement": agreement(a, b),
                }  # fmt: skip
    results["load_average_end"] = load_average()
    # rows run now (rows kept from an earlier file were judged in theirs)
    loads = [r["load_average_before"][0] for r in rows if r.get("load_average_before") and "reused_from" not in r]  # fmt: skip
    results["quiet_machine"] = bool(loads) and max(loads) < QUIET_LOAD
    if failed:  # never replace a results file with failed rows
        out = out.with_name(out.stem + ".failed.json")
    write_json_atomic(out, results)
    print(report(results))
    print(f"\nwrote {out}", file=sys.stderr)
    if failed:
        print(f"FAILED: {', '.join(failed)}; the results file was left as it was", file=sys.stderr)
        return 1
    return 0


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """What a row measured: tool, version, method and requested parameterisation (rows of
    runs before the option were non-centred)."""
    return row["tool"], row["version"], row.get("method", row.get("solver", "")), row.get("parameterization", "noncentred")  # fmt: skip


def report(res: dict[str, Any]) -> str:
    """The README table and a line per version on the speedup and the posterior agreement."""
    head = ["version", "tool", "method", "sampled", "compile (s)", "time to result (s)", "min bulk ESS", "ESS/s", "max R-hat", "load"]  # fmt: skip
    body = []
    for r in res["rows"]:
        if "error" in r:
            body.append([r["version"], r["tool"], "failed", r.get("parameterization", "—"), "—", "—", "—", "—", "—", "—"])  # fmt: skip
            continue
        load = r.get("load_average_before")
        param = r.get("parameterization", "noncentred")
        sampled = "centred" if r.get("centred") else "non-centred"
        body.append([
            r["version"].replace("_", " "), r["tool"] + (" (earlier)" if "reused_from" in r else ""),
            r["method"], sampled + (" (auto)" if param == "auto" else ""), fmt_num(r["compile_s"]),
            fmt_num(r["time_to_result_s"]), fmt_num(r["min_ess_bulk"]), fmt_num(r["ess_per_s"]),
            f"{r['max_r_hat_all']:.3f}", f"{load[0]:.2f}" if load else "—",
        ])  # fmt: skip
    lines = [markdown_table(head, body, right=(4, 5, 6, 7, 8, 9)), ""]
    for r in res["rows"]:
        if "reused_from" in r:
            o = r["reused_from"]
            lines.append(f"- {r['tool']} {r['version']}: from an earlier run (commit {o['commit'][:7]}, {o['date_utc']})")  # fmt: skip
    if not res.get("quiet_machine", True):
        lines.append(f"- the machine was busy (1-min load ≥ {QUIET_LOAD} before a timed run): the times are not valid")  # fmt: skip
    for version, key in (("closed form", "speedup_closed_form"), ("ODE", "speedup_ode")):
        v = res.get(key)
        if v is not None:
            nuts = res.get(f"{key}_without_map")
            alone = "" if nuts is None else f" (without ldpk's MAP start: {nuts:.2f}×)"
            lines.append(f"- {version}: PyStan (non-centred program) time ÷ ldpk (default) time = {v:.2f}×{alone}")  # fmt: skip
    for name, lfl in res.get("like_for_like", {}).items():
        version, _, param = name.rpartition("_")
        lines.append(f"- {version.replace('_', ' ')}, both {param.replace('non', 'non-')}: PyStan time ÷ ldpk time = {lfl['speedup']:.2f}×")  # fmt: skip
    for version, ag in res["agreement"].items():
        state = "agree" if ag["ok"] else "DISAGREE" if ag.get("both_converged", True) else "cannot be compared (not converged)"  # fmt: skip
        lines.append(
            f"- {version.replace('_', ' ')}: posterior means {state} (max |Δmean|/MCSE = "
            f"{ag['max_z']:.2f}, max |Δmean|/sd = {ag['max_diff_over_sd']:.3f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
