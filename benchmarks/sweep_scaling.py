"""Sweep scaling: parameter sets per second and peak memory of ``ldpk.sweep`` against N.

Three models, one IV bolus at t = 0, 20 output times (0.5 ... 24 h), metrics AUC and Cmax of
every output:

* ``linear3``: the three-compartment mammillary model (``three_compartment``, exact kernel),
  CL, V1, Q2, V2, Q3, V3 sampled log-normal (Sobol);
* ``msc_pbpk``: the 26-compartment MSC model (exact kernel), 4 rate parameters sampled;
* ``ev_iv_saturable``: saturable EV uptake (ODE kernel), its two VMAX and KM sampled.

For each model and N = 10^4, 10^5, ... (``--max-n``; from 10^3 for the ODE model), one row
per backend:

* ``local``: in process, chunks sharded over the host devices (the CPU's cores, or the GPUs with
  ``--device gpu``); metrics only in memory (``time_courses=False``), so memory should stay flat
  in N beyond the metrics arrays;
* ``dask``: a ``LocalCluster`` of 2 worker processes x 1 thread on 127.0.0.1;
* ``zarr``: the time courses streamed to a zarr store in a temporary folder (``--store-n``).

Each row runs in its own process (peak RSS is that process's ``ru_maxrss``, the Dask workers'
added for ``dask``); a warm-up sweep of one chunk compiles first and is not timed. A size whose
estimated time (from the previous size's rate) exceeds ``--budget`` seconds is skipped and
recorded as such. ``kernel`` rows time the bare executor (``Simulator.chunks``, no metrics, no
copy to the host) at the same chunk size; ``overhead`` rows time the sweep against that bare
executor alternately in one process (median of 3 of each) and record the sweep's overhead,
its time / the executor's - 1, which the machine's changing load cannot bias.

Run from the repository root::

    .venv/bin/python benchmarks/sweep_scaling.py                 # CPU, N up to 10^7
    .venv/bin/python benchmarks/sweep_scaling.py --quick         # smoke run, N <= 10^4
    .venv/bin/python benchmarks/sweep_scaling.py --device gpu    # on a CUDA machine (float64)
    LDPK_FLOAT32=1 .venv/bin/python benchmarks/sweep_scaling.py --device gpu   # float32

Writes ``benchmarks/results/sweep_scaling.json`` (``--out``; a ``--quick`` run writes to a
temporary folder unless ``--out`` is given) with a ``rows`` list (model, backend, device, n,
sets_per_s, peak_rss_mb, ...) and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, git_info, machine_info, markdown_table, write_json_atomic  # noqa: E402

MODELS = {
    "linear3": (
        "three_compartment",
        dict(CL=5.0, V1=10.0, Q2=20.0, V2=20.0, Q3=2.0, V3=100.0),
        100.0,
    ),
    "msc_pbpk": ("msc_pbpk", None, 1e6),
    "ev_iv_saturable": ("ev_iv_saturable", None, 1e9),
}

#: One row, run in a child process: prints one JSON line.
CHILD = r"""
import json, os, resource, sys, tempfile, time
import numpy as np
import ldpk
from ldpk.sweep import _Plan

spec = json.loads(sys.argv[1])
model = ldpk.load_model(spec["model"])
typical = spec["params"] or {p.name: p.value for p in model.parameters[: spec["n_params"]] if p.value > 0}
dists = {k: f"lognormal({v}, 0.3)" for k, v in typical.items()}
table = ldpk.sample(dists, spec["n"], method="random", seed=1)
rss_table = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far: the table
regimen = {"iv": [ldpk.Bolus(spec["dose"], route=model.route_names[0])]}
T = np.linspace(0.5, 24.0, 20)
kw = dict(metrics=["auc", "cmax"], progress=False, chunk_size=spec["chunk"])
backend = spec["backend"]
scheduler = None
cluster = client = None
if backend == "dask":
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    scheduler = client
warm = table.subset(slice(0, min(spec["chunk"], table.n)))
ldpk.sweep(model, warm, regimen, T, time_courses=False, scheduler=scheduler, **kw)
out = {}
if backend == "overhead":
    # The sweep against the bare executor in one process, alternated 3 times each (the
    # machine's load moves between rows; within a row both see the same load).
    sim = ldpk.prepare(model, regimen["iv"], T)
    theta, _ = sim.parameters(dict(table))

    def bare():
        last = None
        for part in sim.chunks(theta, spec["chunk"]):
            last = part[3]
        last.block_until_ready()

    bare()
    ratios, kern, swp = [], [], []
    for _ in range(3):
        t0 = time.perf_counter(); bare(); tk = time.perf_counter() - t0
        t0 = time.perf_counter()
        ldpk.sweep(model, table, regimen, T, time_courses=False, **kw)
        ts = time.perf_counter() - t0
        kern.append(tk); swp.append(ts); ratios.append(ts / tk)
    seconds = float(np.median(swp))
    out.update(kernel_sets_per_s=spec["n"] / float(np.median(kern)),
               overhead=float(np.median(ratios)) - 1.0, overhead_runs=[r - 1 for r in ratios])
