"""Shared by tests/test_nmtest.py and benchmarks/nmtest_conformance.py: load the 54 NONMEM
7.4.3 reference cases (../shared/data/nmtest.csv) and compare ldpk's cp with NONMEM's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

import ldpk
from ldpk.data import records_from_table
from ldpk.dosing import event_table, stack_tables

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "nmtest_advan2.yaml"
RTOL = 1e-4  # relative, where |cp| >= 1e-3 * max|cp| of the case
ATOL_FRAC = 1e-6  # absolute, as a fraction of max|cp|, elsewhere


def reference_dir() -> Path:
    env = os.environ.get("LDPK_REFERENCE_DATA")
    return Path(env) if env else HERE.parent.parent / "shared" / "data"


def compare(path: Path, method: str = "auto") -> dict[int, dict]:
    """Simulate every case in one compiled, batched kernel; per-case error summary."""
    model = ldpk.load_model(MODEL)
    table = pd.read_csv(path)
    recs = records_from_table(model, table, where=str(path))
    ids = list(recs)
    batch = stack_tables([event_table(recs[i]) for i in ids])
    sim = ldpk.simulate(model, None, batch, method=method)
    cp = np.asarray(sim["cp"])
    out = {}
    for j, sid in enumerate(ids):
        r = recs[sid]
        n = batch.n_obs[j]
        is_obs = r.evid[np.isin(r.evid, (0, 2))] == 0
        got = cp[j, :n][is_obs]
        ref = table.loc[(table["id"] == sid) & (table["evid"] == 0), "cp"].to_numpy()
        scale = np.abs(ref).max()
        err = np.abs(got - ref)
        small = np.abs(ref) < 1e-3 * scale
        ok = np.where(small, err <= ATOL_FRAC * scale, err <= RTOL * np.abs(ref))
        rel = np.where(small, 0.0, err / np.where(small, 1.0, np.abs(ref)))
        worst = int(np.argmax(np.where(ok, 0, 1) + rel))
        out[int(sid)] = {
            "n_obs": int(len(ref)),
            "max_rel_error": float(rel.max()),
            "max_abs_error_small": float(np.where(small, err, 0).max()),
            "passed": bool(ok.all()),
            "worst_time": float(r.time[r.evid == 0][worst]),
            "worst_got": float(got[worst]),
            "worst_ref": float(ref[worst]),
        }
    return out
