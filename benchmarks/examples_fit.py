"""Every bundled example study fitted with the defaults a user gets from ``ldpk fit``: NUTS,
4 chains x (1000 warm-up + 1000 draws), the study's own fit config. Records, per study, the
wall time (MAP, warm-up with compilation, sampling), leapfrog steps per iteration (warm-up
and sampling), step sizes, divergences, the smallest bulk and tail ESS, the largest R-hat
and the convergence warnings ``Fit.convergence()`` gives. The target (issue #22): each study
in at most 10 minutes on 2 cores with no convergence warning.

Writes ``benchmarks/results/examples_fit.json`` (studies already recorded by an earlier run
with the same settings are kept unless ``--force``). Usage::

    python benchmarks/examples_fit.py                       # every study, defaults
    python benchmarks/examples_fit.py cart_qpcr --chains 2  # one study, fewer chains
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np

import ldpk
from ldpk.data import example_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, git_info, load_average, machine_info, write_json_atomic  # noqa: E402

STUDIES = ("mitochondria_iv_biodistribution", "ev_89zr_pet", "msc_111in_bli", "cart_qpcr")
TARGET_S = 600.0


def _extreme(values: object, pick: str) -> tuple[str, float]:
    """(variable, value) of the smallest or largest entry of an ArviZ diagnostic DataTree."""
    ds = values["posterior"] if "posterior" in getattr(values, "children", {}) else values
    best: tuple[str, float] | None = None
    for name, da in ds.data_vars.items():
        v = np.asarray(da.values, dtype=float)
        if not np.isfinite(v).any():
            continue
        x = float(np.nanmin(v) if pick == "min" else np.nanmax(v))
        if best is None or (x < best[1] if pick == "min" else x > best[1]):
            best = (str(name), x)
    return best or ("", float("nan"))


def fit_study(name: str, chains: int, warmup: int, samples: int, seed: int) -> dict:
    """Fit one study with NUTS and return its record."""
    folder = example_data_dir()
    truth = json.loads((folder / f"{name}.truth.json").read_text())
    model = ldpk.load_model(truth["model"])
    load = load_average()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ldpk.fit(
            model, folder / f"{name}.csv", config=folder / f"{name}.fit.yaml", method="nuts",
            chains=chains, warmup=warmup, samples=samples, seed=seed, progress=False,
        )  # fmt: skip
    wall = time.perf_counter() - t0
    tree = fit.posterior
    stats, warm = tree["sample_stats"], tree["warmup_sample_stats"]
    steps, warm_steps = np.asarray(stats["n_steps"]), np.asarray(warm["n_steps"])
    names = [n for n in tree["posterior"].data_vars if n != "pred"]
    bulk = _extreme(az.ess(tree, var_names=names, method="bulk"), "min")
    tail = _extreme(az.ess(tree, var_names=names, method="tail"), "min")
    rhat = _extreme(az.rhat(tree, var_names=names), "max") if chains > 1 else ("", float("nan"))
    return {
        "study": name,
        "model": truth["model"],
        "wall_s": wall,
        "timings_s": dict(fit.timings),
        "within_target": bool(wall <= TARGET_S),
        "load_average_before": load,
        "steps_per_iteration_sampling": float(steps.mean()),
        "steps_per_iteration_sampling_per_chain": steps.mean(axis=1).tolist(),
        "steps_per_iteration_sampling_max": int(steps.max()),
        "steps_per_iteration_warmup": float(warm_steps.mean()),
        "step_size_per_chain": np.asarray(stats["step_size"])[:, -1].tolist(),
        "divergences": int(np.asarray(stats["diverging"]).sum()),
        "centred": tree.attrs.get("ldpk_centred", ""),
        "dense_mass": bool(fit.options.dense_mass),
        "ess_bulk_min": {"variable": bulk[0], "value": bulk[1]},
        "ess_tail_min": {"variable": tail[0], "value": tail[1]},
        "ess_bulk_per_s": bulk[1] / wall,
        "rhat_max": {"variable": rhat[0], "value": rhat[1]},
        "convergence_warnings": fit.convergence(),
        "other_warnings": sorted({str(w.message) for w in caught}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="*", default=list(STUDIES), help=", ".join(STUDIES))
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="refit studies already recorded")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "examples_fit.json")
    args = p.parse_args(argv)
    if unknown := set(args.studies) - set(STUDIES):
        p.error(f"unknown studies {sorted(unknown)}; choose from {', '.join(STUDIES)}")
    settings = {"method": "nuts", "chains": args.chains, "warmup": args.warmup, "samples": args.samples, "seed": args.seed}  # fmt: skip
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = (
        {r["study"]: r for r in old.get("studies", [])} if old.get("settings") == settings else {}
    )
    for name in args.studies:
        if name in kept and not args.force:
            print(f"{name}: recorded already (use --force to refit)")
            continue
        print(f"{name}: fitting ...", flush=True)
        rec = fit_study(name, args.chains, args.warmup, args.samples, args.seed)
        kept[name] = rec
        print(
            f"{name}: {rec['wall_s']:.0f} s, {rec['steps_per_iteration_sampling']:.1f} steps/it, "
            f"bulk ESS >= {rec['ess_bulk_min']['value']:.0f}, R-hat <= {rec['rhat_max']['value']:.3f}, "
            f"{rec['divergences']} divergences, warnings: {rec['convergence_warnings'] or 'none'}",
            flush=True,
        )  # fmt: skip
        write_json_atomic(args.out, {
            "benchmark": "examples_fit",
            "target": f"each study <= {TARGET_S:.0f} s on 2 cores with no convergence warning",
            "settings": settings,
            "studies": [kept[s] for s in STUDIES if s in kept],
            "machine": machine_info(),
            "git": git_info(),
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
