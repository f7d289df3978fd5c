"""Simulation throughput of ldpk against SciPy and libRoadRunner, in parameter sets per second.

Two models, both dosed with one IV bolus of 100 mg at t = 0 and read out at 20 times:

* linear: three-compartment mammillary model (CL, V1, Q2, V2, Q3, V3), ldpk's exact kernel
  (matrix-exponential superposition);
* nonlinear: one compartment with Michaelis-Menten elimination (VM, KM, V), ldpk's ODE kernel
  (diffrax, Kvaerno5, rtol 1e-8 / atol 1e-10).

ldpk simulates a batch of N parameter sets (log-normal draws around typical values, fixed seed)
in one compiled, vmapped kernel, for N = 10^3 ... 10^6 (in chunks of ``--chunk`` sets for the exact
kernel and ``--ode-chunk`` for the ODE kernel, the compiled kernel reused). SciPy (``solve_ivp``,
LSODA) and libRoadRunner (CVODE) simulate one parameter set at a time in a Python loop; a subset
of the sets is timed. The three tools must agree on the first 20 sets (central amount, 1e-5
relative); if they do not, the results still record it (``agreement.ok``) and the exit status is 1.

Run from the repository root::

    .venv/bin/python benchmarks/simulate_throughput.py            # full run (several minutes)
    .venv/bin/python benchmarks/simulate_throughput.py --quick    # smoke run, N <= 10^4

Writes ``benchmarks/results/simulate_throughput.json`` (``--out`` to change; a ``--quick`` run
writes to a temporary folder unless ``--out`` is given, so it never overwrites the saved results)
and prints a markdown summary. Compile times are measured without JAX's persistent compilation
cache (``LDPK_NO_CACHE=1``) unless ``--use-cache`` is given.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR,
    CompileTimer,
    fmt_num,
    git_info,
    load_average,
    machine_info,
    markdown_table,
    time_best,
    time_once,
    write_json_atomic,
)

# ---- the benchmark problem ------------------------------------------------------------------
DOSE = 100.0  # mg, IV bolus into `central` at t = 0
TIMES = np.linspace(0.5, 24.0, 20)  # h
SEED = 20240601
CV = 0.25  # coefficient of variation of every parameter (log-normal, median = typical value)
RTOL, ATOL = 1e-8, 1e-10  # every tool's integrator tolerances
AGREEMENT_SETS = 20
AGREEMENT_RTOL = 1e-5

LINEAR: dict[str, Any] = {
    "name": "bench_3cmt_iv",
    "description": "Three-compartment mammillary model, IV bolus (throughput benchmark)",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {
        "central": {"unit": "mg"},
        "peripheral1": {"unit": "mg"},
        "peripheral2": {"unit": "mg"},
    },
    "parameters": {
        "CL": {"value": 5.0, "unit": "L/h", "description": "clearance"},
        "V1": {"value": 10.0, "unit": "L", "description": "central volume"},
        "Q2": {"value": 8.0, "unit": "L/h", "description": "intercompartmental clearance 1"},
        "V2": {"value": 20.0, "unit": "L", "description": "peripheral volume 1"},
        "Q3": {"value": 1.0, "unit": "L/h", "description": "intercompartmental clearance 2"},
        "V3": {"value": 100.0, "unit": "L", "description": "peripheral volume 2"},
    },
    "flows": [
        {"from": "central", "k": "CL / V1"},
        {"from": "central", "to": "peripheral1", "k": "Q2 / V1"},
        {"from": "peripheral1", "to": "central", "k": "Q2 / V2"},
        {"from": "central", "to": "peripheral2", "k": "Q3 / V1"},
        {"from": "peripheral2", "to": "central", "k": "Q3 / V3"},
    ],
    "routes": {"iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V1", "unit": "mg/L"}},
}

NONLINEAR: dict[str, Any] = {
    "name": "bench_1cmt_mm_iv",
    "description": "One compartment, Michaelis-Menten elimination, IV bolus (throughput benchmark)",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {"central": {"unit": "mg"}},
    "parameters": {
        "VM": {"value": 10.0, "unit": "mg/h", "description": "maximum elimination rate"},
        "KM": {"value": 2.0, "unit": "mg/L", "description": "Michaelis constant"},
        "V": {"value": 20.0, "unit": "L", "description": "volume"},
    },
    "flows": [{"from": "central", "rate": "VM * central / (KM * V + central)"}],
    "routes": {"iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
}

MODELS = {"linear": LINEAR, "nonlinear": NONLINEAR}
KERNELS = {"linear": "exact", "nonlinear": "ode"}

TARGETS = {
    "linear_vs_roadrunner": 200.0,
    "linear_vs_scipy": 1000.0,
    "nonlinear_vs_roadrunner": 10.0,
    "linear_sets_per_s": 2e6,
}


def draw_parameters(spec: Mapping[str, Any], n: int, seed: int) -> dict[str, np.ndarray]:
    """n log-normal draws of every parameter: median the typical value, CV ``CV``."""
    rng = np.random.default_rng(seed)
    omega = math.sqrt(math.log1p(CV**2))
    return {
        name: p["value"] * np.exp(omega * rng.standard_normal(n))
        for name, p in spec["parameters"].items()
    }


# ---- SBML for libRoadRunner (written here; antimony is not a dependency) ---------------------
_MATHML_OPS = {ast.Add: "plus", ast.Sub: "minus", ast.Mult: "times", ast.Div: "divide",
               ast.Pow: "power"}  # fmt: skip


def _mathml(node: ast.AST) -> str:
    """Content MathML of an arithmetic expression (names, numbers, + - * / **)."""
    if isinstance(node, ast.Expression):
        return _mathml(node.body)
    if isinstance(node, ast.BinOp) and type(node.op) in _MATHML_OPS:
        op = _MATHML_OPS[type(node.op)]
        return f"<apply><{op}/>{_mathml(node.left)}{_mathml(node.right)}</apply>"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"<apply><minus/>{_mathml(node.operand)}</apply>"
    if isinstance(node, ast.Name):
        return f"<ci>{node.id}</ci>"
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return f"<cn>{float(node.value)!r}</cn>"
    raise ValueError(f"no MathML for {ast.dump(node)}")


def sbml_of(spec: Mapping[str, Any], dose_cmt: str = "central", dose: float = DOSE) -> str:
    """An SBML Level 3 Version 1 model of ``spec``: compartments of the model become species
    (amounts, ``hasOnlySubstanceUnits``) in one unit-volume SBML compartment; each flow becomes
    an irreversible reaction, with kinetic law ``k * source`` or ``rate``. The IV bolus at t = 0
    is the initial amount of ``dose_cmt``."""
    species = "".join(
        f'<species id="{c}" compartment="body" initialAmount="{dose if c == dose_cmt else 0.0!r}" '
        'hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>'
        for c in spec["compartments"]
    )
    params = "".join(
        f'<parameter id="{n}" value="{float(p["value"])!r}" constant="true"/>'
        for n, p in spec["parameters"].items()
    )
    reactions = []
    for i, f in enumerate(spec["flows"]):
        law = f"({f['k']}) * {f['from']}" if "k" in f else f["rate"]
        math_ = _mathml(ast.parse(law, mode="eval"))
        ref = '<speciesReference species="{}" stoichiometry="1" constant="true"/>'
        parts = ""
        if f.get("from"):
            parts += f"<listOfReactants>{ref.format(f['from'])}</listOfReactants>"
        if f.get("to"):
            parts += f"<listOfProducts>{ref.format(f['to'])}</listOfProducts>"
        reactions.append(
            f'<reaction id="flow{i}" reversible="false" fast="false">{parts}<kineticLaw>'
            f'<math xmlns="http://www.w3.org/1998/Math/MathML">{math_}</math>'
            "</kineticLaw></reaction>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">'
        f'<model id="{spec["name"]}">'
        '<listOfCompartments><compartment id="body" size="1" spatialDimensions="3" '
        'constant="true"/></listOfCompartments>'
        f"<listOfSpecies>{species}</listOfSpecies>"
        f"<listOfParameters>{params}</listOfParameters>"
        f"<listOfReactions>{''.join(reactions)}</listOfReactions>"
        "</model></sbml>\n"
    )


# ---- SciPy right-hand sides (written independently of ldpk's expression compiler) ------------
def scipy_problem(model: str, p: Mapping[str, float]) -> tuple[Callable, np.ndarray]:
    """(f(t, x), x0) for one parameter set."""
    if model == "linear":
        k10 = p["CL"] / p["V1"]
        k12, k21 = p["Q2"] / p["V1"], p["Q2"] / p["V2"]
        k13, k31 = p["Q3"] / p["V1"], p["Q3"] / p["V3"]
        K = np.array([
            [-(k10 + k12 + k13), k21, k31],
            [k12, -k21, 0.0],
            [k13, 0.0, -k31],
        ])  # fmt: skip
        return (lambda t, x: K @ x), np.array([DOSE, 0.0, 0.0])
    vm, kmv = p["VM"], p["KM"] * p["V"]
    return (lambda t, x: -vm * x / (kmv + x)), np.array([DOSE])


# ---- runners --------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ldpk_rows(
    model_key: str,
    params: dict[str, np.ndarray],
    ns: list[int],
    chunk: int,
    max_call_s: float,
    min_total_s: float,
    solver: str | None = None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Throughput rows of ldpk for each N, and the states of the first AGREEMENT_SETS sets."""
    import jax

    import ldpk

    model = ldpk.build_model(MODELS[model_key], source=f"<benchmark {model_key}>")
    kernel = KERNELS[model_key]
    regimen = [ldpk.Bolus(DOSE, route="iv")]
    rows: list[dict[str, Any]] = []
    compiled_shapes: dict[int, int] = {}
    first_states = None
    last_rate = None
    last_n = None
    for n in ns:
        c = min(n, chunk)
        if n % c:
            raise SystemExit(f"N={n} is not a multiple of the chunk size {c}")
        n_chunks = n // c
        row: dict[str, Any] = {
            "tool": "ldpk",
            "kernel": kernel,
            "solver": solver or (ldpk.ODEOptions().solver if kernel == "ode" else "expm"),
            "model": model_key,
            "n_sets": n,
            "chunk_size": c,
            "n_chunks": n_chunks,
            "extrapolated": False,
            "compile_s": None,
            "first_call_s": None,
            "notes": "",
        }
        if last_rate is not None and n / last_rate > max_call_s:
            wall = n / last_rate
            row.update(
                wall_s=wall,
                sets_per_s=last_rate,
                extrapolated=True,
                repeats=0,
                notes=f"extrapolated linearly from n_sets={last_n} (predicted {wall:.0f} s > "
                f"{max_call_s:.0f} s limit)",
            )
            rows.append(row)
            log(f"  ldpk {model_key} N={n}: extrapolated {wall:.1f} s")
            continue

        def call(i: int, c: int = c) -> Any:
            sl = slice(i * c, (i + 1) * c)
            sim = ldpk.simulate(
                model, {k: v[sl] for k, v in params.items()}, regimen, times=TIMES,
                method=kernel, ode=ldpk.ODEOptions(solver=solver) if solver else None,
            )  # fmt: skip
            return jax.block_until_ready((sim.states, sim.outputs))

        def run_all(n_chunks: int = n_chunks, call: Callable = call) -> Any:
            first = None
            for i in range(n_chunks):
                out = call(i)
                if i == 0:
                    first = out
            return first

        with CompileTimer() as ct:  # warm-up call with the same shapes: compiles
            first_s, _ = time_once(lambda call=call: call(0))
        reps = 5 if n * 10 <= chunk and n <= 10_000 else 1
        best, all_s, out = time_best(run_all, min_total_s=min_total_s, max_repeats=reps)
        if c in compiled_shapes:
            row["notes"] = (
                f"kernel compiled for chunk shape {c} at n_sets={compiled_shapes[c]}, reused"
            )
        else:
            compiled_shapes[c] = n
            row["first_call_s"] = first_s
            row["compile_s"] = ct.seconds
        row.update(wall_s=best, sets_per_s=n / best, repeats=len(all_s), all_wall_s=all_s)
        rows.append(row)
        if first_states is None:
            first_states = np.asarray(out[0][:AGREEMENT_SETS])
        last_rate, last_n = n / best, n
        log(
            f"  ldpk {model_key} N={n}: {best:.3f} s ({n / best:,.0f} sets/s), "
            f"first call {first_s:.2f} s"
        )
    assert first_states is not None
    return rows, first_states


