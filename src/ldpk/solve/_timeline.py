"""The event timeline: NONMEM dosing semantics shared by the exact and the ODE kernel.

Static event lists (``ldpk.dosing.event_table``) get their times here, from parameter-
dependent lag times, bioavailabilities and modelled infusion rates or durations; events are
sorted by time (a stable sort, so ties keep data order) and one ``lax.scan`` advances the
state from event to event with the kernel's ``propagate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldpk.dosing import (
    BOLUS,
    INF_START,
    INF_STOP,
    PAD,
    RESET,
    SS_RUNSTOP,
    SS_SET,
)
from ldpk.model._compile import CompiledModel
from ldpk.solve._analytic import transition
from ldpk.solve._expm import _UNROLL, entries, expm, matmul

#: ``run_static`` carries the states and transition matrices of its event loop as their
#: entries (``_entry_scan``) for up to ``_UNROLL`` compartments and up to this many distinct
#: step lengths (each event selects its transition among them); otherwise, and for more
#: compartments, the loop works on arrays and indexes a stack of transitions.
MAX_ENTRY_STEPS = 8


def _safe(den: Any) -> Any:
    """A denominator that is never 0 (keeps gradients finite in branches masked away)."""
    return jnp.where(den == 0, 1.0, den)


def _dose_quantities(rv: Any, amt: Any, code: Any) -> tuple[Any, Any, Any, Any]:
    """(lag, amount, rate, duration) of doses from route values (lag, F, R, D) and RATE codes."""
    lag, F, R, D = rv[..., 0], rv[..., 1], rv[..., 2], rv[..., 3]
    amount = F * amt
    given = code > 0
    modelled_rate = code == -1
    rate = jnp.where(given, code, jnp.where(modelled_rate, R, amount / _safe(D)))
    dur = jnp.where(given, amount / _safe(code), jnp.where(modelled_rate, amount / _safe(R), D))
    bolus = code == 0
    return lag, amount, jnp.where(bolus, 0.0, rate), jnp.where(bolus, 0.0, dur)


def dose_schedule(cm: CompiledModel, tab: dict[str, Any], theta: Any) -> tuple[Any, Any, Any]:
    """Per-record environments, route values and the doses' start and stop times, amounts,
    rates and target compartments (lag, F and modelled rate/duration applied)."""
    envs = jax.vmap(lambda c: cm.env(theta, c))(tab["rec_cov"])
    rv = jax.vmap(cm.route_values)(envs)  # (Nrec, R, 4)
    d_rv = rv[tab["d_rec"], tab["d_route"]]
    d_lag, d_amount, d_rate, d_dur = _dose_quantities(d_rv, tab["d_amt"], tab["d_rate"])
    d_start = tab["d_time"] + d_lag
    target = jnp.asarray(np.asarray(cm.routes.target, dtype=np.int32))
    return envs, rv, (d_start, d_start + d_dur, d_amount, d_rate, target[tab["d_route"]])


def _dose_event_times(tab: dict[str, Any], d_start: Any, d_stop: Any) -> tuple[Any, Any]:
    """Event times with dose starts and stops filled in, and each event's dose index."""
    kind = tab["e_kind"]
    dref = jnp.clip(tab["e_ref"], 0, d_start.shape[0] - 1)
    times = jnp.where((kind == BOLUS) | (kind == INF_START), d_start[dref], tab["e_time"])
    return jnp.where(kind == INF_STOP, d_stop[dref], times), dref


def event_times(cm: CompiledModel, tab: dict[str, Any], theta: Any) -> Any:
    """Times of the events of a table without steady-state records (PAD events: +inf)."""
    _, _, (d_start, d_stop, *_) = dose_schedule(cm, tab, theta)
    times, _ = _dose_event_times(tab, d_start, d_stop)
    return jnp.where(tab["e_kind"] == PAD, jnp.inf, times)


