"""Matrix exponential for the small matrices of compartment models.

Scaling and squaring with the [13/13] Padé approximant (Higham 2005, SIAM J Matrix Anal Appl
26:1179; the algorithm of ``scipy.linalg.expm``): the matrix is scaled by 2^-s so that its
1-norm is at most theta_13 = 5.37, where the Padé error is below double-precision unit
roundoff, and the result squared s times. Unlike ``jax.scipy.linalg.expm`` it evaluates only
the degree-13 approximant (no selection among degrees), which under ``vmap`` is several times
faster for 2-10 compartments; accuracy is checked against SciPy in tests/test_expm.py.

Up to ``_UNROLL`` compartments the exponential (Padé approximant, pivoted solve and squarings;
the forward pass, not the adjoint) is written on the matrix entries, one array per entry: under
``vmap`` each entry is a vector over the batch, and XLA fuses the computation into a few
elementwise loops over the batch instead of a chain of small (batch, n, n) reductions that each
go through memory. For a vmapped 3x3 exponential on the 2-core CPU that is about 5x faster
(see benchmarks/results/kernel_profile.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

_B = (
    64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
    129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
    40840800.0, 960960.0, 16380.0, 182.0, 1.0,
)  # fmt: skip
_THETA13 = 5.371920351148152
#: Up to this size, products are written as broadcast-and-sum, which XLA vectorises across a
#: vmapped batch; above it, batched GEMMs. Measured on the 2-core CPU (jax 0.12, float64,
#: best of 10, vmapped expm of 32 and 100000 matrices): for the value, broadcast-and-sum is
#: on par or faster up to 4 compartments and 1.7-2.9x slower at 8; for the gradient, GEMMs
#: are on par at 4 and 1.5-5.5x faster at 6 to 12. The cut was 12, which made the EV fit's
#: 12-compartment solve 3.7x slower than its 16-compartment one.
_SMALL = 4
#: Up to this size expm, small_inverse and the products inside expm work on the entries.
_UNROLL = 4


def entries(A: Any) -> list[list[Any]]:
    """The entries of a square matrix (or of a batch: each entry then has the batch shape)."""
    n = A.shape[-1]
    return [[A[..., i, j] for j in range(n)] for i in range(n)]


def assemble(M: list[list[Any]]) -> Any:
    """The matrix (or batch of matrices) with entries ``M`` (inverse of :func:`entries`)."""
    return jnp.stack([jnp.stack(row, axis=-1) for row in M], axis=-2)


def _emm(a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
    """a @ b on entries."""
    n, m, p = len(a), len(b), len(b[0])
    return [[_sum(a[i][k] * b[k][j] for k in range(m)) for j in range(p)] for i in range(n)]


def _sum(terms: Any) -> Any:
    it = iter(terms)
    out = next(it)
    for t in it:
        out = out + t
    return out


def _ecomb(terms: list[tuple[float, list[list[Any]]]], eye: float = 0.0) -> list[list[Any]]:
    """Σ c·M + eye·I on entries."""
    n = len(terms[0][1])
    return [
        [_sum(c * M[i][j] for c, M in terms) + (eye if i == j else 0.0) for j in range(n)]
        for i in range(n)
    ]


def _esolve(M: list[list[Any]], B: list[list[Any]]) -> list[list[Any]]:
    """X with M X = B on entries: Gauss-Jordan with partial pivoting (the row with the largest
    magnitude in the pivot column is swapped in by selects)."""
    n = len(M)
    rows = [list(M[i]) + list(B[i]) for i in range(n)]
    for c in range(n):
        for r in range(c + 1, n):  # the largest |entry| of column c among rows c.. into row c
            swap = jnp.abs(rows[r][c]) > jnp.abs(rows[c][c])
            rc, rr = rows[c], rows[r]
            rows[c] = [jnp.where(swap, y, x) for x, y in zip(rc, rr, strict=True)]
            rows[r] = [jnp.where(swap, x, y) for x, y in zip(rc, rr, strict=True)]
        pivot = [v / rows[c][c] for v in rows[c]]
        rows = [
            pivot if r == c else [v - rows[r][c] * p for v, p in zip(rows[r], pivot, strict=True)]
            for r in range(n)
        ]
    return [row[n:] for row in rows]


def small_inverse(A: Any) -> Any:
    """Inverse of a small square matrix: Gauss-Jordan with partial pivoting, unrolled over the
    (static) size and written elementwise, so XLA vectorises it across a vmapped batch (LAPACK
    is called once per matrix, microseconds each for 2x2 systems)."""
    n = A.shape[-1]
    if n <= _UNROLL:
        eye = [[jnp.asarray(float(i == j), A.dtype) for j in range(n)] for i in range(n)]
        return assemble(_esolve(entries(A), eye))
    M = jnp.concatenate([A, jnp.eye(n, dtype=A.dtype)], axis=-1)
    rows = jnp.arange(n)[:, None]
    for c in range(n):
        below = jnp.where(jnp.arange(n) >= c, jnp.abs(M[:, c]), -1.0)
        p = jnp.argmax(below)
        row_c, row_p = M[c], M[p]
        M = jnp.where(rows == c, row_p, jnp.where(rows == p, row_c, M))
        pivot_row = M[c] / M[c, c]
        M = jnp.where(rows == c, pivot_row, M - M[:, c : c + 1] * pivot_row)
    return M[:, n:]


def matmul(a: Any, b: Any) -> Any:
    """a @ b for (batches of) small matrices or matrix-vector products."""
    if a.shape[-1] > _SMALL:
        return a @ b
    if b.ndim == 1:
        return jnp.sum(a * b, axis=-1)
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


#: Most squarings (1-norms up to theta_13 * 2^30, about 5.8e9).
_MAX_SQUARINGS = 30


@jax.custom_vjp
def expm(A: Any) -> Any:
    """e^A for a square matrix A (float64: relative error near unit roundoff times the
    condition of the problem, as SciPy; 1-norm up to 5.8e9).

    Reverse-mode differentiable: the backward pass differentiates the same algorithm (same
    scaling, Padé approximant and squarings), so its adjoint is exact for the computed
    approximant. Both passes square a data-dependent number of times (under ``vmap``, the
    batch's largest), and the backward pass is written with loops JAX can push tangents
    through, so ``jax.hessian`` works (Laplace approximations)."""
    return _squared(*_pade(A))


def _fwd(A: Any) -> tuple[Any, Any]:
    return _squared(*_pade(A)), A  # not expm(A): the rule must not call itself (jvp of vjp)


def _bwd(A: Any, G: Any) -> tuple[Any]:
    # e^A = R_s with R_0 the Padé approximant and R_(k+1) = R_k R_k. The adjoint of one
    # squaring is L_k(X) = X R_k^T + R_k^T X. Every R_k is a power of R_0, so the L_k commute
    # and can be applied in the forward order, alongside the squarings: no stack of
    # intermediate squares, one loop whose carry under vmap is two matrices.
    s = _squarings(A)
    # Up to 4x4 the unrolled inverse (fused under vmap; LAPACK is a call per matrix, which
    # cost a fifth of a one-compartment population gradient); beyond, LAPACK's solve.
    # The backward pass keeps the array form (products as broadcast-and-sum or GEMMs): on the
    # entries, the gradient of a vmapped 3x3 exponential compiled about 4x slower.
    R0, pade_vjp = jax.vjp(lambda a: _pade(a, s, lapack=A.shape[-1] > 4, unroll=False)[0], A)

    def step(_: Any, carry: tuple) -> tuple:
        R, X = carry
        Rt = R.T
        return matmul(R, R), matmul(X, Rt) + matmul(Rt, X)

    return pade_vjp(jax.lax.fori_loop(0, s, step, (R0, G))[1])


expm.defvjp(_fwd, _bwd)


def _squarings(A: Any) -> Any:
    """Number of squarings s so that ||A / 2^s||_1 <= theta_13 (no gradient flows through)."""
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(A), axis=-2)))
    s = jnp.where(norm > _THETA13, jnp.ceil(jnp.log2(norm / _THETA13)), 0.0)
    return jnp.clip(jnp.nan_to_num(s, nan=0.0), 0, _MAX_SQUARINGS).astype(jnp.int32)


def _squared(R: Any, s: Any) -> Any:
    if R.shape[-1] <= _UNROLL:
        return assemble(jax.lax.fori_loop(0, s, lambda i, R: _emm(R, R), entries(R)))
    return jax.lax.fori_loop(0, s, lambda i, R: matmul(R, R), R)


def _pade(A: Any, s: Any = None, lapack: bool = False, unroll: bool = True) -> tuple[Any, Any]:
    """The [13/13] Padé approximant of e^(A / 2^s), and s (computed from A if not given).
    ``unroll``: on the entries up to ``_UNROLL`` compartments (else products of arrays)."""
    n = A.shape[-1]
    s = _squarings(A) if s is None else s
    A = A / (2.0 ** s.astype(A.dtype))
    if n <= _UNROLL and unroll and not lapack:
        return assemble(_pade_entries(entries(A))), s
    eye = jnp.eye(n, dtype=A.dtype)
    A2 = matmul(A, A)
    A4 = matmul(A2, A2)
    A6 = matmul(A4, A2)
    b = _B
    U = matmul(
        A,
        matmul(A6, b[13] * A6 + b[11] * A4 + b[9] * A2)
        + b[7] * A6
        + b[5] * A4
        + b[3] * A2
        + b[1] * eye,
    )
    V = (
        matmul(A6, b[12] * A6 + b[10] * A4 + b[8] * A2)
        + b[6] * A6
        + b[4] * A4
        + b[2] * A2
        + b[0] * eye
    )
    small = n <= _SMALL and not lapack
    R = matmul(small_inverse(V - U), V + U) if small else jnp.linalg.solve(V - U, V + U)
    return R, s


def _pade_entries(a: list[list[Any]]) -> list[list[Any]]:
    """The [13/13] Padé approximant of e^a on entries (the same terms as ``_pade``)."""
    b = _B
    a2 = _emm(a, a)
    a4 = _emm(a2, a2)
    a6 = _emm(a4, a2)
    u_in = _ecomb(
        [(1.0, _emm(a6, _ecomb([(b[13], a6), (b[11], a4), (b[9], a2)]))),
         (b[7], a6), (b[5], a4), (b[3], a2)],
        eye=b[1],
    )  # fmt: skip
    U = _emm(a, u_in)
    V = _ecomb(
        [(1.0, _emm(a6, _ecomb([(b[12], a6), (b[10], a4), (b[8], a2)]))),
         (b[6], a6), (b[4], a4), (b[2], a2)],
        eye=b[0],
    )  # fmt: skip
    return _esolve(_ecomb([(1.0, V), (-1.0, U)]), _ecomb([(1.0, V), (1.0, U)]))