def scipy_row(
    model_key: str, params: dict[str, np.ndarray], n: int
) -> tuple[dict[str, Any], np.ndarray]:
    from scipy.integrate import solve_ivp

    names = list(params)
    states = []

    def run() -> None:
        states.clear()
        for i in range(n):
            f, x0 = scipy_problem(model_key, {k: float(params[k][i]) for k in names})
            sol = solve_ivp(
                f, (0.0, float(TIMES[-1])), x0, method="LSODA", t_eval=TIMES, rtol=RTOL, atol=ATOL
            )
            if not sol.success:
                raise RuntimeError(f"solve_ivp failed for set {i}: {sol.message}")
            states.append(sol.y.T)

    wall, _ = time_once(run)
    log(f"  scipy {model_key} {n} sets: {wall:.2f} s ({n / wall:,.0f} sets/s)")
    row = {
        "tool": "scipy",
        "kernel": "solve_ivp LSODA",
        "model": model_key,
        "n_sets": n,
        "wall_s": wall,
        "sets_per_s": n / wall,
        "compile_s": None,
        "extrapolated": False,
        "notes": f"Python loop over a subset of {n} sets, one solve_ivp call each "
        f"(rtol={RTOL:g}, atol={ATOL:g}, t_eval = output times, no Jacobian given)",
    }
    return row, np.stack(states[:AGREEMENT_SETS])


