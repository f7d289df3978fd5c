"""A Model compiled into pure jax.numpy functions used by every kernel.

Parameter and covariate values travel as flat arrays (``theta`` of shape (P,), ``cov`` of
shape (C,)); the environment built from them is a dict of named scalars.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ldpk.model._model import Model, derived_order

Env = dict[str, Any]


@dataclass(frozen=True)
class RouteTable:
    """Dose routes resolved to compartment indices. Declared routes come first, then one plain
    route per compartment (no lag, F = 1) named ``cmt:<compartment>``."""

    names: tuple[str, ...]
    target: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """Pure functions of one model. Hashable by identity; build once per Model."""

    model: Model
    n_states: int
    routes: RouteTable
    env: Callable[[Float[Array, " P"], Float[Array, " C"]], Env]
    rate_matrix: Callable[[Env], Float[Array, "n n"]]
    vector_field: Callable[[Any, Float[Array, " n"], Env], Float[Array, " n"]]
    outputs: Callable[[Any, Float[Array, " n"], Env], Float[Array, " m"]]
    initial: Callable[[Env], Float[Array, " n"]]
    route_values: Callable[[Env], Float[Array, "R 4"]]
    has_initial: bool
    jump_times: Callable[[Env], Any] | None = None  # discontinuities of the vector field


def compile_model(model: Model, keep: tuple[str, ...] | None = None) -> CompiledModel:
    """Turn a Model into the functions the kernels call (traced once per compilation).

    ``keep``: solve only these compartments (``Model.states_for(outputs)``: nothing outside
    them changes them), in model order. The route table keeps its length and names; a route
    into another compartment targets index n (one past the last state), which the kernels'
    one-hot dose vectors drop, as they may: such a dose cannot reach a kept compartment.
    Outputs read the other compartments as 0: only the outputs ``keep`` was made for are
    right."""
    m = model
    pnames = m.parameter_names
    cnames = m.covariate_names
    order = derived_order(m)
    kept = tuple(c for c in m.compartment_names if keep is None or c in keep)
    dropped = tuple(c for c in m.compartment_names if c not in kept)
    cmt_index = {c: i for i, c in enumerate(kept)}
    n = len(kept)

    def env_fn(theta: Any, cov: Any) -> Env:
        env: Env = {name: theta[i] for i, name in enumerate(pnames)}
        env.update({name: cov[i] for i, name in enumerate(cnames)})
        for d in order:
            env[d.name] = d.expr(env)
        return env

    # Flows out of solved compartments; one into a dropped compartment is a loss here.
    k_flows = [
        (cmt_index[f.source], cmt_index.get(f.target or ""), f.k)
        for f in m.flows
        if f.k is not None and f.source in cmt_index
    ]
    rate_flows = [
        (cmt_index.get(f.source or ""), cmt_index.get(f.target or ""), f.rate)
        for f in m.flows
        if f.rate is not None and (f.source in cmt_index or f.target in cmt_index)
    ]
    linear_rates = bool(rate_flows) and m.is_linear_system

    def state_env(t: Any, x: Any, env: Env) -> Env:
        e = dict(env)
        e.update({c: x[i] for c, i in cmt_index.items()})
        e.update({c: jnp.zeros((), x.dtype) for c in dropped})
        e["t"] = t
        return e

    def net(fluxes: list[tuple[int | None, int | None, Any]], zero: Any) -> Any:
        """dx/dt from (source, target, flux) triples."""
        dx = [
            sum((f for src, tgt, f in fluxes if tgt == i), zero)
            - sum((f for src, tgt, f in fluxes if src == i), zero)
            for i in range(n)
        ]
        return jnp.stack(dx)

    def rate_flow_field(t: Any, x: Any, env: Env) -> Any:
        e = state_env(t, x, env)
        return net([(src, tgt, r(e)) for src, tgt, r in rate_flows], jnp.zeros((), x.dtype))

    # K and dx/dt are assembled from Python sums and stacked: no scatter (.at[].add), which is
    # slow on XLA:CPU under vmap and inside the implicit solvers' Jacobians.
    def rate_matrix(env: Env) -> Any:
        ks = [(src, tgt, k(env)) for src, tgt, k in k_flows]
        zero = jnp.zeros(())
        rows = []
        for i in range(n):
            row = []
            for j in range(n):
                terms = [kv for src, tgt, kv in ks if src == j and tgt == i]
                if i == j:
                    terms = [-kv for src, _, kv in ks if src == j]
                row.append(sum(terms, zero))
            rows.append(jnp.stack(row))
        k_part = jnp.stack(rows)
        if not linear_rates:
            return k_part
        # `rate:` flows linear in the states (Model.is_linear_system): their Jacobian, exact
        # at any x; the time is never read (no `t` in such a flow).
        return k_part + jax.jacfwd(rate_flow_field, argnums=1)(0.0, jnp.zeros((n,)), env)

    def vector_field(t: Any, x: Any, env: Env) -> Any:
        fluxes = [(src, tgt, k(env) * x[src]) for src, tgt, k in k_flows]
        if rate_flows:
            e = state_env(t, x, env)
            fluxes += [(src, tgt, r(e)) for src, tgt, r in rate_flows]
        return net(fluxes, jnp.zeros((), dtype=x.dtype))

    outs = [o.expr for o in m.outputs]

    def outputs(t: Any, x: Any, env: Env) -> Any:
        if not outs:
            return jnp.zeros((0,))
        e = state_env(t, x, env)
        return jnp.stack([jnp.broadcast_to(o(e), jnp.shape(t)) * 1.0 for o in outs])

    inits = [
        (cmt_index[c.name], c.initial)
        for c in m.compartments
        if c.initial is not None and c.name in cmt_index
    ]

    def initial(env: Env) -> Any:
        x = jnp.zeros((n,))
        for i, e in inits:
            x = x.at[i].set(e(env))
        return x

    route_names = list(m.route_names) + [f"cmt:{c}" for c in m.compartment_names]
    targets = [r.target for r in m.routes] + list(m.compartment_names)
    route_target = [cmt_index.get(c, n) for c in targets]  # n: dropped (see docstring)
    route_exprs = [(r.lag, r.bioavailability, r.rate, r.duration) for r in m.routes]
    # Lag 0, F = 1; a route without a modelled rate or duration gets 1.0 there, never used
    # (records asking for one are rejected) but finite, so masked-away branches of
    # where() keep gradients finite (a NaN there would poison d/dF).
    defaults = (0.0, 1.0, 1.0, 1.0)

    def route_values(env: Env) -> Any:
        rows = []
        for exprs in route_exprs:
            rows.append(
                jnp.stack(
                    [
                        jnp.asarray(d if e is None else e(env), dtype=float)
                        for e, d in zip(exprs, defaults, strict=True)
                    ]
                )
            )
        plain = jnp.broadcast_to(jnp.asarray(defaults, dtype=float), (len(m.compartments), 4))
        return jnp.concatenate([jnp.stack(rows), plain]) if rows else plain

    return CompiledModel(
        model=m,
        n_states=n,
        routes=RouteTable(tuple(route_names), tuple(route_target)),
        env=env_fn,
        rate_matrix=rate_matrix,
        vector_field=vector_field,
        outputs=outputs,
        initial=initial,
        route_values=route_values,
        has_initial=bool(inits),
        jump_times=(
            (
                lambda env: jnp.sort(
                    jnp.stack([jnp.asarray(e(env), float) for e in m.discontinuities])
                )
            )
            if m.discontinuities
            else None
        ),
    )
