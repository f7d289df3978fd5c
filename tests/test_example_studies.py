"""The bundled example studies (examples/data): files, columns, designs, truth and fit configs,
and that examples/make_example_studies.py reproduces them exactly from the recorded seed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import ldpk
from ldpk.population import fit_spec

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"
SCRIPT = REPO / "examples" / "make_example_studies.py"

TIDY = [
    "ID", "TIME", "TIME_UNIT", "ORGAN", "VALUE", "UNIT", "WEIGHT", "DOSE", "ROUTE", "DOSE_TIME",
    "STUDY", "LLOQ", "BLQ",
]  # fmt: skip
NONMEM = ["ID", "TIME", "AMT", "EVID", "CMT", "OUTPUT", "DV", "MDV", "BLQ", "LLOQ", "WT", "AGE", "STUDY"]  # fmt: skip
STUDIES = {
    "mitochondria_iv_biodistribution": ("mitochondria_iv", TIDY),
    "ev_89zr_pet": ("ev_iv", TIDY),
    "msc_111in_bli": ("msc_pbpk", TIDY),
    "cart_qpcr": ("cart_cellular_kinetics", NONMEM),
}


def _generator():
    spec = importlib.util.spec_from_file_location("make_example_studies", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def _table(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}.csv")


def _truth(name: str) -> dict:
    return json.loads((DATA / f"{name}.truth.json").read_text())


def _model(name: str) -> ldpk.Model:
    m = ldpk.load_model(STUDIES[name][0])
    return m.for_species("mouse") if name == "msc_111in_bli" else m


@pytest.mark.parametrize("name", STUDIES)
def test_files_and_columns(name: str) -> None:
    for ext in (".csv", ".fit.yaml", ".truth.json"):
        assert (DATA / f"{name}{ext}").is_file(), f"{name}{ext} missing"
    t = _table(name)
    assert list(t.columns) == STUDIES[name][1]
    assert len(t) <= 400
    assert (t["STUDY"] == name).all()
    assert set(t["BLQ"].unique()) <= {0, 1}
    assert f"## {name}" in (DATA / "README.md").read_text()


@pytest.mark.parametrize("name", [n for n in STUDIES if n != "cart_qpcr"])
def test_tidy_values(name: str) -> None:
    t = _table(name)
    model = _model(name)
    assert t["TIME_UNIT"].nunique() == 1
    assert (t["DOSE_TIME"] == 0).all() and (t["ROUTE"] == "iv").all()
    assert "iv" in model.route_names
    assert (t["VALUE"] > 0).all() and np.isfinite(t["LLOQ"]).all()
    blq = t["BLQ"] == 1
    assert (t.loc[blq, "VALUE"] == t.loc[blq, "LLOQ"]).all()
    assert (t.loc[~blq, "VALUE"] >= t.loc[~blq, "LLOQ"]).all()
    per_g = t["UNIT"] == "%ID/g"
    assert (t.loc[per_g, "WEIGHT"] > 0).all()
    assert t.loc[~per_g, "WEIGHT"].isna().all()
    # every ORGAN is mapped to a model output, in the truth and in the fit config's data:
    outs = _truth(name)["outputs"]
    assert set(outs) == set(t["ORGAN"])
    assert all(out in model.output_names for out in outs.values())
    cfg = yaml.safe_load((DATA / f"{name}.fit.yaml").read_text())
    assert cfg["data"] == {"decay_corrected": True, "outputs": outs}


def test_mitochondria_design() -> None:
    t = _table("mitochondria_iv_biodistribution")
    per_animal = t.groupby("ID")
    assert per_animal["TIME"].nunique().eq(1).all()  # destructive: one time per mouse
    assert per_animal["ORGAN"].nunique().eq(7).all()
    assert set(t["ORGAN"]) == {"lung", "heart", "liver", "spleen", "kidney", "brain", "blood"}
    animals_per_time = t.groupby("TIME")["ID"].nunique()
    assert len(animals_per_time) >= 5 and (animals_per_time == 4).all()
    assert set(t.loc[t["ORGAN"] != "blood", "UNIT"]) == {"%ID/g"}
    # organ weights vary between mice around the physiology tables' reference
    w = t[t["ORGAN"] == "liver"].groupby("ID")["WEIGHT"].first()
    ref = ldpk.physiology.lookup("mouse", "liver.weight").value
    assert w.nunique() > 20 and abs(np.log(w.median() / ref)) < 0.1


def test_ev_design() -> None:
    t = _table("ev_89zr_pet")
    assert t["ID"].nunique() == 6
    pet = t[t["UNIT"] == "%ID/g"]
    assert set(pet["ORGAN"]) == {"liver", "spleen", "lung", "kidney"}
    assert pet.groupby("ID")["TIME"].nunique().eq(7).all()  # longitudinal, same mice
    assert pet.groupby(["ID", "TIME"]).size().eq(4).all()
    blood = t[t["ORGAN"] == "plasma"]
    assert blood.groupby("ID").size().eq(5).all() and blood["TIME"].max() <= 0.5


def test_msc_design() -> None:
    t = _table("msc_111in_bli")
    assert t["ID"].nunique() == 6
    spect, bli = t[t["UNIT"] == "%ID"], t[t["UNIT"] == "photons/s"]
    assert set(spect["ORGAN"]) == {"lung", "liver", "spleen", "kidney"}
    assert set(bli["ORGAN"]) == {"total", "thorax"}
    for part, per in ((spect, 4), (bli, 2)):
        assert part.groupby("ID")["TIME"].nunique().eq(7).all()
        assert part.groupby(["ID", "TIME"]).size().eq(per).all()
    assert (t["DOSE"] == 1e6).all()


def test_cart_design() -> None:
    t = _table("cart_qpcr")
    doses, obs = t[t["EVID"] == 1], t[t["EVID"] == 0]
    assert t["ID"].nunique() >= 30
    assert doses.groupby("ID").size().eq(1).all() and (doses["TIME"] == 0).all()
    assert (doses["MDV"] == 1).all() and (obs["MDV"] == 0).all()
    assert (obs["OUTPUT"] == "transgene").all()
    assert obs.groupby("ID")["TIME"].is_monotonic_increasing.all()
    assert obs["TIME"].max() >= 80 and obs.groupby("ID").size().between(3, 12).all()
    blq = obs["BLQ"] == 1
    assert 0.05 < blq.mean() < 0.5
    assert (obs.loc[blq, "DV"] == obs.loc[blq, "LLOQ"]).all()
    assert (obs.loc[~blq, "DV"] >= obs.loc[~blq, "LLOQ"]).all()
    ds = ldpk.read_data(ldpk.load_model("cart_cellular_kinetics"), DATA / "cart_qpcr.csv")
    assert ds.n_subjects == t["ID"].nunique() and int((ds.censored == 1).sum()) == int(blq.sum())


@pytest.mark.parametrize("name", STUDIES)
def test_truth_and_fit_config(name: str) -> None:
    truth = _truth(name)
    assert truth["study"] == name and truth["model"] == STUDIES[name][0]
    seed = truth["seed"]
    assert isinstance(seed, list) and all(isinstance(s, int) for s in seed)
    model = _model(name)
    spec = fit_spec(model, None, DATA / f"{name}.fit.yaml")
    # the config estimates exactly the parameters with a true typical value, with
    # between-subject variability exactly where the simulation had it
    assert set(spec.priors) == set(truth["typical"])
    assert set(spec.iiv) == set(truth["omega"])
    assert 3 <= len(spec.priors) <= 6 and 1 <= len(spec.iiv) <= 3
    for out in truth["error"]:
        assert out in model.output_names and out in spec.errors
    # priors are not centred on the truth
    for p, prior in spec.priors.items():
        a = dict(prior.args)
        centre = math.exp(a["loc"]) if prior.dist == "lognormal" else a["a"] / (a["a"] + a["b"])
        assert abs(math.log(centre / truth["typical"][p])) > 0.05, p
    cfg = yaml.safe_load((DATA / f"{name}.fit.yaml").read_text())
    assert set(cfg) <= {"parameters", "error", "data", "fit", "ode"}


def test_generator_reproduces_bundled_files(tmp_path: Path) -> None:
    gen = _generator()
    seeds = {tuple(_truth(n)["seed"]) for n in STUDIES}
    assert len({s[0] for s in seeds}) == 1
    written = gen.main(["--out", str(tmp_path), "--seed", str(next(iter(seeds))[0])])
    assert {p.name for p in written} == {
        f"{n}{ext}" for n in STUDIES for ext in (".csv", ".fit.yaml", ".truth.json")
    }
    for p in written:
        assert p.read_bytes() == (DATA / p.name).read_bytes(), f"{p.name} differs"
    # never overwrites without --force
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        gen.main(["--out", str(tmp_path), "--study", "cart_qpcr"])
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "name",
    [
        "mitochondria_iv_biodistribution",
        "ev_89zr_pet",
        "msc_111in_bli",
        "cart_qpcr",
    ],
)
def test_read_as_fit_does(name: str) -> None:
    """Each study reads with its config's data: options (as ldpk.fit reads it), every
    observation measures the output it was simulated from, and the error models match."""
    from ldpk.data import read_study

    model = _model(name)
    t = _table(name)
    cfg = yaml.safe_load((DATA / f"{name}.fit.yaml").read_text())
    ds = read_study(model, DATA / f"{name}.csv", **(cfg.get("data") or {}))
    obs = t if "ORGAN" in t else t[t["EVID"] == 0]
    assert ds.n_subjects == t["ID"].nunique() and ds.n_obs == len(obs)
    assert int((ds.censored == 1).sum()) == int(obs["BLQ"].sum())
    truth = _truth(name)
    assert set(ds.outputs_observed()) == set(truth["outputs"].values())
    spec = fit_spec(model, ds, cfg)
    assert {o: e.kind for o, e in spec.errors.items()} == {
        o: e["model"] for o, e in truth["error"].items()
    }


def test_msc_percent_id_reads_back_the_simulated_values() -> None:
    """The %ID rows of msc_111in_bli are In111_<organ> (cell-eq) × Dataset.scale = 100/DOSE:
    at the truth's typical values the model is within the 12 % proportional error and the
    between-mouse variability of the data, and with each mouse's own parameters (drawn again
    from the recorded seed as the generator did) it reproduces the simulated values before
    rounding to 4 significant digits."""
    from ldpk.data import read_study

    name = "msc_111in_bli"
    model, truth = _model(name), _truth(name)
    cfg = yaml.safe_load((DATA / f"{name}.fit.yaml").read_text())
    ds = read_study(model, DATA / f"{name}.csv", **cfg["data"])
    spect = np.array([ds.output_names[o].startswith("In111_") for o in ds.output])
    np.testing.assert_allclose(ds.obs_scale[spect], 100 / truth["dose_cells"], rtol=1e-12)
    np.testing.assert_array_equal(ds.obs_scale[~spect], 1.0)  # photons/s: the output's unit
    times = np.unique(ds.time)
    k = np.searchsorted(times, ds.time)
    dose = [ldpk.Bolus(truth["dose_cells"], route="iv")]
    fitted = spect & (ds.censored == 0)
    sd = truth["error"]["In111_lung"]["proportional"]

    sim = ldpk.simulate(model, truth["typical"], dose, times)
    pred = np.array([np.asarray(sim[ds.output_names[o]])[j] for o, j in zip(ds.output, k, strict=True)])  # fmt: skip
    log_ratio = np.log(ds.dv / (pred * ds.obs_scale))[fitted]
    assert abs(np.median(log_ratio)) < 0.05
    assert 0.5 * sd < np.median(np.abs(log_ratio)) < 1.5 * sd  # 0.674 sd without the IIV

    gen = _generator()
    rng = np.random.default_rng(truth["seed"])
    params = gen._individual(rng, truth["typical"], truth["omega"], ds.n_subjects)
    sim = ldpk.simulate(model, params, dose, times)
    pred = np.array(
        [np.asarray(sim[ds.output_names[o]])[s, j] for s, o, j in zip(ds.subject, ds.output, k, strict=True)]
    )  # fmt: skip
    # the generator's noise draws, in its order: per mouse, per time, 4 SPECT organs, 2 BLI
    z = rng.standard_normal(len(ds.dv))  # rows of the file are in the generator's order
    relative = (ds.dv / (pred * ds.obs_scale) - 1)[fitted]
    assert 0.5 * sd < np.median(np.abs(relative)) / 0.674 < 1.5 * sd
    simulated = (pred * ds.obs_scale * (1 + sd * z[ds.row - 1]))[fitted]
    np.testing.assert_allclose(ds.dv[fitted], simulated, rtol=5.001e-4)  # 4 significant digits