def run_subject(
    prop: Any,
    cm: CompiledModel,
    tab: dict[str, Any],
    theta: Any,
    has_ss: bool,
    has_const_ss: bool,
    max_overlap: int,
) -> tuple[Any, Any, Any]:
    """Simulate one subject with one parameter vector.

    Returns states at the observation records (No, n), outputs (No, m) and a success flag."""
    n = cm.n_states
    envs, rv, (d_start, d_stop, d_amount, d_rate, d_cmt) = dose_schedule(cm, tab, theta)
    target = jnp.asarray(np.asarray(cm.routes.target, dtype=np.int32))

    def env_at(i: Any) -> Any:
        return jax.tree_util.tree_map(lambda a: a[i], envs)

    # ---- steady states ---------------------------------------------------------------------
    S = max_overlap
    if has_ss:
        s_rv = rv[tab["s_rec"], tab["s_route"]]
        s_lag, s_amount, s_rate, s_dur = _dose_quantities(s_rv, tab["s_amt"], tab["s_rate"])
        s_cmt = target[tab["s_route"]]
        ss_x, ss_u, ss_stop, ss_run, ss_ok = jax.vmap(
            lambda *a: _steady_state(prop, env_at, n, S, has_const_ss, *a)
        )(
            tab["s_time"], tab["s_ii"], s_lag, s_amount, s_rate, s_dur, s_cmt,
            tab["s_rec"], tab["s_const"],
        )  # fmt: skip
        ss_ok = jnp.all(ss_ok | ~tab["s_valid"])
    else:
        ss_ok = jnp.array(True)

    # ---- event times, values and targets ----------------------------------------------------
    kind, ref, slot = tab["e_kind"], tab["e_ref"], tab["e_slot"]
    times, dref = _dose_event_times(tab, d_start, d_stop)
    value = jnp.where(kind == BOLUS, d_amount[dref], 0.0)
    value = jnp.where(kind == INF_START, d_rate[dref], value)
    value = jnp.where(kind == INF_STOP, -d_rate[dref], value)
    cmt = d_cmt[dref]
    if has_ss:
        sref = jnp.clip(ref, 0, ss_x.shape[0] - 1)
        is_run = kind == SS_RUNSTOP
        times = jnp.where(is_run, ss_stop[sref, slot], times)
        value = jnp.where(is_run & ss_run[sref, slot], -s_rate[sref], value)
        cmt = jnp.where(is_run, s_cmt[sref], cmt)
    times = jnp.where(kind == PAD, jnp.inf, times)
    order = jnp.argsort(times, stable=True)

    def ss_mode_of(i):
        if not has_ss:
            return jnp.array(0)
        return tab["s_mode"][jnp.clip(ref[i], 0, tab["s_mode"].shape[0] - 1)]

    def x_reset(i):
        return cm.initial(env_at(tab["e_rec"][i])) if cm.has_initial else jnp.zeros(n)

    def step(carry, i):  # i: index of the next event in time order
        t, x, u, epoch, rec, ok = carry
        k = kind[i]
        te = times[i]
        pad = k == PAD
        dt = jnp.where(pad, 0.0, te - t)
        x, ok1 = prop.propagate(x, t, dt, u, env_at(rec))
        t = jnp.where(pad, t, te)
        is_reset = (k == RESET) | ((k == SS_SET) & (ss_mode_of(i) == 1))
        epoch = jnp.where(is_reset, epoch + 1, epoch)
        x = jnp.where(is_reset, x_reset(i), x)
        u = jnp.where(is_reset, 0.0, u)
        live = tab["e_epoch"][i] == epoch
        onehot = jax.nn.one_hot(cmt[i], n)
        x = x + jnp.where(live & (k == BOLUS), value[i], 0.0) * onehot
        rate_event = (k == INF_START) | (k == INF_STOP) | (k == SS_RUNSTOP)
        u = u + jnp.where(live & rate_event, value[i], 0.0) * onehot
        if has_ss:
            sset = live & (k == SS_SET)
            x = x + jnp.where(sset, ss_x[jnp.clip(ref[i], 0, ss_x.shape[0] - 1)], 0.0)
            u = u + jnp.where(sset, ss_u[jnp.clip(ref[i], 0, ss_x.shape[0] - 1)], 0.0)
        # Covariates: last record at or before t (a lagged or additional dose is no record).
        er = tab["e_rec"][i]
        anchored = (k != PAD) & (te == tab["rec_time"][er])
        rec = jnp.where(anchored, jnp.maximum(rec, er), rec)
        return (t, x, u, epoch, rec, ok & (ok1 | pad)), x

    rec0 = tab["e_rec"][order[0]]
    x0 = cm.initial(env_at(rec0)) if cm.has_initial else jnp.zeros(n)
    carry0 = (times[order[0]], x0, jnp.zeros(n), jnp.array(0, dtype=jnp.int32), rec0, ss_ok)
    (_, _, _, _, _, ok), snaps = jax.lax.scan(step, carry0, order)
    # snaps[j] is the state after the j-th event in time order.
    position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    obs_pos = position[tab["obs_event"]]
    x_obs = snaps[obs_pos]
    obs_rec = tab["e_rec"][tab["obs_event"]]
    t_obs = times[tab["obs_event"]]
    y_obs = jax.vmap(lambda t, x, r: cm.outputs(t, x, env_at(r)))(t_obs, x_obs, obs_rec)
    finite = jnp.all(jnp.isfinite(x_obs) | ~tab["obs_mask"][:, None])
    return x_obs, y_obs, ok & finite


