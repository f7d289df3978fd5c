"""The ``ldpk`` command: parses arguments and calls the public API, nothing else."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Most output times one command computes (--times, --times-file); LDPK_MAX_TIMES raises it.
MAX_TIMES = 1_000_000


def _max_times() -> int:
    value = os.environ.get("LDPK_MAX_TIMES", "")
    return int(value) if value.isdigit() else MAX_TIMES


def _times(spec: str | None, path: str | None) -> np.ndarray | None:
    """Output times from --times START:STOP:STEP or --times-file (one number per line):
    finite, non-negative, sorted, at most :data:`MAX_TIMES` of them, counted before any
    array is allocated."""
    from ldpk import DataError

    limit = _max_times()
    if spec and path:
        raise DataError("give --times or --times-file, not both")
    if path:
        size = Path(path).stat().st_size
        if size > 32 * limit:  # ~32 bytes a line is far more than a number needs
            raise DataError(f"{path}: {size:,} bytes is more than {limit:,} times (the limit; set LDPK_MAX_TIMES to raise it)")  # fmt: skip
        try:
            with warnings.catch_warnings():  # an empty file is refused below, in words
                warnings.simplefilter("ignore", UserWarning)
                times = np.loadtxt(path, dtype=float, ndmin=1, delimiter=",", encoding="utf-8-sig")  # fmt: skip
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read times (one number per line): {exc}") from None
        where = path
    elif spec:
        try:
            start, stop, step = (float(v) for v in spec.split(":"))
        except ValueError:
            raise DataError(f"--times {spec!r}: use START:STOP:STEP, e.g. 0:24:0.5") from None
        if not all(np.isfinite([start, stop, step])) or step <= 0 or stop < start:
            raise DataError(f"--times {spec!r}: need finite numbers, STEP > 0 and STOP >= START")
        n = int((stop - start) / step) + 1
        if n > limit:
            raise DataError(f"--times {spec!r}: {n:,} times is more than the limit of {limit:,}; use a larger STEP (or set LDPK_MAX_TIMES)")  # fmt: skip
        return np.arange(start, stop + step / 2, step)
    else:
        return None
    if times.size == 0:
        raise DataError(f"{where}: no times in the file")
    if times.size > limit:
        raise DataError(f"{where}: {times.size:,} times is more than the limit of {limit:,} (set LDPK_MAX_TIMES to raise it)")  # fmt: skip
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise DataError(f"{where}: times must be finite numbers; line {bad[0] + 1} holds {times[bad[0]]:g}")  # fmt: skip
    if np.any(np.diff(times) < 0):
        raise DataError(f"{where}: times must be in increasing order (line {int(np.argmax(np.diff(times) < 0)) + 2})")  # fmt: skip
    return times


def _params(items: Sequence[str]) -> dict[str, float]:
    from ldpk import DataError

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


def cmd_show(args: argparse.Namespace) -> int:
    import ldpk

    print(ldpk.report.describe_model(ldpk.load_model(args.model)))
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    import ldpk

    path = Path(args.file)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ldpk.DataError(f"{path}: a model file ends in .yaml, e.g. ldpk new my_model.yaml")
    if path.exists():
        raise ldpk.DataError(f"{path}: exists; ldpk new never overwrites a file, choose another name")  # fmt: skip
    text = ldpk.model_template(args.name or path.stem)
    ldpk.report.write_text(text, path)
    print(f"wrote {path}: a commented model to edit; check it with `ldpk check {path}`")
    return 0


def _regimen_text(doses: Sequence[object], unit: str, time_unit: str) -> str:
    """A regimen in words for a figure title, e.g. '320 mg oral at 0 h, every 12 h x 6'."""
    parts = []
    for d in doses:
        text = f"{float(d.amount):g} {unit} {d.route or ''} at {float(d.time):g} {time_unit}".replace("  ", " ")  # type: ignore[attr-defined]  # fmt: skip
        if getattr(d, "duration", None):
            text += f" over {d.duration:g} {time_unit}"  # type: ignore[attr-defined]
        if d.count > 1:  # type: ignore[attr-defined]
            text += f", every {d.every:g} {time_unit} x {d.count}"  # type: ignore[attr-defined]
        parts.append(text)
    return "; ".join(parts)


def _check_outputs(args: argparse.Namespace, inputs: Sequence[str | None]) -> None:
    """Refuse --out/--plot that would overwrite an input or each other, or have the wrong
    suffix: checked before anything is computed or written."""
    import ldpk

    targets = [(f"--{flag}", getattr(args, flag)) for flag in ("out", "plot") if getattr(args, flag, None)]  # fmt: skip
    _refuse_overlaps(targets, [p for p in inputs if p])
    if getattr(args, "out", None) and Path(args.out).suffix.lower() not in (".csv", ".parquet"):
        raise ldpk.DataError(f"--out {args.out}: the table is written as FILE.csv or FILE.parquet")
    if getattr(args, "plot", None) and Path(args.plot).suffix.lower() not in _PLOT_FORMATS:
        raise ldpk.DataError(f"--plot {args.plot}: a figure is FILE{', FILE'.join(_PLOT_FORMATS)}")


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    import ldpk

    model = ldpk.load_model(args.model)
    params = _params(args.param)
    unknown = set(params) - set(model.parameter_names)
    if unknown:
        raise ldpk.DataError(
            f"--param: unknown parameter(s) {sorted(unknown)}; parameters of {model.name}: "
            f"{', '.join(model.parameter_names)}"
        )
    _check_outputs(args, (args.data, args.model, args.times_file))
    if args.data and (args.dose or args.times or args.times_file or args.plot or args.n):
        raise ldpk.DataError("--data predicts the records of the data file: drop --dose, --times, --times-file, --plot and --n")  # fmt: skip
    if args.seed is not None and not args.n:
        raise ldpk.DataError("--seed draws virtual subjects: give it with --n")
    if args.n is not None and args.n < 1:
        raise ldpk.DataError(f"--n {args.n}: the number of virtual subjects must be at least 1")
    times = _times(args.times, args.times_file)
    if args.data:
        frame = ldpk.report.predict_data(model, params, args.data)
    else:
        if args.dose:
            doses = [ldpk.parse_dose(d, model) for d in args.dose]
            if times is None:
                _, times = ldpk.example_regimen(model)
        else:
            doses, example_times = ldpk.example_regimen(model)
            times = example_times if times is None else times
        if args.n:
            overlap = sorted(set(params) & {p.name for p in model.parameters if p.iiv})
            if overlap:
                raise ldpk.DataError(f"--param {', '.join(overlap)}: these vary between the virtual subjects of --n; fix them by leaving out --n")  # fmt: skip
            params = {**params, **ldpk.virtual_subjects(model, args.n, 0 if args.seed is None else args.seed)}  # fmt: skip
        sim = ldpk.simulate(model, params or None, doses, times, progress=True)  # bar when chunked
        frame = ldpk.report.simulation_frame(sim)
        if args.n:
            frame = frame.rename(columns={"set": "ID"}).assign(ID=lambda f: f["ID"] + 1)
    if args.out:
        ldpk.report.write_table(frame, args.out)
        print(f"wrote {args.out}")
    else:
        with pd.option_context("display.max_rows", 40, "display.width", 120):
            print(frame.to_string(index=False, max_rows=40))
    if args.plot:
        who = f", {args.n} virtual subjects" if args.n else ""
        title = f"{model.name}: {_regimen_text(doses, model.amount_unit, model.time_unit)}{who}"
        ldpk.plots.plot_simulation(sim, args.plot, log=args.log, title=title)
        print(f"wrote {args.plot}")
    return 0


def _read_study(model: object, path: str, config: str | None, time_unit: str | None) -> object:
    """The study for ``ldpk fit``: read by :func:`ldpk.data.read_study` (NONMEM-style or tidy
    biodistribution table) with the config's ``data:`` options, ``--time-unit`` overriding."""
    from ldpk import DataError, read_config, read_study

    options = dict(read_config(config).get("data") or {})
    if time_unit:
        options["time_unit"] = time_unit
    if not Path(path).is_file():
        raise DataError(f"{path}: no such data file")
    return read_study(model, path, **options)


