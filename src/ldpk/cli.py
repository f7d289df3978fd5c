"""The ``ldpk`` command: parses arguments and calls the public API, nothing else."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _times(spec: str | None, path: str | None) -> np.ndarray | None:
    from ldpk.errors import DataError

    if path:
        try:
            return np.loadtxt(path, dtype=float, ndmin=1, delimiter=",")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read times (one number per line): {exc}") from None
    if not spec:
        return None
    try:
        start, stop, step = (float(v) for v in spec.split(":"))
    except ValueError:
        raise DataError(f"--times {spec!r}: use START:STOP:STEP, e.g. 0:24:0.5") from None
    if step <= 0 or stop < start:
        raise DataError(f"--times {spec!r}: need STEP > 0 and STOP >= START")
    return np.arange(start, stop + step / 2, step)


def _params(items: Sequence[str]) -> dict[str, float]:
    from ldpk.errors import DataError

    out = {}
    for it in items:
        name, sep, value = it.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise DataError(f"--param {it!r}: use NAME=VALUE with a number, e.g. CL=2.5") from None
    return out


def cmd_models(args: argparse.Namespace) -> int:
    import ldpk

    for name in ldpk.builtin_models():
        m = ldpk.load_model(name)
        kind = "piecewise" if m.is_piecewise_linear else "nonlinear"
        if m.is_linear_system:
            kind = "linear"
        first = m.description.replace(";", ".").split(". ")[0].rstrip(".")
        print(f"{name:<28} {kind:<9} {first[:90]}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import ldpk

    print(ldpk.check_model(args.file).text())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    import ldpk
    from ldpk.dosing import (
        event_table,
        example_regimen,
        parse_dose,
        read_table,
        records_from_table,
        stack_tables,
    )
    from ldpk.plots import plot_simulation
    from ldpk.report import simulation_frame, write_table

    model = ldpk.load_model(args.model)
    params = _params(args.param)
    unknown = set(params) - set(model.parameter_names)
    if unknown:
        raise ldpk.DataError(
            f"--param: unknown parameter(s) {sorted(unknown)}; parameters of {model.name}: "
            f"{', '.join(model.parameter_names)}"
        )
    times = _times(args.times, args.times_file)
    if args.data:
        if args.dose or times is not None:
            raise ldpk.DataError("--data predicts its own records: drop --dose/--times")
        table = read_table(args.data)
        recs = records_from_table(model, table, where=args.data)  # validates before compiling
        ids = list(recs)
        batch = stack_tables([event_table(recs[i]) for i in ids])
        sim = ldpk.simulate(model, params, batch)
        y = np.asarray(sim.outputs)
        out = table.copy()
        for name in model.output_names:
            out[name] = np.nan
        for j, sid in enumerate(ids):
            r = recs[sid]
            rows = r.source_rows[np.isin(r.evid, (0, 2))] - 1
            pred = y[j, : batch.n_obs[j]]
            for k, name in enumerate(model.output_names):
                out.loc[out.index[rows], name] = pred[:, k]
        frame = out
    else:
        if args.dose:
            doses = [parse_dose(d, model) for d in args.dose]
            if times is None:
                _, times = example_regimen(model)
        else:
            doses, example_times = example_regimen(model)
            times = example_times if times is None else times
        sim = ldpk.simulate(model, params, doses, times)
        frame = simulation_frame(sim)
    protect = tuple(p for p in (args.data, args.model) if p)
    if args.out:
        write_table(frame, args.out, protect=protect)
        print(f"wrote {args.out}")
    else:
        with pd.option_context("display.max_rows", 40, "display.width", 120):
            print(frame.to_string(index=False, max_rows=40))
    if args.plot:
        if args.data:
            raise ldpk.DataError("--plot draws a simulated time course: use it without --data")
        plot_simulation(sim, args.plot, log=args.log)
        print(f"wrote {args.plot}")
    return 0


def _read_study(model: object, path: str, config: str | None, time_unit: str | None) -> object:
    """The study for ``ldpk fit``: read by :func:`ldpk.data.read_study` (NONMEM-style or tidy
    biodistribution table) with the config's ``data:`` options, ``--time-unit`` overriding."""
    from ldpk.data import read_study
    from ldpk.errors import DataError
    from ldpk.population import read_config

    options = dict(read_config(config).get("data") or {})
    if time_unit:
        options["time_unit"] = time_unit
    if not Path(path).is_file():
        raise DataError(f"{path}: no such data file")
    return read_study(model, path, **options)


def _print_fit(fit: object, written: Sequence[object]) -> None:
    """The summary table, the convergence warnings and the files written."""
    import pandas as pd

    from ldpk.report import fit_summary_frame

    table = fit_summary_frame(fit).drop(columns=["description", "prior"])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    warnings = fit.convergence()  # type: ignore[attr-defined]
    if warnings:
        print(f"\n{len(warnings)} convergence warning{'s' if len(warnings) > 1 else ''}:")
        for w in warnings:
            print(f"  - {w}")
    else:
        print("\nno convergence problems found")
    print()
    for p in written:
        print(f"wrote {p}")


