"""A linear solver for the small dense systems of implicit ODE steps.

diffrax's implicit solvers (Kvaerno, KenCarp) solve (I - γ h J) δ = r in every Newton
iteration. lineax's default LU calls LAPACK once per matrix, which under ``vmap`` over many
parameter sets costs microseconds per 2x2 system; here the inverse is formed by Gauss-Jordan
elimination with partial pivoting, unrolled over the (static, small) size and written with
elementwise operations that XLA vectorises across the batch. The matrices are I - γ h J,
well conditioned for the step sizes the controller accepts.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ldpk.solve._expm import matmul, small_inverse

# lineax has no public API to flatten a vector pytree to the matrix's vector and back: its
# own solvers use helpers of lineax._solver.misc (re-exported as lineax.internal, a namespace
# without compatibility guarantees). The few lines below do the same with public JAX and
# Equinox APIs, so a lineax release can move its helpers without breaking ldpk. Only
# lx.AbstractLinearSolver, lx.RESULTS and the operator's public methods are used.


class _Layout(eqx.Module):
    """The pytree layouts of an operator's output (``outs``: the right-hand side) and input
    (``ins``: the solution), each (treedef, ((shape, dtype), ...)). Static: no arrays."""

    outs: tuple = eqx.field(static=True)
    ins: tuple = eqx.field(static=True)

    @classmethod
    def of(cls, operator: Any) -> _Layout:
        return cls(_layout(operator.out_structure()), _layout(operator.in_structure()))

    def transpose(self) -> _Layout:
        return _Layout(self.ins, self.outs)


def _layout(structure: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(structure)
    return treedef, tuple((tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves)


def _ravel(vector: Any, layout: tuple) -> Any:
    """``vector`` (a pytree of the ``layout``) as one flat array."""
    leaves, treedef = jax.tree.flatten(vector)
    if treedef != layout[0] or [tuple(x.shape) for x in leaves] != [s for s, _ in layout[1]]:
        raise ValueError("vector does not match the operator's output structure")
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate([jnp.reshape(x.astype(dtype), -1) for x in leaves])


def _unravel(x: Any, layout: tuple) -> Any:
    """The flat array ``x`` as a pytree of the ``layout``."""
    treedef, specs = layout
    cuts = np.cumsum([math.prod(shape) for shape, _ in specs[:-1]]).tolist()
    parts = jnp.split(x, cuts)
    return jax.tree.unflatten(treedef, [p.reshape(s).astype(d) for p, (s, d) in zip(parts, specs, strict=True)])  # fmt: skip


#: Largest system solved this way; larger ones use lineax's LU.
MAX_SIZE = 12


class SmallDenseSolver(lx.AbstractLinearSolver):
    """lineax solver for small dense square systems (see module docs)."""

    def init(self, operator: Any, options: dict[str, Any]) -> Any:
        del options
        return small_inverse(operator.as_matrix()), _Layout.of(operator)

    def compute(self, state: Any, vector: Any, options: dict[str, Any]) -> Any:
        del options
        inv, layout = state
        x = matmul(inv, _ravel(vector, layout.outs))
        return _unravel(x, layout.ins), lx.RESULTS.successful, {}

    def transpose(self, state: Any, options: dict[str, Any]) -> Any:
        del options
        inv, layout = state
        return (inv.T, layout.transpose()), {}

    def conj(self, state: Any, options: dict[str, Any]) -> Any:
        del options
        inv, layout = state
        return (inv.conj(), layout), {}

    def assume_full_rank(self) -> bool:
        return True