elif backend == "kernel":
    sim = ldpk.prepare(model, regimen["iv"], T)
    theta, _ = sim.parameters(dict(table))
    for part in sim.chunks(theta[: spec["chunk"]], spec["chunk"]):
        part[3].block_until_ready()
    t0 = time.perf_counter()
    last = None
    for part in sim.chunks(theta, spec["chunk"]):
        last = part[3]
    last.block_until_ready()
    seconds = time.perf_counter() - t0
elif backend == "zarr":
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = ldpk.sweep(model, table, regimen, T, store=os.path.join(tmp, "s.zarr"), **kw)
        seconds = time.perf_counter() - t0
        out["n_failed"] = int(ds.attrs["n_failed"])
else:
    t0 = time.perf_counter()
    ds = ldpk.sweep(model, table, regimen, T, time_courses=False, scheduler=scheduler, **kw)
    seconds = time.perf_counter() - t0
    out["n_failed"] = int(ds.attrs["n_failed"])
    out["kernel"] = ds.attrs["kernel"]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if client is not None:
    rss += sum(client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024).values())
    client.close(); cluster.close()
import jax
out.update(seconds=seconds, sets_per_s=spec["n"] / seconds, peak_rss_mb=rss, rss_after_table_mb=rss_table,
           device=jax.devices()[0].platform, n_devices=jax.local_device_count(),
           dtype="float64" if jax.config.jax_enable_x64 else "float32")
print("RESULT " + json.dumps(out))
"""


def run_row(spec: dict[str, Any], device: str, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    if device == "gpu":
        env.setdefault("JAX_PLATFORMS", "cuda")
    else:
        env["JAX_PLATFORMS"] = "cpu"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": (proc.stderr or proc.stdout)[-2000:], "wall_s": time.perf_counter() - t0}  # fmt: skip
    return {**spec, **json.loads(lines[-1][len("RESULT ") :]), "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="N <= 10^4, a smoke run")
    ap.add_argument("--max-n", type=float, default=1e7)
    ap.add_argument("--store-n", type=float, default=1e7, help="largest N streamed to zarr")
    ap.add_argument("--dask-n", type=float, default=1e6, help="largest N on the Dask cluster")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds per row, estimated")
    ap.add_argument("--chunk", type=int, default=None, help="sets per chunk (default per model)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--backends", default="overhead,kernel,local,zarr,dask")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    max_n = 1e4 if args.quick else args.max_n
    if args.quick:
        args.budget = min(args.budget, 30.0)
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp()) / "sweep_scaling.json" if args.quick else RESULTS_DIR / "sweep_scaling.json"
    )  # fmt: skip
    chunks = {"linear3": 65536, "msc_pbpk": 8192, "ev_iv_saturable": 4096}
    if args.device == "gpu":
        chunks = {"linear3": 1 << 22, "msc_pbpk": 1 << 16, "ev_iv_saturable": 1 << 15}
    rows: list[dict[str, Any]] = []
    for key in args.models.split(","):
        name, params, dose = MODELS[key]
        backends = [("overhead", min(max_n, 1e6)), ("kernel", max_n), ("local", max_n),
                    ("zarr", min(max_n, args.store_n))]  # fmt: skip
        if args.device == "cpu":
            backends.append(("dask", min(max_n, args.dask_n)))
        for backend, top in backends:
            if backend not in args.backends.split(","):
                continue
            rate = None
            n = 1_000 if key == "ev_iv_saturable" else 10_000  # the ODE model is ~100x slower
            while n <= top:
                chunk = min(args.chunk or chunks[key], n)
                spec = {"model": name, "key": key, "params": params, "n_params": 4, "dose": dose,
                        "n": n, "chunk": chunk, "backend": backend}  # fmt: skip
                passes = 7 if backend == "overhead" else 1  # overhead: 1 + 3 + 3 passes
                if rate is not None and passes * n / rate > args.budget:
                    row = {**spec, "skipped": f"estimated {passes * n / rate:.0f} s > budget {args.budget:.0f} s"}  # fmt: skip
                else:
                    row = run_row(spec, args.device, timeout=max(600.0, 3 * args.budget))
                    rate = row.get("sets_per_s")
                row["model"] = key
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("model", "backend", "n", "sets_per_s", "peak_rss_mb", "skipped", "error")}), flush=True)  # fmt: skip
                write_json_atomic(out, {"machine": machine_info(("zarr", "distributed")), "git": git_info(), "device": args.device, "rows": rows})  # fmt: skip
                if "sets_per_s" not in row:
                    break
                n *= 10
    summary = []
    for r in rows:
        if "sets_per_s" in r:
            summary.append([r["model"], r["backend"], f"{r['n']:.0e}", f"{r['sets_per_s']:.3g}", f"{r['peak_rss_mb']:.0f}"])  # fmt: skip
    print(markdown_table(["model", "backend", "N", "sets/s", "peak RSS MB"], summary))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
