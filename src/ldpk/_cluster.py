"""The Dask distributed backend of :func:`ldpk.sweep`: each chunk of parameter sets is a task.

Workers prepare the sweep's simulators once per process (their compiled kernels come from the
persistent compilation cache), and each worker splits its CPU into as many JAX devices as it
has threads (``DeviceCount``), so several workers on one machine do not oversubscribe its
cores. A task lost with its worker is run again by Dask (``retries``); chunks completed before
are kept. Needs the ``cluster`` extra (``pip install ldpk[cluster]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ldpk.errors import DataError

try:
    from distributed import WorkerPlugin
except ImportError:  # the `cluster` extra is not installed: _client says so
    WorkerPlugin = object

#: Times Dask runs a chunk again after an error on a worker (a lost worker is retried by the
#: scheduler itself, up to its ``allowed-failures``).
RETRIES = 2


def _client(scheduler: Any) -> tuple[Any, bool]:
    """A ``distributed.Client`` for ``scheduler`` (a Client, or an address) and whether it was
    opened here (and must be closed)."""
    try:
        from distributed import Client
    except ImportError:
        raise DataError(
            "sweep(scheduler=...) needs Dask distributed: pip install 'ldpk[cluster]'"
        ) from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler:
        raise DataError(
            f"scheduler must be a distributed.Client or an address such as "
            f"'tcp://127.0.0.1:8786', got {scheduler!r}"
        )
    try:
        return Client(scheduler, timeout="20s"), True
    except (OSError, TimeoutError) as exc:
        raise DataError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


class DeviceCount(WorkerPlugin):
    """Worker plugin: split the worker's CPU into as many JAX devices as it has threads, if
    JAX's backend has not started in that process yet (else it is left as it is)."""

    name = "ldpk-device-count"

    def setup(self, worker: Any) -> None:
        from jax._src import xla_bridge

        if getattr(xla_bridge, "_backends", None):  # started: too late to change
            return
        n = max(1, int(worker.state.nthreads))
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))  # fmt: skip
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        os.environ["LDPK_HOST_DEVICES"] = str(n)


def run_on_cluster(
    scheduler: Any,
    plan: Any,
    theta: Any,
    starts: Sequence[int],
    done: Callable[[int, dict[str, np.ndarray]], None],
    task: Callable[[Any, np.ndarray], dict[str, np.ndarray]],
) -> None:
    """Submit one task per chunk at ``starts``, ``task(plan, chunk of theta)`` (a module-level
    function, pickled by reference: the sweep's chunk runner, passed in so that this module
    does not import the sweep), and call ``done(start, result)`` as each completes (in any
    order), at most twice the workers' threads in flight."""
    from distributed import as_completed

    client, opened = _client(scheduler)
    try:
        client.register_plugin(DeviceCount(), name=DeviceCount.name)
        [plan_f] = client.scatter([plan], broadcast=True)
        threads = max(1, sum(client.nthreads().values()))
        pending = list(starts)[::-1]
        futures: dict[Any, int] = {}

        def submit() -> Any:
            s = pending.pop()
            f = client.submit(task, plan_f, theta[s : s + plan.chunk], pure=False, retries=RETRIES)
            futures[f] = s
            return f

        queue = as_completed([submit() for _ in range(min(len(pending), 2 * threads))])
        for f in queue:
            res = f.result()
            done(futures.pop(f), res)
            f.release()
            if pending:
                queue.add(submit())
    finally:
        if opened:
            client.close()