def _print_fit(fit: object, written: Sequence[object]) -> None:
    """The summary table, the convergence warnings and the files written."""
    import pandas as pd

    import ldpk

    table = ldpk.report.fit_summary_frame(fit).drop(columns=["description", "prior"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(ldpk.report.summary_for_display(table).to_string(index=False))
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

    protect = tuple(p for p in (args.data, args.model, args.config) if p)
    ldpk.report.check_report_folder(args.out, protect)
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
    written = ldpk.report.write_fit_report(fit, args.out, protect=protect)
    _print_fit(fit, written)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import ldpk

    for p in ldpk.report.simulation_demo(args.out):
        print(f"wrote {p}")
    if args.no_fit:
        return 0
    fit, written = ldpk.report.fit_demo(
        Path(args.out) / "fit", method=args.method, progress=not args.no_progress, log=print
    )
    _print_fit(fit, written)
    return 0


# ---- ldpk sweep ---------------------------------------------------------------------------
#: Words users may mean by a dose; a grid over them is refused with a pointer to --dose.
_DOSE_WORDS = {"dose", "doses", "amt", "amount"}
#: Figure formats of --plot (matplotlib's, by suffix).
_PLOT_FORMATS = (".png", ".pdf", ".svg")
#: Bytes per value of a --out table: float64 in parquet, ~24 characters of text in CSV.
_TABLE_BYTES = {".csv": 24, ".parquet": 8}


def _items(values: Sequence[str], flag: str) -> list[str]:
    """Repeatable options that also take comma-separated lists: ``--x a --x b,c``."""
    from ldpk import DataError

    out = []
    for v in values:
        for item in v.split(","):
            if not item.strip():
                raise DataError(f"{flag} {v!r}: an empty item; give names separated by commas")
            out.append(item.strip())
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise DataError(f"{flag}: {', '.join(dup)} given more than once")
    return out


def _unknown_parameter(model: object, name: str, flag: str) -> Exception:
    from ldpk import DataError

    hint = ""
    if name.lower() in _DOSE_WORDS:
        hint = " (doses are regimens, not parameters: give --dose 1e6 --dose 1e7 ..., with --route and --schedule)"  # fmt: skip
    return DataError(
        f"{flag} {name}: unknown parameter {name!r} of {model.name}; parameters: "  # type: ignore[attr-defined]
        f"{', '.join(model.parameter_names)}{hint}"  # type: ignore[attr-defined]
    )


def _sweep_table_spec(args: argparse.Namespace, model: object) -> tuple[dict, dict, dict]:
    """(grid values, distributions, fixed values) of --grid, --sample and --param, checked."""
    from ldpk import DataError
    from ldpk.paramsets import METHODS, parse_assignment

    fixed = _params(args.param)
    grid_values: dict[str, np.ndarray] = {}
    dists: dict[str, object] = {}
    seen: dict[str, str] = {}
    pairs = [("--param", k, v) for k, v in fixed.items()]
    pairs += [("--grid", *parse_assignment(g, "grid")) for g in args.grid]
    pairs += [("--sample", *parse_assignment(d, "sample")) for d in args.sample]
    for flag, name, value in pairs:
        if name not in model.parameter_names:  # type: ignore[attr-defined]
            raise _unknown_parameter(model, name, flag)
        if name in seen:
            raise DataError(f"{flag} {name}: parameter {name} is already given by {seen[name]}; give each parameter once")  # fmt: skip
        seen[name] = flag
        if flag == "--grid":
            grid_values[name] = value  # type: ignore[assignment]
        elif flag == "--sample":
            dists[name] = value
    if args.method is not None and args.method not in METHODS:
        raise DataError(f"--method {args.method!r}: unknown sampling method; valid: {', '.join(METHODS)}")  # fmt: skip
    if dists:
        if args.n is None:
            raise DataError("--n: give the number of parameter sets to draw for --sample, e.g. --n 1024")  # fmt: skip
        if args.n <= 0:
            raise DataError(f"--n {args.n}: the number of sampled parameter sets must be at least 1")  # fmt: skip
    elif args.n is not None:
        raise DataError(f"--n {args.n}: --n counts the parameter sets drawn for --sample; give --sample NAME=distribution too")  # fmt: skip
    return grid_values, dists, fixed


def _sweep_table(
    model: object, grid_values: dict, dists: dict, fixed: dict, args: argparse.Namespace
) -> object:
    """The parameter table: the grid, the samples, or every grid point crossed with the same
    samples (grid slowest); --param values are constant columns."""
    import ldpk

    method = args.method or "sobol"
    seed = 0 if args.seed is None else args.seed
    if dists:
        samples = ldpk.sample({**dists, **fixed}, args.n, method=method, seed=seed)
        if not grid_values:
            return samples
        g = ldpk.grid(**grid_values)
        cols = {k: np.repeat(g[k], samples.n) for k in g}
        cols.update({k: np.tile(samples[k], g.n) for k in samples})
        prov = {**samples.provenance, "method": f"grid x {method}", "grid": g.provenance["grid"]}  # fmt: skip
        return ldpk.ParameterTable.from_mapping(cols, prov)
    if grid_values or fixed:
        return ldpk.grid(**grid_values, **{k: [v] for k, v in fixed.items()})
    first = model.parameters[0]  # type: ignore[attr-defined]
    return ldpk.grid(**{first.name: [first.value]})  # one set: the model's values


def _sweep_regimens(args: argparse.Namespace, model: object) -> tuple[dict, list[float]]:
    """The named regimens of --dose x --route x --schedule (or the model's example regimen)
    and the distinct dose levels."""
    import ldpk
    from ldpk import DataError

    if not args.dose:
        for flag, given in (("--route", args.route), ("--schedule", args.schedule), ("--duration", args.duration)):  # fmt: skip
            if given:
                raise DataError(f"{flag} builds regimens with --dose: give --dose AMOUNT too")
        doses, _ = ldpk.example_regimen(model)  # type: ignore[arg-type]
        return {"example": doses}, []
    amounts = []
    for text in _items(args.dose, "--dose"):
        try:
            a = float(text)
        except ValueError:
            unit = model.amount_unit or "model amount unit"  # type: ignore[attr-defined]
            raise DataError(f"--dose {text!r}: give a dose amount ({unit}), e.g. --dose 100 (routes go to --route, dose times to --schedule)") from None  # fmt: skip
        if not np.isfinite(a) or a <= 0:
            raise DataError(f"--dose {text!r}: a dose must be a finite number > 0")
        amounts.append(a)
    routes = _items(args.route, "--route") if args.route else []
    if not routes:
        names = model.route_names  # type: ignore[attr-defined]
        routes = ["iv" if "iv" in names else names[0]]
    for r in routes:
        if r not in model.route_names:  # type: ignore[attr-defined]
            raise DataError(f"--route {r!r}: {model.name} has no such route; routes: {', '.join(model.route_names)}")  # type: ignore[attr-defined]  # fmt: skip
    schedules: dict[str, list[float]] = {}
    for text in args.schedule:
        name, sep, rhs = (s.strip() for s in text.partition("="))
        try:
            if not sep or not name or not rhs:
                raise ValueError
            when = [float(v) for v in rhs.split(",")]
        except ValueError:
            raise DataError(f"--schedule {text!r}: use NAME=T1,T2,... (dose times in {model.time_unit}), e.g. daily=0,24,48") from None  # type: ignore[attr-defined]  # fmt: skip
        if not all(np.isfinite(when)) or min(when) < 0:
            raise DataError(f"--schedule {text!r}: dose times must be finite and >= 0")
        if name in schedules:
            raise DataError(f"--schedule {name}: schedule {name!r} is given more than once")
        schedules[name] = when
    if args.duration is not None and not (np.isfinite(args.duration) and args.duration > 0):
        raise DataError(f"--duration {args.duration}: an infusion duration must be a finite number > 0")  # fmt: skip
    regs = ldpk.regimens(amounts, routes, schedules or None, duration=args.duration)
    if len(regs) != len(amounts) * len(routes) * max(1, len(schedules)):
        raise DataError(f"--dose {', '.join(args.dose)}: doses that differ beyond 6 significant digits give the same regimen name; round them")  # fmt: skip
    return regs, sorted(set(amounts))


def _sweep_outputs(args: argparse.Namespace, model: object) -> tuple[list[str], list[str], dict]:
    """The outputs, metrics and metric options (--threshold), checked."""
    import ldpk
    from ldpk import DataError
    from ldpk.sweep import DEFAULT_METRICS

    names = model.output_names  # type: ignore[attr-defined]
    outputs = _items([args.outputs], "--outputs") if args.outputs else list(names)
    if bad := [o for o in outputs if o not in names]:
        raise DataError(f"--outputs: {model.name} has no output(s) {', '.join(bad)}; outputs: {', '.join(names)}")  # type: ignore[attr-defined]  # fmt: skip
    known = ldpk.exposure.METRICS
    metrics = _items([args.metrics], "--metrics") if args.metrics else list(DEFAULT_METRICS)
    if bad := [m for m in metrics if m not in known]:
        raise DataError(f"--metrics: unknown metric(s) {', '.join(bad)}; metrics: {', '.join(known)}")  # fmt: skip
    options: dict[str, float] = {}
    if args.threshold is not None:
        if not np.isfinite(args.threshold):
            raise DataError(f"--threshold {args.threshold}: must be a finite number")
        if "time_above" not in metrics:
            raise DataError("--threshold is the option of the time_above metric: add time_above to --metrics")  # fmt: skip
        options["threshold"] = args.threshold
    for m in metrics:
        if missing := [o for o, required in known[m].options.items() if required and o not in options]:  # fmt: skip
            how = "give --threshold X" if missing == ["threshold"] else "ldpk sweep does not take it: use ldpk.sweep(..., metric_options=...) in Python"  # fmt: skip
            raise DataError(f"--metrics {m}: the metric needs option(s) {', '.join(missing)}; {how}")  # fmt: skip
    return outputs, metrics, options


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _refuse_overlaps(written: Sequence[tuple[str, str]], inputs: Sequence[str | Path]) -> None:
    """Refuse an output (flag, path) that is one of the existing ``inputs`` or the same path
    as an earlier output: checked before anything is computed or written."""
    import ldpk

    for i, (flag, path) in enumerate(written):
        for inp in inputs:
            if Path(inp).exists() and _same_path(path, inp):
                raise ldpk.DataError(f"{flag} {path}: is an input file; refusing to overwrite it, choose another path")  # fmt: skip
        for other_flag, other in written[:i]:
            if _same_path(path, other):
                raise ldpk.DataError(f"{flag} {path}: the same path as {other_flag}; the same file cannot hold both, give each output its own path")  # fmt: skip


def _free_disk(path: Path) -> tuple[int, int]:
    """(free bytes, device) of the disk that ``path`` (existing or not) would be written to."""
    import os
    import shutil

    p = path.resolve().parent
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free, os.stat(p).st_dev


def _check_sweep_paths(
    args: argparse.Namespace, inputs: Sequence[str | Path], sizes: dict[str, int]
) -> list[str]:
    """Refuse --out/--store/--plot paths that would overwrite an input or each other, an unknown
    format, or results too large for their disk. Returns the figure paths --plot writes."""
    from ldpk import DataError
    from ldpk.sweep import OUTPUT_FORMATS, RESOURCE_FRACTION

    written: list[tuple[str, str]] = []
    if args.out:
        suffix = Path(args.out).suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise DataError(f"--out {args.out}: unknown format {suffix or '(no suffix)'}; give a path ending in {', '.join(OUTPUT_FORMATS)}")  # fmt: skip
        written.append(("--out", args.out))
        out = Path(args.out)
        if suffix == ".zarr" and out.exists():
            raise DataError(f"--out {args.out}: exists; give a new path (a .zarr output is never overwritten; --store resumes a sweep)")  # fmt: skip
        if out.is_dir():
            raise DataError(f"--out {args.out}: is a folder; give a file path")
    if args.store:
        written.append(("--store", args.store))
    figures: list[str] = []
    if args.plot:
        p = Path(args.plot)
        if p.suffix.lower() not in _PLOT_FORMATS:
            raise DataError(f"--plot {args.plot}: unknown figure format {p.suffix or '(no suffix)'}; give a path ending in {', '.join(_PLOT_FORMATS)}")  # fmt: skip
        figures = [str(p)] + [str(p.with_name(f"{p.stem}-{k}{p.suffix}")) for k in ("metrics", "dose")]  # fmt: skip
        written += [("--plot", f) for f in figures]
    _refuse_overlaps(written, inputs)
    need: dict[int, list[tuple[str, int, int]]] = {}
    for flag, key in (("--out", "out"), ("--store", "store")):
        path = getattr(args, key)
        if path and not (key == "store" and Path(path).exists()):  # a store resumes in place
            free, dev = _free_disk(Path(path))
            need.setdefault(dev, []).append((f"{flag} {path}", sizes[key], free))
    for entries in need.values():
        total = sum(n for _, n, _ in entries)
        free = entries[0][2]
        if total > RESOURCE_FRACTION * free:
            what = " and ".join(e[0] for e in entries)
            raise DataError(
                f"{what}: the results of {sizes['sets']:,} sets x {sizes['regimens']} regimens "
                f"x {sizes['times']} times would take about {total / 1e9:.3g} GB, more than the "
                f"{free / 1e9:.3g} GB free on that disk; give fewer sets (--n, --grid) or times "
                "(--times), or a path on a disk with room"
            )
    return figures


def _sweep_sizes(
    n_sets: int, n_params: int, n_regimens: int, n_times: int, n_outputs: int, n_metrics: int,
    suffix: str,
) -> dict[str, int]:  # fmt: skip
    """Estimated bytes of --out (by format) and of --store: sets x regimens x times x outputs
    x 8 of time courses (.nc, .zarr, store) plus the metrics; a table (.csv, .parquet) has
    one row per set and regimen with the parameters, metrics, set, regimen and status."""
    cells = n_sets * n_regimens
    metrics = cells * 8 * n_metrics * n_outputs
    courses = cells * n_times * n_outputs * 8
    if suffix in (".nc", ".zarr"):
        out = courses + metrics
    else:
        out = cells * (n_params + n_metrics * n_outputs + 3) * _TABLE_BYTES.get(suffix, 8)
    store = courses + metrics + cells + n_sets * 8 * n_params
    # In memory: the table (about three copies while it is built), the metrics and status,
    # and the time courses unless they stream to a store.
    memory = 3 * n_sets * 8 * n_params + metrics + cells
    return {
        "sets": n_sets, "regimens": n_regimens, "times": n_times, "out": out, "store": store,
        "memory": memory, "courses": courses,
    }  # fmt: skip


def _check_sweep_memory(sizes: dict[str, int], time_courses: bool, store: str | None) -> None:
    """Refuse a sweep whose parameter table and results would not fit in the free memory
    (before the table is built; :func:`ldpk.sweep` checks its results again)."""
    import os

    from ldpk import DataError
    from ldpk.sweep import RESOURCE_FRACTION

    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    need = sizes["memory"] + (sizes["courses"] if time_courses and not store else 0)
    if need > RESOURCE_FRACTION * free:
        streams = time_courses and not store
        hint = ", or --store DIR.zarr to stream the time courses to disk" if streams else ""
        raise DataError(
            f"--grid/--sample: {sizes['sets']:,} sets x {sizes['regimens']} regimens would take "
            f"about {need / 1e9:.3g} GB of memory, more than the {free / 1e9:.3g} GB free; give "
            f"fewer sets (--n, --grid){hint}"
        )


def cmd_sweep(args: argparse.Namespace) -> int:
    import math

    import ldpk
    from ldpk import DataError
    from ldpk.sweep import save, summary

    if args.store:  # what Ctrl-C leaves: the finished chunks, which a rerun resumes from
        args.interrupted = f"interrupted; the finished chunks are kept in {args.store}: run the same command again to resume"  # fmt: skip
    model = ldpk.load_model(args.model)
    grid_values, dists, fixed = _sweep_table_spec(args, model)
    regs, dose_levels = _sweep_regimens(args, model)
    times = _times(args.times, args.times_file)
    flag = "--times-file" if args.times_file else "--times"
    if times is None:
        if args.dose:
            raise DataError("--times: give the output times, START:STOP:STEP (model time unit), e.g. --times 0:24:0.5")  # fmt: skip
        _, times = ldpk.example_regimen(model)
    times = np.asarray(times, dtype=float).reshape(-1)
    if times.size < 2 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise DataError(f"{flag}: need at least two finite, strictly increasing times (the metrics are computed on them)")  # fmt: skip
    outputs, metrics, options = _sweep_outputs(args, model)
    if args.chunk_size is not None and args.chunk_size <= 0:
        raise DataError(f"--chunk-size {args.chunk_size}: must be a positive number of parameter sets")  # fmt: skip
    if args.scheduler is not None and not args.scheduler.strip():
        raise DataError("--scheduler: give the scheduler address, e.g. tcp://127.0.0.1:8786")
    n_sets = math.prod(len(v) for v in grid_values.values()) * (args.n if dists else 1)
    n_params = len(grid_values) + len(dists) + len(fixed) or 1
    suffix = Path(args.out).suffix.lower() if args.out else ""
    sizes = _sweep_sizes(n_sets, n_params, len(regs), times.size, len(outputs), len(metrics), suffix)  # fmt: skip
    inputs = [p for p in (model.source, args.times_file) if p]
    figures = _check_sweep_paths(args, inputs, sizes)
    time_courses = bool(args.store or args.plot or suffix in (".nc", ".zarr"))
    _check_sweep_memory(sizes, time_courses, args.store)
    table = _sweep_table(model, grid_values, dists, fixed, args)
    ds = ldpk.sweep(
        model,
        table,
        regs,
        times,
        outputs=outputs,
        metrics=metrics,
        metric_options=options,
        chunk_size=args.chunk_size,
        store=args.store,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        time_courses=time_courses,
    )
    # Regimen names as Python strings: a store gives numpy StringDType, which save() cannot
    # convert to fixed-width text.
    ds = ds.assign_coords(regimen=np.array([str(r) for r in ds["regimen"].values], dtype=object))
    written = []
    if args.out:
        written.append(save(ds, args.out))
    if args.store:
        written.append(args.store)
    if figures:
        from ldpk.plots import plot_metric_vs_dose, plot_sweep, plot_sweep_metrics

        plot_sweep(ds, figures[0])
        written.append(figures[0])
        plot_sweep_metrics(ds, figures[1])
        written.append(figures[1])
        if len(dose_levels) >= 2:
            plot_metric_vs_dose(ds, f"{outputs[0]}_{metrics[0]}", figures[2])
            written.append(figures[2])
    print(summary(ds))
    for p in written:
        print(f"wrote {p}")
    return 0


# ---- ldpk design --------------------------------------------------------------------------
def cmd_design(args: argparse.Namespace) -> int:
    import pandas as pd

    import ldpk

    out = Path(args.out) if args.out else Path(f"{Path(args.design).stem}-design")
    design = ldpk.design.read_design_file(args.design)
    if args.small:
        design = design.small()
    ldpk.report.check_report_folder(out, design.inputs, kind="design")
    extras = [w for w, on in (("sampling design", design.sampling), ("dose selection", design.dose_selection)) if on is not None]  # fmt: skip
    print(
        f"design {design.path}: {design.model.name}, {len(design.regimens)} regimens, "
        f"{design.n_trials} trials x {design.n_subjects} subjects"
        + "".join(f", {w}" for w in extras),
        flush=True,
    )
    result = ldpk.design.run_design(design, progress=not args.no_progress)
    written = ldpk.report.write_design_report(result, out, protect=design.inputs)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        if "attainment" in result.tables:
            print("\ntarget attainment (fraction of subjects; median and interval over trials):")
            cols = ["target", "regimen", "median", "lower", "upper"]
            print(result.tables["attainment"][cols].to_string(index=False, float_format="{:.3g}".format))  # fmt: skip
        if "parameters" in result.tables:
            print("\nexpected precision (population FIM):")
            cols = [c for c in result.tables["parameters"].columns if c == "parameter" or c.startswith("rse_percent")]  # fmt: skip
            print(result.tables["parameters"][cols].to_string(index=False, float_format="{:.3g}".format))  # fmt: skip
        if result.optimised is not None:
            print(f"optimised sampling times: efficiency {result.optimised.efficiency:.3g} against the start design")  # fmt: skip
        if result.dose_selection is not None:
            print(f"\n{result.dose_selection}")
    for w in result.warnings:
        print(f"warning: {w}")
    print()
    for p in written:
        print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ldpk",
        description="Pharmacokinetics, biodistribution and PK-PD of living drugs, on JAX.",
    )
    from ldpk import __version__

    ap.add_argument("--version", action="version", version=f"ldpk {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("check", help="validate a model file")
    p.add_argument("file", help="model YAML file (or a built-in model name)")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser(
        "show",
        help="list a model's parameters (value, unit, prior, variability), outputs and references",
    )
    p.add_argument("model", help="model YAML file or a built-in model name")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser(
        "new",
        help="write a commented model file to start from",
        description="Write FILE.yaml: a small, valid model (cells given IV, lung trapping, "
        "liver uptake) whose every entry is commented. Never overwrites a file.",
    )
    p.add_argument("file", help="the model file to write, e.g. my_model.yaml")
    p.add_argument("--name", help="the model's name (default: the file name)")
    p.set_defaults(fn=cmd_new)
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
    p.add_argument(
        "--n",
        type=int,
        help="simulate N virtual subjects: each parameter with between-subject variability "
        "(iiv) drawn log-normally around its value; the plot shows their median and 5-95 %% band",
    )
    p.add_argument("--seed", type=int, help="random seed of --n (default 0)")
    p.add_argument("--times", help="START:STOP:STEP (model time unit)")
    p.add_argument("--times-file", help="file with one prediction time per line")
    p.add_argument("--out", help="write results to FILE.csv or FILE.parquet (atomically)")
    p.add_argument("--plot", help="write a figure of the time course (FILE.png, .pdf or .svg)")
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
        help="laplace (default: naive-pooled fit, Laplace approximation at the mode, 500 "
        "draws; under a minute) or nuts (the study's population model, 2 chains x 300 "
        "warm-up + 300 draws; minutes)",
    )
    p.add_argument("--no-fit", action="store_true", help="only the simulation part")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser(
        "sweep",
        help="simulate many parameter sets under many regimens: time courses and exposure",
        description="Run MODEL (a built-in name or a YAML file) for every parameter set "
        "(--grid: the Cartesian product of the values; --sample: --n sets drawn from the "
        "distributions; both: every grid point crossed with the same --n samples; --param: "
        "fixed values) under every regimen (each --dose amount x --route x --schedule, "
        "named 'route dose [schedule]'; without --dose, the model's example regimen). Prints "
        "each exposure metric's median and 5-95 % range per regimen, and writes the results "
        "to --out, --store and --plot.",
    )
    p.add_argument("model")
    p.add_argument(
        "--sample",
        action="append",
        default=[],
        metavar="NAME=DIST",
        help='NAME=DISTRIBUTION, e.g. "CL=lognormal(5, 0.3)" (median, SD of log); also uniform, '
        "loguniform, normal, truncnormal, triangular, constant (repeatable)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        help="NAME=V1,V2,... or NAME=linspace(A, B, N) or NAME=logspace(A, B, N) (repeatable)",
    )
    p.add_argument("--param", action="append", default=[], help="NAME=VALUE: a fixed value (repeatable)")  # fmt: skip
    p.add_argument("--n", type=int, help="parameter sets drawn for --sample")
    p.add_argument("--method", help="sampling method of --sample: sobol (default), lhs or random")
    p.add_argument("--seed", type=int, help="random seed of --sample (default 0)")
    p.add_argument(
        "--dose",
        action="append",
        default=[],
        metavar="AMOUNT",
        help="dose amount (model amount unit; repeatable or comma-separated): one regimen per "
        "dose, route and schedule",
    )
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="ROUTE",
        help="dose route (repeatable or comma-separated; default iv, else the model's first)",
    )
    p.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="NAME=TIMES",
        help="NAME=T1,T2,...: dose times (model time unit) of a named schedule (repeatable; "
        "default: one dose at time 0)",
    )
    p.add_argument("--duration", type=float, help="give each dose as an infusion of this length (model time unit)")  # fmt: skip
    p.add_argument("--times", help="START:STOP:STEP (model time unit)")
    p.add_argument("--times-file", help="file with one output time per line")
    p.add_argument("--outputs", help="outputs to keep, comma-separated (default all)")
    p.add_argument("--metrics", help="exposure metrics, comma-separated (default auc,cmax,tmax)")
    p.add_argument("--threshold", type=float, help="threshold of the time_above metric (output unit)")  # fmt: skip
    p.add_argument("--chunk-size", type=int, help="parameter sets per compiled call")
    p.add_argument(
        "--out",
        help="write the results to FILE.zarr or FILE.nc (time courses and metrics), or "
        "FILE.csv or FILE.parquet (one row per set and regimen: parameters, metrics, status)",
    )
    p.add_argument(
        "--store",
        help="stream the time courses to DIR.zarr as they are computed; run again with the "
        "same arguments to resume an interrupted sweep",
    )
    p.add_argument("--scheduler", help="Dask scheduler address: run the chunks on its workers")
    p.add_argument(
        "--plot",
        help="write FILE.png (time-course bands), FILE-metrics.png and, with two or more "
        "doses, FILE-dose.png (the first metric against dose)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser(
        "design",
        help="run a trial design file: target attainment, prediction intervals, FIM, sampling times, dose selection",
        description="Run DESIGN.yaml (a model or a saved fit, the population, regimens, output "
        "times, targets, optionally a sampling design and a dose selection; see "
        "examples/designs/) and write attainment.csv, prediction_intervals.csv, with "
        "`sampling:` parameters.csv, fim.csv and sampling_times.csv, with `dose_selection:` "
        "dose_selection.csv, the figures and report.html into the folder --out. The whole "
        "file is checked before anything is computed.",
    )
    p.add_argument("design", help="the design file (YAML)")
    p.add_argument("--out", help="the folder for the results (default: DESIGN-design); in an existing folder the files of an earlier design report are replaced, other files kept")  # fmt: skip
    p.add_argument(
        "--small",
        action="store_true",
        help="a quick run: at most 20 trials x 20 subjects and 2 optimiser starts",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_design)
    return ap


