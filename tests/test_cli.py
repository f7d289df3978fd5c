"""The `ldpk` command end to end (in-process), including its error messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.cli import main


def test_models_lists_every_builtin(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ldpk.builtin_models():
        assert name in out
    assert "nonlinear" in out and "linear" in out


def test_check_reports_kernel(capsys):
    assert main(["check", "one_compartment_mm"]) == 0
    assert "nonlinear (diffrax ODE)" in capsys.readouterr().out
    assert main(["check", "cart_cellular_kinetics"]) == 0
    assert "piecewise linear (exact matrix exponentials" in capsys.readouterr().out


def test_check_bad_file_names_the_problem(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "name: bad\ncompartments: {central: {unit: mg}}\n"
        "parameters: {CL: {value: 1, unit: L/h}}\nflows: [{from: central, to: nowhere, k: CL}]\n"
    )
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "nowhere" in err and "compartments: central" in err


def test_simulate_dose_matches_closed_form(tmp_path):
    out = tmp_path / "sim.csv"
    args = [
        "simulate",
        "one_compartment",
        "--dose",
        "100 iv at 0",
        "--param",
        "CL=2",
        "--param",
        "V=10",
    ]
    assert main([*args, "--times", "0:10:1", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    # closed form: C = D/V exp(-CL/V t); tolerance 1e-10 relative
    np.testing.assert_allclose(df["cp [mg/L]"], 10 * np.exp(-0.2 * df["time [h]"]), rtol=1e-10)


def test_simulate_example_regimen_with_plot(tmp_path):
    png = tmp_path / "fig.png"
    assert (
        main(
            [
                "simulate",
                "two_compartment",
                "--plot",
                str(png),
                "--out",
                str(tmp_path / "a.parquet"),
            ]
        )
        == 0
    )
    assert png.stat().st_size > 10_000
    assert len(pd.read_parquet(tmp_path / "a.parquet")) > 10


def test_simulate_data_writes_rows_back_with_outputs(tmp_path):
    data = pd.DataFrame(
        {
            "ID": [1, 1, 1, 2, 2],
            "TIME": [0, 1, 2, 0, 4],
            "EVID": [1, 0, 0, 1, 0],
            "AMT": [100, 0, 0, 50, 0],
            "CMT": [2, 2, 2, 2, 2],
        }
    )
    src = tmp_path / "events.csv"
    data.to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    assert main(["simulate", "one_compartment", "--data", str(src), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert list(pred.columns[:5]) == list(data.columns) and "cp [mg/L]" in pred
    k = 2.75 / 31.8
    expect = {
        1: 100 / 31.8 * np.exp(-k),
        2: 100 / 31.8 * np.exp(-2 * k),
        4: 50 / 31.8 * np.exp(-4 * k),
    }
    for i in (1, 2, 4):
        assert pred.loc[i, "cp [mg/L]"] == pytest.approx(expect[int(pred.loc[i, "TIME"])], rel=1e-10)  # fmt: skip
    assert np.isnan(pred.loc[0, "cp [mg/L]"])  # dose rows get no prediction


def test_simulate_data_error_names_row_and_field(tmp_path, capsys):
    src = tmp_path / "events.csv"
    pd.DataFrame(
        {"ID": [1, 1], "TIME": [0, 1], "EVID": [1, 7], "AMT": [100, 0], "CMT": [2, 2]}
    ).to_csv(src, index=False)
    assert (
        main(["simulate", "one_compartment", "--data", str(src), "--out", str(tmp_path / "o.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert "row 2" in err and "EVID" in err and "0 observation" in err
    assert not (tmp_path / "o.csv").exists()  # nothing written half


def test_simulate_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "events.csv"
    pd.DataFrame({"ID": [1], "TIME": [0], "EVID": [1], "AMT": [1], "CMT": [2]}).to_csv(
        src, index=False
    )
    before = src.read_bytes()
    assert main(["simulate", "one_compartment", "--data", str(src), "--out", str(src)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_bad_dose_and_times_messages(capsys):
    assert main(["simulate", "one_compartment", "--dose", "100 iv 0"]) == 2
    assert "AMOUNT ROUTE at TIME" in capsys.readouterr().err
    assert main(["simulate", "one_compartment", "--times", "0:24"]) == 2
    assert "START:STOP:STEP" in capsys.readouterr().err


def test_demo_writes_csv_and_png(tmp_path):
    # The demo's fit is covered by tests/test_fit_outputs.py; here only its simulation part.
    assert main(["demo", "--no-fit", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "simulation.png").stat().st_size > 10_000
    pop = pd.read_csv(tmp_path / "d" / "population.csv")
    lo, mid, hi = (pop[f"cp_{q} [mg/L]"] for q in ("p05", "median", "p95"))
    assert (lo <= mid).all() and (mid <= hi).all()


def test_demo_fit_is_the_pooled_study_with_its_report(tmp_path, capsys):
    """`ldpk demo`'s fit (what `make demo` shows): the mitochondria study naive-pooled (no
    between-animal variability) by the Laplace approximation, its report written, its
    estimates near the simulation's truth (KBL 4 /h, FU_LIVER 0.38: within 15 %)."""
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "naive-pooled" in text and "omega_KBL" not in text
    assert (out / "fit" / "report.html").is_file() and (out / "fit" / "vpc.png").is_file()
    s = pd.read_csv(out / "fit" / "summary.csv").set_index("parameter")
    assert abs(s.loc["KBL", "median"] / 4.0 - 1) < 0.15
    assert abs(s.loc["FU_LIVER", "median"] / 0.38 - 1) < 0.15
    fit = ldpk.load_fit(out / "fit")
    assert fit.method == "laplace" and not fit.spec.iiv