def cmd_fit(args: argparse.Namespace) -> int:
    import ldpk
    from ldpk.report import check_report_folder, write_fit_report

    protect = tuple(p for p in (args.data, args.model, args.config) if p)
    check_report_folder(args.out, protect)
    model = ldpk.load_model(args.model)
    options: dict[str, object] = {}
    for k in ("chains", "warmup", "samples", "seed"):
        v = getattr(args, k)
        if v is not None and v < (0 if k == "seed" else 1):
            raise ldpk.DataError(f"--{k} {v}: must be at least {0 if k == 'seed' else 1}")
        if v is not None:
            options[k] = v
    if args.no_progress:
        options["progress"] = False
    data = _read_study(model, args.data, args.config, args.time_unit)
    print(
        f"fitting {model.name} to {args.data}: {data.n_subjects} subjects, {data.n_obs} "
        f"observations, method {args.method}",
        flush=True,
    )
    fit = ldpk.fit(model, data, config=args.config, method=args.method, **options)
    written = write_fit_report(fit, args.out, protect=protect)
    _print_fit(fit, written)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ldpk.report import fit_demo, simulation_demo

    for p in simulation_demo(args.out):
        print(f"wrote {p}")
    if args.no_fit:
        return 0
    fit, written = fit_demo(
        Path(args.out) / "fit", method=args.method, progress=not args.no_progress, log=print
    )
    _print_fit(fit, written)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ldpk",
        description="Pharmacokinetics, biodistribution and PK-PD of living drugs, on JAX.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("check", help="validate a model file")
    p.add_argument("file", help="model YAML file (or a built-in model name)")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser(
        "simulate",
        help="simulate a model",
        description="Simulate MODEL (a built-in name or a YAML file). Without --dose or --data "
        "the model's example regimen is used.",
    )
    p.add_argument("model")
    p.add_argument(
        "--data", help="NONMEM-style events CSV/Parquet: predict every observation record"
    )
    p.add_argument(
        "--dose",
        action="append",
        default=[],
        help='"AMOUNT ROUTE at TIME [over D | rate R] [every II for N] [ss]" (repeatable)',
    )
    p.add_argument("--param", action="append", default=[], help="NAME=VALUE (repeatable)")
    p.add_argument("--times", help="START:STOP:STEP (model time unit)")
    p.add_argument("--times-file", help="file with one prediction time per line")
    p.add_argument("--out", help="write results to FILE.csv or FILE.parquet (atomically)")
    p.add_argument("--plot", help="write a PNG figure of the time course")
    p.add_argument("--log", action="store_true", help="log scale for --plot")
    p.set_defaults(fn=cmd_simulate)
    p = sub.add_parser(
        "fit",
        help="fit a model to study data (Bayesian) and write a report",
        description="Fit MODEL (a built-in name or a YAML file) to DATA (a NONMEM-style table, "
        "or a tidy biodistribution table with an ORGAN column; CSV or Parquet) and write "
        "posterior.nc, summary.csv, predictions.csv, figures and report.html to --out. Besides "
        "priors, variability and error models, the config's `data:` section holds options of "
        "the data reader (e.g. time_unit, outputs: {organ: output}) and its `fit:` section "
        "sampler settings (chains, warmup, samples, seed, ...), which the options below "
        "override.",
    )
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output folder for the report")
    p.add_argument(
        "--config", help="fit config YAML/TOML: priors, variability, error model, covariates"
    )
    p.add_argument(
        "--method",
        choices=("nuts", "svi", "map", "laplace"),
        default="nuts",
        help="nuts (default; MCMC), svi (variational), map (point estimate) or laplace "
        "(normal approximation at the MAP)",
    )
    p.add_argument("--chains", type=int, help="NUTS chains (default 4)")
    p.add_argument("--warmup", type=int, help="NUTS warm-up iterations per chain (default 1000)")
    p.add_argument("--samples", type=int, help="NUTS draws per chain (default 1000)")
    p.add_argument("--seed", type=int, help="random seed (default 0; fixed gives identical results)")  # fmt: skip
    p.add_argument("--time-unit", help="unit of the data's TIME column (default: the model's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_fit)
    p = sub.add_parser(
        "demo",
        help="run the demo: a simulation, and a fit of a bundled example study",
        description="Simulate theophylline-like dosing in a virtual population, then fit the "
        "bundled mitochondria biodistribution study and write its report into OUT/fit.",
    )
    p.add_argument("--out", default="ldpk-demo", help="output folder (default ldpk-demo)")
    p.add_argument(
        "--method",
        choices=("laplace", "nuts"),
        default="laplace",
        help="laplace (default: marginal Laplace approximation, 500 draws, a few minutes) or "
        "nuts (2 chains x 300 warm-up + 300 draws; much longer)",
    )
    p.add_argument("--no-fit", action="store_true", help="only the simulation part")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ldpk.errors import LdpkError

    try:
        return int(args.fn(args))
    except LdpkError as exc:
        print(f"ldpk {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
