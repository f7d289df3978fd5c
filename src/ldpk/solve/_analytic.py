"""Closed-form transition matrices for linear models whose transfer graph has no cycle.

When no chain of flows leads from a compartment back to itself (absorption depots, transit
chains, parent → metabolite, the tracer fates of the mitochondria and EV models), the rate
matrix K is triangular in a topological order of the compartments, its eigenvalues are its
diagonal entries λ_v = -(total outflow rate of v), and each entry of e^{Kτ} is a sum over the
directed paths v_0 → v_1 → … → v_L from column to row:

    (e^{Kτ})_{v_L v_0} = Σ_paths (Π_l k_{v_l → v_(l+1)}) · f_τ[λ_(v_0), …, λ_(v_L)],

with f_τ[·] the divided difference of x ↦ e^{xτ} (confluent where eigenvalues repeat; Bateman's
solution is the case of a chain). The integral ∫_0^a e^{Ks} ds, for zero-order input, is the same
sum with the point 0 added to every path (an input node with eigenvalue 0).

This is what NONMEM's ADVAN1/2 and Torsten's analytic solutions compute for one compartment,
generalised to any acyclic structure, and the same dynamics as the matrix-exponential kernel
(one rate matrix, ``CompiledModel.rate_matrix``): only the way e^{Kτ} is evaluated differs. It
costs a few fused elementwise operations per observation, against a Padé approximant and
squarings for the matrix exponential, which is what makes population gradients cheap.

Divided differences are evaluated on the points sorted in decreasing order (a sorting network
of min/max, so it is differentiable and vectorises) by the recursion
f[x_i..x_j] = (f[x_i..x_(j-1)] − f[x_(i+1)..x_j]) / (x_i − x_j), except where the points of a
range are close, (x_i − x_j)·τ < ``TAYLOR_SPREAD``, where the recursion would cancel: there the
Taylor series about their mean m is used, f = τ^k e^{mτ} Σ_r τ^r h_r(x − m) / (k + r)!, with h_r
the complete homogeneous symmetric polynomials (Newton's identities from power sums), to
r = ``TAYLOR_TERMS``. Truncation error ≤ ~1e-11 relative; the recursion amplifies rounding by at
most 1/``TAYLOR_SPREAD`` per level. Accuracy is tested against SciPy's expm.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from ldpk.model import Model

#: Ranges of points closer than this (times τ) use the Taylor series.
TAYLOR_SPREAD = 0.1
#: Terms of the Taylor series beyond the leading one.
TAYLOR_TERMS = 6


def _successors(model: Model) -> dict[int, list[int]]:
    """Compartment index -> indices its first-order transfers (``k:`` flows between two
    compartments) lead to; elimination only enters K's diagonal."""
    index = {c: i for i, c in enumerate(model.compartment_names)}
    edges = {
        (index[f.source], index[f.target])
        for f in model.flows
        if f.k is not None and f.source is not None and f.target is not None
    }
    succ: dict[int, list[int]] = {i: [] for i in range(len(index))}
    for src, tgt in sorted(edges):
        succ[src].append(tgt)
    return succ


def find_cycle(model: Model) -> tuple[str, ...] | None:
    """A cycle of transfers (compartment names, first repeated at the end), or None."""
    n = len(model.compartments)
    succ = _successors(model)
    state = [0] * n  # 0 unvisited, 1 on the stack, 2 done
    stack: list[int] = []

    def visit(v: int) -> list[int] | None:
        state[v] = 1
        stack.append(v)
        for w in succ[v]:
            if state[w] == 1:
                return stack[stack.index(w) :] + [w]
            if state[w] == 0 and (found := visit(w)) is not None:
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in range(n):
        if state[v] == 0 and (cycle := visit(v)) is not None:
            return tuple(model.compartment_names[i] for i in cycle)
    return None


