"""``simulate()``: one entry point for both kernels, batched over parameter sets and subjects."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.dosing import (
    BOLUS,
    INF_START,
    INF_STOP,
    MAX_SS_OVERLAP,
    OBS,
    PAD,
    RESET,
    SS_RUNSTOP,
    SS_SET,
    Bolus,
    EventTable,
    Infusion,
    Records,
    Reset,
    event_table,
    regimen_records,
)
from ldpk.errors import DataError, ModelError, SolverError
from ldpk.model import Model
from ldpk.model._compile import CompiledModel, compile_model
from ldpk.solve._analytic import find_cycle, paths_from, table_size
from ldpk.solve._kernels import (
    LinearPropagator,
    ODEOptions,
    ODEPropagator,
    PiecewiseLinearPropagator,
)
from ldpk.solve._timeline import (
    ODEIntervals,
    event_times,
    run_intervals_ode,
    run_static,
    run_static_ode,
    run_subject,
    run_superposition,
)

Regimen = Sequence[Bolus | Infusion | Reset | Mapping[str, Any]] | Records | EventTable


@dataclass(frozen=True)
class Simulation:
    """Result of :func:`simulate`.

    ``states``: amounts, shape (*batch, T, n_compartments); ``outputs``: (*batch, T, n_outputs);
    ``times``: (T,) or (subjects, T) for event tables. Units are those of the model.
    ``solved``: with ``simulate(outputs=...)``, the outputs asked for and the compartments
    solved for them (``states`` holds those only, in that order); None when all were.
    ``parameters``: the parameter values simulated, (*batch, P) in model order."""

    model: Model
    times: np.ndarray
    states: Any
    outputs: Any
    kernel: str
    solved: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    parameters: Any = None

    def to_xarray(self) -> Any:
        """An ``xarray.Dataset`` with the conventions of :func:`ldpk.sweep`: one variable per
        output and per compartment amount (``amount_<name>``), dims ([subject,] set, time)
        (``set`` for a batch of parameter sets, flattened; absent for one set), the values
        of the parameters that vary as coordinates on ``set``, units in attrs."""
        import xarray as xr

        m = self.model
        lead = 1 if np.ndim(self.times) == 2 else 0  # an event table of several subjects
        y, x = np.asarray(self.outputs), np.asarray(self.states)
        batch = y.shape[lead:-2]
        shape = (*y.shape[:lead], int(np.prod(batch)), *y.shape[-2:]) if batch else y.shape
        dims = (*(("subject",) if lead else ()), *(("set",) if batch else ()), "time")
        y = y.reshape(shape)
        x = x.reshape(*shape[:-1], x.shape[-1])
        names = self.solved[0] if self.solved is not None else m.output_names
        data = {
            o.name: xr.DataArray(
                y[..., j], dims=dims, attrs={"unit": o.unit, "description": o.description}
            )  # fmt: skip
            for j, o in enumerate(m.outputs)
            if o.name in names
        }
        units = {c.name: c.unit or m.amount_unit for c in m.compartments}
        for j, c in enumerate(self.compartment_names):
            data[f"amount_{c}"] = xr.DataArray(x[..., j], dims=dims, attrs={"unit": units[c], "description": f"amount in {c}"})  # fmt: skip
        tdims = ("subject", "time") if lead else ("time",)
        coords: dict[str, Any] = {
            "time" if not lead else "time_of": xr.DataArray(
                np.asarray(self.times), dims=tdims, attrs={"unit": m.time_unit}
            )  # fmt: skip
        }
        if batch:
            coords["set"] = np.arange(shape[lead])
            if self.parameters is not None and not lead:
                theta = np.asarray(self.parameters).reshape(-1, len(m.parameters))
                for i, p in enumerate(m.parameters):
                    if np.ptp(theta[:, i]) > 0:
                        coords[p.name] = xr.DataArray(theta[:, i], dims="set", attrs={"unit": p.unit, "description": p.description})  # fmt: skip
        ds = xr.Dataset(data, coords=coords)
        ds.attrs.update(model=m.name, model_source=m.source, kernel=self.kernel, time_unit=m.time_unit, amount_unit=m.amount_unit)  # fmt: skip
        return ds

    @property
    def compartment_names(self) -> tuple[str, ...]:
        return self.model.compartment_names if self.solved is None else self.solved[1]

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.model.output_names

    def state(self, name: str) -> Any:
        if name not in self.compartment_names and self.solved is not None:
            raise KeyError(
                f"compartment {name!r} was not solved: simulate(outputs={list(self.solved[0])}) "
                f"solved only {', '.join(self.solved[1])}"
            )
        return self.states[..., self.compartment_names.index(name)]

    def output(self, name: str) -> Any:
        if name not in self.model.output_names:
            raise KeyError(f"no output {name!r}; outputs: {', '.join(self.model.output_names)}")
        if self.solved is not None and name not in self.solved[0]:
            raise KeyError(
                f"output {name!r} was not computed: simulate(outputs={list(self.solved[0])})"
            )
        return self.outputs[..., self.model.output_names.index(name)]

    def __getitem__(self, name: str) -> Any:
        if name in self.model.output_names:
            return self.output(name)
        if name in self.model.compartment_names:
            return self.state(name)
        raise KeyError(
            f"{name!r} is neither an output ({', '.join(self.model.output_names)}) nor a "
            f"compartment ({', '.join(self.model.compartment_names)})"
        )


@lru_cache(maxsize=64)
def _compiled(structure: Model, keep: tuple[str, ...] | None = None) -> CompiledModel:
    return compile_model(structure, keep)


class _Kernel(NamedTuple):
    """A compiled kernel and how many times it has been traced (a one-element list)."""

    fn: Any
    traces: list[int]


@lru_cache(maxsize=64)
def _kernel(
    structure: Model, kernel: str, options: ODEOptions, has_ss: bool, has_const: bool,
    overlap: int, batched_table: bool, static: str | tuple | ODEIntervals | None = None,
    sources: tuple[int, ...] = (), keep: tuple[str, ...] | None = None,
) -> Any:  # fmt: skip
    cm = _compiled(structure, keep)
    if kernel == "ode":
        prop: Any = ODEPropagator(cm, options)
    elif structure.is_piecewise_linear:
        prop = PiecewiseLinearPropagator(cm)
    else:
        prop = LinearPropagator(cm)
    # The analytic kernel: closed-form transitions along the transfer paths from ``sources``.
    paths = paths_from(structure, sources) if kernel == "analytic" else None

    traces = [0]

    def one(tab: dict[str, Any], theta: Any) -> Any:
        traces[0] += 1  # runs once per trace, not per call
        if isinstance(static, tuple):
            return run_static_ode(prop, cm, tab, theta, static)
        if isinstance(static, ODEIntervals):
            return run_intervals_ode(prop, cm, tab, theta, static)
        if static in ("superpose", "superpose_infusion"):
            return run_superposition(cm, tab, theta, static == "superpose_infusion", paths)
        if static:
            return run_static(prop, cm, tab, theta, static == "infusion")
        return run_subject(prop, cm, tab, theta, has_ss, has_const, overlap)

    over_params = jax.vmap(one, in_axes=(None, 0))
    # With an event table of several subjects: subjects, each with its own parameter sets.
    fn = jax.jit(jax.vmap(over_params, in_axes=(0, 0)) if batched_table else over_params)
    return _Kernel(fn, traces)


def parameter_matrix(model: Model, params: Mapping[str, Any] | None) -> tuple[Any, tuple[int, ...]]:
    """Stack parameter values (defaults from the model) into (*batch, P) with broadcasting."""
    params = dict(params or {})
    unknown = set(params) - set(model.parameter_names)
    if unknown:
        raise DataError(
            f"unknown parameter(s) {sorted(unknown)} for model {model.name!r}; "
            f"parameters: {', '.join(model.parameter_names)}"
        )
    cols = [jnp.asarray(params.get(p.name, p.value), dtype=float) for p in model.parameters]
    try:
        shape = jnp.broadcast_shapes(*(c.shape for c in cols))
    except ValueError:
        shapes = {p.name: tuple(c.shape) for p, c in zip(model.parameters, cols, strict=True)}
        raise DataError(f"parameter arrays do not broadcast together: {shapes}") from None
    theta = jnp.stack([jnp.broadcast_to(c, shape) for c in cols], axis=-1)
    return theta, tuple(shape)


#: Largest closed form (divided-difference table entries over the transfer paths from the
#: dosed compartments) that 'auto' chooses: its operations grow with the table, and for the
#: mitochondria model (533 entries from blood) the gradient did not compile within 10 min,
#: while matrix exponentials take a few seconds.
MAX_AUTO_ANALYTIC = 64

#: Ways to solve a model (``simulate(method=)``, ``fit(kernel=)``).
KERNELS = ("auto", "analytic", "exact", "ode")


def choose_kernel(model: Model, method: str) -> str:
    """The kernel for ``method``: 'auto' is 'analytic' for a linear model whose transfers form
    no cycle (``simulate`` falls back to 'exact' where the closed form from the dosed
    compartments is larger than ``MAX_AUTO_ANALYTIC``), 'exact' for other linear models, for
    linear systems with `rate:` flows (``Model.is_linear_system``) and for piecewise-linear
    ones (``Model.is_piecewise_linear``: matrix exponentials between switch times), and
    'ode' for nonlinear ones."""
    if method not in KERNELS:
        raise ValueError(f"method must be one of {', '.join(map(repr, KERNELS))}, got {method!r}")
    if method == "analytic" and not model.is_linear:
        raise ModelError(f"{model.source}: the analytic kernel needs a linear model (all flows `k:`)")  # fmt: skip
    if method == "exact" and not (model.is_linear_system or model.is_piecewise_linear):
        raise ModelError(
            f"{model.source}: the exact kernel needs a linear model (flows `k:`, or `rate:` "
            "flows linear in the states with constant coefficients) or a piecewise-linear one "
            "(`rate:` flows linear in the states, switching only at the declared "
            "`discontinuities:`)"
        )
    if method == "analytic" and (cycle := find_cycle(model)) is not None:
        raise ModelError(
            f"{model.source}: the analytic kernel needs transfers without cycles, but "
            f"{' -> '.join(cycle)} is one; use kernel 'exact'"
        )
    if method == "auto":
        if not model.is_linear:
            linear = model.is_linear_system or model.is_piecewise_linear
            return "exact" if linear else "ode"
        return "analytic" if find_cycle(model) is None else "exact"
    return method


def _check_steady_state_possible(model: Model, table: EventTable) -> None:
    if not np.any(table["s_valid"]):
        return
    sinks = model.sink_compartments
    if sinks and model.is_linear_system:
        raise DataError(
            f"steady-state dosing (SS) needs every compartment to reach a steady state, but "
            f"{', '.join(sinks)} in {model.source} has no outflow"
        )


def simulate(
    model: Model,
    params: Mapping[str, Any] | None = None,
    regimen: Regimen = (),
    times: Sequence[float] | np.ndarray | None = None,
    *,
    covariates: Mapping[str, float] | None = None,
    method: str = "auto",
    ode: ODEOptions | None = None,
    max_ss_overlap: int = MAX_SS_OVERLAP,
    check: bool = True,
    decay_corrected: bool = True,
    outputs: Sequence[str] | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Simulation:
    """Simulate ``model`` under ``regimen`` and return every compartment and output at ``times``.

    Parameters
    ----------
    model: a :class:`~ldpk.Model` (``ldpk.load_model``).
    params: parameter values by name (model units); each a scalar or an array. Arrays broadcast
        together into a batch of parameter sets, simulated with one compiled kernel (vmap).
        Missing names take the model's values.
    regimen: doses (:class:`Bolus`, :class:`Infusion`, :class:`Reset` or NONMEM-style dicts);
        or validated :class:`~ldpk.dosing.Records`; or an :class:`~ldpk.dosing.EventTable` of
        several subjects, in which case ``params`` carry a leading subject axis.
    times: prediction times (model time unit). Required unless the regimen holds observation
        records (EVID 0/2).
    covariates: constant covariate values for a Python regimen.
    method: 'auto', 'analytic', 'exact' or 'ode' (see :func:`choose_kernel`). 'analytic'
        evaluates the solution of an acyclic linear model in closed form (sums of exponentials)
        where the schedule is solved by superposition (population tables without steady-state
        or reset records, covariates constant within subjects), and by matrix exponentials
        otherwise (``Simulation.kernel`` says which was used); 'exact' always uses matrix
        exponentials.
    ode: :class:`ODEOptions` for the ODE kernel (solver, tolerances, steady-state tolerance).
    check: raise :class:`SolverError` naming failed parameter sets (else failures are NaN).
    decay_corrected: outputs marked ``decay: true`` (radioactivity of the model's ``tracer``)
        are decay-corrected to the time of dosing when True (the model's amounts); False
        gives raw activity, multiplied by exp(-ln2 (t - t_dose) / half-life) with t_dose each
        subject's first dose. Which one a data set holds is a property of the data; the
        prediction follows it. With several labelled doses, each dose's amount is read as
        its activity decay-corrected to the first dose.
    outputs: predict only these outputs, solving only the compartments they depend on
        (``Model.states_for``; the fits pass the observed outputs). ``Simulation.states``
        then holds those compartments and other outputs are not computed. The closed form
        ('analytic') always solves every compartment.
    chunk_size: parameter sets per compiled call (see :meth:`Simulator.run`; default: as many
        as keep one chunk's results within ``CHUNK_BYTES``).
    progress: a progress bar (parameter sets done, sets/s, time left) when the batch runs in
        more than one chunk.

    ``simulate`` is :func:`prepare` followed by :meth:`Simulator.run`; prepare once and run
    many times to simulate new parameter values without tracing or compiling again.
    """
    sim = prepare(
        model, regimen, times, covariates=covariates, method=method, ode=ode,
        max_ss_overlap=max_ss_overlap, decay_corrected=decay_corrected, outputs=outputs,
    )  # fmt: skip
    return sim.run(params, check=check, chunk_size=chunk_size, progress=progress)


def prepare(
    model: Model,
    regimen: Regimen = (),
    times: Sequence[float] | np.ndarray | None = None,
    *,
    covariates: Mapping[str, float] | None = None,
    method: str = "auto",
    ode: ODEOptions | None = None,
    max_ss_overlap: int = MAX_SS_OVERLAP,
    decay_corrected: bool = True,
    outputs: Sequence[str] | None = None,
) -> Simulator:
    """Prepare a :class:`Simulator` for ``model``'s structure, the ``regimen``'s structure,
    ``times`` and ``outputs`` (arguments as for :func:`simulate`): the kernel is chosen, the
    schedule planned and the compiled function looked up once; parameter values are the
    arguments of :meth:`Simulator.run`. Input errors are raised here, before anything
    compiles."""
    kernel = choose_kernel(model, method)
    need = None if outputs is None else model.states_for(outputs)  # raises on unknown names
    options = ode or ODEOptions()
    if isinstance(regimen, EventTable):
        table = regimen
        obs_times = None
    else:
        if isinstance(regimen, Records):
            rec = regimen
        else:
            if times is None:
                raise DataError("simulate(): give `times` (prediction times)")
            rec = regimen_records(model, list(regimen), times, covariates)
        table = event_table(rec, max_ss_overlap)
        obs_times = rec.time[np.isin(rec.evid, (0, 2))]
    _check_steady_state_possible(model, table)
    arrays = {k: jnp.asarray(v) for k, v in table.arrays.items()}
    has_ss = bool(np.any(table["s_valid"]))
    has_const = bool(np.any(table["s_valid"] & table["s_const"]))
    static = None
    # The ODE kernel and the piecewise-linear exact one solve interval by interval.
    stepwise = kernel == "ode" or model.is_piecewise_linear
    if not table.batched and not has_ss:
        static = _static_plan(model, table, arrays)
        if static and stepwise:
            static = _ode_segments(table, arrays)
    elif table.batched and not has_ss:
        static = _ode_intervals(model, table, arrays) if stepwise else _superposition_plan(table)  # fmt: skip
    if kernel == "analytic" and static not in ("superpose", "superpose_infusion"):
        kernel = "exact"  # closed forms only by superposition; otherwise the event scan
    sources: tuple[int, ...] = ()
    if kernel == "analytic":  # the dosed compartments (every one, with initial amounts)
        cm = _compiled(model.structure)
        target = np.asarray(cm.routes.target)
        sources = tuple(int(c) for c in np.unique(target[np.asarray(table["d_route"])]))
        if cm.has_initial:
            sources = tuple(range(cm.n_states))
        if method == "auto" and table_size(paths_from(model, sources)) > MAX_AUTO_ANALYTIC:
            kernel, sources = "exact", ()
    solved = None
    if need is not None and kernel != "analytic" and len(need) < len(model.compartments):
        solved = (tuple(outputs or ()), need)
    compiled = _kernel(
        model.structure, kernel, options, has_ss, has_const, max_ss_overlap, table.batched,
        static, sources, None if solved is None else solved[1],
    )  # fmt: skip
    if table.batched:
        n_sub = int(table["e_kind"].shape[0])
        t_out = table["e_time"][np.arange(n_sub)[:, None], table["obs_event"]]
    else:
        n_sub, t_out = None, obs_times
    return Simulator(
        model, kernel, np.asarray(t_out), solved, compiled, arrays, n_sub,
        _first_dose_time(table), decay_corrected,
    )  # fmt: skip


#: Bytes of results (states and outputs, float64) one chunk of parameter sets may hold when
#: no chunk size is given: larger batches run chunk by chunk.
CHUNK_BYTES = 256 * 1024**2

#: Smallest batch of parameter sets split across devices (below it one device is faster).
MIN_SHARD = 256


@dataclass(frozen=True, eq=False)
class Simulator:
    """A simulator prepared by :func:`prepare`: one compiled kernel for a model structure, a
    regimen structure, output times and outputs, run over parameter values without tracing
    again. ``run`` simulates a batch of parameter sets; ``chunks`` is the executor behind it
    (and behind sweeps): fixed-size chunks, each sharded over the local devices.

    ``times``: the output times, (T,) or (subjects, T) for an event table of several subjects
    (model time unit). ``kernel``: the kernel chosen ('analytic', 'exact' or 'ode')."""

    model: Model
    kernel: str
    times: np.ndarray
    solved: tuple[tuple[str, ...], tuple[str, ...]] | None
    _compiled: _Kernel
    _arrays: dict[str, Any]
    n_subjects: int | None
    _t_ref: np.ndarray
    decay_corrected: bool

    @property
    def n_traces(self) -> int:
        """How many times the kernel has been traced (compiled) in this process: a new chunk,
        batch size aside, never traces again."""
        return self._compiled.traces[0]

    @property
    def set_bytes(self) -> int:
        """Bytes of results (states and outputs, float64) of one parameter set."""
        n_states = len(self.model.compartments if self.solved is None else self.solved[1])
        return 8 * int(np.prod(self.times.shape)) * (n_states + len(self.model.outputs))

    def default_chunk(self) -> int:
        """Parameter sets per chunk when none is given: ``CHUNK_BYTES`` of results, a multiple
        of the number of devices used."""
        n_dev = len(_devices())
        chunk = max(1, CHUNK_BYTES // max(1, self.set_bytes))
        return max(n_dev, chunk - chunk % n_dev)

    def parameters(self, params: Mapping[str, Any] | None) -> tuple[Any, tuple[int, ...]]:
        """``params`` as a (*batch, P) matrix (see :func:`parameter_matrix`); with an event
        table of several subjects, broadcast to a leading subject axis."""
        theta, batch = parameter_matrix(self.model, params)
        if self.n_subjects is not None and (not batch or batch[0] != self.n_subjects):
            theta = jnp.broadcast_to(theta, (self.n_subjects, *batch, theta.shape[-1]))
        return theta, tuple(theta.shape[:-1])

    def run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        check: bool = True,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> Simulation:
        """Simulate the parameter sets ``params`` (names to values in model units, broadcast
        together; missing names take the model's values) and return a :class:`Simulation`
        with their batch shape. ``check``: raise :class:`SolverError` naming failed sets
        (else their values are NaN). Batches larger than ``chunk_size`` run chunk by chunk
        (:meth:`chunks`), with a progress bar of the sets done when ``progress``."""
        theta, batch = self.parameters(params)
        lead = 2 if self.n_subjects is not None else 1
        flat = theta.reshape(*batch[: lead - 1], -1, theta.shape[-1])
        n = flat.shape[lead - 1]
        bar = None
        if progress and not isinstance(flat, jax.core.Tracer) and n > (chunk_size or self.default_chunk()):  # fmt: skip
            from tqdm.auto import tqdm

            bar = tqdm(total=n, unit=" sets", unit_scale=True, desc="simulate", leave=False)
        parts = []
        try:
            for part in self.chunks(flat, chunk_size):
                parts.append(part)
                if bar is not None:
                    jax.block_until_ready(part[2])
                    bar.update(part[1] - part[0])
        finally:
            if bar is not None:
                bar.close()
        if len(parts) == 1:
            _, _, x, y, ok = parts[0]
        else:
            x, y, ok = (jnp.concatenate([p[i] for p in parts], axis=lead - 1) for i in (2, 3, 4))
        x = x.reshape(*batch, *x.shape[lead:])
        y = y.reshape(*batch, *y.shape[lead:])
        ok = ok.reshape(batch)
        if check and not isinstance(ok, jax.core.Tracer):
            _raise_failures(self.model, theta, np.asarray(ok), self.kernel)
        return Simulation(self.model, self.times, x, y, self.kernel, self.solved, theta)

    def chunks(self, flat: Any, chunk_size: int | None = None) -> Iterator[tuple]:
        """The executor: run the parameter sets ``flat`` ((B, P); (subjects, B, P) for an
        event table of several subjects) ``chunk_size`` sets at a time, yielding (start, stop,
        states, outputs, ok) per chunk, ``ok`` False for a set whose solve failed. Every chunk
        has the same compiled shape (the last is padded), so nothing is traced again, and the
        memory held is one chunk's. Each chunk is sharded over the local devices. Inside a
        JAX transformation (``flat`` a tracer) the whole batch is one call."""
        axis = 0 if self.n_subjects is None else 1
        n = flat.shape[axis]
        chunk = chunk_size or self.default_chunk()
        if chunk <= 0:
            raise DataError(f"chunk_size must be a positive number of parameter sets, got {chunk}")  # fmt: skip
        if isinstance(flat, jax.core.Tracer) or n <= chunk:
            yield (0, n, *self._call(flat, axis))
            return
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            part = jax.lax.slice_in_dim(flat, start, stop, axis=axis)
            if stop - start < chunk:  # pad with the last set: the compiled shape stays
                last = jax.lax.slice_in_dim(part, stop - start - 1, stop - start, axis=axis)
                reps = jnp.repeat(last, chunk - (stop - start), axis=axis)
                part = jnp.concatenate([part, reps], axis=axis)
            x, y, ok = self._call(part, axis)
            yield (start, stop, *(jax.lax.slice_in_dim(a, 0, stop - start, axis=axis) for a in (x, y, ok)))  # fmt: skip

    def _call(self, theta: Any, axis: int) -> tuple[Any, Any, Any]:
        x, y, ok = _sharded(self._compiled.fn, self._arrays, theta, axis)
        y = _apply_decay(self.model, y, self.times, self._t_ref, self.decay_corrected, axis)
        return x, y, ok


def _devices() -> list[Any]:
    """The local devices a batch is split across: every GPU, or on the CPU at most one
    device per core (see LDPK_HOST_DEVICES)."""
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        devices = devices[: max(1, os.cpu_count() or 1)]
    return devices


def _sharded(fn: Any, arrays: dict[str, Any], theta: Any, axis: int = 0) -> Any:
    """Run ``fn`` over the parameter sets ``theta`` (sets along ``axis``), split across the
    local devices when the batch is large."""
    devices = _devices()
    n = theta.shape[axis]
    if len(devices) < 2 or n < MIN_SHARD or isinstance(theta, jax.core.Tracer):
        return fn(arrays, theta)
    pad = (-n) % len(devices)
    if pad:
        last = jax.lax.slice_in_dim(theta, n - 1, n, axis=axis)
        theta = jnp.concatenate([theta, jnp.repeat(last, pad, axis=axis)], axis=axis)
    mesh = jax.sharding.Mesh(np.array(devices), ("sets",))
    spec = jax.sharding.PartitionSpec(*([None] * axis), "sets")
    theta = jax.device_put(theta, jax.sharding.NamedSharding(mesh, spec))
    out = fn(arrays, theta)
    if not pad:
        return out
    return jax.tree_util.tree_map(lambda a: jax.lax.slice_in_dim(a, 0, n, axis=axis), out)


def _dose_times_static(model: Model, routes: np.ndarray, infusion: bool) -> bool:
    """Whether no dose time depends on parameter values: the lag times of the ``routes`` used
    (and with infusions their bioavailability, rate and duration) are constants."""
    for d in np.unique(routes):
        if d >= len(model.routes):
            continue
        r = model.routes[d]
        used = [r.lag] + ([r.bioavailability, r.rate, r.duration] if infusion else [])
        if any(e is not None and not e.is_constant for e in used):
            return False
    return True


def _static_plan(model: Model, table: EventTable, arrays: dict[str, Any]) -> str | None:
    """If no event time depends on the parameters and covariates are constant, add the sorted
    order and the distinct step lengths to ``arrays`` and return 'bolus' or 'infusion'."""
    cov = table["rec_cov"]
    if cov.size and not np.all(cov == cov[:1]):
        return None
    kinds = table["e_kind"]
    doses = kinds[(kinds == BOLUS) | (kinds == INF_START)]
    infusion = bool(np.any(doses == INF_START))
    if not _dose_times_static(model, table["d_route"][: max(1, len(doses))], infusion):
        return None
    cm = _compiled(model.structure)
    # The times do not depend on parameter values here (checked above); ones stand in for
    # them, since the values themselves may be tracers (jit or grad over the Model).
    with jax.ensure_compile_time_eval():  # concrete even inside an outer jit
        theta = jnp.ones(len(model.parameters))
        times = np.asarray(event_times(cm, dict(table.arrays), theta))
    order = np.argsort(times, kind="stable")
    t_sorted = times[order]
    steps = np.diff(t_sorted, prepend=t_sorted[0])
    # Step lengths equal to 1e-12 relative share one transition matrix (error <= 1e-12·k·dt).
    key = np.round(steps, 12 - int(np.floor(np.log10(max(np.abs(steps).max(), 1e-300)))))
    uniq = np.unique(key[key != 0])
    step = np.where(key == 0, 0, np.searchsorted(uniq, key) + 1)  # 0: zero step (identity)
    if uniq.size == 0:
        uniq = np.ones(1)  # keep the array non-empty; unused
    # Which dose events are live: a reset cancels doses of earlier records not yet given.
    epoch, live = 0, np.zeros(len(order), dtype=bool)
    for pos, e in enumerate(order):
        epoch += int(kinds[e] == RESET)
        live[pos] = table["e_epoch"][e] == epoch
    arrays.update(
        p_order=jnp.asarray(order), p_step=jnp.asarray(step), p_dt=jnp.asarray(uniq),
        p_live=jnp.asarray(live), p_time=jnp.asarray(t_sorted),
    )  # fmt: skip
    return "infusion" if infusion else "bolus"


def _superposition_plan(table: EventTable) -> str | None:
    """'superpose' (or 'superpose_infusion') when every subject's records allow the
    superposition kernel: no resets and covariates constant within each subject."""
    if np.any(table["e_kind"] == RESET):
        return None
    cov = table["rec_cov"]
    if cov.size and not np.all(cov == cov[:, :1]):
        return None
    return "superpose_infusion" if np.any(table["d_rate"] != 0) else "superpose"


#: Most ODE solves (segments between discontinuities) unrolled in one compiled kernel; a
#: schedule with more doses uses the general event scan instead.
MAX_ODE_SEGMENTS = 48


def _ode_intervals(model: Model, table: EventTable, arrays: dict[str, Any]) -> ODEIntervals | None:
    """For a population table, the ODE kernel's plan (``run_intervals_ode``) when every
    subject's event times are known before tracing (no steady-state or reset records, dose
    times independent of parameters, covariates constant within subjects): per subject the
    intervals between doses and infusion edges, each solved once saving at the observations
    inside it. Subjects with fewer doses get empty intervals at their end. Adds the ``q_*``
    arrays to ``arrays`` and returns the plan's static part, or None (the general event
    scan)."""
    if _superposition_plan(table) is None:
        return None
    kinds, refs = table["e_kind"], table["e_ref"]
    infusion = bool(np.any(kinds == INF_START))
    if not _dose_times_static(model, table["d_route"], infusion):
        return None
    cm = _compiled(model.structure)
    with jax.ensure_compile_time_eval():  # concrete even inside an outer jit
        theta = jnp.ones(len(model.parameters))
        times = np.asarray(jax.vmap(lambda t: event_times(cm, t, theta))(dict(table.arrays)))
    plans = []  # per subject: [(t0, t1, [(obs index, time)], (kind, dose) after or None)]
    for s in range(kinds.shape[0]):
        order = np.argsort(times[s], kind="stable")
        start = float(times[s][order[0]])
        segs, obs = [], []
        for e in order:
            k, t = int(kinds[s, e]), float(times[s, e])
            if k == OBS:
                obs.append((int(refs[s, e]), t))
            elif k in (BOLUS, INF_START, INF_STOP):
                segs.append((start, t, obs, (k, int(refs[s, e]))))
                start, obs = t, []
        segs.append((start, max([start] + [t for _, t in obs]), obs, None))
        plans.append(segs)
    n_seg = max(len(p) for p in plans)
    if n_seg > MAX_ODE_SEGMENTS:
        return None
    width = max(1, max(len(seg[2]) for p in plans for seg in p))
    n_sub, n_obs = kinds.shape[0], table["obs_event"].shape[1]
    q = {
        "q_t0": np.zeros((n_sub, n_seg)),
        "q_t1": np.zeros((n_sub, n_seg)),
        "q_ts": np.zeros((n_sub, n_seg, width)),
        "q_obs": np.full((n_sub, n_seg, width), n_obs, dtype=np.int32),
        "q_kind": np.full((n_sub, max(1, n_seg - 1)), PAD, dtype=np.int32),
        "q_dose": np.zeros((n_sub, max(1, n_seg - 1)), dtype=np.int32),
    }
    for s, segs in enumerate(plans):
        end = segs[-1][1]
        for j in range(n_seg):
            t0, t1, obs, event = segs[j] if j < len(segs) else (end, end, [], None)
            q["q_t0"][s, j], q["q_t1"][s, j] = t0, t1
            q["q_ts"][s, j] = t1
            for m, (i, t) in enumerate(obs):
                q["q_obs"][s, j, m], q["q_ts"][s, j, m] = i, t
            if event is not None:
                q["q_kind"][s, j], q["q_dose"][s, j] = event
    arrays.update({k: jnp.asarray(v) for k, v in q.items()})
    empty = (q["q_t1"] <= q["q_t0"]) & np.all(q["q_obs"] == n_obs, axis=2)
    return ODEIntervals(tuple(bool(b) for b in ~np.all(empty, axis=0)), infusion)


def _ode_segments(table: EventTable, arrays: dict[str, Any]) -> tuple | None:
    """For a static schedule, the ODE kernel's plan: one solve per interval between
    discontinuities (doses, infusion edges, resets), saving at the observation times inside
    it, rather than one solve per event. A tuple of ('solve', t0, t1, obs indices, obs times)
    and ('event', kind, dose index) entries; None if there would be too many solves."""
    order = np.asarray(arrays["p_order"])
    live = np.asarray(arrays["p_live"])
    t_sorted = np.asarray(arrays["p_time"])
    kinds = table["e_kind"]
    ops: list[tuple] = []
    pending: list[tuple[int, float]] = []
    start = float(t_sorted[0]) if len(t_sorted) else 0.0

    def flush(end: float) -> None:
        nonlocal pending, start
        if end > start or pending:
            ops.append(
                ("solve", start, end, tuple(i for i, _ in pending), tuple(t for _, t in pending))
            )
        pending, start = [], end

    for pos, e in enumerate(order):
        k, t = int(kinds[e]), float(t_sorted[pos])
        if k == OBS:
            pending.append((int(table["e_ref"][e]), t))
        elif k == RESET or (live[pos] and k in (BOLUS, INF_START, INF_STOP)):
            flush(t)
            ops.append(("event", k, int(table["e_ref"][e])))
    if pending:
        flush(max(t for _, t in pending))
    if sum(op[0] == "solve" for op in ops) > MAX_ODE_SEGMENTS:
        return None
    return tuple(ops)


def _first_dose_time(table: EventTable) -> np.ndarray:
    """Each subject's first dose time (scalar for one subject; 0 without doses): the time to
    which decay-corrected amounts refer."""
    kind, t = np.asarray(table["e_kind"]), np.asarray(table["e_time"])
    dosed = np.isin(kind, (BOLUS, INF_START, SS_SET, SS_RUNSTOP))
    first = np.where(dosed, t, np.inf).min(axis=-1)
    return np.where(np.isfinite(first), first, 0.0)


def _apply_decay(model: Model, y: Any, times: Any, t_ref: np.ndarray, decay_corrected: bool, axis: int = 0) -> Any:  # fmt: skip
    """Raw activity for outputs marked ``decay: true`` when the data are not decay-corrected:
    the amounts times the fraction of activity left since ``t_ref`` (each subject's first
    dose, to which decay-corrected amounts refer). ``y``: (sets, T, m), or (subjects, sets, T,
    m) with ``axis`` 1."""
    flags = np.array([o.decay for o in model.outputs], dtype=bool)
    if decay_corrected or not flags.any():
        return y
    from ldpk.tracer import decay_factor

    since = jnp.asarray(times) - (t_ref[:, None] if np.ndim(t_ref) else t_ref)
    f = decay_factor(model.tracer, since, model.time_unit)  # (T,) or (subjects, T)
    if axis == 1:
        f = f[:, None]  # (subjects, 1, T): the same for each parameter set
    return jnp.where(jnp.asarray(flags), y * f[..., None], y)


def _raise_failures(model: Model, theta: Any, ok: np.ndarray, kernel: str) -> None:
    if ok.all():
        return
    bad = np.argwhere(~ok)
    th = np.asarray(theta).reshape(*ok.shape, -1)
    lines = []
    for idx in bad[:5]:
        values = ", ".join(
            f"{n}={v:.6g}" for n, v in zip(model.parameter_names, th[tuple(idx)], strict=True)
        )
        lines.append(f"  parameter set {tuple(int(i) for i in idx)}: {values}")
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    hint = (
        "the ODE solver hit max_steps or produced a non-finite state; try ODEOptions("
        "max_steps=..., rtol=..., solver='kvaerno5') or check the parameter values"
        if kernel == "ode"
        else "the state became non-finite (overflow), or a steady state could not be computed"
    )
    raise SolverError(
        f"simulation failed for {len(bad)} of {ok.size} parameter set(s) of model "
        f"{model.name!r}: {hint}\n" + "\n".join(lines) + more
    )
