"""The prepared simulator and its executor: ``simulate`` is ``prepare`` + ``run``; chunks of a
fixed compiled shape, sharded over the local devices, never trace again."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ldpk

DOSE = 100.0  # mg
TIMES = np.linspace(0.0, 48.0, 25)  # h


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("two_compartment")


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(7)
    n = 1100
    return {"CL": rng.lognormal(np.log(3.0), 0.3, n), "V1": rng.lognormal(np.log(20.0), 0.2, n)}


def _one_cpt(cl, v, t=TIMES):
    return DOSE / v[:, None] * np.exp(-(cl / v)[:, None] * t)


def test_simulate_is_prepare_and_run(model, sets):
    regimen = [ldpk.Bolus(DOSE, route="iv")]
    a = ldpk.simulate(model, sets, regimen, TIMES)
    b = ldpk.prepare(model, regimen, TIMES).run(sets)
    assert a.kernel == b.kernel
    np.testing.assert_array_equal(a.outputs, b.outputs)
    np.testing.assert_array_equal(a.states, b.states)


def test_chunks_equal_one_call_and_never_trace_again(model, sets):
    sim = ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    whole = sim.run(sets, chunk_size=4096)  # one call, 1100 sets
    before = sim.n_traces
    # 300 (sharded over the host devices, 2 here) and 128 (one device): the last chunk is
    # padded, so every chunk has the compiled shape of the first.
    for chunk in (300, 128):
        parts = sim.run(sets, chunk_size=chunk)
        traced = sim.n_traces
        np.testing.assert_allclose(parts.outputs, whole.outputs, rtol=1e-13, atol=0)
        again = {k: v[::-1] for k, v in sets.items()}  # new values, same chunk size
        rev = sim.run(again, chunk_size=chunk)
        assert sim.n_traces == traced, "a chunk of new values traced the kernel again"
        np.testing.assert_allclose(rev.outputs[::-1], whole.outputs, rtol=1e-13, atol=0)
    assert sim.n_traces - before <= 2  # one per chunk shape (300 and 128), none per chunk


def test_chunks_hold_one_chunk_each(model, sets):
    sim = ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")], TIMES, outputs=["cp"])
    theta, _ = sim.parameters(sets)
    seen = []
    for start, stop, x, y, ok in sim.chunks(theta, 256):
        assert y.shape == (stop - start, len(TIMES), len(model.outputs))
        assert x.shape[0] == ok.shape[0] == stop - start
        seen.append((start, stop))
    assert seen == [(0, 256), (256, 512), (512, 768), (768, 1024), (1024, 1100)]
    assert sim.set_bytes == 8 * len(TIMES) * (len(model.compartments) + len(model.outputs))


def test_default_chunk_bounds_the_results(model, monkeypatch):
    """Without a chunk size, batches whose results exceed CHUNK_BYTES run in chunks."""
    from ldpk.solve import _simulate

    sim = ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    monkeypatch.setattr(_simulate, "CHUNK_BYTES", 100 * sim.set_bytes)
    chunk = sim.default_chunk()
    assert chunk <= 100 and chunk % len(_simulate._devices()) == 0
    theta, _ = sim.parameters({"CL": np.linspace(1, 5, 250)})
    assert len(list(sim.chunks(theta))) == -(-250 // chunk)


def test_one_compartment_closed_form_through_chunks():
    m = ldpk.load_model("one_compartment")
    rng = np.random.default_rng(3)
    cl, v = rng.uniform(1, 5, 777), rng.uniform(10, 50, 777)
    sim = ldpk.prepare(m, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    out = sim.run({"CL": cl, "V": v}, chunk_size=100).output("cp")
    np.testing.assert_allclose(out, _one_cpt(cl, v), rtol=1e-10, atol=1e-14)


def test_population_table_chunks_equal_one_call(model):
    """An event table of several subjects: the sets of each subject are chunked."""
    from ldpk.dosing import event_table, regimen_records, stack_tables

    tables = [
        event_table(regimen_records(model, [ldpk.Bolus(d, route="iv")], TIMES))
        for d in (50.0, 100.0, 200.0)
    ]
    sim = ldpk.prepare(model, stack_tables(tables))
    cl = np.linspace(1.0, 6.0, 90).reshape(3, 30)
    whole = sim.run({"CL": cl})
    parts = sim.run({"CL": cl}, chunk_size=8)
    assert parts.outputs.shape == (3, 30, len(TIMES), len(model.outputs))
    np.testing.assert_allclose(parts.outputs, whole.outputs, rtol=1e-13, atol=0)
    # Dose-proportional: subject 3 (200 mg) is 4x subject 1 (50 mg) for the same CL.
    same = ldpk.prepare(model, stack_tables(tables)).run({"CL": np.full((3, 2), 3.0)})
    np.testing.assert_allclose(same.output("cp")[2], 4 * same.output("cp")[0], rtol=1e-12)


def test_prepare_refuses_bad_input_before_compiling(model):
    with pytest.raises(ldpk.DataError, match="times"):
        ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")])
    sim = ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    with pytest.raises(ldpk.DataError, match="unknown parameter"):
        sim.run({"CLX": 1.0})
    with pytest.raises(ldpk.DataError, match="chunk_size"):
        sim.run({"CL": [1.0, 2.0]}, chunk_size=-1)


def test_run_inside_jit_is_one_call(model):
    sim = ldpk.prepare(model, [ldpk.Bolus(DOSE, route="iv")], TIMES)
    f = jax.jit(lambda cl: sim.run({"CL": cl}, chunk_size=2).output("cp"))
    cl = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(f(cl), sim.run({"CL": cl}).output("cp"), rtol=1e-13)


def test_progress_bar_counts_every_set_of_a_chunked_simulation(model, sets, monkeypatch):
    """progress=True: a bar over the parameter sets when the batch runs in several chunks
    (1100 sets in chunks of 256: 5 updates summing to 1100), the same results as without it;
    no bar for one chunk."""
    import tqdm.auto

    bars = []

    class Recorder:
        def __init__(self, total, **kw):
            self.total, self.done, self.closed = total, [], False
            bars.append(self)

        def update(self, n):
            self.done.append(n)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    regimen = [ldpk.Bolus(DOSE, route="iv")]
    quiet = ldpk.simulate(model, sets, regimen, TIMES, chunk_size=256)
    assert bars == []
    shown = ldpk.simulate(model, sets, regimen, TIMES, chunk_size=256, progress=True)
    np.testing.assert_array_equal(quiet.outputs, shown.outputs)
    (bar,) = bars
    assert bar.total == 1100 and bar.done == [256, 256, 256, 256, 76] and bar.closed
    ldpk.simulate(model, {k: v[:10] for k, v in sets.items()}, regimen, TIMES, chunk_size=256, progress=True)  # fmt: skip
    assert len(bars) == 1
