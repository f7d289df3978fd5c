"""Library-wide checks: every built-in model responds on every route, linear ones agree with
the ODE kernel, and every example script runs and writes its figures."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

import ldpk
from ldpk.dosing import example_regimen

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(ldpk.builtin_models())
LINEAR = [n for n in NAMES if ldpk.load_model(n).is_linear]


@pytest.mark.parametrize("name", NAMES)
def test_every_route_delivers_a_dose(name):
    m = ldpk.load_model(name)
    _, times = example_regimen(m)
    t = times[times > 0][: len(times) // 4 + 2]
    for route in m.route_names:
        sim = ldpk.simulate(m, None, [ldpk.Bolus(10.0, route=route)], t)
        base = ldpk.simulate(m, None, [], t)
        x, x0 = np.asarray(sim.states), np.asarray(base.states)
        assert np.all(np.isfinite(x)), route
        assert np.abs(x - x0).max() > 0, f"{name}: route {route!r} changes nothing"


@pytest.mark.parametrize("name", LINEAR)
def test_linear_models_agree_with_the_ode_kernel(name):
    m = ldpk.load_model(name)
    doses, times = example_regimen(m)
    exact = np.asarray(ldpk.simulate(m, None, doses, times).states)
    ode = np.asarray(
        ldpk.simulate(
            m, None, doses, times, method="ode", ode=ldpk.ODEOptions(rtol=1e-11, atol=1e-13)
        ).states
    )
    scale = np.abs(exact).max()
    assert np.abs(exact - ode).max() <= 1e-6 * scale  # tolerance: 1e-6 of the largest amount


# The example-study generator writes data, not figures; tests/test_example_studies.py runs it.
PLOT_SCRIPTS = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.stem.startswith("make_"))


@pytest.mark.parametrize("script", PLOT_SCRIPTS, ids=lambda p: p.stem)
def test_example_script_runs(script, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", [str(script), "--out", str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 20_000 for p in pngs)
