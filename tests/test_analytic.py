"""The analytic kernel (closed-form transitions of acyclic linear models, solve/_analytic.py).

Oracles: divided differences of exp in exact rational arithmetic (Python fractions); SciPy's
expm for e^{Kτ} and ∫ e^{Ks} ds; the matrix-exponential event scan (itself checked against
closed forms and NONMEM) for whole population tables of the library models."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from test_superposition import SPEC

import ldpk
from ldpk.dosing import event_table, make_records, stack_tables
from ldpk.errors import ModelError
from ldpk.solve import choose_kernel
from ldpk.solve._analytic import (
    exp_divided_difference,
    find_cycle,
    paths_from,
    table_size,
    transition,
)
from ldpk.solve._simulate import MAX_AUTO_ANALYTIC


def exact_divided_difference(points: list[float], tau: float) -> float:
    """f_τ[x_0..x_k] of exp(xτ) = e^{cτ} Σ_r τ^(k+r) h_r(x − c) / (k+r)! (c the points' mean)
    in exact rationals, h_r the complete homogeneous symmetric polynomials (Newton's
    identities), summed to 40 + 3·spread·τ terms: exact to rounding for spread·τ ≤ 20."""
    c = sum(Fraction(p) for p in points) / len(points)
    terms = 40 + math.ceil(3 * (max(points) - min(points)) * tau)
    xs = [(Fraction(p) - c) * Fraction(tau) for p in points]
    k = len(xs) - 1
    p = [None] + [sum(x**r for x in xs) for r in range(1, terms + 1)]
    h = [Fraction(1)]
    for r in range(1, terms + 1):
        h.append(sum(p[i] * h[r - i] for i in range(1, r + 1)) / r)
    series = sum(h[r] / math.factorial(k + r) for r in range(terms + 1)) * Fraction(tau) ** k
    return float(series) * math.exp(float(c) * tau)


POINTS = [
    [-1.59, -0.0865],  # one compartment, oral
    [-0.5, -0.5],  # ka = k: confluent
    [-1.0, -1.0 + 1e-9],  # nearly confluent
    [-1.0, -1.0 + 1e-5, -1.0 - 2e-5],
    [-0.15480275, -0.15480275, -0.15507958],
    [-2.0, -2.05, -1.5, -2.0, -2.3],  # clusters and spread points
    [-8.0, -0.01, -3.0, -0.7, -20.0, -0.7],
    [0.0, -1.0, -1.0, -4.0],  # with the input node of an integral
]
TAUS = [0.0, 1e-3, 0.3, 2.0, 7.5, 24.0]
# Every pair where the oracle's series is exact (spread·τ ≤ 20; larger spreads are covered
# against SciPy below).
CASES = [(p, t) for p in POINTS for t in TAUS if (max(p) - min(p)) * t <= 20]


@pytest.mark.parametrize(("points", "tau"), CASES)
def test_divided_differences_match_exact_arithmetic(points, tau):
    got = float(exp_divided_difference([jnp.asarray(p) for p in points], jnp.asarray(tau)))
    want = exact_divided_difference(points, tau)
    assert got == pytest.approx(want, rel=1e-11, abs=1e-300)


def assert_close_by_column(got: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    """|got − ref| ≤ rtol × (largest |ref| in the column), entry by entry."""
    bound = rtol * np.abs(ref).max(axis=-2, keepdims=True)
    bad = np.abs(got - ref) > bound
    assert not bad.any(), f"entries {np.argwhere(bad).tolist()}: {got[bad]} vs {ref[bad]}"


def _random_acyclic(rng: np.random.Generator, n: int, separated: bool) -> tuple[np.ndarray, tuple]:
    """A random compartmental rate matrix whose transfers go from lower to higher index."""
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5]
    K = np.zeros((n, n))
    for i, j in edges:
        K[j, i] = np.exp(rng.normal(0.0, 1.5))
    for i in range(n):
        elim = np.exp(rng.normal(0.0, 1.5)) if rng.random() < 0.7 else 0.0
        K[i, i] = -(K[:, i].sum() + elim)
    if not separated:  # copy some eigenvalues exactly or to within 1e-12..1e-2 relative
        for i in range(1, n):
            u = rng.random()
            if u < 0.3:
                K[i, i] = K[0, 0]
            elif u < 0.6:
                K[i, i] = K[0, 0] * (1.0 + 10.0 ** rng.uniform(-12, -2))
    succ = {i: [j for a, j in edges if a == i] for i in range(n)}
    paths: list[tuple[int, ...]] = []

    def walk(p: tuple[int, ...]) -> None:
        paths.append(p)
        for w in succ[p[-1]]:
            walk((*p, w))

    for s in range(n):
        walk((s,))
    return K, tuple(paths)


def test_transitions_match_scipy_expm():
    """e^{Kτ} and ∫_0^τ e^{Ks} ds of random acyclic compartment matrices (2-7 states, rates
    spanning e^±4.5), entries relative to their column's largest, against SciPy (the integral
    from the block matrix expm([[K, I], [0, 0]] τ)). Entries with no path are exactly 0."""
    rng = np.random.default_rng(7)
    taus = np.array([0.0, 1e-3, 0.1, 1.0, 5.0, 24.0])
    for _ in range(30):
        n = int(rng.integers(2, 8))
        K, paths = _random_acyclic(rng, n, separated=True)
        E = np.asarray(transition(jnp.asarray(K), jnp.asarray(taus), paths))
        G = np.asarray(transition(jnp.asarray(K), jnp.asarray(taus), paths, integral=True))
        reach = np.eye(n, dtype=bool)
        for p in paths:
            reach[p[-1], p[0]] = True
        assert np.all(E[:, ~reach] == 0.0) and np.all(G[:, ~reach] == 0.0)
        for t, e, g in zip(taus, E, G, strict=True):
            block = np.zeros((2 * n, 2 * n))
            block[:n, :n], block[:n, n:] = K * t, np.eye(n) * t
            ref_g = scipy.linalg.expm(block)[:n, n:] * reach
            ref_e = scipy.linalg.expm(K * t) * reach
            assert_close_by_column(e, ref_e, 1e-10)
            assert_close_by_column(g, ref_g, 1e-10)


def test_repeated_eigenvalues_match_exact_arithmetic():
    """With equal and nearly equal outflow rates (where SciPy's expm itself is uncertain in
    its last digits), each entry against the path sum in exact arithmetic."""
    rng = np.random.default_rng(11)
    for _ in range(25):
        n = int(rng.integers(2, 6))
        K, paths = _random_acyclic(rng, n, separated=False)
        spread = np.ptp(np.diag(K))
        tau = float(rng.choice([0.5, 3.0, 24.0]))
        if spread * tau > 20.0:  # the oracle's range
            tau = 20.0 / spread
        E = np.asarray(transition(jnp.asarray(K), jnp.asarray([tau]), paths))[0]
        ref = np.zeros((n, n))
        for p in paths:
            w = math.prod(K[b, a] for a, b in zip(p[:-1], p[1:], strict=False))
            ref[p[-1], p[0]] += w * exact_divided_difference([K[v, v] for v in p], tau)
        assert_close_by_column(E, ref, 1e-11)


# The superposition tests' two-compartment model with its cycle (central <-> periph) replaced
# by a metabolite: depot -> central -> {urine, metab -> urine}.
ACYCLIC = {
    **SPEC,
    "name": "acyclic_test",
    "compartments": {
        "depot": {"unit": "mg"},
        "central": {"unit": "mg", "initial": "A0"},
        "metab": {"unit": "mg"},
        "urine": {"unit": "mg"},
    },
    "parameters": {
        **{k: v for k, v in SPEC["parameters"].items() if k not in ("Q", "VP")},
        "KM": {"value": 0.15, "unit": "1/h"},
        "KE": {"value": 0.4, "unit": "1/h"},
    },
    "flows": [
        {"from": "depot", "to": "central", "k": "KA"},
        {"from": "central", "to": "urine", "k": "CL / V"},
        {"from": "central", "to": "metab", "k": "KM"},
        {"from": "metab", "to": "urine", "k": "KE"},
    ],
}

ROWS = [
    [{"time": 0, "evid": 1, "amt": 100, "route": "oral", "ii": 6, "addl": 3}]
    + [{"time": t, "evid": 0} for t in (0.0, 0.3, 1.0, 6.3, 12.0, 20.0, 30.0)],
    [{"time": 0.5, "evid": 0}, {"time": 0.5, "evid": 1, "amt": 80, "route": "iv", "rate": 40}]
    + [{"time": t, "evid": 0} for t in (0.5, 1.0, 2.5, 4.0)]
    + [{"time": 4.0, "evid": 1, "amt": 50, "route": "iv", "rate": -1}]
    + [{"time": t, "evid": 0} for t in (4.5, 6.0, 24.0)],
    [{"time": 0, "evid": 1, "amt": 30, "cmt": 2}]
    + [{"time": t, "evid": 0} for t in (0.0, 1.0, 2.0)]
    + [{"time": 2, "evid": 1, "amt": 60, "route": "oral"}]
    + [{"time": t, "evid": 0} for t in (2.3, 3.0, 10.0)],
]


@pytest.mark.parametrize("a0", [0.0, 5.0])
def test_population_table_matches_event_scan(a0):
    """Bolus, lagged oral doses with F and additional doses, infusions with given and modelled
    rates, initial amounts: every state at every observation, subject by subject."""
    model = ldpk.build_model(ACYCLIC)
    recs = [make_records(model, r, where=f"subject {i}") for i, r in enumerate(ROWS)]
    table = stack_tables([event_table(r) for r in recs])
    params = {"CL": np.array([3.0, 2.0, 4.5]), "KA": np.array([1.2, 0.4, 0.15]), "A0": np.full(3, a0)}  # fmt: skip
    batched = ldpk.simulate(model, params, table)
    assert batched.kernel == "analytic"
    for i, rec in enumerate(recs):
        one = ldpk.simulate(model, {k: v[i] for k, v in params.items()}, rec)
        assert one.kernel == "exact"  # a single regimen: the event scan
        n = len(one.times)
        np.testing.assert_allclose(np.asarray(batched.states)[i, :n], np.asarray(one.states), rtol=1e-10, atol=1e-12)  # fmt: skip


def test_gradient_matches_matrix_exponential_kernel():
    model = ldpk.build_model(ACYCLIC)
    table = stack_tables([event_table(make_records(model, r)) for r in ROWS])

    def total(theta, kernel):
        p = {"CL": theta[:, 0], "KA": theta[:, 1], "KM": theta[:, 2]}
        return ldpk.simulate(model, p, table, method=kernel, check=False).outputs.sum()

    theta = jnp.array([[3.0, 1.2, 0.15], [2.0, 0.4, 0.3], [4.5, 0.15, 0.05]])
    g_analytic = np.asarray(jax.grad(total)(theta, "analytic"))
    g_exact = np.asarray(jax.grad(total)(theta, "exact"))
    np.testing.assert_allclose(g_analytic, g_exact, rtol=1e-8, atol=1e-12)


def mitochondria_label_only() -> ldpk.Model:
    """The mitochondria model without its donor-mtDNA pools, whose `rate:` taps make it a
    linear system rather than all `k:` flows: the label part, which the closed form covers."""
    m = ldpk.load_model("mitochondria_iv")
    return dataclasses.replace(
        m,
        compartments=tuple(c for c in m.compartments if not c.name.endswith("_dna")),
        flows=tuple(
            f for f in m.flows if not any(str(c).endswith("_dna") for c in (f.source, f.target))
        ),
        outputs=tuple(o for o in m.outputs if not o.name.startswith("mtdna_")),
        parameters=tuple(p for p in m.parameters if p.name != "KDNA"),
    )


@pytest.mark.parametrize("name", ["ev_iv", "mitochondria_iv"])
def test_library_models_match_matrix_exponential_kernel(name):
    """The acyclic library models, a population table with several doses: analytic against
    matrix exponentials (both superposition)."""
    model = mitochondria_label_only() if name == "mitochondria_iv" else ldpk.load_model(name)
    route = model.routes[0].name  # IV
    times = [0.05, 0.5, 1.0, 4.0, 24.0, 72.0]
    rows = [
        [{"time": 0, "evid": 1, "amt": 100, "route": route}]
        + [{"time": t, "evid": 0} for t in times if t < 24]
        + [{"time": 24, "evid": 1, "amt": 50, "route": route}]
        + [{"time": t, "evid": 0} for t in times if t >= 24],
        [{"time": 0, "evid": 1, "amt": 10, "route": route}]
        + [{"time": t, "evid": 0} for t in times],
    ]
    table = stack_tables([event_table(make_records(model, r)) for r in rows])
    a = ldpk.simulate(model, None, table, method="analytic")
    e = ldpk.simulate(model, None, table, method="exact")
    assert a.kernel == "analytic" and e.kernel == "exact"
    x_a, x_e = np.asarray(a.states), np.asarray(e.states)
    scale = np.abs(x_e).max(axis=(0, 1), keepdims=True)  # per state
    bad = np.abs(x_a - x_e) > 1e-10 * scale
    assert not bad.any(), f"{bad.sum()} states differ by more than 1e-10 of the state's largest"


def test_kernel_choice():
    assert choose_kernel(ldpk.load_model("one_compartment"), "auto") == "analytic"
    assert choose_kernel(ldpk.load_model("ev_iv"), "auto") == "analytic"
    two = ldpk.load_model("two_compartment")
    assert find_cycle(two) is not None
    assert choose_kernel(two, "auto") == "exact"
    with pytest.raises(ModelError, match="cycle"):
        choose_kernel(two, "analytic")
    assert choose_kernel(ldpk.load_model("one_compartment_mm"), "auto") == "ode"
    with pytest.raises(ModelError, match="linear"):
        choose_kernel(ldpk.load_model("one_compartment_mm"), "analytic")


def test_paths_start_at_the_sources():
    model = ldpk.build_model(ACYCLIC)
    # depot 0 -> central 1 -> {urine 3, metab 2 -> urine 3}
    assert set(paths_from(model, (0,))) == {(0,), (0, 1), (0, 1, 3), (0, 1, 2), (0, 1, 2, 3)}
    assert set(paths_from(model, (2,))) == {(2,), (2, 3)}


def test_auto_keeps_matrix_exponentials_for_large_closed_forms():
    """'auto' uses the closed form only while its tables are small (MAX_AUTO_ANALYTIC):
    one compartment yes, the mitochondria model dosed into blood (533 entries) no."""
    small = ldpk.load_model("one_compartment")
    rows = [[{"time": 0, "evid": 1, "amt": 100, "route": "oral"}, {"time": 1.0, "evid": 0}]]
    table = stack_tables([event_table(make_records(small, r)) for r in rows])
    assert ldpk.simulate(small, None, table).kernel == "analytic"
    mito = mitochondria_label_only()
    assert mito.is_linear
    rows = [[{"time": 0, "evid": 1, "amt": 100, "route": "iv"}, {"time": 1.0, "evid": 0}]]
    table = stack_tables([event_table(make_records(mito, r)) for r in rows])
    assert table_size(paths_from(mito, (mito.compartment_names.index("blood"),))) > MAX_AUTO_ANALYTIC  # fmt: skip
    assert ldpk.simulate(mito, None, table).kernel == "exact"