#: Where an internal error (a bug in ldpk, not a mistake of the user's) should be reported.
BUG_REPORTS = "https://github.com/ldpk/ldpk/issues"
#: Exit statuses: 2 for a mistake in the user's input (as argparse), 130 for Ctrl-C (as the
#: shell), 70 for an internal error (EX_SOFTWARE of sysexits.h).
EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BUG = 2, 130, 70


def _os_error_text(exc: OSError) -> str:
    """An OSError the user's paths cause, in one sentence naming the path."""
    import errno

    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reasons = {
        errno.ENOENT: "no such file or folder",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "the file system is read-only",
        errno.EEXIST: "already exists",
        errno.ENAMETOOLONG: "the name is too long",
    }
    reason = reasons.get(exc.errno or -1, exc.strerror or str(exc))
    return f"{where}: {reason}" if where else reason


def _bug_report(exc: BaseException) -> str:
    """Write the traceback of an internal error to a file; return the user's message."""
    import tempfile
    import traceback

    from ldpk import __version__

    text = "".join(traceback.format_exception(exc))
    try:
        fd, path = tempfile.mkstemp(prefix="ldpk-bug-", suffix=".txt")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(f"ldpk {__version__}, python {sys.version.split()[0]}\n")
            f.write(f"command: ldpk {' '.join(sys.argv[1:])}\n\n{text}")
        where = f"the details are in {path}"
    except OSError:
        where = "the details follow:\n" + text
    return (
        f"internal error: {type(exc).__name__}: {exc}\n"
        f"This is a bug in ldpk {__version__}, not a mistake in your input. Please report it at "
        f"{BUG_REPORTS} with the command you ran; {where}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ldpk`` command. Exit status: 0 done, 2 a mistake in the input (one message,
    nothing written), 130 interrupted (nothing written), 70 an internal error (a bug)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from ldpk import LdpkError

    def fail(text: str, status: int = EXIT_USAGE) -> int:
        print(f"ldpk {args.command}: {text}", file=sys.stderr)
        return status

    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return fail(getattr(args, "interrupted", "interrupted; nothing written"), EXIT_INTERRUPTED)
    except LdpkError as exc:
        return fail(f"error: {exc}")
    except OSError as exc:  # the user's paths: missing, unwritable, full disk
        return fail(f"error: {_os_error_text(exc) if exc.errno is not None else exc}")
    except MemoryError:
        return fail(
            "error: out of memory. Ask for less at once: fewer parameter sets or output times, "
            "or a smaller --chunk-size"
        )
    except Exception as exc:
        if os.environ.get("LDPK_DEBUG"):
            raise
        return fail(_bug_report(exc), EXIT_BUG)


if __name__ == "__main__":
    sys.exit(main())