def _steady_state(prop, env_at, n, S, has_const_ss, t, ii, lag, amount, rate, dur, cmt, rec, const):
    """State and running input at time t of a steady-state dose record (NONMEM SS).

    The train is doses at s_k = t + lag + k·II. The state at t is the periodic steady state
    a time a0 = II - lag after the dose at s_-1 (computed forward for a0 >= 0; for a0 < 0,
    i.e. lag > II, extrapolated backwards with that dose's infusion running, as NONMEM does).
    Returns (x, running input rate vector, stop times of running infusions (S,), which of the
    S slots are running, ok)."""
    env = env_at(rec)
    e = jax.nn.one_hot(cmt, n)
    b = jnp.where(rate == 0, amount, 0.0) * e
    r = rate * e
    ii_s = _safe(ii)
    q = jnp.floor(dur / ii_s)  # whole intervals covered by one infusion
    d = dur - q * ii_s
    c0 = jnp.where(dur > 0, jnp.ceil(dur / ii_s), 0.0)  # infusions running just after a dose

    def period(x):
        y, ok1 = prop.propagate(x + b, t, d, (q + 1) * r, env)
        y, ok2 = prop.propagate(y, t + d, ii_s - d, q * r, env)
        return y, ok1 & ok2

    def train():
        xs, ok = prop.fixed_point(period, env, ii_s)  # just before a dose
        a0 = ii_s - lag
        fwd = a0 >= 0
        dt1 = jnp.where(fwd, jnp.minimum(a0, d), a0)
        u1 = jnp.where(fwd, q + 1, c0) * r
        dt2 = jnp.where(fwd, jnp.maximum(a0 - d, 0.0), 0.0)
        y, ok1 = prop.propagate_signed(xs + b, t, dt1, u1, env)
        y, ok2 = prop.propagate(y, t + dt1, dt2, q * r, env)
        m = jnp.arange(S)
        age = a0 + m * ii_s
        running = (age < dur) & (fwd | (m < c0)) & (dur > 0)
        n_running = jnp.where(fwd, jnp.ceil((dur - a0) / ii_s), c0)
        fits = jnp.where(dur > a0, n_running, 0.0) <= S
        return (
            y,
            jnp.sum(running) * r,
            jnp.where(running, t + dur - age, t),
            running,
            ok & ok1 & ok2 & fits,
        )

    if not has_const_ss:
        return train()

    def constant():
        # NONMEM 7 (AMT = 0, RATE > 0, SS): the state at t is the steady state of the constant
        # infusion, and the infusion does not continue after t (checked against nmtest id 26).
        xs, ok = prop.constant_input_steady_state(r, t, env)
        return xs, jnp.zeros_like(r), jnp.full(S, t), jnp.zeros(S, dtype=bool), ok

    return jax.lax.cond(const, constant, train)


