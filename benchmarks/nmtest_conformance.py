"""NONMEM conformance: ldpk vs NONMEM 7.4.3 on the 54 nmtest cases (../shared/data/nmtest.csv).

Writes benchmarks/results/nmtest_conformance.json: per-case max relative error, pass/fail at
1e-4 relative (1e-6·max absolute where cp < 1e-3·max) for the exact kernel and, with --ode,
also for the ODE kernel (same model solved by diffrax), and a final `passed` count.

    .venv/bin/python benchmarks/nmtest_conformance.py [--ode] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine_info, write_json_atomic  # noqa: E402
from tests._nmtest import ATOL_FRAC, RTOL, compare, reference_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="folder holding nmtest.csv")
    ap.add_argument("--ode", action="store_true", help="also run the ODE kernel")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/nmtest_conformance.json")
    args = ap.parse_args()
    path = (args.data or reference_dir()) / "nmtest.csv"
    result = {
        "machine": machine_info(),
        "reference": str(path),
        "rtol": RTOL,
        "atol_frac": ATOL_FRAC,
    }
    for method in ["exact", "ode"] if args.ode else ["exact"]:
        t0 = time.perf_counter()
        cases = compare(path, method=method)
        wall = time.perf_counter() - t0
        passed = sum(c["passed"] for c in cases.values())
        result[method] = {
            "wall_s_including_compile": wall,
            "cases": {str(k): v for k, v in sorted(cases.items())},
            "max_rel_error": max(c["max_rel_error"] for c in cases.values()),
            "passed": passed,
            "total": len(cases),
        }
        print(f"{method}: {passed}/{len(cases)} cases match NONMEM ({wall:.1f} s)")
    result["passed"] = result["exact"]["passed"]
    write_json_atomic(args.out, result)
    return 0 if result["passed"] == result["exact"]["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
