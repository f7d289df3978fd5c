"""Writing results: tables (CSV or Parquet), figures and the fit report, always atomically."""

from __future__ import annotations

import base64
import html
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldpk._io import DIR_MODE, atomic_path
from ldpk.errors import DataError
from ldpk.model import Model
from ldpk.solve import Simulation, choose_kernel


def write_table(frame: Any, path: str | Path, protect: tuple[str | Path, ...] = ()) -> Path:
    """Write a pandas DataFrame as CSV or Parquet (by suffix), atomically. Refuses to write
    over any of ``protect`` (the user's inputs)."""
    path = Path(path)
    _refuse_inputs([path], protect)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise DataError(f"{path}: output must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise DataError(
                    "writing .parquet needs pyarrow: pip install 'ldpk[parquet]'"
                ) from None
        else:
            frame.to_csv(tmp, index=False)
    return path


def write_text(text: str, path: str | Path, protect: tuple[str | Path, ...] = ()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; refuses to write over any of
    ``protect`` (the user's inputs)."""
    path = Path(path)
    _refuse_inputs([path], protect)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _header(name: str, unit: str) -> str:
    """A column header that carries its unit: ``cp [mg/L]`` (the name alone when unitless)."""
    return f"{name} [{unit}]" if unit and unit != "1" else name


def simulation_frame(sim: Simulation, units: bool = True) -> Any:
    """A long-format table of a simulation: one row per (parameter set,) time, with every
    compartment amount and output as columns. With ``units`` the headers carry the units,
    ``time [h]``, ``central [mg]``, ``cp [mg/L]`` (unitless columns keep their names)."""
    import pandas as pd

    m = sim.model
    head = _header if units else (lambda name, unit: name)
    x = np.asarray(sim.states)
    y = np.asarray(sim.outputs)
    t = np.asarray(sim.times)
    batch = x.shape[:-2]
    cols: dict[str, Any] = {}
    time = head("time", m.time_unit)
    if batch:
        idx = np.indices(batch + (len(t),)).reshape(len(batch) + 1, -1)
        for k in range(len(batch)):
            cols[f"set{k}" if len(batch) > 1 else "set"] = idx[k]
        cols[time] = np.broadcast_to(t, batch + (len(t),)).ravel()
    else:
        cols[time] = t
    for i, c in enumerate(m.compartments):
        cols[head(c.name, c.unit or m.amount_unit)] = x[..., i].ravel()
    for i, o in enumerate(m.outputs):
        cols[head(o.name, o.unit)] = y[..., i].ravel()
    return pd.DataFrame(cols)


def predict_data(model: Model, params: Any, data: str | Path) -> Any:
    """Predict every observation record of a NONMEM-style events table (CSV or Parquet) with
    ``params`` (mapping name -> value; None: the model's values): the table as read, plus one
    column per model output (``cp [mg/L]``) holding the prediction on observation rows (EVID
    0 and 2) and NaN elsewhere. Every record is validated before anything compiles."""
    from ldpk.data import read_table, records_from_table
    from ldpk.dosing import event_table, stack_tables
    from ldpk.solve import simulate

    table = read_table(data)
    recs = records_from_table(model, table, where=str(data))
    ids = list(recs)
    batch = stack_tables([event_table(recs[i]) for i in ids])
    y = np.asarray(simulate(model, params or None, batch).outputs)
    out = table.copy()
    columns = [_header(o.name, o.unit) for o in model.outputs]
    for name in columns:
        out[name] = np.nan
    for j, sid in enumerate(ids):
        r = recs[sid]
        rows = r.source_rows[np.isin(r.evid, (0, 2))] - 1
        pred = y[j, : batch.n_obs[j]]
        for k, name in enumerate(columns):
            out.loc[out.index[rows], name] = pred[:, k]
    return out


def _prior_words(prior: Any) -> str:
    """A prior in words: ``lognormal(loc=1.01, scale=1)`` plus its median for log-normals."""
    if prior is None:
        return "none (held at its value in a fit)"
    text = _prior_text(prior)
    args = dict(prior.args)
    if prior.dist == "lognormal" and "loc" in args:
        text += f" (median {float(np.exp(args['loc'])):.4g})"
    return text


def describe_model(model: Model) -> str:
    """What ``ldpk show`` prints: the model's description, then every parameter with its
    value, unit, prior, between-subject variability (SD of log, and the CV it implies) and
    description, then compartments, routes (and the default route), outputs (with units) and
    references."""
    lines = [f"{model.name} ({model.source})"]
    if model.description:
        lines.append("  " + " ".join(model.description.split()))
    kind = "linear" if model.is_linear_system else "nonlinear"
    if not model.is_linear_system and model.is_piecewise_linear:
        kind = "piecewise linear"
    lines.append(f"  {kind}; time unit {model.time_unit}; amount unit {model.amount_unit or '-'}")
    rows = [("parameter", "value", "unit", "prior", "variability", "description")]
    for p in model.parameters:
        value = np.asarray(p.value)
        shown = f"{float(value):.6g}" if value.ndim == 0 else f"array{value.shape}"
        iiv = "-" if not p.iiv else f"SD(log) {p.iiv:g} (CV {100 * np.sqrt(np.expm1(p.iiv**2)):.0f} %)"  # fmt: skip
        rows.append((p.name, shown, p.unit or "-", _prior_words(p.prior), iiv, p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])  # fmt: skip
    lines.append("")
    lines.append("  compartments: " + ", ".join(f"{c.name} [{c.unit or '-'}]" for c in model.compartments))  # fmt: skip
    lines.append("  routes:       " + (", ".join(f"{r.name} -> {r.target}" for r in model.routes) or "(none)"))  # fmt: skip
    if model.default_route is not None:
        lines.append(f"  default route: {model.default_route} (doses in data files without CMT or ROUTE)")  # fmt: skip
    lines.append("  outputs:      " + (", ".join(f"{o.name} [{o.unit or '-'}]" for o in model.outputs) or "(none)"))  # fmt: skip
    for ref in model.references:
        lines.append(f"  reference: {ref}")
    if model.notes:
        lines.append("  notes: " + " ".join(model.notes.split()))
    return "\n".join(lines)


def simulation_demo(out_dir: str | Path, n_subjects: int = 1000, seed: int = 0) -> list[Path]:
    """The demo: theophylline-like oral dosing (320 mg every 12 h, 6 doses) in the built-in
    one-compartment model, for the typical subject and a virtual population with the model's
    between-subject variability. Writes simulation.csv, population.csv and simulation.png."""
    import pandas as pd

    from ldpk.dosing import Bolus
    from ldpk.model import load_model
    from ldpk.paramsets import virtual_subjects
    from ldpk.plots import plot_simulation
    from ldpk.solve import simulate

    out = Path(out_dir)
    model = load_model("one_compartment")
    doses = [Bolus(320.0, time=0.0, route="oral", every=12.0, count=6)]
    times = np.arange(0.0, 96.0 + 1e-9, 0.25)
    typical = simulate(model, None, doses, times)
    pop = simulate(model, dict(virtual_subjects(model, n_subjects, seed)), doses, times)
    cp = np.asarray(pop["cp"])
    q = np.percentile(cp, [5, 50, 95], axis=0)
    unit = model.outputs[0].unit
    quant = pd.DataFrame({_header("time", model.time_unit): times} | {_header(f"cp_{k}", unit): v for k, v in zip(("p05", "median", "p95"), q, strict=True)})  # fmt: skip
    written = [
        write_table(simulation_frame(typical), out / "simulation.csv"),
        write_table(quant, out / "population.csv"),
    ]
    plot_simulation(
        pop, out / "simulation.png", title=f"{model.name}: 320 mg oral q12h, {n_subjects} subjects"
    )
    written.append(out / "simulation.png")
    return written


# ---------------------------------------------------------------------------------------------
# The fit report.
# ---------------------------------------------------------------------------------------------

#: Files written by :func:`write_fit_report`, in order.
FIT_REPORT_FILES = (
    "posterior.nc",
    "summary.csv",
    "predictions.csv",
    "goodness_of_fit.png",
    "vpc.png",
    "posterior_predictive.png",
    "trace.png",
    "rank.png",
    "report.html",
)

_KERNEL_TEXT = {
    "analytic": "linear, closed form (sums of exponentials over the transfer paths)",
    "exact": "linear, matrix exponentials",
    "ode": "ODE (diffrax)",
}


def _kernel_text(model: Model, kernel: str) -> str:
    chosen = choose_kernel(model, kernel)
    if chosen == "exact" and model.is_piecewise_linear:
        return "piecewise linear, matrix exponentials between switch times"
    return _KERNEL_TEXT[chosen]


_SETTINGS = {
    "nuts": (
        "chains",
        "warmup",
        "samples",
        "target_accept",
        "max_tree_depth",
        "warmup_max_tree_depth",
        "parameterization",
        "dense_mass",
        "seed",
    ),
    "svi": ("svi_steps", "guide", "learning_rate", "draws", "seed"),
    "laplace": ("draws", "seed"),
    "map": ("seed",),
}


def _refuse_inputs(targets: Sequence[Path], protect: Sequence[str | Path]) -> None:
    """Raise DataError (before anything is written) if a target is one of the inputs."""
    inputs = {Path(p).resolve() for p in protect if p and Path(p).exists()}
    for t in targets:
        if t.resolve() in inputs:
            raise DataError(f"{t}: refusing to overwrite an input file; choose another --out")


def check_report_folder(
    out_dir: str | Path, protect: Sequence[str | Path] = (), *, kind: str = "fit"
) -> Path:
    """Raise :class:`~ldpk.DataError` unless :func:`write_fit_report` (``kind`` 'fit') or
    :func:`write_design_report` (``kind`` 'design') can write into ``out_dir`` without
    touching any of ``protect`` (call it before a long fit or design run): ``out_dir`` is a
    folder or does not exist yet, and the folder that will hold it (its nearest existing
    ancestor) is writable. A design report is not written into a folder holding a fit report
    (``posterior.nc``): both have a ``report.html``. Creates nothing."""
    if kind not in _REPORT_FILES:
        raise DataError(f"check_report_folder(): kind {kind!r}; valid: {', '.join(_REPORT_FILES)}")  # fmt: skip
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; --out names a folder for the report")
    _refuse_inputs([out / f for f in _REPORT_FILES[kind]], protect)
    if kind == "design" and (out / "posterior.nc").exists():
        raise DataError(f"{out}: holds a fit report (posterior.nc), whose report.html the design's would replace; choose another --out")  # fmt: skip
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{out}: {parent} is not a folder; choose another --out")
    for folder in (parent, out) if out.exists() else (parent,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(f"{out}: cannot write into {folder} (permission denied); choose another --out")  # fmt: skip
    return out


def _install_folder(
    tmp: Path, out: Path, names: Sequence[str], known: Sequence[str] = FIT_REPORT_FILES
) -> None:
    """Move the report written into ``tmp`` to ``out``: a rename of the whole folder when
    ``out`` does not exist; otherwise each file is renamed over its namesake (atomic per
    file), report files (``known``: the files a report of its kind may write) of an earlier
    report that this one did not write are deleted, and the user's other files in ``out`` are
    left alone."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        return
    for name in known:
        if name in names:
            os.replace(tmp / name, out / name)
        else:  # a figure of an earlier fit into this folder would mislead
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _prior_text(prior: Any) -> str:
    if prior is None:
        return ""
    if isinstance(prior, (int, float)):
        return f"fixed {prior:g}"
    if prior.dist == "fixed":
        return "fixed (held at its value in a fit)"
    args = ", ".join(f"{k}={v:.4g}" for k, v in prior.args)
    return f"{prior.dist}({args})"


def _parameter_info(fit: Any, name: str) -> tuple[str, str, str]:
    """(meaning, unit, prior) of a population-level variable of a fit."""
    spec, model = fit.spec, fit.model
    if name in spec.priors:
        p = model.parameter(name)
        return p.description or "typical value", p.unit, _prior_text(spec.priors[name])
    for prefix, table, what in (
        ("omega_study_", spec.study_iiv, "between-study SD of log {}"),
        ("omega_", spec.iiv, "between-subject SD of log {}"),
    ):
        if name.startswith(prefix) and name[len(prefix) :] in table:
            key = name[len(prefix) :]
            return what.format(key), "", _prior_text(table[key])
    for out, err in spec.errors.items():
        unit = next((o.unit for o in model.outputs if o.name == out), "")
        if name == f"sigma_add_{out}":
            return f"additive residual SD of {out}", unit, _prior_text(err.additive)
        if name == f"sigma_prop_{out}":
            what = "residual SD of log" if err.kind == "lognormal" else "proportional residual SD of"  # fmt: skip
            return f"{what} {out}", "", _prior_text(err.proportional)
        if name == f"nu_{out}":
            return f"Student-t degrees of freedom of {out}", "", _prior_text(err.nu)
    for c in spec.covariates:
        for site, beta in zip(c.site_names, c.betas, strict=True):
            if name == site:
                return f"{c.kind} effect of {c.covariate} on {c.parameter}", "", _prior_text(beta)
    return "", "", ""


def fit_summary_frame(fit: Any) -> Any:
    """The posterior summary (:meth:`~ldpk.Fit.summary`) as a flat table: one row per
    population parameter with its name, meaning, unit and prior, then the summary statistics."""
    s = fit.summary()
    s = s.rename_axis("parameter").reset_index()
    info = [_parameter_info(fit, str(n)) for n in s["parameter"]]
    s.insert(1, "description", [i[0] for i in info])
    s.insert(2, "unit", [i[1] for i in info])
    s.insert(3, "prior", [i[2] for i in info])
    return s


#: How :func:`summary_for_display` writes each column of a posterior summary: estimates and
#: their intervals to 4 significant digits, RSE % to one decimal, effective sample sizes as
#: whole draws, R-hat to 3 decimals, Monte-Carlo errors to 2 significant digits.
_DISPLAY = {"rse_pct": "{:.1f}", "ess_bulk": "{:.0f}", "ess_tail": "{:.0f}", "r_hat": "{:.3f}", "mcse_mean": "{:.2g}", "mcse_sd": "{:.2g}"}  # fmt: skip


def summary_for_display(frame: Any) -> Any:
    """A posterior summary (:meth:`~ldpk.Fit.summary` or :func:`fit_summary_frame`) with its
    numbers as rounded text for a screen or a page; files keep full precision."""

    def text(col: str, v: Any) -> Any:
        if not isinstance(v, (float, np.floating)):
            return v
        if not np.isfinite(v):
            return "–"
        return _DISPLAY.get(col, "{:.4g}").format(v)

    return frame.apply(lambda c: c.map(lambda v: text(str(c.name), v)))


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def _html_table(frame: Any, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items
    )
    return f'<table class="kv">{rows}</table>'


def _observation_counts(fit: Any) -> Any:
    import pandas as pd

    ds = fit.dataset
    rows = []
    for i, o in enumerate(fit.model.outputs):
        sel = np.asarray(ds.output) == i
        if not sel.any():
            continue
        err = fit.spec.errors.get(o.name)
        rows.append(
            {
                "output": o.name,
                "unit": o.unit,
                "observations": int(sel.sum()),
                "censored": int((np.asarray(ds.censored)[sel] != 0).sum()),
                "subjects": int(np.unique(np.asarray(ds.subject)[sel]).size),
                "residual error": err.kind if err is not None else "",
            }
        )
    return pd.DataFrame(rows)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} table.kv th{text-align:left} table.kv td{text-align:left}
td:first-child{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace}
.warn{background:#fff3f0;border:2px solid #d9534f;border-radius:6px;padding:.6em 1.2em}
.warn h2{border:none;margin-top:.2em;color:#b52b27}
.ok{background:#effaf0;border:2px solid #3c9a4a;border-radius:6px;padding:.6em 1.2em;
color:#22662c;font-weight:600}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
code{font-family:ui-monospace,Menlo,Consolas,monospace}
"""


def _fit_html(
    fit: Any,
    summary: Any,
    figures: Sequence[tuple[Path, str, str]],
    failed: Sequence[str],
    files: Sequence[Path],
    seconds: float,
) -> str:
    """The self-contained HTML report (figures embedded as base64 PNG)."""
    from ldpk._version import __version__

    model, ds, opts = fit.model, fit.dataset, fit.options
    warn = list(fit.convergence())
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ldpk fit report: {esc(model.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Fit report: {esc(model.name)}</h1>",
        f"<p class='sub'>{esc(fit.method.upper())} · {ds.n_subjects} subjects, {ds.n_obs} "
        f"observations · ldpk {esc(__version__)} · {time.strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    if warn or failed:
        items = "".join(f"<li>{esc(w)}</li>" for w in [*warn, *failed])
        parts.append(f"<div class='warn'><h2>Warnings ({len(warn) + len(failed)})</h2><ul>{items}</ul></div>")  # fmt: skip
    else:
        parts.append("<div class='ok'>No convergence problems found (R-hat, effective sample size, divergences, E-BFMI).</div>")  # fmt: skip
    parts.append("<h2>Population parameters</h2>")
    parts.append(_html_table(summary_for_display(summary)))
    parts.append(
        "<p class='sub'>mean, median, sd, the 90 % equal-tailed credible interval (eti90) and "
        "the relative standard error (rse_pct = 100 sd / |mean|) of each typical value (θ), "
        "between-subject SD of the log parameter (ω) and residual-error parameter (σ); with "
        "NUTS also the effective sample sizes, R-hat and Monte Carlo standard errors. "
        "Rounded here; summary.csv has every digit.</p>"
    )
    settings = ", ".join(f"{k}={getattr(opts, k)}" for k in _SETTINGS.get(fit.method, ()) if getattr(opts, k) is not None)  # fmt: skip
    if "ldpk_centred" in fit.posterior.attrs:  # what parameterization='auto' chose
        settings += f" (centred: {fit.posterior.attrs['ldpk_centred'] or 'none'})"
    if held := fit.posterior.attrs.get("ldpk_start_held"):  # degenerate joint mode
        settings += (
            f"; started with {held} at prior medians (the joint mode put them in a prior tail)"
        )
    timings = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in fit.timings.items())
    items: list[tuple[str, Any]] = [
        ("model", model.name),
        ("model file", model.source),
        ("description", model.description.strip()),
        ("kernel", _kernel_text(model, fit.kernel)),
        ("data", ds.source),
        ("subjects", ds.n_subjects),
        ("observations", ds.n_obs),
        ("time unit", model.time_unit),
        ("method", fit.method),
        ("settings", settings),
        ("fixed parameters", ", ".join(f"{k}={v:g}" for k, v in fit.spec.fixed.items()) or "none"),
        (
            "covariate effects",
            ", ".join(f"{c.kind} {c.covariate} on {c.parameter}" for c in fit.spec.covariates)
            or "none",
        ),
        ("timings", f"{timings}; report {seconds:.1f} s" if timings else f"report {seconds:.1f} s"),
        ("ldpk version", __version__),
    ]
    if ds.study_names:
        items.insert(6, ("studies", ", ".join(map(str, ds.study_names))))
    parts.append("<h2>Model and data</h2>")
    parts.append(_kv_table(items))
    parts.append("<h3>Observations per output</h3>")
    parts.append(_html_table(_observation_counts(fit)))
    parts += _figures_html(figures)
    parts.append("<h2>Files</h2><ul>")
    parts += [f"<li><code>{esc(p.name)}</code></li>" for p in files]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_fit_report(
    fit: Any, out_dir: str | Path, *, protect: Sequence[str | Path] = ()
) -> list[Path]:
    """Write everything about a :class:`~ldpk.Fit` into ``out_dir`` and return the paths:

    - ``posterior.nc``: the posterior DataTree with the model file, data file and settings
      the fit is rebuilt from (:meth:`~ldpk.Fit.save`; ``ldpk.load_fit(out_dir)`` reads it
      back as a :class:`~ldpk.Fit`);
    - ``summary.csv``: the population parameters (:func:`fit_summary_frame`);
    - ``predictions.csv``: one row per observation (:func:`ldpk.plots.observation_table`);
    - figures: ``goodness_of_fit.png``, ``vpc.png``, ``posterior_predictive.png``, and for
      sampled posteriors ``trace.png`` and (more than one chain) ``rank.png``;
    - ``report.html``: a self-contained page with the convergence warnings, the parameter
      table, the model/data/method summary and the figures embedded.

    Nothing is written half: the report goes into a temporary sibling folder that is renamed
    to ``out_dir`` at the end (or, when ``out_dir`` exists, whose files are renamed over their
    namesakes), so an interrupted or failed report leaves ``out_dir`` as it was. ``protect``
    lists the user's inputs (data, model, config), which are never overwritten (checked
    before anything is written). Report files of an earlier fit into the same folder that
    this fit does not write (``rank.png`` after a one-chain fit, a figure that failed) are
    deleted; other files in the folder are left alone. A figure that cannot be drawn is
    reported in the HTML and as a warning instead of losing the rest."""
    t0 = time.perf_counter()
    final = Path(out_dir)
    check_report_folder(final, [*protect, fit.dataset.source, fit.model.source])
    parent = final.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    try:
        written = _write_report_files(fit, out, t0)
        os.chmod(out, DIR_MODE)  # mkdtemp's 0700 would hide the report from colleagues
        _install_folder(out, final, [p.name for p in written])
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return [final / p.name for p in written]


def _write_report_files(fit: Any, out: Path, t0: float) -> list[Path]:
    """Write the report's files into the (new, empty) folder ``out``; return their paths."""
    import ldpk.plots as plots

    written = [fit.save(out / "posterior.nc")]
    summary = fit_summary_frame(fit)
    written.append(write_table(summary, out / "summary.csv"))
    table = plots.observation_table(fit)
    written.append(write_table(table, out / "predictions.csv"))
    post = fit.posterior["posterior"]
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    specs: list[tuple[str, str, str, Callable[[Path], Any]]] = [
        (
            "goodness_of_fit.png",
            "Goodness of fit",
            "Observed vs population (PRED, typical values at the posterior medians) and individual (IPRED, posterior median) predictions with the identity line; individual weighted residuals vs time and vs IPRED. Censored observations are open red triangles at their limit.",
            lambda p: plots.plot_goodness_of_fit(fit, p, table=table),
        ),
        (
            "vpc.png",
            "Visual predictive check",
            "Observed data over the 90 % intervals (bands) and medians (lines) of the simulated 5th, 50th and 95th percentiles per time bin; dashed: observed percentiles.",
            lambda p: plots.plot_vpc(fit, p),
        ),
        (
            "posterior_predictive.png",
            "Posterior predictive by output and time",
            "Median and 5-95th percentile band of the simulated observations (residual error included) pooled by time, against the observed values; outputs sharing a unit share a panel.",
            lambda p: plots.plot_posterior_predictive(fit, p),
        ),
    ]
    if n_draws > 3:
        specs.append(("trace.png", "Posterior traces", "Marginal posterior densities (one line per chain) and traces of the population parameters.", lambda p: plots.plot_trace(fit, p)))  # fmt: skip
    if n_chains > 1:
        specs.append(("rank.png", "Rank plots", "Fractional-rank Δ-ECDF of each chain: lines leaving the envelope (black points) mean the chains sample different distributions.", lambda p: plots.plot_rank(fit, p)))  # fmt: skip
    figures, failed = _draw_figures(specs, out, written)
    html_path = out / "report.html"
    text = _fit_html(fit, summary, figures, failed, [*written, html_path], time.perf_counter() - t0)  # fmt: skip
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    written.append(html_path)
    return written


def _figures_html(figures: Sequence[tuple[Path, str, str]]) -> list[str]:
    """The "Figures" section of a report page: each PNG embedded (base64) with its heading,
    caption and file name."""
    esc = html.escape
    parts = ["<h2>Figures</h2>"]
    for path, heading, caption in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><h3>{esc(heading)}</h3><img alt='{esc(heading)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{esc(caption)} "
            f"(<code>{esc(path.name)}</code>)</figcaption></figure>"
        )
    return parts


def _draw_figures(specs: Sequence[tuple[str, str, str, Any]], out: Path, written: list[Path]) -> tuple[list[tuple[Path, str, str]], list[str]]:  # fmt: skip
    """Draw each (file name, heading, caption, draw(path)) of ``specs`` into ``out``; a figure
    that fails is reported (a warning and a line for the page), never costs the rest. Returns
    (path, heading, caption) of those drawn and the failure messages; appends the drawn paths
    to ``written``."""
    figures: list[tuple[Path, str, str]] = []
    failed: list[str] = []
    for name, heading, caption, draw in specs:
        path = out / name
        before = _pyplot_figures()
        try:
            draw(path)
        except Exception as exc:  # a figure must not cost the user the rest of the report
            _close_new_figures(before)
            msg = f"figure {name} could not be drawn: {type(exc).__name__}: {exc}"
            warnings.warn(msg, stacklevel=3)
            failed.append(msg)
            continue
        figures.append((path, heading, caption))
        written.append(path)
    return figures, failed


def _pyplot_figures() -> set[int]:
    """The numbers of the figures pyplot holds (none if pyplot was never imported)."""
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def _close_new_figures(before: set[int]) -> None:
    """Close the pyplot figures a failed figure left (an ArviZ plot that raised), not the
    user's own."""
    plt = sys.modules.get("matplotlib.pyplot")
    for num in _pyplot_figures() - before:
        plt.close(num)  # type: ignore[union-attr]


#: The bundled example study the demo fits and its model.
DEMO_STUDY = ("mitochondria_iv_biodistribution", "mitochondria_iv")


def fit_demo(
    out_dir: str | Path,
    *,
    method: str = "laplace",
    chains: int = 2,
    warmup: int = 300,
    samples: int = 300,
    draws: int = 500,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> tuple[Any, list[Path]]:
    """The demo's fit: the bundled mitochondria biodistribution study (18F-labelled
    mitochondria IV in mice, destructive sampling, 6 organs in %ID/g and blood in %ID/mL)
    fitted with the ``mitochondria_iv`` model and the study's fit config, and its report
    (:func:`write_fit_report`) in ``out_dir``. Returns the Fit and the paths written.

    ``method``: 'laplace' (default, under a minute on 2 cores from a cold start): the
    naive-pooled fit, the study's config without between-animal variability (one time per
    mouse: the classical analysis of a destructive-sampling design), by the Laplace
    approximation at the posterior mode, ``draws`` draws; or 'nuts' (the study's full
    population config, ``chains`` × ``warmup`` + ``samples``; minutes). ``log`` receives
    progress messages."""
    from ldpk.data import example_data_dir, read_study
    from ldpk.inference import fit
    from ldpk.model import load_model
    from ldpk.population import read_config

    if method not in ("laplace", "nuts"):
        raise DataError(f"demo method {method!r}; valid: laplace, nuts")
    study, model_name = DEMO_STUDY
    folder = example_data_dir()
    csv, config = folder / f"{study}.csv", folder / f"{study}.fit.yaml"
    missing = [p.name for p in (csv, config) if not p.is_file()]
    if missing:
        raise DataError(f"the demo fit needs the bundled example study {study}: {', '.join(missing)} missing from {folder}")  # fmt: skip
    model = load_model(model_name)
    cfg = read_config(config)
    ds = read_study(model, csv, **(cfg.get("data") or {}))
    if method == "nuts":
        how = f"NUTS, {chains} chains x {warmup} warm-up + {samples} draws (minutes)"
    else:  # pooled: no between-animal variability
        pooled = {n: ({**e, "iiv": "none"} if isinstance(e, dict) and "iiv" in e else e) for n, e in (cfg.get("parameters") or {}).items()}  # fmt: skip
        cfg = {**cfg, "parameters": pooled}
        how = f"the Laplace approximation at the posterior mode, naive-pooled (no between-animal variability; {draws} draws)"  # fmt: skip
    log(
        f"fitting {model.name} to {csv.name} ({ds.n_subjects} animals, {ds.n_obs} observations"
        f" of {len(ds.outputs_observed())} outputs) by {how} ..."
    )
    t0 = time.perf_counter()
    sampler = {"chains": chains, "warmup": warmup, "samples": samples} if method == "nuts" else {"draws": draws}  # fmt: skip
    result = fit(model, ds, config=cfg, method=method, progress=progress, **sampler)
    log(f"fitted in {time.perf_counter() - t0:.0f} s; writing the report to {out_dir}")
    written = write_fit_report(result, out_dir, protect=(csv, config))
    return result, written


# ---------------------------------------------------------------------------------------------
# The design report (`ldpk design`).
# ---------------------------------------------------------------------------------------------

#: Files written by :func:`write_design_report`, in order (each only when the design file
#: has its section: attainment with ``targets:``; parameters, fim, sampling times with
#: ``sampling:``; dose selection and dose response with ``dose_selection:``).
DESIGN_REPORT_FILES = (
    "attainment.csv",
    "prediction_intervals.csv",
    "parameters.csv",
    "fim.csv",
    "sampling_times.csv",
    "dose_selection.csv",
    "prediction_bands.png",
    "attainment.png",
    "sampling_times.png",
    "dose_response.png",
    "report.html",
)
_REPORT_FILES = {"fit": FIT_REPORT_FILES, "design": DESIGN_REPORT_FILES}
_PRE_CSS = "pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}"


def write_design_report(
    result: Any, out_dir: str | Path, *, protect: Sequence[str | Path] = ()
) -> list[Path]:
    """Write a design's results (``result``: the :class:`~ldpk.design.DesignResult` of
    :func:`ldpk.design.run_design`) into ``out_dir`` and return the paths:

    - its tables as CSV (``attainment.csv``, ``prediction_intervals.csv``,
      ``parameters.csv``, ``fim.csv``, ``sampling_times.csv``, ``dose_selection.csv``: those
      the design file's sections produced; columns as in ``DesignResult.tables``);
    - figures: ``prediction_bands.png`` (:func:`ldpk.plots.plot_prediction_bands`),
      ``attainment.png`` (:func:`~ldpk.plots.plot_attainment`), ``sampling_times.png``
      (:func:`~ldpk.plots.plot_sampling_times`), ``dose_response.png``
      (:func:`~ldpk.plots.plot_dose_response`);
    - ``report.html``: a self-contained page with the warnings, the inputs, the tables, the
      figures embedded and the design file's text.

    As :func:`write_fit_report`: nothing is written half (a temporary sibling folder renamed
    to ``out_dir``, or, when ``out_dir`` exists, whose files are renamed over their
    namesakes); design-report files of an earlier run that this one does not write are
    deleted, other files are left alone; ``protect`` (and the design's own inputs: the design
    file, a model file, a fit) are never overwritten; a folder holding a fit report is
    refused (:func:`check_report_folder` with ``kind='design'``, checked before anything is
    written). A figure that cannot be drawn is reported in the page and as a warning instead
    of losing the rest."""
    from ldpk.design import DesignResult

    if not isinstance(result, DesignResult):
        raise DataError(f"write_design_report(): give the DesignResult of ldpk.design.run_design, got {type(result).__name__}")  # fmt: skip
    t0 = time.perf_counter()
    final = Path(out_dir)
    check_report_folder(final, [*protect, *result.design.inputs], kind="design")
    parent = final.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    try:
        written = _write_design_files(result, out, t0)
        os.chmod(out, DIR_MODE)  # mkdtemp's 0700 would hide the results from colleagues
        _install_folder(out, final, [p.name for p in written], DESIGN_REPORT_FILES)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return [final / p.name for p in written]


def _write_design_files(result: Any, out: Path, t0: float) -> list[Path]:
    """Write the design report's files into the (new, empty) folder ``out``."""
    import ldpk.plots as plots

    design = result.design
    written = [write_table(frame, out / f"{name}.csv") for name, frame in result.tables.items()]
    title = f"{design.title}: {design.model.name}, {design.n_trials} trials x {design.n_subjects} subjects"  # fmt: skip
    pct = f"{100 * design.interval:g} %"
    specs: list[tuple[str, str, str, Callable[[Path], Any]]] = [
        (
            "prediction_bands.png",
            "Prediction intervals",
            f"Per regimen: the median over trials of the subjects' median (line) and of their 5th and 95th percentiles (band); dashed: the central {pct} interval over trials of the median.",  # fmt: skip
            lambda p: plots.plot_prediction_bands(result.bands, p, title=title),
        )
    ]
    if result.attainment:
        specs.append(("attainment.png", "Target attainment", f"Fraction of subjects meeting each target: median over trials (point) with the central {pct} interval over trials (bar); crosses: the mean.", lambda p: plots.plot_attainment(result.attainment, p, title=title)))  # fmt: skip
    if design.sampling is not None:
        s = design.sampling
        specs.append(("sampling_times.png", "Sampling times", "The typical prediction of the sampled output (at the fixed effects) under each group's regimen; circles: the start design's sampling times; triangles: the D-optimal ones.", lambda p: plots.plot_sampling_times(design.model, s.design, result.optimised, p, t_end=float(design.times[-1]), regimen_names=list(s.regimens))))  # fmt: skip
    if result.dose_selection is not None:
        specs.append(("dose_response.png", "Dose response", "Fraction of subjects attaining against dose (log axis): smoothed median over trials (line) with its interval (band), the quantile over trials that the dose solves (dashed), the unsmoothed median at the simulated levels (points), the target (grey line) and each selected dose (dotted).", lambda p: plots.plot_dose_response(result.dose_selection, p)))  # fmt: skip
    figures, failed = _draw_figures(specs, out, written)
    html_path = out / "report.html"
    text = _design_html(result, figures, failed, [*written, html_path], time.perf_counter() - t0)
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    written.append(html_path)
    return written


def _design_inputs(design: Any) -> list[tuple[str, Any]]:
    """The inputs of a design file, as (label, text) rows of the page."""
    m = design.model
    t = design.times
    options = ", ".join(f"{k}={v:g}" for k, v in design.metric_options.items())
    pop = {
        "fit": f"the posterior of the fit ({getattr(design.fit, 'method', '')}; one draw per trial)",  # fmt: skip
        "priors": f"the model's priors and iiv (seed {design.population_seed})",
        "mapping": "typical values and ω given in the file",
    }[design.population_source]
    items: list[tuple[str, Any]] = [
        ("design file", str(design.path)),
        ("model", f"{m.name} ({m.source})"),
        ("species", m.species or ""),
        ("population", pop),
        ("regimens", "; ".join(f"{k}: {', '.join(v)}" for k, v in design.regimen_texts.items())),
        ("times", f"{t.size} times from {t[0]:g} to {t[-1]:g} {m.time_unit}"),
        ("outputs", ", ".join(design.outputs)),
        ("metrics", ", ".join(design.metrics) + (f" ({options})" if options else "")),
    ]
    items.append(("virtual trial", f"{design.n_trials} trials x {design.n_subjects} subjects, seed {design.seed}, {100 * design.interval:g} % intervals over trials"))  # fmt: skip
    if design.sampling is not None:
        s = design.sampling
        d = s.design
        residual = ", ".join(f"{n}={v:g}" for n, v in zip(d.residual.names, d.residual.values, strict=True))  # fmt: skip
        fixed = ", ".join(f"{k}={v:g}" for k, v in d.fixed_effects.items())
        omega2 = ", ".join(f"{k}={v:g}" for k, v in d.omega2.items()) or "none"
        defaulted = f" ({' and '.join(s.defaulted)} from the population)" if s.defaulted else ""
        items.append(("sampling", f"output {d.output}; FIM {s.kind} (FO); residual {residual}; fixed effects {fixed}; ω² {omega2}{defaulted}"))  # fmt: skip
        if s.optimise is not None:
            items.append(("optimisation", ", ".join(f"{k}={v}" for k, v in s.optimise.items() if v is not None)))  # fmt: skip
    if design.dose_selection is not None:
        ds = design.dose_selection
        unit = m.amount_unit or "model amount unit"
        items.append(("dose selection", f"target {ds.target!r}; templates {', '.join(ds.regimens)}; candidate doses {', '.join(f'{x:g}' for x in ds.doses)} {unit}; {100 * ds.attainment:g} % of subjects in {100 * ds.confidence:g} % of trials"))  # fmt: skip
    return items


def _design_html(
    result: Any,
    figures: Sequence[tuple[Path, str, str]],
    failed: Sequence[str],
    files: Sequence[Path],
    seconds: float,
) -> str:
    """The self-contained HTML page of a design (figures embedded as base64 PNG)."""
    from ldpk._version import __version__

    design, tables = result.design, result.tables
    esc = html.escape
    pct = f"{100 * design.interval:g} %"
    problems = [*result.warnings, *failed]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ldpk design: {esc(design.title)}</title><style>{_CSS}{_PRE_CSS}</style></head><body>",  # fmt: skip
        f"<h1>{esc(design.title)}</h1>",
        f"<p class='sub'>{esc(design.model.name)} · {design.n_trials} trials x {design.n_subjects} subjects · ldpk {esc(__version__)} · {time.strftime('%Y-%m-%d %H:%M')}</p>",  # fmt: skip
    ]
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems)
        parts.append(f"<div class='warn'><h2>Warnings ({len(problems)})</h2><ul>{items}</ul></div>")  # fmt: skip
    timings = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result.timings.items())
    items = [*_design_inputs(design), ("timings", f"{timings}; report {seconds:.1f} s" if timings else f"report {seconds:.1f} s"), ("ldpk version", __version__)]  # fmt: skip
    parts += ["<h2>Inputs</h2>", _kv_table(items)]
    if "attainment" in tables:
        parts += ["<h2>Target attainment</h2>", _html_table(tables["attainment"])]
        parts.append(f"<p class='sub'>Per trial, the fraction of subjects meeting the target; median, central {pct} interval (lower, upper) and mean over trials.</p>")  # fmt: skip
    parts.append(f"<h2>Prediction intervals</h2><p class='sub'>{len(tables['prediction_intervals'])} rows (regimen x output x time) in <code>prediction_intervals.csv</code>: per trial the 5th, 50th and 95th percentiles over subjects, and over trials the median and central {pct} interval of each.</p>")  # fmt: skip
    if "parameters" in tables:
        parts += ["<h2>Sampling design (population FIM)</h2>", _html_table(tables["parameters"])]
        parts.append("<p class='sub'>Expected standard errors (se) and relative standard errors (rse_percent = 100 se / |value|) from the FO population Fisher information; shrinkage of each group's empirical Bayes estimates (variance scale, 0-1).</p>")  # fmt: skip
        opt = result.optimised
        if opt is not None:
            parts.append(f"<p>D-optimal times: efficiency {opt.efficiency:.4g} against the start design (ln det FIM {opt.ln_det_start:.4g} → {opt.ln_det:.4g}; {esc(str(opt.method))}, {opt.converged} of {opt.starts} runs converged).</p>")  # fmt: skip
        parts += ["<h3>Sampling times</h3>", _html_table(tables["sampling_times"])]
        parts += ["<h3>Fisher information matrix</h3>", _html_table(tables["fim"])]
    if result.dose_selection is not None:
        sel = result.dose_selection
        goal = "lowest" if sel.increasing else "highest"
        unit = sel.dose_unit or "model amount unit"
        parts += ["<h2>Dose selection</h2>", _html_table(tables["dose_selection"])]
        parts.append(f"<p class='sub'>The {goal} dose (per administration, {esc(unit)}; total: the schedule's amount at that dose) at which at least {sel.target:.0%} of subjects meet <code>{esc(sel.criterion)}</code> in at least {sel.confidence:.0%} of {sel.trial.sizes['trial']} trials; median and central {sel.interval:.0%} interval over trials of the attainment at that dose. The recommended schedule has the {'smallest' if sel.increasing else 'largest'} total.</p>")  # fmt: skip
    parts += _figures_html(figures)
    parts += ["<h2>Design file</h2>", f"<pre>{esc(design.text)}</pre>", "<h2>Files</h2><ul>"]
    parts += [f"<li><code>{esc(p.name)}</code></li>" for p in files]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