def run_static(
    prop: Any, cm: CompiledModel, tab: dict[str, Any], theta: Any, infusion: bool
) -> tuple[Any, Any, Any]:
    """The exact kernel for a schedule known before tracing (see ``static_plan``): event
    order, step lengths, resets and which doses are live are static, so the scan is
    x <- E[j] x + G[j] u + bolus, with one transition (E, G) per distinct step length."""
    n = cm.n_states
    envs, _, (_, _, d_amount, d_rate, d_cmt) = dose_schedule(cm, tab, theta)
    env0 = jax.tree_util.tree_map(lambda a: a[0], envs)
    order, kind = tab["p_order"], tab["e_kind"][tab["p_order"]]
    live = tab["p_live"]  # in time order
    dref = jnp.clip(tab["e_ref"][order], 0, d_amount.shape[0] - 1)
    onehot = jax.nn.one_hot(d_cmt[dref], n)
    bolus = jnp.where(live & (kind == BOLUS), d_amount[dref], 0.0)[:, None] * onehot
    sign = jnp.where(kind == INF_START, 1.0, jnp.where(kind == INF_STOP, -1.0, 0.0))
    rate = jnp.where(live, sign * d_rate[dref], 0.0)[:, None] * onehot
    x0 = cm.initial(env0) if cm.has_initial else jnp.zeros(n)
    n_dt = tab["p_dt"].shape[0]
    if n <= _UNROLL and n_dt <= MAX_ENTRY_STEPS:
        # One transition per distinct step length, each a separate exponential: vmapped over
        # the step lengths, the entries would be (batch, steps) arrays, which vectorise worse.
        EG = [prop.transition(tab["p_dt"][m], env0, infusion) for m in range(n_dt)]
        E = jnp.stack([jnp.eye(n), *(e for e, _ in EG)])  # index 0: the zero step (identity)
        G = jnp.stack([jnp.zeros((n, n)), *(g for _, g in EG)]) if infusion else None
        snaps = _entry_scan(E, G, tab["p_step"], kind == RESET, bolus, rate, x0)
    else:
        # Step index 0 is the zero-length step (identity); p_dt holds the nonzero lengths.
        E, G = jax.vmap(lambda h: prop.transition(h, env0, infusion))(tab["p_dt"])
        E = jnp.concatenate([jnp.eye(n)[None], E])
        G = jnp.concatenate([jnp.zeros((1, n, n)), G])

        def step(carry, inp):
            x, u = carry
            j, reset, b, r = inp
            x = matmul(E[j], x) + (matmul(G[j], u) if infusion else 0.0)
            x = jnp.where(reset, x0, x) + b
            u = jnp.where(reset, 0.0, u) + r
            return (x, u), x

        init = (x0, jnp.zeros(n))
        _, snaps = jax.lax.scan(step, init, (tab["p_step"], kind == RESET, bolus, rate))
    position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    obs = tab["obs_event"]
    x_obs = snaps[position[obs]]
    t_obs = tab["p_time"][position[obs]]
    y_obs = jax.vmap(lambda t, x: cm.outputs(t, x, env0))(t_obs, x_obs)
    return x_obs, y_obs, jnp.all(jnp.isfinite(x_obs))


def _dot(a: list[Any], b: list[Any]) -> Any:
    out = a[0] * b[0]
    for ai, bi in zip(a[1:], b[1:], strict=True):
        out = out + ai * bi
    return out


def _entry_scan(E: Any, G: Any, steps: Any, reset: Any, bolus: Any, rate: Any, x0: Any) -> Any:
    """The event loop of ``run_static`` (x <- E[j] x + G[j] u, then resets, boluses and rate
    changes) with the state, the input and the transition matrices carried as their entries,
    so that under ``vmap`` each step is an elementwise loop over the batch; the step index j
    of an event picks one of the few distinct transitions (``lax.switch``; index 0: the
    identity). ``G`` None: no infusion. Returns the state after each event, (events, n)."""
    n = x0.shape[-1]
    Es = [entries(E[m]) for m in range(E.shape[0])]
    Gs = None if G is None else [entries(G[m]) for m in range(G.shape[0])]

    def flow(m: int) -> Any:
        def apply(x: list, u: list) -> list:
            if m == 0:  # the zero-length step
                return list(x)
            xn = [_dot(Es[m][i], x) for i in range(n)]
            if Gs is not None:
                xn = [xn[i] + _dot(Gs[m][i], u) for i in range(n)]
            return xn

        return apply

    branches = [flow(m) for m in range(len(Es))]

    def step(carry: tuple, inp: tuple) -> tuple:
        x, u = carry
        j, rs, b, r = inp
        # j is the same for every parameter set (the schedule is static), so under vmap this
        # stays a branch: each step reads one transition, not all of them.
        xn = jax.lax.switch(j, branches, x, u)
        x = [jnp.where(rs, x0[i], xn[i]) + b[i] for i in range(n)]
        u = [jnp.where(rs, 0.0, u[i]) + r[i] for i in range(n)]
        return (x, u), jnp.stack(x)

    init = ([x0[i] for i in range(n)], [jnp.zeros_like(x0[i]) for i in range(n)])
    return jax.lax.scan(step, init, (steps, reset, bolus, rate))[1]


