"""Sweeps: many parameter sets through one compiled kernel per regimen, chunk by chunk.

``sweep(model, params, regimens, times)`` runs every parameter set of a table (explicit,
:func:`~ldpk.paramsets.grid`, :func:`~ldpk.paramsets.sample` or ``Fit.parameter_table``) under
every named regimen, on the executor of :class:`~ldpk.solve.Simulator` (fixed-size chunks,
each sharded over the local devices), and returns an ``xarray.Dataset`` with dims (set,
regimen, time): one variable per output, the exposure metrics (:mod:`ldpk.exposure`) as
(set, regimen) variables, a per-set ``status``, the parameter values as coordinates on
``set``, units and provenance in attrs.

With ``store="sweep.zarr"`` the time courses stream to a zarr store, chunk by chunk; a chunk
is marked complete only after its values are written, so a sweep interrupted (Ctrl-C, a
killed worker, a lost machine) and started again with the same store resumes from the
chunks not yet complete and gives the same result. With ``scheduler=`` (a
``dask.distributed.Client`` or a scheduler address) the chunks are Dask tasks.

This module knows nothing of fits: a fit hands it a parameter table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ldpk.exposure as exposure
from ldpk.dosing import Bolus, Infusion
from ldpk.errors import DataError
from ldpk.model import Expr, Model
from ldpk.paramsets import ParameterTable
from ldpk.solve import ODEOptions, Simulator, prepare

#: Per-set status codes (the ``status`` variable, dims (set, regimen)).
STATUS = {
    0: "ok",
    1: "ODE solve failed (step limit reached, or the state became non-finite)",
    2: "non-finite state or output (overflow, division by zero, or no steady state)",
}

#: Exposure metrics a sweep computes when none are named.
DEFAULT_METRICS = ("auc", "cmax", "tmax")

#: Fraction of the free memory (or disk, for a store) that one sweep's results may take.
RESOURCE_FRACTION = 0.8


def regimens(
    doses: Sequence[float],
    routes: Sequence[str] = ("iv",),
    schedules: Mapping[str, Sequence[float]] | None = None,
    *,
    duration: float | None = None,
) -> dict[str, list[Bolus | Infusion]]:
    """Named regimens: the Cartesian product of dose levels (model amount unit), routes and
    schedules (name -> dose times in the model time unit; default one dose at time 0).
    ``duration`` (model time unit): each dose an infusion of that length instead of a
    bolus. Names read 'route dose schedule', e.g. ``'iv 1e+06 weekly'``."""
    schedules = dict(schedules or {"single": (0.0,)})
    if not len(doses) or not len(routes) or not schedules:
        raise DataError("regimens(): give at least one dose, one route and one schedule")
    out: dict[str, list[Bolus | Infusion]] = {}
    for route, dose, (label, when) in itertools.product(routes, doses, schedules.items()):
        if not len(when):
            raise DataError(f"regimens(): schedule {label!r} has no dose times")
        name = f"{route} {float(dose):g}" + (f" {label}" if len(schedules) > 1 else "")
        if name in out:
            raise DataError(f"regimens(): two regimens would be named {name!r}; give distinct doses (6 significant digits), routes and schedule names")  # fmt: skip
        if duration is None:
            out[name] = [Bolus(float(dose), time=float(t), route=route) for t in when]
        else:
            out[name] = [
                Infusion(float(dose), time=float(t), route=route, duration=duration) for t in when
            ]
    return out


@dataclass(frozen=True)
class _Plan:
    """Everything a chunk needs (sent to Dask workers): values only, no compiled state."""

    model: Model
    regimens: tuple[tuple[str, tuple[Any, ...]], ...]
    times: tuple[float, ...]
    outputs: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_options: tuple[tuple[str, Any], ...]
    names: tuple[str, ...]  # the table's parameters, the columns of a chunk
    chunk: int
    time_courses: bool
    method: str
    ode: ODEOptions | None

    @property
    def key(self) -> str:
        """A fingerprint of the sweep (everything but the parameter values), the same in
        every process (a store is resumed by another)."""
        text = json.dumps(_canonical(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def metric_names(self) -> list[tuple[str, str, str]]:
        """(variable, output, metric) for every metric of every output."""
        return [(f"{o}_{m}", o, m) for o in self.outputs for m in self.metrics]


def _canonical(obj: Any) -> Any:
    """``obj`` as JSON-able values independent of the process (sets sorted, expressions by
    their source, functions left out)."""
    if isinstance(obj, Expr):
        return ["expr", obj.source]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare}  # fmt: skip
        return [type(obj).__name__, fields]
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return sorted((_canonical(v) for v in obj), key=repr)
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray | np.generic):
        return _canonical(obj.tolist())
    if isinstance(obj, float):
        return repr(obj)
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return repr(obj)


@lru_cache(maxsize=16)
def _simulators(plan: _Plan) -> tuple[Simulator, ...]:
    return tuple(
        prepare(
            plan.model,
            list(reg),
            np.asarray(plan.times),
            method=plan.method,
            ode=plan.ode,
            outputs=plan.outputs,
        )  # fmt: skip
        for _, reg in plan.regimens
    )


@lru_cache(maxsize=16)
def _finish_fn(plan: _Plan, failed: int) -> Any:
    """One compiled function of a chunk's outputs (n, T, k) and solve flags (n,): the status
    (0 ok; ``failed`` where the solve failed, 2 where it gave non-finite values), the metrics
    of each output and, with ``plan.time_courses``, the outputs with failed sets NaN."""
    t = np.asarray(plan.times)
    units = {o.name: o.unit for o in plan.model.outputs}
    options = dict(plan.metric_options)

    # The simulator's outputs are the model's, in model order (those not asked for are not
    # computed): take the plan's, in the plan's order.
    columns = np.asarray([plan.model.output_names.index(o) for o in plan.outputs], dtype=int)

    def fn(y: Any, ok: Any) -> dict[str, Any]:
        y = y[..., columns]
        finite = jnp.all(jnp.isfinite(y), axis=(-2, -1))
        status = jnp.where(ok & finite, 0, jnp.where(ok, 2, failed)).astype(jnp.int8)
        y = jnp.where((status == 0)[:, None, None], y, jnp.nan)
        out = {"status": status}
        for j, o in enumerate(plan.outputs):
            res = exposure.compute(
                t, y[..., j], plan.metrics, output_unit=units[o], time_unit=plan.model.time_unit,
                amount_unit=plan.model.amount_unit or units[o], **options,
            )  # fmt: skip
            out.update({f"{o}_{m}": res[m].value for m in plan.metrics})
            if plan.time_courses:
                out[o] = y[..., j]
        return out

    return jax.jit(fn)


def _run_chunk(plan: _Plan, theta: np.ndarray) -> dict[str, np.ndarray]:
    """Run one chunk of parameter sets (n, P): time courses (n, R, T) per output, metrics and
    status (n, R). Failed sets are NaN. A chunk shorter than ``plan.chunk`` is padded to it,
    so every chunk has one compiled shape."""
    n = theta.shape[0]
    if n < plan.chunk:
        theta = np.concatenate([theta, np.repeat(theta[-1:], plan.chunk - n, axis=0)])
    params = {k: theta[:, i] for i, k in enumerate(plan.names)}
    per_reg = []
    for sim in _simulators(plan):
        full, _ = sim.parameters(params)
        [(_, _, _, y, ok)] = sim.chunks(full, plan.chunk)
        per_reg.append(_finish_fn(plan, 1 if sim.kernel == "ode" else 2)(y, ok))
    return {k: np.stack([np.asarray(r[k])[:n] for r in per_reg], 1) for k in per_reg[0]}


# ---- validation ---------------------------------------------------------------------------
def _table(model: Model, params: Mapping[str, Any] | ParameterTable | None) -> ParameterTable:
    if not params:  # one set: the model's values
        p = model.parameters[0]
        return ParameterTable.from_mapping({p.name: [p.value]}, provenance={"method": "model"})
    table = params if isinstance(params, ParameterTable) else ParameterTable.from_mapping(params)
    unknown = [k for k in table if k not in model.parameter_names]
    if unknown:
        raise DataError(
            f"sweep(): unknown parameter(s) {unknown} for model {model.name!r}; "
            f"parameters: {', '.join(model.parameter_names)}"
        )
    return table


def _regimens(model: Model, regimens: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    items = list(regimens.items()) if isinstance(regimens, Mapping) else [("regimen", regimens)]
    if not items:
        raise DataError("sweep(): give at least one regimen")
    out = []
    for name, reg in items:
        if not isinstance(name, str) or not name:
            raise DataError(f"sweep(): regimen names must be non-empty strings, got {name!r}")
        reg = [reg] if isinstance(reg, Bolus | Infusion | Mapping) else list(reg)
        for d in reg:
            if isinstance(d, Bolus | Infusion) and d.route is not None and d.route not in model.route_names:  # fmt: skip
                raise DataError(
                    f"sweep(): regimen {name!r} doses route {d.route!r}; routes of "
                    f"{model.name}: {', '.join(model.route_names)}"
                )
        out.append((name, tuple(reg)))
    return tuple(out)


def _check_metrics(metrics: Sequence[str], options: Mapping[str, Any]) -> None:
    """Unknown metric names, or options missing or unknown: one DataError before compiling
    (``exposure.compute`` on a tiny curve does the checking)."""
    t = np.array([0.0, 1.0, 2.0])
    with jax.ensure_compile_time_eval():
        exposure.compute(t, np.ones(3), list(metrics), output_unit="1", time_unit="h", **options)


def _free_memory() -> int | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _result_bytes(n: int, plan: _Plan) -> int:
    per_set = len(plan.regimens) * (
        8 * len(plan.metric_names())
        + 1
        + (8 * len(plan.times) * len(plan.outputs) if plan.time_courses else 0)  # fmt: skip
    )
    return n * (per_set + 8 * len(plan.names))


# ---- the sweep ----------------------------------------------------------------------------
def sweep(
    model: Model,
    params: Mapping[str, Any] | ParameterTable | None,
    regimens: Any,
    times: Sequence[float] | np.ndarray,
    *,
    outputs: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    metric_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    store: str | Path | None = None,
    scheduler: Any = None,
    progress: bool = True,
    time_courses: bool = True,
    method: str = "auto",
    ode: ODEOptions | None = None,
) -> Any:
    """Simulate every parameter set of ``params`` under every regimen.

    Parameters
    ----------
    model: the :class:`~ldpk.Model`; parameters the table does not name keep its values.
    params: a :class:`~ldpk.paramsets.ParameterTable` (``ldpk.grid``, ``ldpk.sample``,
        ``Fit.parameter_table``) or a mapping of name -> values in model units (broadcast
        together and flattened into sets).
    regimens: one regimen (a list of doses, as for :func:`ldpk.simulate`) or a mapping of
        names to regimens (:func:`regimens` builds dose x route x schedule products).
    times: output times (model time unit), increasing; the metrics are computed on this grid,
        so give a grid dense enough for them.
    outputs: the outputs to keep (default all); only the compartments they need are solved.
    metrics: exposure metrics of :mod:`ldpk.exposure` (default ``DEFAULT_METRICS``), for each
        output: variables named ``{output}_{metric}``. ``metric_options``: their options
        (``threshold`` for ``time_above``, ``at`` for ``trough``, ...).
    chunk_size: parameter sets per compiled call (default: the fewest chunks of at most
        ``CHUNK_BYTES`` of results each, see :meth:`~ldpk.solve.Simulator.default_chunk`, of
        equal size). The chunk is also the unit of a store's progress and of a Dask task.
    store: a zarr store path: the results stream there chunk by chunk, and the sweep resumes
        from it when started again with the same arguments. A path holding anything else is
        refused (nothing the user has is overwritten).
    scheduler: a ``dask.distributed.Client`` or a scheduler address (needs the ``cluster``
        extra): chunks run as Dask tasks on its workers.
    progress: a progress bar (sets done, sets/s, time left) on stderr.
    time_courses: False keeps only metrics and status (for sweeps too large for memory
        without a store).
    method, ode: the kernel and ODE options, as for :func:`ldpk.simulate`.

    Returns an ``xarray.Dataset`` with dims (set, regimen, time): each output (set, regimen,
    time), each metric (set, regimen), ``status`` (set, regimen; 0 ok, see ``STATUS``), the
    table's parameter values as coordinates on ``set``, units in each variable's attrs and
    provenance (model, ldpk version, sampling method and seed, kernel, failures) in the
    Dataset's attrs. With a store, the time courses are read lazily from it and the rest is
    in memory.
    """
    table = _table(model, params)
    regs = _regimens(model, regimens)
    times_arr = np.asarray(times, dtype=float)
    if times_arr.ndim != 1 or times_arr.size < 1 or not np.all(np.isfinite(times_arr)):
        raise DataError("sweep(): times must be a 1-D array of finite times (model time unit)")
    if np.any(np.diff(times_arr) <= 0):
        raise DataError("sweep(): times must be strictly increasing")
    outs = tuple(outputs) if outputs is not None else model.output_names
    if not outs:
        raise DataError(f"sweep(): model {model.name!r} has no outputs")
    unknown = [o for o in outs if o not in model.output_names]
    if unknown:
        raise DataError(f"sweep(): no output(s) {unknown}; outputs: {', '.join(model.output_names)}")  # fmt: skip
    mets = tuple(DEFAULT_METRICS if metrics is None else metrics)
    opts = dict(metric_options or {})
    if mets:
        _check_metrics(mets, opts)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise DataError(f"sweep(): chunk_size must be a positive integer, got {chunk_size!r}")
    n = table.n
    plan0 = _Plan(
        model, regs, tuple(times_arr.tolist()), outs, mets,
        tuple(sorted((k, _hashable(v)) for k, v in opts.items())), tuple(table), 1,
        time_courses, method, ode,
    )  # fmt: skip
    sims = _simulators(plan0)  # prepares (validates regimens) before anything compiles
    if chunk_size is None:  # the fewest chunks within the memory bound, balanced: the last
        most = min(s.default_chunk() for s in sims)  # chunk pads (computes) little
        k = -(-n // most)
        chunk_size = min(most, -(-n // k))
    chunk = min(n, chunk_size)
    plan = dataclasses.replace(plan0, chunk=chunk)
    need = _result_bytes(n, plan)
    if store is None:
        free = _free_memory()
        if time_courses and free is not None and need > RESOURCE_FRACTION * free:
            raise DataError(
                f"sweep(): the results of {n} sets would take {need / 1e9:.1f} GB, more than "
                f"the {free / 1e9:.1f} GB of memory free: give store='sweep.zarr' to stream "
                "the time courses to disk, or time_courses=False to keep only the metrics"
            )
    theta = _Rows(table, plan.names)
    starts = list(range(0, n, chunk))
    bar = _Progress(n, progress)
    try:
        if store is not None:
            ds = _sweep_to_store(Path(store), plan, table, theta, starts, need, scheduler, bar)
        else:
            values = _empty(plan, n)

            def keep(start: int, res: dict[str, np.ndarray]) -> None:
                for k, v in res.items():
                    values[k][start : start + len(v)] = v

            _execute(plan, theta, starts, scheduler, bar, keep)
            ds = _dataset(plan, table, values)
    finally:
        bar.close()
    _finish_attrs(ds, plan, table, sims)
    return ds


def _hashable(v: Any) -> Any:
    return tuple(np.asarray(v, dtype=float).ravel().tolist()) if np.ndim(v) else float(v)


class _Rows:
    """The table's parameter sets as rows (sets, parameters), stacked a chunk at a time when
    sliced (``rows[s:e]``): no copy of the whole table."""

    def __init__(self, table: ParameterTable, names: Sequence[str]) -> None:
        self.table, self.names = table, tuple(names)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.stack([self.table[k][rows] for k in self.names], axis=1)


def _execute(
    plan: _Plan, theta: _Rows, starts: Sequence[int], scheduler: Any, bar: _Progress,
    done: Any,
) -> None:  # fmt: skip
    """Run the chunks at ``starts`` (in process, in order; or as Dask tasks, in any order),
    calling ``done(start, result)`` as each completes. Only the chunks in flight are held."""

    def finished(start: int, res: dict[str, np.ndarray]) -> None:
        done(start, res)
        bar.update(len(res["status"]))

    if scheduler is None:
        for s in starts:
            finished(s, _run_chunk(plan, theta[s : s + plan.chunk]))
    else:
        from ldpk._cluster import run_on_cluster

        run_on_cluster(scheduler, plan, theta, starts, finished, _run_chunk)


def _dataset(plan: _Plan, table: ParameterTable, values: Mapping[str, np.ndarray]) -> Any:
    import xarray as xr

    m = plan.model
    units = {o.name: o for o in m.outputs}
    data = {}
    for o in plan.outputs:
        if o in values:
            data[o] = xr.DataArray(
                values[o], dims=("set", "regimen", "time"),
                attrs={"unit": units[o].unit, "description": units[o].description},
            )  # fmt: skip
    for var, o, name in plan.metric_names():
        unit = exposure.METRICS[name].unit(units[o].unit, m.time_unit, m.amount_unit or units[o].unit)  # fmt: skip
        data[var] = xr.DataArray(
            values[var], dims=("set", "regimen"),
            attrs={"unit": unit, "description": f"{exposure.METRICS[name].description} of {o}", "output": o, "metric": name},
        )  # fmt: skip
    data["status"] = xr.DataArray(
        values["status"], dims=("set", "regimen"),
        attrs={"flag_values": list(STATUS), "flag_meanings": json.dumps(STATUS)},
    )  # fmt: skip
    return xr.Dataset(data, coords=_coords(plan, table))


def _coords(plan: _Plan, table: ParameterTable) -> dict[str, Any]:
    import xarray as xr

    m = plan.model
    coords: dict[str, Any] = {
        "set": np.arange(table.n),
        "regimen": np.array([r for r, _ in plan.regimens], dtype=object),
        "time": xr.DataArray(np.asarray(plan.times), dims="time", attrs={"unit": m.time_unit}),
    }
    for k in plan.names:
        p = m.parameter(k)
        coords[k] = xr.DataArray(table[k], dims="set", attrs={"unit": p.unit, "description": p.description})  # fmt: skip
    return coords


def _finish_attrs(ds: Any, plan: _Plan, table: ParameterTable, sims: Sequence[Simulator]) -> None:
    from ldpk._version import __version__

    status = np.asarray(ds["status"])
    failed = {STATUS[c]: int(np.sum(status == c)) for c in STATUS if c}
    prov = table.provenance
    m = plan.model
    fixed = {p.name: p.value for p in m.parameters if p.name not in plan.names}
    ds.attrs.update(
        model=m.name,
        model_source=m.source,
        ldpk_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        kernel=",".join(sorted({s.kernel for s in sims})),
        sampling=str(prov.get("method", "table")),
        seed=-1 if prov.get("seed") is None else int(prov["seed"]),
        distributions=json.dumps({k: str(v) for k, v in prov.get("distributions", {}).items()}),
        fixed_parameters=json.dumps({k: float(v) for k, v in fixed.items()}),
        regimens=json.dumps({r: [repr(d) for d in reg] for r, reg in plan.regimens}),
        time_unit=m.time_unit,
        amount_unit=m.amount_unit,
        n_sets=int(table.n),
        n_failed=int(np.sum(np.any(status != 0, axis=1))),
        failures=json.dumps(failed),
        chunk_size=int(plan.chunk),
    )


def summary(ds: Any) -> str:
    """A few lines: sets, regimens, failures by reason, and each metric's median and 5-95 %
    range per regimen (units included)."""
    lines = [
        f"sweep of {ds.attrs.get('model', '?')}: {ds.sizes['set']} sets x "
        f"{ds.sizes['regimen']} regimens, {ds.attrs.get('n_failed', 0)} sets failed"
    ]
    for reason, count in json.loads(ds.attrs.get("failures", "{}")).items():
        if count:
            lines.append(f"  {count} set-regimen pairs: {reason}")
    for var in ds.data_vars:
        if "metric" not in ds[var].attrs:
            continue
        for r in ds["regimen"].values:
            v = np.asarray(ds[var].sel(regimen=r))
            v = v[np.isfinite(v)]
            if v.size:
                q = np.quantile(v, [0.5, 0.05, 0.95])
                lines.append(f"  {var} [{ds[var].attrs['unit']}] {r}: median {q[0]:.4g} (5-95 %: {q[1]:.4g} - {q[2]:.4g})")  # fmt: skip
    return "\n".join(lines)


# ---- progress -----------------------------------------------------------------------------
class _Progress:
    """A progress bar on stderr (sets done, sets/s, time left), or nothing."""

    def __init__(self, n: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n, unit=" sets", unit_scale=True, desc="sweep", smoothing=0.1)

    def update(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- zarr store ---------------------------------------------------------------------------
_DONE = "chunk_done"


def _sweep_to_store(
    path: Path, plan: _Plan, table: ParameterTable, theta: _Rows, starts: list[int],
    need: int, scheduler: Any, bar: Any,
) -> Any:  # fmt: skip
    import xarray as xr

    key = hashlib.sha256((plan.key + _table_key(table)).encode()).hexdigest()
    if path.exists():
        group = _open_existing(path, key)
    else:
        free = shutil.disk_usage(_existing_parent(path)).free
        if need > RESOURCE_FRACTION * free:
            raise DataError(
                f"sweep(): store {path}: the results of {table.n} sets would take "
                f"{need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB free on its disk; "
                "choose a disk with room, fewer sets, fewer times or time_courses=False"
            )
        group = _create_store(path, plan, table, key, len(starts))
    done = np.asarray(group[_DONE][:]).astype(bool)
    todo = [s for i, s in enumerate(starts) if not done[i]]
    bar.update(int(sum(min(plan.chunk, table.n - s) for i, s in enumerate(starts) if done[i])))

    def write(start: int, res: dict[str, np.ndarray]) -> None:
        stop = start + len(res["status"])
        for k, v in res.items():
            group[k][start:stop] = v
        group[_DONE][start // plan.chunk] = 1  # only after the values are stored

    _execute(plan, theta, todo, scheduler, bar, write)
    ds = xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False)
    ds = ds.drop_vars(_DONE)
    ds.attrs.pop("ldpk_sweep_key", None)
    for var in ds.data_vars:
        if var not in plan.outputs:
            ds[var].load()
    return ds


def _table_key(table: ParameterTable) -> str:
    h = hashlib.sha256()
    for k in table:
        h.update(k.encode())
        h.update(np.ascontiguousarray(table[k], dtype=float).tobytes())
    return h.hexdigest()


def _existing_parent(path: Path) -> Path:
    p = path.resolve().parent
    while not p.exists():
        p = p.parent
    return p


def _open_existing(path: Path, key: str) -> Any:
    import zarr

    try:
        group = zarr.open_group(path, mode="r+")
        found = group.attrs.get("ldpk_sweep_key")
    except Exception:  # noqa: BLE001 - anything that is not a zarr group
        found = None
    if found is None:
        raise DataError(
            f"sweep(): store {path} exists and is not an ldpk sweep store; give a new path "
            "(nothing there is overwritten)"
        )
    if found != key:
        raise DataError(
            f"sweep(): store {path} holds another sweep (other model, parameters, regimens, "
            "times, outputs, metrics or chunk size); give a new path to start this one, or "
            "the same arguments to resume that one (nothing there is overwritten)"
        )
    return group


def _create_store(path: Path, plan: _Plan, table: ParameterTable, key: str, n_chunks: int) -> Any:
    """Create the store's arrays (values NaN, no chunk done) under a temporary name beside
    ``path`` and rename it into place, so a half-created store never appears."""
    import zarr

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        skeleton = _dataset(plan, table.subset(slice(0, 1)), _empty(plan, 1))
        group = zarr.open_group(tmp, mode="w")
        n, c = table.n, plan.chunk
        for name, var in skeleton.variables.items():
            data = var.values
            on_set = var.dims[:1] == ("set",)
            shape = (n, *data.shape[1:]) if on_set else data.shape
            chunks = (c, *data.shape[1:]) if on_set else shape
            dtype = "str" if data.dtype == object else data.dtype
            attrs = {k: v for k, v in var.attrs.items()}
            if name in skeleton.data_vars:
                attrs["coordinates"] = " ".join(k for k in skeleton.coords if skeleton[k].dims == ("set",) and k != "set")  # fmt: skip
            fill = np.nan if np.issubdtype(data.dtype, np.floating) else (0 if data.dtype != object else "")  # fmt: skip
            if name == "status":
                fill = -1
            arr = group.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                dimension_names=list(var.dims), attributes=attrs,
            )  # fmt: skip
            if name in skeleton.coords:
                arr[...] = (
                    table[name] if name in table else (np.arange(n) if name == "set" else data)
                )
        group.create_array(_DONE, shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0, dimension_names=["chunk"])  # fmt: skip
        group.attrs["ldpk_sweep_key"] = key
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return zarr.open_group(path, mode="r+")


def _empty(plan: _Plan, n: int) -> dict[str, np.ndarray]:
    R, T = len(plan.regimens), len(plan.times)
    out: dict[str, np.ndarray] = {"status": np.zeros((n, R), np.int8)}
    for var, _, _ in plan.metric_names():
        out[var] = np.zeros((n, R))
    if plan.time_courses:
        for o in plan.outputs:
            out[o] = np.zeros((n, R, T))
    return out


# ---- writing results ----------------------------------------------------------------------
OUTPUT_FORMATS = (".zarr", ".nc", ".csv", ".parquet")


def save(ds: Any, path: str | Path) -> Path:
    """Write a sweep's Dataset to ``path`` by its suffix: ``.nc`` (netCDF), ``.zarr``, or
    ``.csv``/``.parquet`` (one row per set and regimen: the parameters, the metrics and the
    status; time courses are left out of tables). Written atomically; an existing file is
    replaced only if it is not an input (the caller checks)."""
    from ldpk._io import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise DataError(f"{path}: unknown output format {suffix!r}; valid: {', '.join(OUTPUT_FORMATS)}")  # fmt: skip
    if suffix == ".zarr":
        if path.exists():
            raise DataError(f"{path} exists; give a new path (nothing is overwritten)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or "."))
        try:
            _plain(ds).to_zarr(tmp, mode="w", consolidated=False)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
    with atomic_path(path) as tmp:
        if suffix == ".nc":
            _plain(ds).to_netcdf(tmp, engine="h5netcdf")
        else:
            frame = table_of(ds)
            if suffix == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
    return path


def _plain(ds: Any) -> Any:
    """Regimen names as fixed-width strings (netCDF and zarr take those)."""
    return ds.assign_coords(regimen=_names(ds))


def _names(ds: Any) -> np.ndarray:
    """The regimen names as a fixed-width string array (a store gives numpy StringDType)."""
    return np.array([str(r) for r in ds["regimen"].values])


def table_of(ds: Any) -> Any:
    """One row per set and regimen: the parameter values, each metric and the status."""
    import pandas as pd

    cols = [k for k in ds.coords if ds[k].dims == ("set",) and k != "set"]
    metrics = [v for v in ds.data_vars if ds[v].dims == ("set", "regimen")]
    n, r = ds.sizes["set"], ds.sizes["regimen"]
    frame = {"set": np.repeat(np.arange(n), r), "regimen": np.tile(_names(ds), n)}  # fmt: skip
    frame.update({k: np.repeat(np.asarray(ds[k]), r) for k in cols})
    frame.update({v: np.asarray(ds[v]).reshape(-1) for v in metrics})
    return pd.DataFrame(frame)


__all__ = [
    "DEFAULT_METRICS",
    "OUTPUT_FORMATS",
    "RESOURCE_FRACTION",
    "STATUS",
    "regimens",
    "save",
    "summary",
    "sweep",
    "table_of",
]
