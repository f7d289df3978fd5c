"""The Dask backend of ldpk.sweep on a LocalCluster of 2 worker processes on loopback: the
result equals the in-process sweep exactly, also when a worker is killed mid-sweep."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import ldpk
from ldpk.sweep import sweep

distributed = pytest.importorskip("distributed")  # the `cluster` extra, part of `test`

T = np.linspace(0.0, 48.0, 49)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=40,
        ) as lc,
        distributed.Client(lc) as client,
    ):  # fmt: skip
        yield lc, client


def _problem():
    model = ldpk.load_model("two_compartment")
    table = ldpk.sample({"CL": "lognormal(3, 0.3)", "V1": "lognormal(20, 0.2)", "Q": "uniform(5, 15)"}, 3000, seed=11)  # fmt: skip
    regs = ldpk.regimens([100.0], routes=["iv"], schedules={"single": [0.0], "daily": [0.0, 24.0]})
    return model, table, regs


def test_dask_sweep_equals_in_process(cluster, tmp_path):
    lc, client = cluster
    model, table, regs = _problem()
    # Chunks of 200 sets run unsharded here (below MIN_SHARD) and on each 1-device worker:
    # the same compiled batch, so the same bits.
    ref = sweep(model, table, regs, T, chunk_size=200, progress=False)
    ds = sweep(model, table, regs, T, chunk_size=200, scheduler=client, progress=False)
    for var in ("cp", "cp_auc", "cp_cmax", "cp_tmax", "status"):
        np.testing.assert_array_equal(ds[var], ref[var])
    # By address, streaming to a store (workers return chunks; the client writes them).
    ds2 = sweep(model, table, regs, T, chunk_size=200, scheduler=lc.scheduler_address, store=tmp_path / "d.zarr", progress=False)  # fmt: skip
    np.testing.assert_array_equal(ds2["cp"], ref["cp"])
    # Chunks of 300 are split over this process's 2 devices (150 sets each) but not on a
    # 1-device worker: XLA vectorises the two batch sizes differently, last bits differ.
    shard = sweep(model, table, regs, T, chunk_size=300, progress=False)
    np.testing.assert_allclose(shard["cp"], ref["cp"], rtol=1e-13, atol=0)
    # Each worker split its CPU into as many JAX devices as it has threads (1).
    counts = client.run(lambda: __import__("jax").local_device_count())
    assert set(counts.values()) == {1}


def test_dask_sweep_survives_a_killed_worker(cluster):
    lc, client = cluster
    model, table, regs = _problem()
    ref = sweep(model, table, regs, T, chunk_size=100, progress=False)
    pids = client.run(os.getpid)
    box = {}

    def run():
        box["ds"] = sweep(model, table, regs, T, chunk_size=100, scheduler=client, progress=False)  # fmt: skip

    th = threading.Thread(target=run)
    th.start()
    # Kill one worker process (SIGKILL) once the sweep's tasks are running on it.
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        "_run_chunk" in str(k) for k in client.processing().get(next(iter(pids)), ())
    ):
        time.sleep(0.05)
    running = th.is_alive()
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    th.join(timeout=300)
    assert running, "the sweep ended before a worker could be killed"
    assert not th.is_alive()
    client.wait_for_workers(2, timeout=60)
    assert next(iter(pids.values())) not in client.run(os.getpid).values()  # it was restarted
    for var in ("cp", "cp_auc", "status"):
        np.testing.assert_array_equal(box["ds"][var], ref[var])
