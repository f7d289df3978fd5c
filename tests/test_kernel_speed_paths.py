"""The fast paths of the exact kernel against independent oracles (SciPy's expm, NumPy's
inverse, a NumPy event loop built on scipy.linalg.expm):

* expm, small_inverse and the Padé approximant written on the matrix entries (up to
  ``_expm._UNROLL`` compartments), vmapped, including pivoting and squarings;
* ``run_static``'s event loop on entries (``_entry_scan``, up to ``MAX_ENTRY_STEPS`` distinct
  step lengths) with boluses, an infusion and a reset, and its equality with the loop on
  arrays it replaces; its gradient against central differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ldpk
from ldpk.solve import _expm, _timeline
from ldpk.solve._expm import expm, small_inverse

RTOL = 1e-12

MODEL = {
    "name": "speed_3cmt",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {
        "central": {"unit": "mg"},
        "peripheral1": {"unit": "mg"},
        "peripheral2": {"unit": "mg"},
    },
    "parameters": {
        "CL": {"value": 5.0, "unit": "L/h"},
        "V1": {"value": 10.0, "unit": "L"},
        "Q2": {"value": 8.0, "unit": "L/h"},
        "V2": {"value": 20.0, "unit": "L"},
        "Q3": {"value": 1.0, "unit": "L/h"},
        "V3": {"value": 100.0, "unit": "L"},
    },
    "flows": [
        {"from": "central", "k": "CL / V1"},
        {"from": "central", "to": "peripheral1", "k": "Q2 / V1"},
        {"from": "peripheral1", "to": "central", "k": "Q2 / V2"},
        {"from": "central", "to": "peripheral2", "k": "Q3 / V1"},
        {"from": "peripheral2", "to": "central", "k": "Q3 / V3"},
    ],
    "routes": {"iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V1", "unit": "mg/L"}},
}
TIMES = np.linspace(0.5, 24.0, 20)


def _rate_matrix(p: dict[str, float]) -> np.ndarray:
    k10, k12, k21 = p["CL"] / p["V1"], p["Q2"] / p["V1"], p["Q2"] / p["V2"]
    k13, k31 = p["Q3"] / p["V1"], p["Q3"] / p["V3"]
    return np.array([[-(k10 + k12 + k13), k21, k31], [k12, -k21, 0.0], [k13, 0.0, -k31]])


def _oracle(p: dict[str, float], events: list[tuple[float, str, float]], times: np.ndarray):
    """States at ``times`` (none equal to an event time) by a NumPy event loop: events
    (time, 'bolus' | 'rate' | 'reset', value) into central, the flow over each interval from
    scipy.linalg.expm of the augmented matrix [[K, u], [0, 0]]."""
    K = _rate_matrix(p)
    x, u, t = np.zeros(3), np.zeros(3), 0.0
    marks = sorted([(te, 0, kind, v) for te, kind, v in events] + [(to, 1, "obs", 0.0) for to in times])  # fmt: skip
    out = []
    for te, _, kind, v in marks:
        aug = np.zeros((4, 4))
        aug[:3, :3], aug[:3, 3] = K * (te - t), u * (te - t)
        x, t = (scipy.linalg.expm(aug) @ np.append(x, 1.0))[:3], te
        if kind == "bolus":
            x[0] += v
        elif kind == "rate":
            u[0] += v
        elif kind == "reset":
            x, u = np.zeros(3), np.zeros(3)
        else:
            out.append(x.copy())
    return np.array(out)


def _params(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v["value"] * np.exp(0.25 * rng.standard_normal(n)) for k, v in MODEL["parameters"].items()}  # fmt: skip


# ---- entries-based expm and inverse ------------------------------------------------------------
def _expm_cases():
    rng = np.random.default_rng(17)
    for n in (1, 2, 3, 4):
        for scale in (0.05, 1.0, 4.0, 60.0, 3e3):  # 0 to ~10 squarings
            yield f"n{n}-random-{scale:g}", rng.standard_normal((n, n)) * scale
    yield "zero pivot (needs a row swap)", np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]) * 3  # fmt: skip
    yield "defective", np.array([[-1.0, 1.0, 0.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, -1.0]]) * 7  # fmt: skip
    yield "stiff 3-compartment", _rate_matrix({"CL": 50.0, "V1": 1.0, "Q2": 80.0, "V2": 2.0, "Q3": 0.01, "V3": 1e3}) * 24  # fmt: skip


@pytest.mark.parametrize("name,A", list(_expm_cases()), ids=[c[0] for c in _expm_cases()])
def test_entries_expm_matches_scipy(name, A):
    assert A.shape[-1] <= _expm._UNROLL
    ref = scipy.linalg.expm(A)
    tol = RTOL * np.abs(ref).max() * max(1, np.abs(A).sum(0).max())
    np.testing.assert_allclose(np.asarray(expm(jnp.asarray(A))), ref, rtol=0, atol=tol)


def test_entries_expm_vmapped_matches_scipy():
    rng = np.random.default_rng(23)
    A = rng.standard_normal((200, 3, 3)) * np.exp(rng.uniform(-3, 4, (200, 1, 1)))
    got = np.asarray(jax.jit(jax.vmap(expm))(jnp.asarray(A)))
    for i in range(200):
        ref = scipy.linalg.expm(A[i])
        tol = RTOL * np.abs(ref).max() * max(1, np.abs(A[i]).sum(0).max())
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=tol)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_entries_small_inverse_matches_numpy(n):
    rng = np.random.default_rng(n)
    mats = [rng.standard_normal((n, n)) for _ in range(20)]
    if n >= 2:  # a zero leading pivot: only correct with row exchanges
        m = np.eye(n)[::-1] * 2.0
        mats.append(m + np.triu(rng.standard_normal((n, n)), 1) * 0.0)
    A = jnp.asarray(np.stack(mats))
    got = np.asarray(jax.vmap(small_inverse)(A))
    for g, m in zip(got, mats, strict=True):
        ref = np.linalg.inv(m)
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-12 * np.abs(ref).max() * np.linalg.cond(m))  # fmt: skip


def test_entries_expm_gradient_matches_frechet():
    rng = np.random.default_rng(29)
    A = rng.standard_normal((3, 3)) * 6.0  # squarings in the backward pass too
    W = rng.standard_normal((3, 3))
    g = np.asarray(jax.grad(lambda a: jnp.sum(W * expm(a)))(jnp.asarray(A)))
    _, L = scipy.linalg.expm_frechet(A.T, W)
    np.testing.assert_allclose(g, L, rtol=1e-9, atol=1e-12 * np.abs(L).max())


# ---- run_static's event loop on entries ------------------------------------------------------------
REGIMENS = {
    "one bolus (benchmark)": ([ldpk.Bolus(100.0, route="iv")], [(0.0, "bolus", 100.0)], TIMES),
    "bolus, infusion, reset": (
        [ldpk.Bolus(100.0, route="iv"), ldpk.Infusion(60.0, time=3.5, rate=20.0, route="iv"),
         ldpk.Reset(time=9.5), ldpk.Bolus(50.0, time=12.5, route="iv")],
        [(0.0, "bolus", 100.0), (3.5, "rate", 20.0), (6.5, "rate", -20.0), (9.5, "reset", 0.0),
         (12.5, "bolus", 50.0)],
        np.arange(1.0, 21.0),  # steps of 0.5 and 1 only: the loop on entries
    ),
    "irregular times (many step lengths: arrays)": (
        [ldpk.Bolus(100.0, route="iv")], [(0.0, "bolus", 100.0)],
        np.sort(np.random.default_rng(3).uniform(0.1, 48.0, 30)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REGIMENS))
def test_static_kernel_matches_expm_oracle(name):
    regimen, events, times = REGIMENS[name]
    model = ldpk.build_model(MODEL, source="<speed paths>")
    params = _params(64, 5)
    sim = ldpk.simulate(model, params, regimen, times=times, method="exact")
    got = np.asarray(sim.states)
    for i in range(0, 64, 7):
        ref = _oracle({k: float(v[i]) for k, v in params.items()}, events, times)
        np.testing.assert_allclose(got[i], ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(np.asarray(sim.outputs)[..., 0], got[..., 0] / params["V1"][:, None], rtol=1e-14)  # fmt: skip


@pytest.mark.parametrize("name", list(REGIMENS)[:2])
def test_entry_loop_equals_array_loop(name, monkeypatch):
    regimen, _, times = REGIMENS[name]
    model = ldpk.build_model(MODEL, source="<speed paths>")
    arrays = ldpk.prepare(model, regimen, times, method="exact")._arrays
    assert arrays["p_dt"].shape[0] <= _timeline.MAX_ENTRY_STEPS
    params = _params(32, 9)
    fast = np.asarray(ldpk.simulate(model, params, regimen, times=times, method="exact").states)
    monkeypatch.setattr(_timeline, "MAX_ENTRY_STEPS", 0)  # a new trace: the loop on arrays
    ldpk.solve._simulate._kernel.cache_clear()
    try:
        arr = np.asarray(ldpk.simulate(model, params, regimen, times=times, method="exact").states)  # fmt: skip
    finally:
        ldpk.solve._simulate._kernel.cache_clear()
    np.testing.assert_allclose(fast, arr, rtol=1e-12, atol=1e-12 * np.abs(arr).max())


def test_entry_loop_gradient_matches_central_differences():
    model = ldpk.build_model(MODEL, source="<speed paths>")
    regimen = REGIMENS["bolus, infusion, reset"][0]
    base = {k: v["value"] for k, v in MODEL["parameters"].items()}

    times = REGIMENS["bolus, infusion, reset"][2]

    def auc(cl, q3):
        p = {**base, "CL": cl, "Q3": q3}
        sim = ldpk.simulate(model, p, regimen, times=times, method="exact", check=False)
        return jnp.sum(sim.outputs[..., 0])

    g = np.asarray(jax.grad(auc, argnums=(0, 1))(5.0, 1.0))
    h = 1e-5
    fd = [(auc(5.0 + h, 1.0) - auc(5.0 - h, 1.0)) / (2 * h),
          (auc(5.0, 1.0 + h) - auc(5.0, 1.0 - h)) / (2 * h)]  # fmt: skip
    np.testing.assert_allclose(g, np.asarray(fd), rtol=1e-6)
