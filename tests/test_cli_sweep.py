"""`ldpk sweep` end to end (in-process): results against the closed form of a one-compartment
IV bolus, the output formats, the figures, and every refusal of bad input (exit code 2, one
line naming the argument, nothing written, nothing run)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ldpk
from ldpk.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_grid_sweep_to_csv_matches_closed_form(tmp_path, capsys):
    out = tmp_path / "grid.csv"
    args = ["sweep", "one_compartment", "--grid", "CL=1,2,4", "--grid", "V=10,30"]
    args += ["--dose", "10", "--dose", "100", "--times", "0:24:0.5", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "sweep of one_compartment: 6 sets x 2 regimens, 0 sets failed" in printed
    assert "cp_auc [mg/L*h] iv 100: median" in printed
    assert f"wrote {out}" in printed
    df = pd.read_csv(out)
    assert len(df) == 6 * 2 and list(df["regimen"].unique()) == ["iv 10", "iv 100"]
    assert {"CL", "V", "cp_auc", "cp_cmax", "cp_tmax", "status"} <= set(df.columns)
    dose = df["regimen"].str.split().str[1].astype(float)
    k = df["CL"] / df["V"]
    # AUC(0-24 h) of D/V exp(-k t): the log-down trapezoids are exact for a mono-exponential.
    np.testing.assert_allclose(df["cp_auc"], dose / df["CL"] * (1 - np.exp(-k * 24.0)), rtol=1e-8)  # fmt: skip
    np.testing.assert_allclose(df["cp_cmax"], dose / df["V"], rtol=1e-12)
    assert (df["status"] == 0).all()


def test_sampled_sweep_to_netcdf(tmp_path, capsys):
    out = tmp_path / "sampled.nc"
    args = ["sweep", "one_compartment", "--sample", "CL=lognormal(2, 0.3)", "--sample"]
    args += ["V=uniform(10, 30)", "--n", "16", "--seed", "3", "--dose", "100"]
    args += ["--route", "iv,oral", "--times", "0:24:1", "--metrics", "auc,cmax,time_above"]
    args += ["--threshold", "1", "--param", "KA=1.2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "sweep of one_compartment: 16 sets x 2 regimens" in capsys.readouterr().out
    with xr.open_dataset(out) as ds:
        assert dict(ds.sizes) == {"set": 16, "regimen": 2, "time": 25}
        assert ds["cp"].dims == ("set", "regimen", "time")
        assert ds["cp_time_above"].dims == ("set", "regimen")
        assert ds["cp_time_above"].attrs["unit"] == "h"
        assert list(ds["regimen"].values) == ["iv 100", "oral 100"]
        assert ds.attrs["sampling"] == "sobol" and ds.attrs["seed"] == 3
        np.testing.assert_array_equal(ds["KA"], 1.2)
        expected = ldpk.sample({"CL": "lognormal(2, 0.3)", "V": "uniform(10, 30)"}, 16, seed=3)
        np.testing.assert_array_equal(ds["CL"], expected["CL"])
        np.testing.assert_allclose(ds["cp_cmax"].sel(regimen="iv 100"), 100 / ds["V"], rtol=1e-12)  # fmt: skip


def test_grid_crossed_with_samples(tmp_path):
    out = tmp_path / "crossed.parquet"
    args = ["sweep", "one_compartment", "--grid", "KA=0.5,2", "--sample", "CL=lognormal(2, 0.3)"]
    args += ["--n", "8", "--method", "lhs", "--dose", "50", "--route", "oral"]
    args += ["--times", "0:24:1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    df = pd.read_parquet(out)
    assert len(df) == 2 * 8
    np.testing.assert_array_equal(df["KA"], np.repeat([0.5, 2.0], 8))  # the grid varies slowest
    # Every grid point gets the same samples.
    np.testing.assert_array_equal(df["CL"][:8], df["CL"][8:])
    np.testing.assert_array_equal(df["CL"][:8], ldpk.sample({"CL": "lognormal(2, 0.3)"}, 8, method="lhs", seed=0)["CL"])  # fmt: skip


def test_plot_writes_the_figures(tmp_path, capsys):
    png = tmp_path / "fig.png"
    args = ["sweep", "one_compartment", "--grid", "CL=1,2,4", "--dose", "10,100"]
    args += ["--route", "iv", "--route", "oral", "--times", "0:24:1", "--plot", str(png)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("fig.png", "fig-metrics.png", "fig-dose.png"):
        f = tmp_path / name
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 10_000
        assert f"wrote {f}" in printed
    # One dose level: no dose figure.
    one = tmp_path / "one.png"
    args = ["sweep", "one_compartment", "--grid", "CL=1,2", "--dose", "10"]
    assert main([*args, "--times", "0:24:1", "--plot", str(one), "--no-progress"]) == 0
    assert (tmp_path / "one-metrics.png").exists() and not (tmp_path / "one-dose.png").exists()


def test_store_resumes_and_example_regimen(tmp_path, capsys):
    store, a, b = tmp_path / "s.zarr", tmp_path / "a.nc", tmp_path / "b.nc"
    args = ["sweep", "one_compartment", "--sample", "CL=lognormal(2, 0.3)", "--n", "8"]
    args += ["--chunk-size", "4", "--store", str(store), "--no-progress"]
    assert main([*args, "--out", str(a)]) == 0  # no --dose, --times: the model's example
    assert main([*args, "--out", str(b)]) == 0  # the same store: resumed, nothing recomputed
    assert "regimens, 0 sets failed" in capsys.readouterr().out
    with xr.open_dataset(a) as x, xr.open_dataset(b) as y:
        assert list(x["regimen"].values) == ["example"]
        np.testing.assert_array_equal(x["cp"], y["cp"])


# ---- refusals ---------------------------------------------------------------------------------

BAD = [
    (["--sample", "KE=lognormal(1, 0.3)", "--n", "8"], "--sample KE", "CL, V, KA, F, TLAG"),
    (["--grid", "DOSE=1e6,1e7"], "--grid DOSE", "--dose"),
    (["--param", "Q=3"], "--param Q", "CL, V, KA"),
    (["--sample", "CL=lognormal(5)", "--n", "8"], "--sample CL", "lognormal(median, sigma)"),
    (["--sample", "CL=gamma(1, 2)", "--n", "8"], "--sample CL", "unknown distribution"),
    (["--grid", "CL=1,,2"], "--grid CL", "empty"),
    (["--sample", "CL=lognormal(5, 0.3)", "--n", "0"], "--n 0", "at least 1"),
    (["--sample", "CL=lognormal(5, 0.3)", "--n", "-3"], "--n -3", "at least 1"),
    (["--sample", "CL=lognormal(5, 0.3)"], "--n", "number of parameter sets"),
    (["--n", "8"], "--n 8", "--sample"),
    (
        ["--sample", "CL=lognormal(5, 0.3)", "--n", "8", "--method", "halton"],
        "--method",
        "sobol, lhs, random",
    ),  # fmt: skip
    (
        ["--grid", "CL=1,2", "--sample", "CL=lognormal(5, 0.3)", "--n", "4"],
        "--sample CL",
        "already given by --grid",
    ),  # fmt: skip
    (["--dose", "10", "--route", "im"], "--route 'im'", "iv, oral"),
    (["--route", "oral"], "--route", "--dose"),
    (["--dose", "100 iv at 0"], "--dose '100 iv at 0'", "--route"),
    (["--dose", "-1"], "--dose '-1'", "> 0"),
    (["--dose", "10", "--schedule", "daily"], "--schedule 'daily'", "NAME=T1,T2"),
    (["--outputs", "cq"], "--outputs", "outputs: cp"),
    (["--metrics", "auc,cmaxx"], "--metrics", "cmaxx"),
    (["--metrics", "time_above"], "--metrics time_above", "--threshold"),
    (["--threshold", "1"], "--threshold", "time_above"),
    (["--metrics", "trough"], "--metrics trough", "at"),
    (["--chunk-size", "0"], "--chunk-size 0", "positive"),
    (["--times", "0:24"], "--times", "START:STOP:STEP"),
    (["--out", "res.xlsx"], "--out res.xlsx", ".zarr, .nc, .csv, .parquet"),
    (["--plot", "fig.jpg"], "--plot fig.jpg", ".png"),
    (["--out", "res.zarr", "--store", "res.zarr"], "--store res.zarr", "same path as --out"),
]


@pytest.fixture
def nothing_runs(tmp_path, monkeypatch):
    """Run in an empty folder; running a sweep fails the test."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the sweep ran: bad input must be refused before")

    monkeypatch.setattr(ldpk, "sweep", refuse)
    return tmp_path