def run_static_ode(
    prop: Any, cm: CompiledModel, tab: dict[str, Any], theta: Any, ops: tuple
) -> tuple[Any, Any, Any]:
    """The ODE kernel for a schedule known before tracing: one diffrax solve per interval
    between discontinuities, saving at the observation times inside it (``ops`` from
    ``ldpk.solve._simulate._ode_segments``). Equivalent to the event scan, with fewer
    step-size restarts."""
    n = cm.n_states
    envs, _, (_, _, d_amount, d_rate, d_cmt) = dose_schedule(cm, tab, theta)
    env0 = jax.tree_util.tree_map(lambda a: a[0], envs)
    x0 = cm.initial(env0) if cm.has_initial else jnp.zeros(n)
    x, u, ok = x0, jnp.zeros(n), jnp.array(True)
    saved: dict[int, Any] = {}
    for op in ops:
        if op[0] == "event":
            _, k, d = op
            if k == RESET:
                x, u = x0, jnp.zeros(n)
                continue
            hot = jax.nn.one_hot(d_cmt[d], n)
            if k == BOLUS:
                x = x + d_amount[d] * hot
            else:
                u = u + (1.0 if k == INF_START else -1.0) * d_rate[d] * hot
            continue
        _, t0, t1, idx, ts = op
        if t1 > t0 and idx:
            ys, x, ok1 = prop.solve_saving(x, t0, t1, jnp.asarray(ts), u, env0)
            saved.update({i: ys[j] for j, i in enumerate(idx)})
        elif t1 > t0:
            x, ok1 = prop.propagate(x, t0, t1 - t0, u, env0)
        else:
            saved.update({i: x for i in idx})
            ok1 = True
        ok = ok & ok1
    n_obs = tab["obs_event"].shape[0]
    x_obs = jnp.stack([saved[i] for i in range(n_obs)])
    t_obs = tab["e_time"][tab["obs_event"]]
    y_obs = jax.vmap(lambda t, xx: cm.outputs(t, xx, env0))(t_obs, x_obs)
    return x_obs, y_obs, ok & jnp.all(jnp.isfinite(x_obs))


@dataclass(frozen=True)
class ODEIntervals:
    """The static part of a population table's ODE plan (see ``run_intervals_ode``): whether
    each interval needs a solve (False where every subject's interval is empty and holds no
    observation, such as the one before a dose at the first record), and whether any dose
    is an infusion (else the solves have no input)."""

    solve: tuple[bool, ...]
    infusion: bool


def run_intervals_ode(
    prop: Any, cm: CompiledModel, tab: dict[str, Any], theta: Any, plan: ODEIntervals
) -> tuple:
    """The ODE kernel for one subject of a population table whose schedule is known before
    tracing: one diffrax solve per interval between doses and infusion edges, saving at the
    observations inside it, instead of one solve per event (the general scan restarts the
    step-size control at every observation). The intervals come from
    ``ldpk.solve._simulate._ode_intervals``, padded to the same number per subject:
    ``q_t0``/``q_t1`` (S,) their ends, ``q_ts``/``q_obs`` (S, M) the observation times and
    indices saved in each (index No: padding, discarded), ``q_kind``/``q_dose`` (S - 1,) the
    dose event after each (PAD: none)."""
    n = cm.n_states
    envs, _, (_, _, d_amount, d_rate, d_cmt) = dose_schedule(cm, tab, theta)
    env0 = jax.tree_util.tree_map(lambda a: a[0], envs)
    x = cm.initial(env0) if cm.has_initial else jnp.zeros(n)
    u = jnp.zeros(n) if plan.infusion else None  # None: the solves have no input
    ok = jnp.array(True)
    x_obs = jnp.zeros((tab["obs_event"].shape[0] + 1, n))  # the last row takes the padding
    n_seg = len(plan.solve)
    for j in range(n_seg):
        if plan.solve[j]:
            ys, x, ok1 = prop.solve_saving(x, tab["q_t0"][j], tab["q_t1"][j], tab["q_ts"][j], u, env0)  # fmt: skip
            x_obs = x_obs.at[tab["q_obs"][j]].set(ys)
            ok = ok & ok1
        if j < n_seg - 1:
            kind, d = tab["q_kind"][j], tab["q_dose"][j]
            hot = jax.nn.one_hot(d_cmt[d], n)
            x = x + jnp.where(kind == BOLUS, d_amount[d], 0.0) * hot
            if plan.infusion:
                sign = jnp.where(kind == INF_START, 1.0, jnp.where(kind == INF_STOP, -1.0, 0.0))
                u = u + sign * d_rate[d] * hot
    x_obs = x_obs[:-1]
    t_obs = tab["e_time"][tab["obs_event"]]
    y_obs = jax.vmap(lambda t, xx: cm.outputs(t, xx, env0))(t_obs, x_obs)
    return x_obs, y_obs, ok & jnp.all(jnp.isfinite(x_obs))


