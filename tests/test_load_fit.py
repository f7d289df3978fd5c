"""Fit.save / load_fit: a saved fit (a file, or the folder `ldpk fit --out` writes) reads back
as a Fit with the same summary, predictions, options, data and model (a model changed with
with_values comes back with those values); the file still opens with arviz; a
user's mistakes are one DataError naming the path."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.errors import DataError

CFG = {"error": {"cp": {"model": "additive"}}}
REGIMEN = [ldpk.Bolus(320.0, route="oral")]
TIMES = np.linspace(0.0, 24.0, 49)


@pytest.fixture(scope="module")
def model() -> ldpk.Model:
    return ldpk.load_model("one_compartment")


@pytest.fixture(scope="module")
def theo_csv(reference_data_dir: Path) -> Path:
    return reference_data_dir / "theo_sd.csv"


def _fit(model, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # F and TLAG held at their model values
        return ldpk.fit(model, data, config=CFG, method="map", progress=False)


@pytest.fixture(scope="module")
def fit(model, theo_csv) -> ldpk.Fit:
    """One quick MAP fit (compiling a second would double the time) of the model with a value
    changed from its file's (F, held at its model value), to a Dataset read with no options."""
    changed = model.with_values(F=0.8)
    return _fit(changed, ldpk.read_data(changed, theo_csv))


@pytest.fixture(scope="module")
def saved(fit, tmp_path_factory) -> Path:
    """A folder as `ldpk fit --out` writes it (posterior.nc inside)."""
    out = tmp_path_factory.mktemp("fit")
    fit.save(out / "posterior.nc")
    return out


@pytest.mark.parametrize("by", ["folder", "file"])
def test_load_fit_returns_the_same_fit(fit, saved, by):
    back = ldpk.load_fit(saved if by == "folder" else saved / "posterior.nc")
    assert isinstance(back, ldpk.Fit)
    pd.testing.assert_frame_equal(back.summary(), fit.summary())
    a = fit.predict(REGIMEN, TIMES)["cp"].values
    b = back.predict(REGIMEN, TIMES)["cp"].values
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert back.map_values == fit.map_values
    assert back.options == fit.options and back.ode == fit.ode and back.kernel == fit.kernel
    assert back.method == fit.method and back.timings == fit.timings
    assert back.spec == fit.spec and back.config == fit.config
    np.testing.assert_array_equal(back.dataset.dv, fit.dataset.dv)
    assert back.dataset.subjects == fit.dataset.subjects
    assert back.dataset.source == fit.dataset.source  # the original path, not a temporary one
    assert back.model == fit.model and back.model.source == fit.model.source
    assert back.convergence() == fit.convergence()
    np.testing.assert_array_equal(back.draws("CL"), fit.draws("CL"))
    assert set(back.posterior.children) == set(fit.posterior.children)
    assert back.posterior.attrs == fit.posterior.attrs
    pd.testing.assert_frame_equal(back.exposure(REGIMEN, TIMES), fit.exposure(REGIMEN, TIMES))
    assert back.parameter_table(1) == fit.parameter_table(1)


def test_a_loaded_fit_saves_again(saved, tmp_path):
    back = ldpk.load_fit(saved)
    again = ldpk.load_fit(back.save(tmp_path / "again.nc"))
    pd.testing.assert_frame_equal(again.summary(), back.summary())
    assert again.dataset.source == back.dataset.source


def test_the_file_still_opens_with_arviz(fit, saved):
    import arviz as az

    tree = az.from_netcdf(str(saved / "posterior.nc"))
    for group in fit.posterior.children:
        a, b = fit.posterior[group].to_dataset(), tree[group].to_dataset()
        for name in a.variables:
            np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=f"{group}/{name}")  # fmt: skip


def test_a_model_changed_with_with_values_reloads_with_its_values(model, fit, saved):
    back = ldpk.load_fit(saved)
    assert fit.model != model and back.model.parameter("F").value == 0.8
    assert {p.name: p.value for p in back.model.parameters} == {p.name: p.value for p in fit.model.parameters}  # fmt: skip
    assert back.data_options == {}  # the Dataset was read with no options: checked on saving


def test_no_such_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as err:
        ldpk.load_fit(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_folder_without_posterior(tmp_path):
    with pytest.raises(DataError, match="without posterior.nc") as err:
        ldpk.load_fit(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_not_netcdf(tmp_path):
    bad = tmp_path / "posterior.nc"
    bad.write_text("ID,TIME,DV\n1,0,1\n")
    for path in (bad, tmp_path):
        with pytest.raises(DataError, match="not a netCDF-4") as err:
            ldpk.load_fit(path)
        assert str(bad) in str(err.value)


def test_netcdf_without_stored_inputs(fit, tmp_path):
    path = tmp_path / "bare.nc"
    fit.posterior.to_netcdf(path, engine="h5netcdf")  # as arviz or an older ldpk wrote it
    with pytest.raises(DataError, match=r"without ldpk's stored fit inputs.*arviz\.from_netcdf") as err:  # fmt: skip
        ldpk.load_fit(path)
    assert str(path) in str(err.value)


def test_a_python_built_model_is_saved_but_not_reloadable(fit, tmp_path):
    f = dataclasses.replace(fit, model=dataclasses.replace(fit.model, source="<python>"))
    path = f.save(tmp_path / "fit.nc")
    with pytest.raises(DataError, match=r"built in Python.*arviz\.from_netcdf") as err:
        ldpk.load_fit(path)
    assert str(path) in str(err.value)


def test_a_dataset_read_with_unknown_options_is_not_reloadable(model, fit, theo_csv, tmp_path):
    ds = ldpk.read_data(model, theo_csv, time_unit="min")  # fit() only saw the Dataset
    f = dataclasses.replace(fit, dataset=ds, data_options=None)
    with pytest.raises(DataError, match="given the data already read") as err:
        ldpk.load_fit(f.save(tmp_path / "fit.nc"))
    assert str(tmp_path / "fit.nc") in str(err.value)


def test_config_keys_that_are_not_strings_survive_json():
    from ldpk.inference._fit import _dumps, _jsonable, _loads

    cfg = {"data": {"dvid": {1: "cp", 2.5: "x"}, "columns": {"CONC": "DV"}}, "t": (1, 2)}
    assert _loads(_dumps(_jsonable(cfg, "cfg"))) == {**cfg, "t": [1, 2]}
