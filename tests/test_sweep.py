"""ldpk.sweep: parameter tables x named regimens -> an xarray Dataset, in memory or streamed to
a zarr store that resumes; failures recorded per set; checked against closed forms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

import ldpk
from ldpk.paramsets import ParameterTable, grid, sample
from ldpk.sweep import STATUS, regimens, save, summary, sweep

T = np.linspace(0.0, 48.0, 97)  # h


@pytest.fixture(scope="module")
def model():
    return ldpk.load_model("one_compartment")


def _iv(dose, cl, v, t=T):
    return dose / v[:, None] * np.exp(-(cl / v)[:, None] * t)


def _oral(dose, cl, v, ka, t=T):
    k = cl / v
    return dose * ka / (v * (ka - k))[:, None] * (np.exp(-k[:, None] * t) - np.exp(-ka * t))


def test_grid_sweep_matches_closed_forms(model):
    table = grid(CL=[1.0, 2.0, 4.0], V=[10.0, 30.0])
    regs = regimens([50.0, 100.0], routes=["iv", "oral"])
    assert list(regs) == ["iv 50", "iv 100", "oral 50", "oral 100"]
    ds = sweep(model, table, regs, T, metrics=["auc", "auc_inf", "cmax", "tmax"], progress=False)
    assert dict(ds.sizes) == {"set": 6, "regimen": 4, "time": len(T)}
    assert ds["cp"].dims == ("set", "regimen", "time")
    assert ds["cp_auc"].dims == ("set", "regimen")
    cl, v = ds["CL"].values, ds["V"].values
    np.testing.assert_array_equal(cl, [1, 1, 2, 2, 4, 4])
    ka = model.parameter("KA").value
    for dose in (50.0, 100.0):
        np.testing.assert_allclose(ds["cp"].sel(regimen=f"iv {dose:g}"), _iv(dose, cl, v), rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(ds["cp"].sel(regimen=f"oral {dose:g}"), _oral(dose, cl, v, ka), rtol=1e-9, atol=1e-12)  # fmt: skip
        # Log-down trapezoids are exact for the IV mono-exponential: AUC(0-48) and AUC(0-inf).
        auc = ds["cp_auc"].sel(regimen=f"iv {dose:g}")
        np.testing.assert_allclose(auc, dose / cl * (1 - np.exp(-cl / v * T[-1])), rtol=1e-10)
        np.testing.assert_allclose(ds["cp_auc_inf"].sel(regimen=f"iv {dose:g}"), dose / cl, rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(ds["cp_cmax"].sel(regimen=f"iv {dose:g}"), dose / v, rtol=1e-12)  # fmt: skip
    assert np.all(ds["status"].values == 0)
    # Units and provenance.
    assert ds["cp"].attrs["unit"] == "mg/L"
    assert ds["cp_auc"].attrs["unit"] == "mg/L*h"
    assert ds["cp_tmax"].attrs["unit"] == "h"
    assert ds["CL"].attrs["unit"] == "L/h" and ds["time"].attrs["unit"] == "h"
    assert ds.attrs["model"] == "one_compartment" and ds.attrs["ldpk_version"] == ldpk.__version__
    assert ds.attrs["sampling"] == "grid" and ds.attrs["n_failed"] == 0
    assert json.loads(ds.attrs["fixed_parameters"])["KA"] == ka


def test_sampled_table_and_explicit_mapping(model):
    table = sample({"CL": "lognormal(3, 0.3)", "V": "uniform(20, 40)"}, 64, method="lhs", seed=5)
    ds = sweep(model, table, [ldpk.Bolus(100.0, route="iv")], T, metrics=["auc_inf"], progress=False)  # fmt: skip
    assert list(ds["regimen"].values) == ["regimen"]
    assert ds.attrs["sampling"] == "lhs" and ds.attrs["seed"] == 5
    assert "lognormal" in json.loads(ds.attrs["distributions"])["CL"]
    np.testing.assert_allclose(ds["cp_auc_inf"][:, 0], 100.0 / table["CL"], rtol=1e-10)
    # A mapping broadcasts: 3 CL values x one V.
    ds2 = sweep(model, {"CL": [1.0, 2.0, 3.0], "V": 20.0}, {"a": [ldpk.Bolus(10.0, route="iv")]}, T, progress=False)  # fmt: skip
    np.testing.assert_allclose(ds2["cp_auc"][:, 0], 10 / np.array([1.0, 2, 3]) * (1 - np.exp(-np.array([1.0, 2, 3]) / 20 * 48)), rtol=1e-10)  # fmt: skip


def test_chunks_trace_once_and_equal_one_chunk(model):
    table = sample({"CL": "lognormal(3, 0.3)", "V": "lognormal(30, 0.2)"}, 1000, seed=2)
    regs = {"iv": [ldpk.Bolus(100.0, route="iv")]}
    whole = sweep(model, table, regs, T, chunk_size=1000, progress=False)
    # The sweep's simulators share their compiled kernel (and its trace count) with any
    # simulator prepared for the same structure.
    probe = ldpk.prepare(model, regs["iv"], T, outputs=model.output_names)
    before = probe.n_traces
    # 97 sets per chunk: 11 chunks, the last padded to 97, so the kernel is traced once.
    parts = sweep(model, table, regs, T, chunk_size=97, progress=False)
    assert probe.n_traces - before == 1
    again = sweep(model, table.subset(slice(0, 500)), regs, T, chunk_size=97, progress=False)
    assert probe.n_traces - before == 1  # a new sweep of the same shape: no trace
    np.testing.assert_allclose(parts["cp"], whole["cp"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(parts["cp_auc"], whole["cp_auc"], rtol=1e-13, atol=0)
    np.testing.assert_array_equal(again["cp"], parts["cp"][:500])


def test_failed_sets_are_nan_with_a_status_and_the_sweep_goes_on(model):
    # V = 0 divides by zero (exact kernel): non-finite output.
    ds = sweep(model, {"V": [10.0, 0.0, 20.0]}, [ldpk.Bolus(100.0, route="iv")], T, progress=False)  # fmt: skip
    np.testing.assert_array_equal(ds["status"][:, 0], [0, 2, 0])
    assert np.all(np.isnan(ds["cp"][1])) and np.isnan(ds["cp_auc"][1, 0])
    np.testing.assert_allclose(ds["cp_auc"][[0, 2], 0], 100 / 2.75 * (1 - np.exp(-2.75 / np.array([10, 20]) * 48)), rtol=1e-10)  # fmt: skip
    assert ds.attrs["n_failed"] == 1
    assert json.loads(ds.attrs["failures"])[STATUS[2]] == 1
    assert "1 sets failed" in summary(ds)
    # An ODE solve that reaches its step limit: status 1.
    mm = ldpk.load_model("one_compartment_mm")
    ode = ldpk.ODEOptions(max_steps=16, solver="tsit5")
    ds = sweep(mm, {"VM": [100.0, 1e7, 500.0]}, [ldpk.Bolus(100.0, route=mm.route_names[0])], np.linspace(0, 24, 9), ode=ode, progress=False)  # fmt: skip
    np.testing.assert_array_equal(ds["status"][:, 0], [0, 1, 0])
    assert np.isfinite(ds["cp_auc"][[0, 2], 0]).all() and np.isnan(ds["cp_auc"][1, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"params": {"CLX": [1.0]}}, r"unknown parameter.*CLX.*parameters: CL"),
        ({"outputs": ["cq"]}, r"no output.*cq.*outputs: cp"),
        ({"metrics": ["aucc"]}, r"aucc.*auc"),
        ({"metrics": ["time_above"]}, r"threshold"),
        ({"chunk_size": 0}, r"chunk_size must be a positive integer"),
        ({"times": [0.0, 2.0, 1.0]}, r"strictly increasing"),
        ({"regimens": {"x": [ldpk.Bolus(1.0, route="nasal")]}}, r"route 'nasal'.*iv, oral"),
        ({"params": {"CL": [1.0, np.nan]}}, r"CL.*not finite"),
    ],
)
def test_bad_input_is_refused_before_compiling(model, kwargs, match):
    args = {"params": {"CL": [1.0, 2.0]}, "regimens": [ldpk.Bolus(1.0, route="iv")], "times": T}
    args.update(kwargs)
    with pytest.raises(ldpk.DataError, match=match):
        sweep(model, args.pop("params"), args.pop("regimens"), args.pop("times"), progress=False, **args)  # fmt: skip


def test_store_streams_resumes_and_refuses_others(model, tmp_path):
    table = sample({"CL": "lognormal(3, 0.3)", "V": "lognormal(30, 0.2)"}, 300, seed=4)
    regs = regimens([100.0], routes=["iv", "oral"])
    ref = sweep(model, table, regs, T, chunk_size=64, progress=False)
    store = tmp_path / "s.zarr"
    ds = sweep(model, table, regs, T, chunk_size=64, store=store, progress=False)
    for var in ("cp", "cp_auc", "cp_cmax", "status"):
        np.testing.assert_array_equal(ds[var], ref[var])
    np.testing.assert_array_equal(ds["CL"], table["CL"])
    assert ds["cp"].attrs["unit"] == "mg/L" and list(ds["regimen"].values) == list(regs)
    # Started again: every chunk is complete, nothing is run, the same result.
    again = sweep(model, table, regs, T, chunk_size=64, store=store, progress=False)
    np.testing.assert_array_equal(again["cp"], ref["cp"])
    # Another sweep is refused at that path; so is a path holding something else.
    with pytest.raises(ldpk.DataError, match="holds another sweep"):
        sweep(model, table, regs, T, chunk_size=32, store=store, progress=False)
    other = tmp_path / "mine.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ldpk.DataError, match="not an ldpk sweep store"):
        sweep(model, table, regs, T, store=other, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_store_marks_a_chunk_done_only_after_it_is_written(model, tmp_path, monkeypatch):
    """A chunk whose values were not all written (the process stopped in between) is not
    marked done, and is run again on resume."""
    mod = sys.modules["ldpk.sweep"]  # ldpk.sweep is the function

    table = grid(CL=np.linspace(1, 5, 40))
    regs = {"iv": [ldpk.Bolus(100.0, route="iv")]}
    ref = sweep(model, table, regs, T, chunk_size=16, progress=False)
    real = mod._run_chunk
    calls = []

    def flaky(plan, theta):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second chunk
        return real(plan, theta)

    monkeypatch.setattr(mod, "_run_chunk", flaky)
    store = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        sweep(model, table, regs, T, chunk_size=16, store=store, progress=False)
    import zarr

    np.testing.assert_array_equal(zarr.open_group(store)["chunk_done"][:], [1, 0, 0])
    monkeypatch.setattr(mod, "_run_chunk", real)
    ds = sweep(model, table, regs, T, chunk_size=16, store=store, progress=False)
    np.testing.assert_array_equal(ds["cp"], ref["cp"])


_KILLED = textwrap.dedent(
    """
    import sys, numpy as np, ldpk
    from ldpk.paramsets import sample
    from ldpk.sweep import sweep
    m = ldpk.load_model("two_compartment")
    table = sample({"CL": "lognormal(3, 0.3)", "V1": "lognormal(20, 0.2)"}, 4000, seed=9)
    regs = {"iv": [ldpk.Bolus(100.0, route="iv")], "inf": [ldpk.Infusion(100.0, route="iv", duration=2.0)]}
    ds = sweep(m, table, regs, np.linspace(0, 48, 49), chunk_size=200, store=sys.argv[1],
               progress=False, metrics=["auc", "cmax"])
    if len(sys.argv) > 2:
        np.save(sys.argv[2], np.asarray(ds["cp"]))
    """
)


def test_store_resumes_after_the_process_is_killed(tmp_path):
    """Kill -9 a sweep writing to a store; started again it completes, equal to a sweep that
    was never interrupted."""
    import zarr

    script = tmp_path / "run.py"
    script.write_text(_KILLED)
    store = tmp_path / "killed.zarr"
    env = {**os.environ, "LDPK_HOST_DEVICES": "2"}
    proc = subprocess.Popen([sys.executable, str(script), str(store)], env=env)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            done = int(np.sum(zarr.open_group(store, mode="r")["chunk_done"][:]))
        except Exception:  # noqa: BLE001 - the store is not there yet
            continue
        if done >= 3:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert 3 <= done < 20
    out = tmp_path / "resumed.npy"
    subprocess.run([sys.executable, str(script), str(store), str(out)], env=env, check=True, timeout=300)  # fmt: skip
    fresh = tmp_path / "fresh.npy"
    subprocess.run([sys.executable, str(script), str(tmp_path / "fresh.zarr"), str(fresh)], env=env, check=True, timeout=300)  # fmt: skip
    np.testing.assert_array_equal(np.load(out), np.load(fresh))
    assert not np.isnan(np.load(out)).any()


def test_save_formats_and_simulation_to_xarray(model, tmp_path):
    table = grid(CL=[1.0, 2.0], V=[10.0, 20.0])
    ds = sweep(model, table, regimens([10.0], routes=["iv", "oral"]), T, progress=False)
    save(ds, tmp_path / "s.nc")
    back = xr.open_dataset(tmp_path / "s.nc", engine="h5netcdf")
    np.testing.assert_array_equal(back["cp"], ds["cp"])
    assert back["cp_auc"].attrs["unit"] == "mg/L*h" and list(back["regimen"].values) == ["iv 10", "oral 10"]  # fmt: skip
    back.close()
    save(ds, tmp_path / "s.csv")
    import pandas as pd

    frame = pd.read_csv(tmp_path / "s.csv")
    assert len(frame) == 8 and {"CL", "V", "cp_auc", "status", "regimen"} <= set(frame)
    np.testing.assert_allclose(frame["cp_auc"], ds["cp_auc"].values.reshape(-1), rtol=1e-14)
    save(ds, tmp_path / "s.zarr")
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "s.zarr", consolidated=False)["cp"], ds["cp"])  # fmt: skip
    with pytest.raises(ldpk.DataError, match="exists"):
        save(ds, tmp_path / "s.zarr")
    with pytest.raises(ldpk.DataError, match="unknown output format"):
        save(ds, tmp_path / "s.xlsx")
    # Simulation.to_xarray follows the same conventions.
    sim = ldpk.simulate(model, {"CL": table["CL"], "V": table["V"]}, [ldpk.Bolus(10.0, route="iv")], T)  # fmt: skip
    sx = sim.to_xarray()
    assert sx["cp"].dims == ("set", "time") and sx["cp"].attrs["unit"] == "mg/L"
    np.testing.assert_array_equal(sx["CL"], table["CL"])
    np.testing.assert_allclose(sx["cp"], ds["cp"].sel(regimen="iv 10"), rtol=1e-13)


def test_parameter_table_round_trip_of_a_sweep(model):
    table = ParameterTable.from_mapping({"CL": [1.0, 2.0]})
    ds = sweep(model, table, [ldpk.Bolus(1.0, route="iv")], T, metrics=[], time_courses=False, progress=False)  # fmt: skip
    assert set(ds.data_vars) == {"status"}


def test_model_values_alone_and_a_store_result_saved(model, tmp_path):
    ds = sweep(model, None, [ldpk.Bolus(10.0, route="iv")], T, progress=False)
    assert ds.sizes["set"] == 1 and ds.attrs["sampling"] == "model"
    cl, v = model.parameter("CL").value, model.parameter("V").value
    np.testing.assert_allclose(ds["cp"][0, 0], _iv(10.0, np.array([cl]), np.array([v]))[0], rtol=1e-10)  # fmt: skip
    stored = sweep(model, grid(CL=[1.0, 2.0]), regimens([10.0]), T, store=tmp_path / "s.zarr", progress=False)  # fmt: skip
    assert "ldpk_sweep_key" not in stored.attrs
    save(stored, tmp_path / "s.csv")
    save(stored, tmp_path / "s.nc")
    back = xr.open_dataset(tmp_path / "s.nc", engine="h5netcdf")
    np.testing.assert_array_equal(back["cp"], stored["cp"])
    back.close()
    with pytest.raises(ldpk.DataError, match="two regimens would be named"):
        regimens([1.0, 1.0000001])


def test_a_subset_of_outputs_in_any_order_carries_each_outputs_own_values():
    """Regression: the simulator returns the model's outputs in model order, so a sweep of
    ``outputs=[...]`` (a subset, in another order) must pick each by name. Oracle: the named
    outputs of ``ldpk.simulate`` and the exposure module on them."""
    import ldpk.exposure as exposure

    model = ldpk.load_model("mitochondria_iv")
    t = np.linspace(0.0, 48.0, 97)
    reg = [ldpk.Bolus(100.0)]
    names = ["pct_spleen", "pct_blood"]  # model order is pct_blood, ..., pct_spleen
    kbl = model.parameter("KBL").value * np.array([0.5, 2.0])
    ds = sweep(model, grid(KBL=kbl), {"iv": reg}, t, outputs=names, metrics=["auc", "cmax"], progress=False)  # fmt: skip
    for i in range(ds.sizes["set"]):
        sim = ldpk.simulate(model.with_values(KBL=kbl[i]), None, reg, t)
        for o in names:
            y = np.asarray(sim[o])
            np.testing.assert_allclose(ds[o].values[i, 0], y, rtol=1e-10, atol=1e-12)
            want = exposure.compute(t, y, ["auc", "cmax"], output_unit="%ID", time_unit="h")
            assert float(ds[f"{o}_auc"].values[i, 0]) == pytest.approx(float(want["auc"].value), rel=1e-10)  # fmt: skip
            assert float(ds[f"{o}_cmax"].values[i, 0]) == pytest.approx(float(y.max()), rel=1e-12)
    assert (ds["status"].values == 0).all()
