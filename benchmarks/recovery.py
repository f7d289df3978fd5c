"""Parameter recovery on the bundled example studies (issue "Bayesian fitting", Validation).

Each study in ``examples/data/`` was simulated by ``examples/make_example_studies.py`` from
recorded true values (``<study>.truth.json``: typical values, between-subject SDs, residual
error). This script fits each study with its fit config, as a user would, and checks that the
central 90 % credible interval of every population parameter that has a true value contains
it: typical values ``P``, between-subject SDs ``omega_P`` and residual SDs
``sigma_prop_<output>`` / ``sigma_add_<output>`` (a log-normal error's SD is its
``sigma_prop``).

Writes (and updates, one study at a time) ``benchmarks/results/recovery.json``::

    python benchmarks/recovery.py mitochondria_iv_biodistribution ev_89zr_pet --method laplace
    python benchmarks/recovery.py ev_89zr_pet --method nuts --chains 4 --warmup 1000 --samples 1000
    python benchmarks/recovery.py cart_qpcr --method nuts --seed 1 --label nuts_seed1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_info, load_average, machine_info, write_json_atomic  # noqa: E402
from sbc import load_study  # noqa: E402

import ldpk  # noqa: E402
from ldpk.data import example_data_dir  # noqa: E402

STUDIES = ("mitochondria_iv_biodistribution", "ev_89zr_pet", "msc_111in_bli", "cart_qpcr")


def true_values(study: str) -> dict[str, float]:
    """Site name -> true value, from ``<study>.truth.json``."""
    truth = json.loads((example_data_dir() / f"{study}.truth.json").read_text())
    out = {p: float(v) for p, v in truth["typical"].items()}
    out |= {f"omega_{p}": float(v) for p, v in truth.get("omega", {}).items()}
    for o, e in truth.get("error", {}).items():
        if "proportional" in e:
            out[f"sigma_prop_{o}"] = float(e["proportional"])
        if "additive" in e:
            out[f"sigma_add_{o}"] = float(e["additive"])
    return out


def recover(study: str, method: str, sampler: dict, seed: int) -> dict:
    """Fit ``study`` and compare each estimated population parameter with its true value."""
    model, ds, cfg, _ = load_study(study)
    truth = true_values(study)
    la = load_average()
    t0 = time.perf_counter()
    fit = ldpk.fit(
        model, ds, config=example_data_dir() / f"{study}.fit.yaml", method=method, seed=seed,
        progress=method == "nuts", **sampler,  # NUTS runs take up to hours: show where they are
    )  # fmt: skip
    wall = time.perf_counter() - t0
    rows = {}
    for name in fit.parameter_names():
        if name not in truth:
            continue
        d = fit.draws(name).reshape(-1)
        lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95])
        rows[name] = {
            "true": truth[name],
            "median": float(med),
            "q05": float(lo),
            "q95": float(hi),
            "covered_90": bool(lo <= truth[name] <= hi),
            "relative_error_of_median": float(med / truth[name] - 1.0),
        }
    out = {
        "model": model.name,
        "method": method,
        "sampler": sampler,
        "seed": seed,
        "n_subjects": ds.n_subjects,
        "n_observations": ds.n_obs,
        "parameters": rows,
        "all_covered": all(r["covered_90"] for r in rows.values()),
        "not_covered": [n for n, r in rows.items() if not r["covered_90"]],
        "estimated_without_truth": [n for n in fit.parameter_names() if n not in truth],
        "wall_s": wall,
        "timings_s": dict(fit.timings),
        "load_average_before": la,
    }
    if method == "nuts":
        out["convergence_warnings"] = [str(w) for w in fit.convergence()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="*", default=list(STUDIES))
    ap.add_argument("--method", default="laplace", choices=["laplace", "nuts", "svi"])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=2000, help="draws of laplace / svi")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", help="key of the result under each study (default: the method; e.g. nuts_seed1 to keep a second seed)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recovery.json")  # fmt: skip
    args = ap.parse_args(argv)
    sampler = (
        {"chains": args.chains, "warmup": args.warmup, "samples": args.samples}
        if args.method == "nuts"
        else {"draws": args.draws}
    )  # fmt: skip
    for study in args.studies:
        r = recover(study, args.method, sampler, args.seed)
        # read just before writing: another process may have added a study meanwhile
        result = json.loads(args.out.read_text()) if args.out.exists() else {"studies": {}}
        result["studies"].setdefault(study, {})[args.label or args.method] = r
        for n, p in r["parameters"].items():
            flag = "" if p["covered_90"] else "   <- not covered"
            print(f"{study} {args.method} {n}: true {p['true']:.4g}, median {p['median']:.4g} [{p['q05']:.4g}, {p['q95']:.4g}]{flag}", flush=True)  # fmt: skip
        print(f"{study} {args.label or args.method}: {r['wall_s']:.0f} s, all covered: {r['all_covered']}", flush=True)  # fmt: skip
        result["machine"] = machine_info(["numpyro", "arviz"])
        result["git"] = git_info()
        write_json_atomic(args.out, result)  # after each study: a long run keeps what it has
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
