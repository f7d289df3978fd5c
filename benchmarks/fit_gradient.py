"""Cost of one posterior gradient per example study: the fit's solve, which covers only the
compartments the observed outputs depend on (``Model.states_for``), against a solve of
every compartment. The two potentials must agree (|ΔU| is recorded).

Each gradient is timed as the best of ``--repeats`` evaluations at points spread around the
prior medians (subject effects 0), after one call that compiles. Writes
``benchmarks/results/fit_gradient.json``::

    .venv/bin/python benchmarks/fit_gradient.py [STUDY ...] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    fmt_num,
    git_info,
    load_average,
    machine_info,
    markdown_table,
    posterior_functions,
    write_json_atomic,
)
from recovery import STUDIES  # noqa: E402
from sbc import load_study  # noqa: E402


def gradient(pm: Any, dv: Any, repeats: int) -> tuple[float, float, float]:
    """(best seconds per value-and-gradient, compile seconds, potential at the start) of the
    posterior of ``pm`` in numpyro's unconstrained space."""
    import jax

    _, vg, flat0 = posterior_functions(pm, dv)
    t0 = time.perf_counter()
    u0 = float(jax.block_until_ready(vg(flat0))[0])
    compile_s = time.perf_counter() - t0
    shifts = jax.random.normal(jax.random.PRNGKey(1), (repeats, flat0.size)) * 0.05
    best = float("inf")
    for d in shifts:
        x = flat0 + d
        t0 = time.perf_counter()
        jax.block_until_ready(vg(x))
        best = min(best, time.perf_counter() - t0)
    return best, compile_s, u0


def measure(study: str, repeats: int) -> dict[str, Any]:
    import ldpk.population as population
    from ldpk.population import PopulationModel, fit_spec

    model, ds, cfg, _ = load_study(study)
    dv = ds.dv
    pm = PopulationModel(model, ds, fit_spec(model, ds, cfg))
    fit_s, fit_compile, u_fit = gradient(pm, dv, repeats)

    solve = population.simulate

    def every_compartment(*args: Any, **kw: Any) -> Any:
        kw.pop("outputs", None)
        return solve(*args, **kw)

    population.simulate = every_compartment
    try:
        pm_all = PopulationModel(model, ds, fit_spec(model, ds, cfg))
        all_s, all_compile, u_all = gradient(pm_all, dv, repeats)
    finally:
        population.simulate = solve
    return {
        "study": study,
        "model": model.name,
        "outputs_observed": list(ds.outputs_observed()),
        "compartments": len(model.compartments),
        "compartments_solved": len(model.states_for(ds.outputs_observed())),
        "gradient_ms_fit": fit_s * 1e3,
        "gradient_ms_all_compartments": all_s * 1e3,
        "speedup": all_s / fit_s,
        "compile_s_fit": fit_compile,
        "compile_s_all_compartments": all_compile,
        "potential_difference": abs(u_fit - u_all),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="*", default=list(STUDIES))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "fit_gradient.json")
    args = ap.parse_args(argv)
    la = load_average()
    rows = []
    for study in args.studies:
        rows.append(measure(study, args.repeats))
        r = rows[-1]
        print(
            f"{study}: {r['compartments_solved']}/{r['compartments']} compartments, "
            f"{r['gradient_ms_fit']:.2f} ms vs {r['gradient_ms_all_compartments']:.2f} ms, "
            f"|dU| {r['potential_difference']:.2g}",
            flush=True,
        )
    out = {
        "description": "seconds per posterior value-and-gradient at the prior medians, the "
        "fit's solve (compartments the observed outputs need) vs every compartment",
        "repeats": args.repeats,
        "rows": rows,
        "load_average_before": la,
        "machine": machine_info(),
        "git": git_info(),
    }
    write_json_atomic(args.out, out)
    headers = ["study", "compartments solved", "ms per gradient (fit)", "ms (every compartment)"]
    table = [
        [
            r["study"],
            f"{r['compartments_solved']} of {r['compartments']}",
            fmt_num(r["gradient_ms_fit"]),
            fmt_num(r["gradient_ms_all_compartments"]),
        ]
        for r in rows
    ]
    print(markdown_table(headers, table, right=(2, 3)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