def roadrunner_row(
    model_key: str, params: dict[str, np.ndarray], n: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    base = {
        "tool": "roadrunner",
        "kernel": "CVODE",
        "model": model_key,
        "n_sets": n,
        "compile_s": None,
        "extrapolated": False,
    }
    try:
        import roadrunner
    except Exception as exc:  # noqa: BLE001 - any import failure means "not measured"
        return {**base, "wall_s": None, "sets_per_s": None,
                "notes": f"libroadrunner not importable: {exc!r}"}, None  # fmt: skip
    spec = MODELS[model_key]
    sbml = sbml_of(spec)
    compile_s, rr = time_once(lambda: roadrunner.RoadRunner(sbml))
    rr.setIntegrator("cvode")
    integ = rr.getIntegrator()
    integ.relative_tolerance = RTOL
    integ.absolute_tolerance = ATOL
    species = list(spec["compartments"])
    pnames = list(params)
    selections = ["time", *species]
    rr.timeCourseSelections = selections
    t_sim = [0.0, *(float(t) for t in TIMES)]  # the first time is the start time
    values = np.stack([params[k][:n] for k in pnames], axis=1)
    states = np.empty((n, len(TIMES), len(species)))

    def run() -> None:
        for i in range(n):
            rr.reset()
            rr.setValues(pnames, values[i].tolist())
            res = rr.simulate(times=t_sim)
            states[i] = np.asarray(res)[1:, 1:]

    wall, _ = time_once(run)
    res_t = np.asarray(rr.simulate(times=t_sim))[1:, 0]
    if not np.allclose(res_t, TIMES):
        raise RuntimeError(f"roadrunner returned times {res_t}, expected {TIMES}")
    log(f"  roadrunner {model_key} {n} sets: {wall:.2f} s ({n / wall:,.0f} sets/s)")
    row = {
        **base,
        "wall_s": wall,
        "sets_per_s": n / wall,
        "compile_s": compile_s,
        "notes": f"Python loop over a subset of {n} sets: reset(), setValues(parameters), "
        f"simulate(times=[0, *output times]); CVODE rtol={integ.relative_tolerance:g}, "
        f"atol={integ.absolute_tolerance:g}; compile_s = SBML load and LLVM JIT "
        f"(libroadrunner {roadrunner.__version__})",
    }
    return row, states[:AGREEMENT_SETS].copy()


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# ---- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N up to 10^4, small subsets")
    ap.add_argument("--out", type=Path, help="JSON output path")
    ap.add_argument("--chunk", type=int, default=100_000,
                    help="ldpk batch size per call, exact kernel")  # fmt: skip
    ap.add_argument("--ode-chunk", type=int, default=10_000,
                    help="ldpk batch size per call, ODE kernel (a vmapped adaptive solve steps "
                    "every set in lockstep until the slowest is done, so smaller batches waste "
                    "fewer steps)")  # fmt: skip
    ap.add_argument("--max-call-s", type=float, default=300.0,
                    help="extrapolate an ldpk run predicted to take longer (s)")  # fmt: skip
    ap.add_argument("--use-cache", action="store_true",
                    help="keep JAX's persistent compilation cache on (compile_s then "
                    "measures a cache load)")  # fmt: skip
    args = ap.parse_args(argv)
    if not args.use_cache:
        os.environ["LDPK_NO_CACHE"] = "1"  # read when ldpk is imported
    import jax

    import ldpk

    if args.quick:
        ns, n_scipy, n_rr, min_total = [10**3, 10**4], 20, 200, 0.2
        out = args.out or Path(tempfile.gettempdir()) / "ldpk_simulate_throughput_quick.json"
    else:
        ns, n_scipy, n_rr, min_total = [10**3, 10**4, 10**5, 10**6], 200, 2000, 1.0
        out = args.out or RESULTS_DIR / "simulate_throughput.json"
    n_max = max(ns)
    machine = machine_info(extra_packages=("libroadrunner",))
    source = git_info()

    rows: list[dict[str, Any]] = []
    agreement: dict[str, Any] = {
        "n_sets": AGREEMENT_SETS,
        "quantity": "amount in central (mg) at the 20 output times",
        "tolerance_rel": AGREEMENT_RTOL,
    }
    all_ok = True
    for i, key in enumerate(MODELS):
        log(f"model {key}:")
        params = draw_parameters(MODELS[key], n_max, SEED + i)
        chunk = args.chunk if KERNELS[key] == "exact" else args.ode_chunk
        ld_rows, ld_states = ldpk_rows(key, params, ns, chunk, args.max_call_s, min_total)
        sp_row, sp_states = scipy_row(key, params, n_scipy)
        rr_row, rr_states = roadrunner_row(key, params, n_rr)
        rows += [*ld_rows, sp_row, rr_row]
        if KERNELS[key] == "ode":  # the same model with the explicit solver (not the default)
            log("  ldpk with solver=tsit5:")
            rows += ldpk_rows(key, params, ns, chunk, args.max_call_s, min_total, "tsit5")[0]
        cmp = {"ldpk_vs_scipy": max_rel_diff(ld_states[..., 0], sp_states[..., 0])}
        if rr_states is not None:
            cmp["ldpk_vs_roadrunner"] = max_rel_diff(ld_states[..., 0], rr_states[..., 0])
            cmp["scipy_vs_roadrunner"] = max_rel_diff(sp_states[..., 0], rr_states[..., 0])
        cmp["all_compartments_ldpk_vs_scipy"] = max_rel_diff(ld_states, sp_states)
        cmp["ok"] = all(v <= AGREEMENT_RTOL for k, v in cmp.items() if k.endswith(("scipy",
                        "roadrunner")) and not k.startswith("all_"))  # fmt: skip
        all_ok &= cmp["ok"]
        agreement[key] = cmp
        log(f"  agreement {key}: {cmp}")
    agreement["ok"] = all_ok

    def rate(tool: str, model: str, solver: str | None = None) -> tuple[float | None, int | None]:
        cands = [r for r in rows if r["tool"] == tool and r["model"] == model
                 and not r["extrapolated"] and r["sets_per_s"] is not None
                 and (solver is None or r.get("solver") == solver)
                 and (solver is not None or r.get("solver") != "tsit5")]  # fmt: skip
        if not cands:
            return None, None
        r = max(cands, key=lambda r: r["n_sets"])
        return r["sets_per_s"], r["n_sets"]

    lin, lin_n = rate("ldpk", "linear")
    nonlin, nonlin_n = rate("ldpk", "nonlinear")
    rr_lin, _ = rate("roadrunner", "linear")
    rr_non, _ = rate("roadrunner", "nonlinear")
    sp_lin, _ = rate("scipy", "linear")

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    ratios = {
        "linear_vs_roadrunner": ratio(lin, rr_lin),
        "linear_vs_scipy": ratio(lin, sp_lin),
        "nonlinear_vs_roadrunner": ratio(nonlin, rr_non),
        "nonlinear_vs_scipy": ratio(nonlin, rate("scipy", "nonlinear")[0]),
        "nonlinear_tsit5_vs_roadrunner": ratio(rate("ldpk", "nonlinear", "tsit5")[0], rr_non),
    }
    achieved = {**ratios, "linear_sets_per_s": lin}
    meets = {k: None if achieved[k] is None else bool(achieved[k] >= t) for k, t in TARGETS.items()}
    result = {
        "benchmark": "simulate_throughput",
        "description": "parameter sets per second simulated by ldpk (one compiled, vmapped "
        "kernel per batch) vs SciPy solve_ivp and libRoadRunner (one set per call in a Python "
        "loop)",
        "quick": args.quick,
        "machine": {**machine, "load_average_end": load_average()},
        "source": source,
        "config": {
            "dose": {"amount_mg": DOSE, "time_h": 0.0, "route": "iv bolus into central"},
            "times_h": TIMES,
            "seed": SEED,
            "parameter_cv": CV,
            "parameter_distribution": "log-normal, median = typical value",
            "models": MODELS,
            "ldpk": {
                "n_sets": ns,
                "chunk_size": {"exact": args.chunk, "ode": args.ode_chunk},
                "ode_options": dataclasses.asdict(ldpk.ODEOptions()),
                "persistent_compilation_cache": args.use_cache,
                "timing": "wall time of simulate() over all chunks incl. host-side setup and "
                "jax.block_until_ready on states and outputs; best of up to 5 repeats when "
                "N <= chunk/10 and N <= 10^4, else one run; compile_s = seconds JAX spent "
                "tracing, lowering and compiling during the warm-up call (same shapes; "
                "jax.monitoring events), "
                "first_call_s = that call's wall time",
                "max_call_s": args.max_call_s,
            },
            "scipy": {"n_sets": n_scipy, "method": "LSODA", "rtol": RTOL, "atol": ATOL},
            "roadrunner": {"n_sets": n_rr, "integrator": "cvode", "rtol": RTOL, "atol": ATOL},
            "jax_backend": jax.default_backend(),
        },
        "rows": rows,
        "agreement": agreement,
        "ratios": ratios,
        "ratio_basis": {
            "ldpk_linear": {"n_sets": lin_n, "sets_per_s": lin},
            "ldpk_nonlinear": {"n_sets": nonlin_n, "sets_per_s": nonlin},
            "note": "ldpk sets/s at the largest N measured (not extrapolated) / the other tool's "
            "sets/s on its subset",
        },
        "targets": TARGETS,
        "meets_targets": meets,
    }
    path = write_json_atomic(out, result)

    table = markdown_table(
        ["tool", "kernel", "solver", "model", "N", "wall s", "sets/s", "compile s", "notes"],
        [
            [
                r["tool"], r["kernel"], r.get("solver", "—"), r["model"], f"{r['n_sets']:,}",
                fmt_num(r["wall_s"]),
                fmt_num(r["sets_per_s"]), fmt_num(r["compile_s"]),
                "extrapolated" if r["extrapolated"] else ("subset" if r["tool"] != "ldpk" else ""),
            ]
            for r in rows
        ],
        right=(4, 5, 6, 7),
    )  # fmt: skip
    rtable = markdown_table(
        ["ratio", "value", "target", "met"],
        [
            [k, fmt_num(achieved[k]),
             fmt_num(t), {True: "yes", False: "no", None: "—"}[meets[k]]]
            for k, t in TARGETS.items()
        ],
        right=(1, 2),
    )  # fmt: skip
    ncpu = result["machine"]["cpu_count_usable"]
    print(f"Simulation throughput ({'quick' if args.quick else 'full'} run, "
          f"{result['machine']['cpu_model']}, {ncpu} CPU cores, JAX {jax.__version__} "
          f"{jax.default_backend()}):\n")  # fmt: skip
    print(table)
    print()
    print(rtable)
    print(
        f"\nAgreement on the first {AGREEMENT_SETS} sets (max relative difference in the central "
        f"amount): "
        + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v:.1e}" for k, v in agreement[m].items()
                                 if isinstance(v, float))
            for m in MODELS
        )
        + f" — {'OK' if all_ok else 'NOT OK'} (tolerance {AGREEMENT_RTOL:g})"
    )  # fmt: skip
    print(f"\nwrote {path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
