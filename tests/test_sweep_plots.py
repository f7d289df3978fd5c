"""Figures of sweeps (ldpk.plots): time-course bands, metric distributions and metric against
dose, checked against the numbers they draw (np.nanpercentile of the sweep's values)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ldpk  # noqa: E402
from ldpk.errors import DataError  # noqa: E402
from ldpk.plots import plot_metric_vs_dose, plot_sweep, plot_sweep_metrics  # noqa: E402

REGIMENS = ["iv 10", "iv 100", "oral 10", "oral 100"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ds():
    model = ldpk.load_model("one_compartment")
    return ldpk.sweep(
        model,
        ldpk.grid(CL=[1, 2, 4], V=[10, 30]),
        ldpk.regimens([10.0, 100.0], routes=["iv", "oral"]),
        np.linspace(0, 24, 25),
        progress=False,
    )


def _lines(ax):
    """Median lines (labelled with the regimen) and band edges ('_<regimen> <q>th ...')."""
    medians = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    edges = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label().startswith("_")}
    return medians, edges


def test_plot_sweep_bands_are_percentiles_of_the_data(ds, tmp_path):
    png = tmp_path / "sweep.png"
    fig = plot_sweep(ds, png)
    assert len(fig.axes) == 1  # one output, cp
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3 * 4  # median and two band edges per regimen
    assert len(ax.collections) == 4  # one shaded band per regimen
    medians, edges = _lines(ax)
    assert list(medians) == REGIMENS
    assert [t.get_text() for t in ax.get_legend().get_texts()] == REGIMENS
    t = np.linspace(0, 24, 25)
    for r in REGIMENS:
        v = ds["cp"].sel(regimen=r).values  # (set, time)
        np.testing.assert_array_equal(medians[r].get_xdata(), t)
        np.testing.assert_allclose(medians[r].get_ydata(), np.nanpercentile(v, 50, axis=0), rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose(edges[f"_{r} 5th percentile"].get_ydata(), np.nanpercentile(v, 5, axis=0), rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose(edges[f"_{r} 95th percentile"].get_ydata(), np.nanpercentile(v, 95, axis=0), rtol=1e-12)  # fmt: skip
    assert ax.get_xlabel() == "time [h]"
    assert ax.get_ylabel() == "cp [mg/L]"
    assert ax.get_yscale() == "log"  # values span more than two decades
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000


def test_plot_sweep_leaves_out_failed_sets_and_takes_options(ds):
    bad = ds.copy(deep=True)
    bad["cp"].values[0] = np.nan  # set 0 failed under every regimen
    bad.attrs["n_failed"] = 1
    fig = plot_sweep(bad, band=(10, 90), log=False)
    ax = fig.axes[0]
    medians, edges = _lines(ax)
    v = ds["cp"].sel(regimen="oral 100").values[1:]
    np.testing.assert_allclose(medians["oral 100"].get_ydata(), np.percentile(v, 50, axis=0), rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(edges["_oral 100 90th percentile"].get_ydata(), np.percentile(v, 90, axis=0), rtol=1e-12)  # fmt: skip
    assert ax.get_yscale() == "linear"
    assert "1 failed sets left out" in fig.texts[0].get_text()
    with pytest.raises(DataError, match="no time courses of \\['ce'\\]"):
        plot_sweep(ds, outputs=["ce"])
    with pytest.raises(DataError, match="band"):
        plot_sweep(ds, band=(95, 5))
    with pytest.raises(DataError, match="time_courses=False"):
        plot_sweep(ds.drop_vars("cp"))


def test_plot_sweep_metrics_one_panel_per_metric(ds, tmp_path):
    png = tmp_path / "metrics.png"
    fig = plot_sweep_metrics(ds, png)
    assert len(fig.axes) == 3  # cp_auc, cp_cmax, cp_tmax
    assert [ax.get_ylabel() for ax in fig.axes] == ["cp_auc [mg/L*h]", "cp_cmax [mg/L]", "cp_tmax [h]"]  # fmt: skip
    for ax in fig.axes:
        assert len(ax.patches) == 4  # one box per regimen
        assert [t.get_text() for t in ax.get_xticklabels()] == REGIMENS
    # The box medians are the metric's medians over the sets.
    ax = fig.axes[0]
    drawn = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_gid() == "median"]
    np.testing.assert_allclose(drawn, np.median(ds["cp_auc"].values, axis=0), rtol=1e-12)
    assert png.read_bytes()[:8] == PNG
    # By metric name (every output) or variable name; unknown names are refused.
    assert len(plot_sweep_metrics(ds, metrics="auc").axes) == 1
    assert len(plot_sweep_metrics(ds, metrics=["cp_cmax", "tmax"]).axes) == 2
    with pytest.raises(DataError, match="no metric 'mrt'.*cp_auc, cp_cmax, cp_tmax"):
        plot_sweep_metrics(ds, metrics=["mrt"])


def test_plot_metric_vs_dose_from_regimen_names(ds, tmp_path):
    png = tmp_path / "dose.png"
    fig = plot_metric_vs_dose(ds, "auc", png)
    ax = fig.axes[0]
    medians, edges = _lines(ax)
    assert list(medians) == ["iv", "oral"]  # one line per route (one schedule)
    for route in ("iv", "oral"):
        np.testing.assert_array_equal(medians[route].get_xdata(), [10.0, 100.0])
        v = np.stack([ds["cp_auc"].sel(regimen=f"{route} {d}").values for d in (10, 100)])
        np.testing.assert_allclose(medians[route].get_ydata(), np.median(v, axis=1), rtol=1e-12)
        np.testing.assert_allclose(edges[f"_{route} 5th percentile"].get_ydata(), np.percentile(v, 5, axis=1), rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose(edges[f"_{route} 95th percentile"].get_ydata(), np.percentile(v, 95, axis=1), rtol=1e-12)  # fmt: skip
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlabel() == "dose [mg]" and ax.get_ylabel() == "cp_auc [mg/L*h]"
    assert png.read_bytes()[:8] == PNG
    # tmax is 0 after an IV bolus: no log axes.
    ax = plot_metric_vs_dose(ds, "cp_tmax").axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")


def test_plot_metric_vs_dose_from_a_parameter_coordinate(ds):
    # Any parameter coordinate can stand for the dose: here CL, one line per regimen.
    ax = plot_metric_vs_dose(ds, "cp_cmax", dose="CL").axes[0]
    medians, _ = _lines(ax)
    assert list(medians) == REGIMENS
    np.testing.assert_array_equal(medians["iv 100"].get_xdata(), [1.0, 2.0, 4.0])
    cmax = ds["cp_cmax"].sel(regimen="iv 100").values
    cl = ds["CL"].values
    np.testing.assert_allclose(medians["iv 100"].get_ydata(), [np.median(cmax[cl == c]) for c in (1, 2, 4)], rtol=1e-12)  # fmt: skip
    assert ax.get_xlabel() == "CL [L/h]"


def test_plot_metric_vs_dose_without_doses_is_refused(ds):
    renamed = ds.assign_coords(regimen=["a", "b", "c", "d"])
    with pytest.raises(DataError, match="cannot find the doses.*regimen 'a'"):
        plot_metric_vs_dose(renamed, "cp_auc")
    with pytest.raises(DataError, match="no parameter coordinate 'DOSE'"):
        plot_metric_vs_dose(renamed, "cp_auc", dose="DOSE")
    with pytest.raises(DataError, match="no metric 'cmin'"):
        plot_metric_vs_dose(ds, "cmin")
