"""State propagation between events: exact (matrix exponential) and ODE (diffrax).

Both propagators advance ``x' = f(t, x) + u`` over ``dt`` with a constant input rate vector
``u`` (amount/time) and compute the periodic steady state of a dosing train. The event
timeline (``_timeline.py``) is the same for both, so NONMEM semantics live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ldpk.model._compile import CompiledModel, Env
from ldpk.solve._expm import expm, matmul
from ldpk.solve._linsolve import MAX_SIZE, SmallDenseSolver


@dataclass(frozen=True)
class ODEOptions:
    """Settings of the ODE kernel (ignored by the exact kernel).

    solver: 'kvaerno5' (stiff, default), 'tsit5' (explicit), 'dopri5', 'kencarp4'.
    rtol/atol: step-size controller tolerances; max_steps: per interval between events.
    ss_rtol/ss_atol/ss_max_doses: steady state by dosing to convergence — stop when
    |x_k+1 - x_k| <= ss_atol + ss_rtol |x_k+1| for every state, at most ss_max_doses periods.
    ss_max_newton: Newton steps for NONMEM's backward steady-state extrapolation (lag > II).
    pcoeff/icoeff: PID step-size controller coefficients (default 0/1, an I controller).
    0.3/0.3 takes about half the steps with the implicit solvers, but gave gradients 0.2 %
    off finite differences at rtol 1e-10..1e-12 (Michaelis-Menten test model), so it is
    not the default.
    gradient: how derivatives pass through a solve (one of ``GRADIENTS``):
      'sensitivity' (default) - forward sensitivities: each solve computes its Jacobian with
        respect to its initial state, input rate and parameters by forward mode through the
        solver's steps and hands it to JAX as the solve's derivative (a custom JVP, linear in
        the tangents), so jax.grad, jax.jacfwd and jax.hessian all work. The cost grows with
        2·states + parameters per solve, not with the number of fitted variables. Gradients
        equal 'reverse' to rounding; they compile faster and ran 1.1-2x faster on the library's
        ODE models and on the ACOP population posterior (120 subjects, 489 variables).
      'reverse' - reverse mode through the solver's steps (diffrax
        RecursiveCheckpointAdjoint); jax.grad works, but jax.jvp, jax.jacfwd and jax.hessian
        do not (so a MAP's Hessian cannot be formed).
      'forward' - forward mode through the solver's steps (diffrax ForwardMode); jax.jvp and
        jax.jacfwd work, jax.grad does not (numpyro's NUTS needs
        forward_mode_differentiation=True, one pass per fitted variable).
    Failed solves (max_steps reached, non-finite state) return NaN states and ok = False.
    """

    solver: str = "kvaerno5"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int = 100_000
    ss_rtol: float = 1e-10
    ss_atol: float = 1e-12
    ss_max_doses: int = 10_000
    ss_max_newton: int = 4
    pcoeff: float = 0.0
    icoeff: float = 1.0
    gradient: str = "sensitivity"

    def __post_init__(self) -> None:
        if self.solver not in _SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; valid: {', '.join(_SOLVERS)}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient {self.gradient!r}; valid: {', '.join(GRADIENTS)}")  # fmt: skip
        for name in ("rtol", "atol", "max_steps", "ss_rtol", "ss_atol", "ss_max_doses"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


#: Ways derivatives pass through an ODE solve (ODEOptions.gradient).
GRADIENTS = ("reverse", "forward", "sensitivity")

_SOLVERS = {
    "kvaerno5": diffrax.Kvaerno5,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "kencarp4": diffrax.Kvaerno4,
    "kvaerno3": diffrax.Kvaerno3,
}


def _affine_flow(K: Any, u: Any, dt: Any) -> tuple[Any, Any]:
    """(e^{K dt}, ∫0^dt e^{K s} ds u) from one augmented matrix exponential."""
    n = K.shape[0]
    aug = jnp.zeros((n + 1, n + 1)).at[:n, :n].set(K * dt).at[:n, n].set(u * dt)
    E = expm(aug)
    return E[:n, :n], E[:n, n]


class LinearPropagator:
    """Exact solution of x' = K x + u by the augmented matrix exponential
    expm([[K, u], [0, 0]] dt) = [[e^{K dt}, ∫0^dt e^{K s} ds u], [0, 1]] (valid for any K,
    including repeated eigenvalues and singular K, and for negative dt)."""

    exact = True

    def __init__(self, cm: CompiledModel):
        self.cm = cm
        self.n = cm.n_states

    def _flow(self, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        return _affine_flow(self.cm.rate_matrix(env), u, dt)

    def propagate(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        E, g = self._flow(dt, u, env)
        return matmul(E, x) + g, jnp.array(True)

    def transition(self, dt: Any, env: Env, with_input: bool) -> tuple[Any, Any]:
        """(e^{K dt}, ∫0^dt e^{K s} ds); the integral from expm([[K, I], [0, 0]] dt) when
        ``with_input``, else zeros (a bolus-only schedule needs only e^{K dt})."""
        K = self.cm.rate_matrix(env)
        n = self.n
        if not with_input:
            return expm(K * dt), jnp.zeros((n, n))
        aug = jnp.zeros((2 * n, 2 * n)).at[:n, :n].set(K * dt).at[:n, n:].set(jnp.eye(n) * dt)
        E = expm(aug)
        return E[:n, :n], E[:n, n:]

    def propagate_signed(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        """Like propagate, also for dt < 0 (NONMEM's backward extrapolation of a steady state).
        Backwards, x = E(|dt|)^-1 (y - g) is solved rather than expm(K dt) formed, whose
        large positive eigenvalues (e^{ka |dt|}) would swamp the other states in rounding."""
        E, g = self._flow(jnp.abs(dt), u, env)
        back = jnp.linalg.solve(E, x - g)
        return jnp.where(dt >= 0, E @ x + g, back), jnp.array(True)

    def fixed_point(self, period_map: Any, env: Env, ii: Any) -> tuple[Any, Any]:
        """x with x = period_map(x), for the affine map x -> e^{K II} x + period_map(0)."""
        q = period_map(jnp.zeros(self.n))[0]
        P = expm(self.cm.rate_matrix(env) * ii)
        x = jnp.linalg.solve(jnp.eye(self.n) - P, q)
        return x, jnp.all(jnp.isfinite(x))

    def constant_input_steady_state(self, u: Any, t: Any, env: Env) -> tuple[Any, Any]:
        x = jnp.linalg.solve(self.cm.rate_matrix(env), -u)
        return x, jnp.all(jnp.isfinite(x))


class PiecewiseLinearPropagator:
    """Exact solution of x' = K(t) x + u for a piecewise-linear model
    (``Model.is_piecewise_linear``): K(t) is constant between the model's switch times
    (``discontinuities``), so an interval [t, t + dt] splits at the switch times inside it
    and each piece is one augmented matrix exponential, with K the Jacobian of the vector
    field at the piece's midpoint. The pieces are static in number (one more than the
    switches; a switch outside the interval gives a piece of length zero, the identity), so
    the solve has a fixed cost with no step-size control, no stiffness and no step limit.
    Derivatives with respect to a switch time flow through the piece lengths (one-sided at
    the switch itself). Provides the ODE propagator's interface, so the ODE kernel's
    schedules (one solve per interval between doses) are reused."""

    exact = True

    def __init__(self, cm: CompiledModel):
        if cm.jump_times is None:
            raise ValueError("a piecewise-linear model needs `discontinuities:`")
        self.cm = cm
        self.n = cm.n_states

    def _rates(self, t: Any, env: Env) -> Any:
        """K at time t: the vector field is linear in the states, so its Jacobian is K."""
        return jax.jacfwd(lambda x: self.cm.vector_field(t, x, env))(jnp.zeros(self.n))

    def _flow(self, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        """(Φ, g) with x(t + dt) = Φ x(t) + g for the input rate u (None: no input), dt >= 0."""
        n = self.n
        ends = jnp.concatenate(
            [jnp.reshape(t, (1,)), jnp.clip(self.cm.jump_times(env), t, t + dt),
             jnp.reshape(t + dt, (1,))]
        )  # fmt: skip
        phi, g = jnp.eye(n), jnp.zeros(n)
        for a, b in zip(ends[:-1], ends[1:], strict=True):
            K = self._rates((a + b) / 2, env)
            if u is None:
                phi = matmul(expm(K * (b - a)), phi)
                continue
            E, h = _affine_flow(K, u, b - a)
            phi, g = matmul(E, phi), matmul(E, g) + h
        return phi, g

    def propagate(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        phi, g = self._flow(t, dt, u, env)
        y = matmul(phi, x) + g
        return y, jnp.all(jnp.isfinite(y))

    def solve_saving(
        self, x: Any, t0: Any, t1: Any, ts: Any, u: Any, env: Env
    ) -> tuple[Any, Any, Any]:
        """States at ``ts`` (within [t0, t1]) and at t1, each propagated from t0 (see
        ``ODEPropagator.solve_saving``); an empty interval returns x everywhere."""
        span = jnp.concatenate([jnp.asarray(ts, float), jnp.reshape(t1, (1,))]) - t0
        ys = jax.vmap(lambda h: self.propagate(x, t0, jnp.maximum(h, 0.0), u, env)[0])(span)
        return ys[:-1], ys[-1], jnp.all(jnp.isfinite(ys))

    def propagate_signed(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        """Like propagate, also for dt < 0: x(t + dt) solves Φ z + g = x over [t + dt, t]."""
        h = jnp.abs(dt)
        phi, g = self._flow(jnp.where(dt >= 0, t, t - h), h, u, env)
        y = jnp.where(dt >= 0, matmul(phi, x) + g, jnp.linalg.solve(phi, x - g))
        return y, jnp.all(jnp.isfinite(y))

    def fixed_point(self, period_map: Any, env: Env, ii: Any) -> tuple[Any, Any]:
        """x with x = period_map(x): the map is affine, x -> P x + q, with P its Jacobian."""
        zero = jnp.zeros(self.n)
        q = period_map(zero)[0]
        P = jax.jacfwd(lambda x: period_map(x)[0])(zero)
        x = jnp.linalg.solve(jnp.eye(self.n) - P, q)
        return x, jnp.all(jnp.isfinite(x))

    def constant_input_steady_state(self, u: Any, t: Any, env: Env) -> tuple[Any, Any]:
        """The steady state of the regime after the last switch (where an infusion that
        never stops ends up): x = -K⁻¹ u with K after every switch time and after t."""
        after = jnp.maximum(t, jnp.max(self.cm.jump_times(env))) + 1.0
        x = jnp.linalg.solve(self._rates(after, env), -u)
        return x, jnp.all(jnp.isfinite(x))


class ODEPropagator:
    """diffrax integration of x' = f(t, x) + u over one interval between events."""

    exact = False

    def __init__(self, cm: CompiledModel, options: ODEOptions):
        self.cm = cm
        self.n = cm.n_states
        self.o = options
        cls = _SOLVERS[options.solver]
        if issubclass(cls, diffrax.AbstractImplicitSolver) and cm.n_states <= MAX_SIZE:
            root = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)(
                linear_solver=SmallDenseSolver()
            )
            self.solver = cls(root_finder=root)
        else:
            self.solver = cls()
        vf = cm.vector_field
        self.term = diffrax.ODETerm(lambda t, y, args: vf(t, y, args[0]) + args[1])
        # 'sensitivity' solves with ForwardMode (a plain while loop, differentiable forwards)
        # and gives JAX the solves' Jacobians as their derivatives (custom JVPs).
        reverse = options.gradient == "reverse"
        self.adjoint = diffrax.RecursiveCheckpointAdjoint() if reverse else diffrax.ForwardMode()
        if options.gradient == "sensitivity":
            self._flow = self._sensitivity_flow()

    def _controller(self, env: Env) -> Any:
        """The step-size controller, told the model's discontinuity times (if any) so that it
        steps onto them exactly instead of creeping up to a jump in the vector field."""
        o = self.o
        jumps = None if self.cm.jump_times is None else self.cm.jump_times(env)
        return diffrax.PIDController(
            rtol=o.rtol, atol=o.atol, pcoeff=o.pcoeff, icoeff=o.icoeff, jump_ts=jumps
        )

    def _diffeqsolve(
        self, y0: Any, t0: Any, t1: Any, saveat: Any, u: Any, env: Env, **kw: Any
    ) -> Any:
        """diffrax.diffeqsolve with this propagator's term, solver, step-size controller,
        step limit and adjoint; failures are returned (throw=False), not raised."""
        return diffrax.diffeqsolve(
            self.term, self.solver, t0=t0, t1=t1, dt0=None, y0=y0, args=(env, u),
            saveat=saveat, stepsize_controller=self._controller(env),
            max_steps=self.o.max_steps, adjoint=self.adjoint, throw=False, **kw,
        )  # fmt: skip

    def _solve(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        # A zero-length interval returns x unchanged; integrate over a dummy unit interval
        # there so that the solver never sees t0 == t1 (and the result is discarded).
        zero = dt == 0
        t1 = t + jnp.where(zero, 1.0, dt)
        sol = self._diffeqsolve(x, t, t1, diffrax.SaveAt(t1=True), u, env)
        y = sol.ys[-1]
        ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(y))
        # A failed solve stops where it gave up, with a finite but wrong state: make it NaN, so
        # that a log-density built on it is NaN (a rejected proposal), never silently wrong.
        return jnp.where(zero, x, jnp.where(ok, y, jnp.nan)), zero | ok

    def propagate(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        if self.o.gradient == "sensitivity":
            return self._flow(x, t, dt, u, env)
        return self._solve(x, t, dt, u, env)

    def _sensitivity_flow(self) -> Any:
        """propagate() with forward sensitivities as its derivative (a jax.custom_jvp). The
        tangent of the end state is J·(dx − f(t, x)·dt_0, du, d env) + f(t1, y)·(dt_0 + d dt)
        with J the Jacobian of the solve (forward mode through the solver's steps) and the
        time terms from the flow property (∂y/∂t1 = f(t1, y), ∂y/∂t0 = −J f(t0, x))."""
        vf = self.cm.vector_field

        @jax.custom_jvp
        def flow(x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
            return self._solve(x, t, dt, u, env)

        @flow.defjvp
        def flow_jvp(primals: tuple, tangents: tuple) -> tuple:
            x, t, dt, u, env = primals
            tx, tt, tdt, tu, tenv = tangents
            tx = tx - (vf(t, x, env) + u) * tt

            def solve(x: Any, u: Any, env: Env) -> tuple[Any, Any]:
                return self._solve(x, t, dt, u, env)

            (y, ok), ty = _sensitivity_jvp(solve, (x, u, env), (tx, tu, tenv))
            ty = ty + (vf(t + dt, y, env) + u) * (tt + tdt)
            return (y, ok), (ty, _float0_like(ok))

        return flow

    def solve_saving(
        self, x: Any, t0: Any, t1: Any, ts: Any, u: Any, env: Env
    ) -> tuple[Any, Any, Any]:
        """One solve over [t0, t1] (no discontinuity inside) saving at ``ts`` (within
        [t0, t1], nondecreasing) and at t1: returns (states at ts, state at t1, ok).
        The times are data (constants or traced values, never differentiated); an empty
        interval (t1 <= t0) returns x at every ts and at t1. ``u=None``: no input, which
        spares the forward sensitivities one direction per state."""

        def solve(x: Any, env: Env, u: Any, times: tuple) -> tuple[Any, Any]:
            u = jnp.zeros(self.n) if u is None else u
            t0, t1, ts = times
            empty = t1 <= t0  # the solver never sees t0 == t1: a dummy unit interval instead
            end = jnp.where(empty, t0 + 1.0, t1)
            saveat = diffrax.SaveAt(ts=jnp.where(empty, t0, ts), t1=True)
            sol = self._diffeqsolve(x, t0, end, saveat, u, env)
            ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(sol.ys))
            ys = jnp.where(ok, sol.ys, jnp.nan)
            return jnp.where(empty, x, ys), empty | ok

        times = (jnp.asarray(t0, float), jnp.asarray(t1, float), jnp.asarray(ts, float))
        if self.o.gradient == "sensitivity":
            ys, ok = _with_sensitivities(solve, (x, env, u, times), 2 if u is None else 3)
        else:
            ys, ok = solve(x, env, u, times)
        return ys[:-1], ys[-1], ok

    def propagate_signed(self, x: Any, t: Any, dt: Any, u: Any, env: Env) -> tuple[Any, Any]:
        """Like propagate, also for dt < 0. Backwards integration of a dissipative system is
        unstable (errors grow like e^{k |dt|}), so for dt < 0 the state z at t + dt is found
        by Newton's method on the forward problem propagate(z, t + dt, |dt|) = x (exact in one
        step for linear systems; ss_max_newton steps at most)."""
        h = jnp.abs(dt)
        jac = jax.jacrev if self.o.gradient == "reverse" else jax.jacfwd

        def forward(z: Any) -> Any:
            return self.propagate(z, t - h, h, u, env)[0]

        def newton(_: int, z: Any) -> Any:
            fz, J = forward(z), jac(forward)(z)
            return z - jnp.linalg.solve(J, fz - x)

        back = jax.lax.fori_loop(0, self.o.ss_max_newton, newton, x)
        ok_back = jnp.all(
            jnp.abs(forward(back) - x) <= 1e3 * (self.o.atol + self.o.rtol * jnp.abs(x))
        )
        fwd, ok_fwd = self.propagate(x, t, h, u, env)
        return jnp.where(dt >= 0, fwd, back), jnp.where(dt >= 0, ok_fwd, ok_back)

    def fixed_point(self, period_map: Any, env: Env, ii: Any) -> tuple[Any, Any]:
        """Dose to convergence: iterate the period map from zero until the change is within
        ss_atol + ss_rtol |x| in every state, at most ss_max_doses periods."""
        o = self.o

        def cond(c: Any) -> Any:
            i, x, dx, ok = c
            return (i < o.ss_max_doses) & ok & jnp.any(dx > o.ss_atol + o.ss_rtol * jnp.abs(x))

        def body(c: Any) -> Any:
            i, x, _, ok = c
            y, ok1 = period_map(x)
            return i + 1, y, jnp.abs(y - x), ok & ok1

        x0 = jnp.zeros(self.n)
        i, x, dx, ok = jax.lax.while_loop(cond, body, (0, x0, jnp.full(self.n, jnp.inf), True))
        converged = jnp.all(dx <= o.ss_atol + o.ss_rtol * jnp.abs(x))
        return x, ok & converged

    def constant_input_steady_state(self, u: Any, t: Any, env: Env) -> tuple[Any, Any]:
        """Integrate a constant input until the derivative vanishes (diffrax steady-state
        event, rtol/atol of the settings)."""

        def solve(u: Any, env: Env, t: Any) -> tuple[Any, Any]:
            event = diffrax.Event(
                diffrax.steady_state_event(rtol=self.o.ss_rtol, atol=self.o.ss_atol)
            )
            sol = self._diffeqsolve(
                jnp.zeros(self.n), t, jnp.inf, diffrax.SaveAt(t1=True), u, env, event=event
            )
            y = sol.ys[-1]
            ok = (sol.result == diffrax.RESULTS.event_occurred) & jnp.all(jnp.isfinite(y))
            return jnp.where(ok, y, jnp.nan), ok

        if self.o.gradient == "sensitivity":
            return _with_sensitivities(solve, (u, env, t), 2)
        return solve(u, env, t)


def _with_sensitivities(solve: Any, args: tuple, n_diff: int) -> tuple[Any, Any]:
    """``solve(*args) -> (ys, ok)`` with forward sensitivities as its derivative with respect
    to the first ``n_diff`` arguments (see :func:`_sensitivity_jvp`); the other arguments are
    constants (their tangents are ignored). ``solve`` must not close over traced values."""

    @jax.custom_jvp
    def flow(*a: Any) -> tuple[Any, Any]:
        return solve(*a)

    @flow.defjvp
    def flow_jvp(primals: tuple, tangents: tuple) -> tuple:
        rest = primals[n_diff:]
        out, ty = _sensitivity_jvp(lambda *d: solve(*d, *rest), primals[:n_diff], tangents[:n_diff])
        return out, (ty, _float0_like(out[1]))

    return flow(*args)


def _float0_like(a: Any) -> Any:
    """The (empty) tangent of a boolean or integer output."""
    return np.zeros(np.shape(a), dtype=jax.dtypes.float0)


def _sensitivity_jvp(solve: Any, primals: tuple, tangents: tuple) -> tuple:
    """((ys, ok), tangent of ys) of ``solve(*primals) -> (ys, ok)``, with the Jacobians of ys
    with respect to every floating-point input leaf computed by forward mode (jax.jacfwd, one
    direction per input element) from the primals alone and contracted with ``tangents``: the
    result is linear in the tangents, so JAX can transpose it (jax.grad), and the solver's
    internal loops are only ever differentiated forwards."""
    leaves, tree = jax.tree_util.tree_flatten(primals)
    t_leaves = jax.tree_util.tree_leaves(tangents)
    diff = [i for i, v in enumerate(leaves) if jnp.issubdtype(jnp.result_type(v), jnp.inexact)]

    def f(*vals: Any) -> tuple[Any, Any]:
        full = list(leaves)
        for i, v in zip(diff, vals, strict=True):
            full[i] = v
        out = solve(*jax.tree_util.tree_unflatten(tree, full))
        return out[0], out

    jacs, out = jax.jacfwd(f, argnums=tuple(range(len(diff))), has_aux=True)(
        *(leaves[i] for i in diff)
    )
    ys = out[0]
    ty = jnp.zeros_like(ys)
    for J, i in zip(jacs, diff, strict=True):
        d = jnp.asarray(t_leaves[i], dtype=ys.dtype)
        ty = ty + jnp.tensordot(J, d, axes=d.ndim)
    return out, ty
