"""Fit outputs: the report folder (netCDF, tables, figures, HTML), the fit plots and `ldpk fit`
end to end, on the theophylline data with quick Laplace fits."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk import plots
from ldpk.cli import main
from ldpk.report import FIT_REPORT_FILES, _fit_html, write_fit_report

CONFIG = {"error": {"cp": {"model": "additive"}}}


@pytest.fixture(scope="module")
def theo(reference_data_dir: Path) -> Path:
    return reference_data_dir / "theo_sd.csv"


def _as_two_chains(tree):
    """The draws of a one-chain posterior split into two chains of half the length (every group
    with a chain dimension), so the multi-chain figures can be checked without a NUTS run."""
    import xarray as xr

    out = tree.copy()
    for g in ("posterior", "posterior_predictive", "log_likelihood"):
        ds = tree[g].to_dataset()
        n = ds.sizes["draw"] // 2
        first = ds.isel(chain=0, draw=slice(0, n))
        second = ds.isel(chain=0, draw=slice(n, 2 * n)).assign_coords(draw=first["draw"])
        both = xr.concat(
            [first, second], dim="chain", coords="different", compat="equals", join="outer"
        )
        out[g] = both.assign_coords(chain=[0, 1])
    return out


@pytest.fixture(scope="module")
def tiny_fit(theo: Path) -> ldpk.Fit:
    """A Laplace fit (seconds), its 200 draws presented as 2 chains of 100."""
    model = ldpk.load_model("one_compartment")
    fit = ldpk.fit(model, theo, config=CONFIG, method="laplace", draws=200, progress=False)
    return dataclasses.replace(fit, posterior=_as_two_chains(fit.posterior))


@pytest.fixture(scope="module")
def report(tiny_fit: ldpk.Fit, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("report")
    return out, write_fit_report(tiny_fit, out)


def test_every_file_is_written(report):
    out, written = report
    assert [p.name for p in written] == list(FIT_REPORT_FILES)
    for name in FIT_REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    for name in FIT_REPORT_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


def test_netcdf_round_trips(report, tiny_fit):
    out, _ = report
    back = ldpk.load_fit(out / "posterior.nc").posterior
    groups = set(tiny_fit.posterior.children)
    assert groups == set(back.children)
    for g in groups:
        a, b = tiny_fit.posterior[g].to_dataset(), back[g].to_dataset()
        assert set(a.variables) == set(b.variables), g
        for name in a.variables:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{g}/{name}")
    assert back.attrs["ldpk_method"] == "laplace"
    assert back["posterior"].sizes["chain"] == 2


def test_predictions_one_row_per_observation(report, tiny_fit, theo):
    out, _ = report
    pred = pd.read_csv(out / "predictions.csv")
    ds = tiny_fit.dataset
    assert len(pred) == ds.n_obs == 132
    raw = pd.read_csv(theo)
    # ROW is the 1-based data row: it points back at the very record fitted.
    np.testing.assert_array_equal(pred["DV"], raw["DV"].to_numpy()[pred["ROW"] - 1])
    np.testing.assert_array_equal(pred["DV"], ds.dv)
    np.testing.assert_array_equal(pred["TIME"], raw["TIME"].to_numpy()[pred["ROW"] - 1])
    np.testing.assert_array_equal(pred["ID"], raw["ID"].to_numpy()[pred["ROW"] - 1])
    assert (pred["OUTPUT"] == "cp").all() and (pred["CENS"] == 0).all()
    assert (pred["UNIT"] == "mg/L").all()
    for q in ("IPRED", "PP"):
        lo, mid, hi = pred[f"{q}_P05"], pred["IPRED" if q == "IPRED" else "PP_MEDIAN"], pred[f"{q}_P95"]  # fmt: skip
        assert (lo <= mid + 1e-12).all() and (mid <= hi + 1e-12).all()
    # the posterior-predictive band (residual error) is wider than the individual prediction's
    assert ((pred["PP_P95"] - pred["PP_P05"]) > (pred["IPRED_P95"] - pred["IPRED_P05"])).mean() > 0.9  # fmt: skip
    # IPRED is the posterior median of `pred`; IWRES = (DV - IPRED) / sigma_add (additive error)
    np.testing.assert_allclose(pred["IPRED"], np.median(tiny_fit.draws("pred"), axis=0))
    sigma = np.median(tiny_fit.draws("sigma_add_cp"))
    np.testing.assert_allclose(pred["IWRES"], (pred["DV"] - pred["IPRED"]) / sigma, rtol=1e-9)
    # PRED (typical subject) is positive after the dose and finite everywhere
    assert np.isfinite(pred["PRED"]).all() and (pred.loc[pred["TIME"] > 0, "PRED"] > 0).all()


def test_summary_csv_lists_the_population_parameters(report, tiny_fit):
    out, _ = report
    s = pd.read_csv(out / "summary.csv")
    assert list(s["parameter"]) == tiny_fit.parameter_names()
    assert {"mean", "sd", "eti90_lb", "eti90_ub", "prior", "unit"} <= set(s.columns)
    assert s.set_index("parameter").loc["CL", "unit"] == "L/h"


def test_summary_has_every_digit_and_the_median_and_rse(report, tiny_fit):
    """summary.csv keeps full precision (numbers equal to NumPy's of the draws to 1e-12, not
    rounded), with the median beside the mean and RSE % = 100 sd / |mean|; display rounds."""
    out, _ = report
    s = pd.read_csv(out / "summary.csv").set_index("parameter")
    for name in tiny_fit.parameter_names():
        d = tiny_fit.draws(name)
        np.testing.assert_allclose(s.loc[name, "mean"], d.mean(), rtol=1e-12)
        np.testing.assert_allclose(s.loc[name, "median"], np.median(d), rtol=1e-12)
        np.testing.assert_allclose(s.loc[name, "sd"], d.std(ddof=1), rtol=1e-6)
        np.testing.assert_allclose(s.loc[name, "rse_pct"], 100 * d.std(ddof=1) / abs(d.mean()), rtol=1e-6)  # fmt: skip
        lo, hi = np.quantile(d, [0.05, 0.95])
        np.testing.assert_allclose([s.loc[name, "eti90_lb"], s.loc[name, "eti90_ub"]], [lo, hi], rtol=1e-6)  # fmt: skip
    shown = ldpk.report.summary_for_display(s.reset_index())
    cl = shown.set_index("parameter").loc["CL"]
    assert cl["mean"] == f"{s.loc['CL', 'mean']:.4g}" and cl["rse_pct"] == f"{s.loc['CL', 'rse_pct']:.1f}"  # fmt: skip


def test_report_html_is_self_contained(report, tiny_fit):
    out, _ = report
    text = (out / "report.html").read_text(encoding="utf-8")
    for name in tiny_fit.parameter_names():
        assert f"<td>{name}</td>" in text
    n_png = sum(name.endswith(".png") for name in FIT_REPORT_FILES)
    assert len(re.findall(r"src='data:image/png;base64,[A-Za-z0-9+/=]{1000,}'", text)) == n_png
    assert "src='http" not in text and 'src="http' not in text  # nothing fetched from outside
    assert "one_compartment" in text and "theo_sd.csv" in text and ldpk.__version__ in text
    # a Laplace approximation is flagged as such: the warnings are on the page
    warnings = tiny_fit.convergence()
    assert warnings and "class='warn'" in text
    assert all(html.escape(w) in text for w in warnings)


def test_report_html_without_warnings_says_so(tiny_fit, monkeypatch):
    monkeypatch.setattr(ldpk.Fit, "convergence", lambda self: [])
    text = _fit_html(tiny_fit, pd.DataFrame({"parameter": ["CL"]}), [], [], [], 0.0)
    assert "No convergence problems found" in text and "class='warn'" not in text


def test_report_says_what_nuts_sampled_centred(tiny_fit):
    tree = tiny_fit.posterior.copy()
    tree.attrs = {**tree.attrs, "ldpk_centred": "CL,V"}  # as fit() records it for NUTS
    fit = dataclasses.replace(tiny_fit, posterior=tree)
    text = _fit_html(fit, pd.DataFrame({"parameter": ["CL"]}), [], [], [], 0.0)
    assert "(centred: CL,V)" in text
    assert "centred:" not in _fit_html(tiny_fit, pd.DataFrame({"parameter": ["CL"]}), [], [], [], 0.0)  # fmt: skip


def test_a_later_fit_leaves_no_figure_of_an_earlier_one(tiny_fit, tmp_path):
    """rank.png of a two-chain fit must not stay beside the report of a one-chain fit."""
    write_fit_report(tiny_fit, tmp_path)
    assert (tmp_path / "rank.png").exists()
    one_chain = tiny_fit.posterior.copy()
    for g in ("posterior", "posterior_predictive", "log_likelihood"):
        one_chain[g] = tiny_fit.posterior[g].to_dataset().isel(chain=[0])
    written = write_fit_report(dataclasses.replace(tiny_fit, posterior=one_chain), tmp_path)
    assert not (tmp_path / "rank.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_input_files_are_never_overwritten(tiny_fit, theo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "predictions.csv"
    shutil.copy(theo, victim)
    before = victim.read_bytes()
    with pytest.raises(ldpk.DataError, match="refusing to overwrite an input"):
        write_fit_report(tiny_fit, out, protect=(victim,))
    assert victim.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]  # nothing written
    with pytest.raises(ldpk.DataError, match="not a folder"):
        write_fit_report(tiny_fit, victim)
    assert victim.read_bytes() == before


def test_goodness_of_fit_draws_censored_points_distinctly(tiny_fit):
    table = plots.observation_table(tiny_fit)
    table.loc[table.index[-5:], "CENS"] = 1
    fig = plots.plot_goodness_of_fit(tiny_fit, table=table)
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert any("censored" in t for t in texts)
    assert len(fig.axes) == 4


def test_time_bins_recover_nominal_times():
    nominal = np.array([0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24.0])
    rng = np.random.default_rng(1)
    t = np.concatenate([nominal * (1 + 0.02 * rng.standard_normal(10)) for _ in range(12)])
    idx, centres = plots._time_bins(t, 12)
    np.testing.assert_allclose(centres, nominal, rtol=0.03)
    assert np.bincount(idx).tolist() == [12] * 10
    few = np.repeat([5.0, 15, 30, 60], 4)  # destructive design: every time its own bin
    idx, centres = plots._time_bins(few, 12)
    assert centres.tolist() == [5, 15, 30, 60] and np.bincount(idx).tolist() == [4] * 4
    even = np.random.default_rng(2).uniform(0, 24, 100)  # no nominal times: equal-count bins
    idx, centres = plots._time_bins(even, 10)
    assert np.bincount(idx).tolist() == [10] * 10 and np.all(np.diff(centres) > 0)
    assert plots._log_scale([0.01, 5, 0.0]) and not plots._log_scale([1, 50])


def test_cli_fit_end_to_end(theo, tmp_path, capsys):
    cfg = tmp_path / "fit.yaml"
    # the config's fit: section sets sampler options; the command line overrides them
    cfg.write_text("fit: {draws: 100, seed: 1}\nerror:\n  cp: {model: additive}\n")
    out = tmp_path / "fit"
    args = ["fit", "one_compartment", str(theo), "--out", str(out), "--config", str(cfg)]
    assert main([*args, "--method", "laplace", "--seed", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "method laplace" in text
    back = ldpk.load_fit(out)  # the folder: its posterior.nc, read back as a Fit
    assert back.method == "laplace" and back.options.draws == 100 and back.options.seed == 3
    assert back.posterior.attrs["ldpk_method"] == "laplace"
    assert back.posterior["posterior"].sizes["draw"] == 100
    assert back.dataset.source == str(theo) and back.config["error"] == {"cp": {"model": "additive"}}  # fmt: skip
    s, written = back.summary(), pd.read_csv(out / "summary.csv", index_col="parameter")
    np.testing.assert_allclose(written.loc[s.index, ["mean", "sd"]], s[["mean", "sd"]], rtol=1e-12)
    for word in ("CL", "omega_V", "sigma_add_cp", "convergence warning", "wrote"):
        assert word in text
    for name in FIT_REPORT_FILES:
        if name != "rank.png":  # one chain: no rank plot
            assert f"wrote {out / name}" in text
            assert (out / name).is_file()
    assert not (out / "rank.png").exists()
    assert len(pd.read_csv(out / "predictions.csv")) == 132


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ("no_such_model", "THEO", "no built-in model 'no_such_model'"),
        ("one_compartment", "missing.csv", "missing.csv: no such data file"),
        ("one_compartment", "THEO", "--chains 0: must be at least 1"),
    ],
)
def test_cli_fit_errors_are_one_line_with_exit_2(model, data, message, theo, tmp_path, capsys):
    data = str(theo) if data == "THEO" else str(tmp_path / data)
    extra = ["--chains", "0"] if "chains" in message else []
    assert main(["fit", model, data, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldpk fit: error:") and message in err
    assert not (tmp_path / "o").exists()


def test_cli_fit_refuses_out_onto_its_data_before_fitting(theo, tmp_path, capsys):
    data = tmp_path / "study.csv"
    shutil.copy(theo, data)
    assert main(["fit", "one_compartment", str(data), "--out", str(data)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert data.read_bytes() == theo.read_bytes()