def run_superposition(
    cm: CompiledModel, tab: dict[str, Any], theta: Any, infusion: bool, paths: tuple | None = None
) -> tuple[Any, Any, Any]:
    """The exact kernel for one subject of a linear model without steady-state or reset
    records and with constant covariates: by superposition, each observation is the sum over
    doses of e^{K b} (g(a) + bolus), with a the time the dose has been infusing and b the time
    since it stopped (g(a) = ∫0^a e^{K s} ds · rate, from the augmented exponential). Every
    (observation, dose) pair is independent, so there is no sequential scan: this is the
    population-fitting path, where reverse-mode gradients through a scan dominate the cost.

    Ties follow NONMEM: a dose at an observation's time counts if it is lagged, additional, or
    its record comes first in the data. ``paths``: for an acyclic model, the transfer paths from
    the dosed compartments; e^{K b} and g(a) are then evaluated in closed form (``_analytic``)
    instead of by matrix exponentials."""
    n = cm.n_states
    envs, _, (d_start, d_stop, d_amount, d_rate, d_cmt) = dose_schedule(cm, tab, theta)
    env0 = jax.tree_util.tree_map(lambda a: a[0], envs)
    K = cm.rate_matrix(env0)
    # States at each observation slot (outputs measured at one time share one), then at
    # every observation.
    obs = tab["obs_event"][tab["slot_obs"]]
    t_obs = tab["e_time"][obs]
    rec_obs = tab["e_rec"][obs]
    tau = t_obs[:, None] - d_start[None, :]  # (Nu, Nd)
    shifted = (d_start != tab["d_time"]) | (tab["d_time"] != tab["rec_time"][tab["d_rec"]])
    counts = (tau > 0) | ((tau == 0) & (shifted | (tab["d_rec"] < rec_obs[:, None])))
    tau = jnp.where(counts, tau, 0.0)  # masked pairs: e^0, so no overflow in their gradients
    hot = jax.nn.one_hot(d_cmt, n)  # (Nd, n)
    is_bolus = d_rate == 0
    v = jnp.where(is_bolus, d_amount, 0.0)[:, None] * hot  # (Nd, n)
    v = jnp.broadcast_to(v, (*tau.shape, n))
    flat = jax.vmap(expm)
    if infusion:
        a = jnp.clip(tau, 0.0, d_stop - d_start)  # time infused
        tau = tau - a  # time since the infusion stopped
        u = jnp.where(is_bolus, 0.0, d_rate)[:, None] * hot
        if paths is not None:
            g = jnp.sum(transition(K, a, paths, integral=True) * u[:, None, :], axis=-1)
        else:
            aug = jnp.zeros((*a.shape, n + 1, n + 1))
            aug = aug.at[..., :n, :n].set(K * a[..., None, None]).at[..., :n, n].set(u * a[..., None])  # fmt: skip
            g = flat(aug.reshape(-1, n + 1, n + 1))[:, :n, n].reshape(*a.shape, n)
        v = v + g
    if paths is not None:
        E = transition(K, tau, paths)
    else:
        E = flat((K * tau[..., None, None]).reshape(-1, n, n)).reshape(*tau.shape, n, n)
    Ev = jnp.sum(E * v[..., None, :], axis=-1)  # (Nu, Nd, n)
    x = jnp.sum(jnp.where(counts[..., None], Ev, 0.0), axis=1)  # (Nu, n)
    if cm.has_initial:
        since = t_obs - tab["rec_time"][0]
        E0 = transition(K, since, paths) if paths is not None else flat(K * since[:, None, None])
        x = x + matmul(E0, cm.initial(env0))
    x = x[tab["obs_slot"]]  # (No, n)
    t_obs = tab["e_time"][tab["obs_event"]]
    y_obs = jax.vmap(lambda t, xx: cm.outputs(t, xx, env0))(t_obs, x)
    return x, y_obs, jnp.all(jnp.isfinite(x))