def _refused(capsys, args, *words):
    assert main(["sweep", "one_compartment", "--no-progress", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err, err  # one line, no traceback
    assert err.startswith("ldpk sweep: error: "), err
    for w in words:
        assert w in err, (w, err)
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize(("args", "flag", "hint"), BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_refused(nothing_runs, capsys, args, flag, hint):
    if "--times" not in args:
        args = [*args, "--times", "0:24:1"]
    if "--out" not in args:
        args = [*args, "--out", "res.csv"]
    if "--plot" not in args:
        args = [*args, "--plot", "fig.png"]
    _refused(capsys, args, flag, hint)
    assert list(nothing_runs.iterdir()) == []  # nothing written


def test_out_that_is_an_input_is_refused(nothing_runs, capsys):
    times = nothing_runs / "times.csv"
    times.write_text("0\n1\n2\n4\n")
    _refused(capsys, ["--dose", "10", "--times-file", "times.csv", "--out", "times.csv"], "--out times.csv", "input")  # fmt: skip
    model = nothing_runs / "model.yaml"
    shutil.copy(ldpk.load_model("one_compartment").source, model)
    assert main(["sweep", str(model), "--times", "0:4:1", "--plot", str(model.with_suffix(".png")), "--store", str(model)]) == 2  # fmt: skip
    assert "--store" in capsys.readouterr().err
    assert sorted(p.name for p in nothing_runs.iterdir()) == ["model.yaml", "times.csv"]
    assert times.read_text() == "0\n1\n2\n4\n"


@pytest.mark.parametrize("where", ["--out", "--store"])
def test_results_too_large_for_the_disk_are_refused(nothing_runs, capsys, monkeypatch, where):
    # 6 sets x 2 regimens x 25 times x 1 output x 8 bytes = 2400 bytes, on a disk with 1000 free.
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000))  # fmt: skip
    path = "res.nc" if where == "--out" else "store.zarr"
    args = ["--grid", "CL=1,2,4", "--grid", "V=10,30", "--dose", "10,100", "--times", "0:24:1"]
    _refused(capsys, [*args, where, path], f"{where} {path}", "6 sets x 2 regimens x 25 times", "GB free")  # fmt: skip
    assert list(nothing_runs.iterdir()) == []


def test_existing_zarr_out_is_refused(nothing_runs, capsys):
    (nothing_runs / "old.zarr").mkdir()
    _refused(capsys, ["--dose", "10", "--times", "0:4:1", "--out", "old.zarr"], "--out old.zarr", "exists")  # fmt: skip
    assert [p.name for p in nothing_runs.iterdir()] == ["old.zarr"]
