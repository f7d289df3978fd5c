"""A linear solver for the small dense systems of implicit ODE steps.

diffrax's implicit solvers (Kvaerno, KenCarp) solve (I - γ h J) δ = r in every Newton
iteration. lineax's default LU calls LAPACK once per matrix, which under ``vmap`` over many
parameter sets costs microseconds per 2x2 system; here the inverse is formed by Gauss-Jordan
elimination with partial pivoting, unrolled over the (static, small) size and written with
elementwise operations that XLA vectorises across the batch. The matrices are I - γ h J,
well conditioned for the step sizes the controller accepts.
"""

from __future__ import annotations

from typing import Any

import lineax as lx
from lineax._solver.misc import (
    pack_structures,
    ravel_vector,
    transpose_packed_structures,
    unravel_solution,
)

from ldpk.solve._expm import matmul, small_inverse

#: Largest system solved this way; larger ones use lineax's LU.
MAX_SIZE = 12


class SmallDenseSolver(lx.AbstractLinearSolver):
    """lineax solver for small dense square systems (see module docs)."""

    def init(self, operator: Any, options: dict[str, Any]) -> Any:
        del options
        return small_inverse(operator.as_matrix()), pack_structures(operator)

    def compute(self, state: Any, vector: Any, options: dict[str, Any]) -> Any:
        del options
        inv, packed = state
        x = matmul(inv, ravel_vector(vector, packed))
        return unravel_solution(x, packed), lx.RESULTS.successful, {}

    def transpose(self, state: Any, options: dict[str, Any]) -> Any:
        del options
        inv, packed = state
        return (inv.T, transpose_packed_structures(packed)), {}

    def conj(self, state: Any, options: dict[str, Any]) -> Any:
        del options
        inv, packed = state
        return (inv.conj(), packed), {}

    def assume_full_rank(self) -> bool:
        return True