def paths_from(model: Model, sources: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Every directed path of transfers (vertex tuples, the source alone included) that starts
    at one of ``sources``. The model must have no cycle (see :func:`find_cycle`)."""
    succ = _successors(model)
    out: list[tuple[int, ...]] = []

    def walk(path: tuple[int, ...]) -> None:
        out.append(path)
        for w in succ[path[-1]]:
            walk((*path, w))

    for s in sorted(set(sources)):
        walk((s,))
    return tuple(out)


def table_size(paths: tuple[tuple[int, ...], ...]) -> int:
    """Entries of the divided-difference tables of ``paths`` (what the closed form costs)."""
    return sum(len(p) * (len(p) + 1) // 2 for p in paths)


def _sorted_desc(xs: list[Any]) -> list[Any]:
    """Sort a short list of arrays elementwise in decreasing order (odd-even transposition
    network: min/max only, so differentiable and fused by XLA)."""
    xs = list(xs)
    n = len(xs)
    for rnd in range(n):
        for i in range(rnd % 2, n - 1, 2):
            a, b = xs[i], xs[i + 1]
            xs[i], xs[i + 1] = jnp.maximum(a, b), jnp.minimum(a, b)
    return xs


def _taylor(points: list[Any], tau: Any) -> Any:
    """f_τ[points] by the Taylor series about the points' mean (accurate when they are close)."""
    k = len(points) - 1
    m = sum(points) / (k + 1)
    d = [x - m for x in points]
    p = [None] + [sum(di**r for di in d) for r in range(1, TAYLOR_TERMS + 1)]  # power sums
    h = [jnp.ones_like(m)]
    for r in range(1, TAYLOR_TERMS + 1):  # Newton's identities: r h_r = Σ_i p_i h_(r-i)
        h.append(sum(p[i] * h[r - i] for i in range(1, r + 1)) / r)
    series = h[TAYLOR_TERMS] / math.factorial(k + TAYLOR_TERMS)
    for r in range(TAYLOR_TERMS - 1, -1, -1):  # Horner in τ
        series = series * tau + h[r] / math.factorial(k + r)
    return tau**k * jnp.exp(m * tau) * series


def exp_divided_difference(points: list[Any], tau: Any) -> Any:
    """f_τ[x_0, …, x_k], the divided difference of x ↦ e^{xτ} at ``points`` (arrays that
    broadcast with ``tau``; repeated points give the confluent value, e.g. τ e^{xτ} for two)."""
    xs = _sorted_desc(points)
    n = len(xs)
    table = [jnp.exp(x * tau) for x in xs]  # f[x_i]
    for k in range(1, n):
        nxt = []
        for i in range(n - k):
            spread = xs[i] - xs[i + k]  # >= 0, points sorted
            close = spread * tau < TAYLOR_SPREAD
            rec = (table[i] - table[i + 1]) / jnp.where(close, 1.0, spread)
            nxt.append(jnp.where(close, _taylor(xs[i : i + k + 1], tau), rec))
        table = nxt
    return table[0]


def transition(K: Any, tau: Any, paths: tuple[tuple[int, ...], ...], integral: bool = False) -> Any:
    """e^{Kτ} (or, with ``integral``, ∫_0^τ e^{Ks} ds) for every τ in ``tau``: shape
    (*tau.shape, n, n). Only the columns of the paths' sources are filled (the others are 0).
    ``K``: the (acyclic) rate matrix, 1/time; ``tau``: times (≥ 0)."""
    n = K.shape[-1]
    lam = [K[v, v] for v in range(n)]
    zero = jnp.zeros_like(tau)
    entries: dict[tuple[int, int], Any] = {}
    for path in paths:
        weight = math.prod((K[b, a] for a, b in zip(path[:-1], path[1:], strict=True)), start=1.0)  # fmt: skip
        pts = [lam[v] for v in path]
        dd = exp_divided_difference([jnp.zeros_like(lam[0]), *pts] if integral else pts, tau)
        key = (path[-1], path[0])
        entries[key] = entries.get(key, zero) + weight * dd
    rows = [jnp.stack([entries.get((i, j), zero) for j in range(n)], axis=-1) for i in range(n)]
    return jnp.stack(rows, axis=-2)
