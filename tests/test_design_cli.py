"""`ldpk design` end to end (in-process): the bundled example design file
(examples/designs/msc_mouse.yaml) through the CLI, its tables checked against direct calls of
the public ldpk.design functions, NumPy percentiles and a closed-form dose selection, and
every refusal of a bad design file (exit code 2, one message naming the file and the entry,
nothing simulated or compiled, nothing written). Then the split behind it: run_design
computes and writes nothing, ldpk.report.write_design_report writes the folder (atomically,
replacing an earlier design report's files), ldpk.plots draws the figures."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import ldpk
from ldpk import design as dz
from ldpk.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "designs" / "msc_mouse.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The example through ``ldpk design`` once (about 20-30 s on 2 cores, most of it the
    first compilation of msc_pbpk's kernels and their derivatives)."""
    out = tmp_path_factory.mktemp("design") / "msc"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["design", str(EXAMPLE), "--out", str(out), "--no-progress"])
    return rc, out, buf.getvalue()


def _direct_trial():
    """The example's virtual trial built by hand from the public API (not from the file)."""
    model = ldpk.load_model("msc_pbpk").for_species("mouse")
    regs = {"low": [ldpk.Bolus(50, 0, "iv")], "high": [ldpk.Bolus(100, 0, "iv")]}
    pop = {"typical": {}, "omega": {"E_LUNG": 0.3, "K_REL_LUNG": 0.3, "KD": 0.5}}
    trial = dz.virtual_trial(
        model, pop, regs, np.linspace(0, 240, 121), n_trials=20, n_subjects=20, seed=0,
        outputs=["In111_lung", "In111_liver"], metrics=["auc", "cmax"],
    )  # fmt: skip
    return model, regs, trial


def test_example_writes_every_file(example_run):
    rc, out, printed = example_run
    assert rc == 0, printed
    names = [
        "attainment.csv", "prediction_intervals.csv", "parameters.csv", "fim.csv",
        "sampling_times.csv", "dose_selection.csv", "prediction_bands.png", "attainment.png",
        "sampling_times.png", "dose_response.png", "report.html",
    ]  # fmt: skip
    assert list(ldpk.report.DESIGN_REPORT_FILES) == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary left over
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    for name in names:
        assert f"wrote {out / name}" in printed
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG
    assert "target attainment" in printed and "lung exposure" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert "MSC lung exposure in mice" in page and "E_LUNG" in page and "day-7 lung" in page
    assert "<h2>Dose selection</h2>" in page and "lowest dose with attainment" in printed
    assert page.count("<style>") == 1 and ldpk.report._CSS in page  # the fit report's CSS


def test_attainment_table_equals_a_direct_call(example_run):
    rc, out, _ = example_run
    assert rc == 0
    df = _read_csv(out / "attainment.csv")
    assert list(df.columns) == ["target", "criterion", "regimen", "median", "lower", "upper", "mean", "n_trials", "interval"]  # fmt: skip
    assert len(df) == 2 * 2 and set(df["regimen"]) == {"low", "high"}
    for c in ("median", "lower", "upper", "mean"):
        assert df[c].between(0, 1).all()
    assert (df["lower"] <= df["median"]).all() and (df["median"] <= df["upper"]).all()
    assert (df["n_trials"] == 20).all() and (df["interval"] == 0.9).all()
    _, _, trial = _direct_trial()
    for name, crit in (
        ("lung exposure", ("In111_lung_auc", ">=", 1000.0)),
        ("day-7 lung", ("In111_lung", "<=", 5.0, 168.0)),
    ):
        direct = dz.attainment(trial, crit, interval=0.9).summary
        for reg in ("low", "high"):
            row = df[(df["target"] == name) & (df["regimen"] == reg)].iloc[0]
            for c in ("median", "lower", "upper", "mean"):
                assert row[c] == float(direct[c].sel(regimen=reg)), (name, reg, c)  # equal
    # Independent of attainment(): the fraction with AUC >= 1000 in trial 0, counted by hand.
    auc = trial["In111_lung_auc"].sel(regimen="high").values  # (trial, subject)
    by_trial = (auc >= 1000).mean(axis=1)
    row = df[(df["target"] == "lung exposure") & (df["regimen"] == "high")].iloc[0]
    assert row["median"] == np.median(by_trial) and row["mean"] == pytest.approx(by_trial.mean(), abs=1e-15)  # fmt: skip
    # a higher dose gives more lung exposure: more subjects over the AUC threshold
    assert (
        df.set_index(["target", "regimen"]).loc[("lung exposure", "high"), "median"]
        > df.set_index(["target", "regimen"]).loc[("lung exposure", "low"), "median"]
    )


def test_prediction_intervals_match_numpy_percentiles(example_run):
    rc, out, _ = example_run
    assert rc == 0
    df = _read_csv(out / "prediction_intervals.csv")
    stats = ["p05", "p50", "p95"]
    assert list(df.columns) == ["regimen", "output", "unit", "time"] + [f"{p}{s}" for p in stats for s in ("", "_lower", "_upper")]  # fmt: skip
    assert len(df) == 2 * 2 * 121
    for p in stats:
        assert (df[f"{p}_lower"] <= df[p] + 1e-12).all() and (df[p] <= df[f"{p}_upper"] + 1e-12).all()  # fmt: skip
    assert (df["p05"] <= df["p50"] + 1e-12).all() and (df["p50"] <= df["p95"] + 1e-12).all()
    _, _, trial = _direct_trial()
    y = trial["In111_lung"].sel(regimen="low").values[:, :, 84]  # (trial, subject) at t = 168
    per_trial = np.percentile(y, 95, axis=1)  # linear interpolation, as numpy's default
    row = df[(df["regimen"] == "low") & (df["output"] == "In111_lung") & (df["time"] == 168)].iloc[0]  # fmt: skip
    np.testing.assert_allclose(row["p95"], np.median(per_trial), rtol=1e-12)
    np.testing.assert_allclose(row["p95_lower"], np.quantile(per_trial, 0.05), rtol=1e-12)
    np.testing.assert_allclose(row["p95_upper"], np.quantile(per_trial, 0.95), rtol=1e-12)
    # A linear model: the low dose (50) is exactly half the high dose (100) for every subject.
    low = df[(df["regimen"] == "low") & (df["output"] == "In111_liver")]["p50"].to_numpy()
    high = df[(df["regimen"] == "high") & (df["output"] == "In111_liver")]["p50"].to_numpy()
    np.testing.assert_allclose(low, high / 2, rtol=1e-9, atol=1e-12)


def test_sampling_tables_match_the_fim(example_run):
    rc, out, _ = example_run
    assert rc == 0
    params = _read_csv(out / "parameters.csv")
    names = ["E_LUNG", "K_REL_LUNG", "omega2_E_LUNG", "omega2_K_REL_LUNG", "sigma2_prop"]
    assert list(params["parameter"]) == names
    assert {"value", "se", "rse_percent", "se_optimised", "rse_percent_optimised", "shrinkage_imaging"} <= set(params.columns)  # fmt: skip
    assert (params["rse_percent"] > 0).all() and (params["se"] > 0).all()
    np.testing.assert_allclose(params["rse_percent"], 100 * params["se"] / params["value"], rtol=1e-12)  # fmt: skip
    shrink = params["shrinkage_imaging"].to_numpy()
    assert np.isnan(shrink[[0, 1, 4]]).all() and ((shrink[2:4] > 0) & (shrink[2:4] < 1)).all()
    model = ldpk.load_model("msc_pbpk").for_species("mouse")
    d = dz.Design(
        groups=[dz.Group(n=12, times=[1, 24, 72, 168], regimen=[ldpk.Bolus(100, 0, "iv")])],
        output="In111_lung", fixed_effects={"E_LUNG": 0.23, "K_REL_LUNG": 0.36},
        omega2={"E_LUNG": 0.09, "K_REL_LUNG": 0.09}, residual=dz.Residual(proportional=0.04),
    )  # fmt: skip
    fim = dz.fisher_information(model, d)
    np.testing.assert_allclose(params["rse_percent"], dz.rse_percent(fim), rtol=1e-12)
    matrix = _read_csv(out / "fim.csv")
    assert list(matrix.columns) == ["parameter", *names]
    np.testing.assert_allclose(matrix[names].to_numpy(), fim.matrix, rtol=1e-12, atol=1e-12)
    times = _read_csv(out / "sampling_times.csv")
    assert list(times["time_start"]) == [1, 24, 72, 168]
    grid = [0.5, 1, 2, 4, 8, 12, 24, 48, 72, 96, 120, 168, 240]
    assert set(times["time_optimised"]) <= set(grid) and times["time_optimised"].is_unique
    eff = float(times["efficiency"].iloc[0])
    assert eff >= 1 - 1e-9  # the exchange never ends worse than its start (on the grid)
    np.testing.assert_allclose(eff, np.exp((times["ln_det_optimised"].iloc[0] - dz.ln_det(fim)) / len(names)), rtol=1e-9)  # fmt: skip
    assert np.all(np.isfinite(params["rse_percent_optimised"]))  # the optimum is not singular


def test_dose_selection_equals_a_direct_call_and_the_closed_form(example_run):
    """dose_selection.csv against select_dose called with the same inputs and seed, and
    against the selection recomputed from the closed form of a linear model: each mouse's
    lung AUC is proportional to the dose, so it reaches AUC >= 1000 from the dose
    c_i = 100 * 1000 / AUC_i(100) on (from the example's own trial at dose 100, the same
    seed and so the same mice). With the kernel smoothing of select_dose (normal CDF on log
    dose, its bandwidth) the 20 % quantile over trials of the fraction attaining is 0.9 at
    the selected dose (Brent to 1e-10 on log dose: rtol 1e-8); unsmoothed (the 90th
    percentile of c_i per trial, then the 80th percentile over trials) within 15 %, the
    smoothing's bias with 20 mice per trial."""
    from scipy.optimize import brentq
    from scipy.special import ndtr

    rc, out, _ = example_run
    assert rc == 0
    df = _read_csv(out / "dose_selection.csv")
    assert list(df.columns) == ["schedule", "dose", "total", "median", "lower", "upper", "status", "recommended"]  # fmt: skip
    assert list(df["schedule"]) == ["high"] and df["status"].iloc[0] == "selected"
    model, regs, trial = _direct_trial()
    pop = {"typical": {}, "omega": {"E_LUNG": 0.3, "K_REL_LUNG": 0.3, "KD": 0.5}}
    sel = dz.select_dose(
        model, pop, {"high": regs["high"]}, ("In111_lung_auc", ">=", 1000.0),
        np.linspace(0, 240, 121), doses=[25, 50, 100, 200], target=0.9, confidence=0.8,
        interval=0.9, n_trials=20, n_subjects=20, seed=0,
        outputs=["In111_lung", "In111_liver"], metrics=["auc", "cmax"],
    )  # fmt: skip
    row = df.iloc[0]
    assert row["dose"] == sel.dose and row["total"] == sel.dose and bool(row["recommended"])
    for c in ("median", "lower", "upper"):
        assert row[c] == float(sel.table.loc["high", c])
    auc = trial["In111_lung_auc"].sel(regimen="high").values  # (trial, subject) at dose 100
    log_cross = np.log(100 * 1000 / auc)

    def gap(x: float) -> float:
        frac = ndtr((x - log_cross) / sel.bandwidth).mean(axis=1)  # per trial
        return float(np.quantile(frac, 0.2)) - 0.9

    oracle = float(np.exp(brentq(gap, np.log(25), np.log(200), xtol=1e-12)))
    np.testing.assert_allclose(row["dose"], oracle, rtol=1e-8)
    per_trial = np.quantile(np.exp(log_cross), 0.9, axis=1, method="inverted_cdf")
    np.testing.assert_allclose(row["dose"], np.quantile(per_trial, 0.8), rtol=0.15)
    assert 25 < row["dose"] < 200


# ---- refusals ------------------------------------------------------------------------------
BASE = yaml.safe_load(EXAMPLE.read_text())


def _edit(path: str, value, base=None):
    """A copy of the example with the entry at ``path`` (dotted, [i] for list items) set to
    ``value`` (``...``: deleted)."""
    spec = copy.deepcopy(BASE if base is None else base)
    keys = path.replace("[", ".").replace("]", "").split(".")
    node = spec
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = int(keys[-1]) if isinstance(node, list) else keys[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return spec


BAD = {
    "unknown top-level key": (
        _edit("tragets", []),
        "tragets: unknown key — did you mean 'targets'?",
    ),  # fmt: skip
    "unknown key in a target": (
        _edit("targets[0].thresold", 3),
        "targets[0].thresold: unknown key",
    ),  # fmt: skip
    "unknown parameter": (
        _edit("population.omega.E_LUNGG", 0.3),
        "population.omega.E_LUNGG: model 'msc_pbpk' has no parameter 'E_LUNGG' — did you mean 'E_LUNG'?",
    ),  # fmt: skip
    "unknown parameter in fixed effects": (
        _edit("sampling.fixed_effects.KDD", 0.1),
        "sampling.fixed_effects.KDD: model 'msc_pbpk' has no parameter 'KDD' — did you mean 'KD'?",
    ),  # fmt: skip
    "unknown output": (
        _edit("outputs[1]", "In111_lungs"),
        "outputs[1]: model 'msc_pbpk' has no output 'In111_lungs' — did you mean 'In111_lung'?",
    ),  # fmt: skip
    "unknown sampled output": (
        _edit("sampling.output", "lung"),
        "sampling.output: model 'msc_pbpk' has no output 'lung'; valid: In111_lung, ",
    ),
    "bad op": (
        _edit("targets[0].op", "=>"),
        "targets[0].op: '=>' is not a comparison; valid: >=, >, <=, <",
    ),  # fmt: skip
    "negative group size": (
        _edit("sampling.groups[0].n", -3),
        "sampling.groups[0].n: must be > 0",
    ),  # fmt: skip
    "negative n_trials": (
        _edit("trial.n_trials", -1),
        "trial.n_trials: must be a whole number >= 1",
    ),  # fmt: skip
    "fractional n_subjects": (
        _edit("trial.n_subjects", 2.5),
        "trial.n_subjects: must be a whole number",
    ),  # fmt: skip
    "missing regimen": (
        _edit("sampling.groups[0].regimen", "medium"),
        "sampling.groups[0].regimen: unknown regimen 'medium'; valid: low, high",
    ),  # fmt: skip
    "metric not computed": (
        _edit("targets[0].variable", "In111_lung_tmax"),
        "targets[0].variable: 'In111_lung_tmax' is not computed: add 'tmax' to `metrics`",
    ),  # fmt: skip
    "output not requested": (
        _edit("targets[0].variable", "In111_blood_auc"),
        "add 'In111_blood' to `outputs`",
    ),  # fmt: skip
    "time course without at": (
        _edit("targets[1].at", ...),
        "targets[1].at: 'In111_lung' is a time course",
    ),  # fmt: skip
    "at outside the times": (
        _edit("targets[1].at", 500),
        "targets[1].at: 500 is outside the times [0, 240]",
    ),  # fmt: skip
    "fit and population": (
        {**_edit("model", ..., _edit("species", ...)), "fit": "fits/msc"},
        "population: not with `fit`",
    ),  # fmt: skip
    "model and fit": ({**BASE, "fit": "fits/msc"}, "model: give `model` or `fit`, not both"),
    "neither model nor fit": (_edit("model", ...), "model: give `model`"),
    "unsorted times": (
        _edit("times", [0, 10, 5, 20]),
        "times[2]: times must be strictly increasing",
    ),  # fmt: skip
    "times stop before start": (
        _edit("times", {"start": 10, "stop": 5, "n": 3}),
        "times.stop: must be after times.start",
    ),  # fmt: skip
    "times with n and step": (
        _edit("times.step", 2),
        "times: give {start, stop, n} or {start, stop, step}",
    ),  # fmt: skip
    "negative sampling time": (
        _edit("sampling.groups[0].times", [-1, 24]),
        "sampling.groups[0].times[0]: sampling times must be >= 0",
    ),  # fmt: skip
    "unknown route": (
        _edit("regimens.high", "100 oral"),
        "regimens.high: dose '100 oral at 0': unknown route 'oral'; routes of msc_pbpk: iv, ia, local",
    ),  # fmt: skip
    "unreadable dose": (_edit("regimens.low", "fifty iv"), "regimens.low: cannot read dose"),
    "unknown metric": (
        _edit("metrics[1]", "cmaxx"),
        "metrics[1]: unknown metric 'cmaxx' — did you mean 'cmax'?",
    ),  # fmt: skip
    "metric needing an option": (
        _edit("metrics", ["auc", "time_above"]),
        "metric_options: metric 'time_above' needs threshold",
    ),  # fmt: skip
    "bad residual convention": (
        _edit("sampling.residual.convention", "cv"),
        "sampling.residual.convention: 'cv'; valid: variance, sd",
    ),  # fmt: skip
    "bad optimiser": (
        _edit("sampling.optimise.method", "anneal"),
        "sampling.optimise.method: 'anneal'; valid: auto, gradient, exchange",
    ),  # fmt: skip
    "window too short": (
        _edit("sampling.optimise", {"windows": [0, 2], "min_spacing": 1}),
        "sampling.optimise: groups[0] ('imaging'): 4 samples at least 1 apart need a window of 3",
    ),  # fmt: skip
    "unknown species": (
        _edit("species", "moose"),
        "species: unknown species 'moose' — did you mean 'mouse'?; valid: mouse, rat, dog, human",
    ),
    "omega2 without fixed effect": (
        _edit("sampling.omega2.KD", 0.1),
        "sampling.omega2.KD: KD has no fixed effect",
    ),  # fmt: skip
    "negative omega": (_edit("population.omega.KD", -0.5), "population.omega.KD: must be >= 0"),
    "interval out of range": (
        _edit("trial.interval", 1.5),
        "trial.interval: a probability between 0 and 1",
    ),  # fmt: skip
    "unknown dose-selection target": (
        _edit("dose_selection.target", "lung exposur"),
        "dose_selection.target: no target named 'lung exposur' — did you mean 'lung exposure'?; valid: lung exposure, day-7 lung (the names under `targets`)",
    ),  # fmt: skip
    "dose selection without targets": (
        _edit("targets", ...),
        "dose_selection.target: names an entry of `targets`, and the file has none",
    ),  # fmt: skip
    "unknown dose-selection regimen": (
        _edit("dose_selection.regimens[0]", "medium"),
        "dose_selection.regimens[0]: unknown regimen 'medium'; valid: low, high",
    ),  # fmt: skip
    "dose-selection regimen twice": (
        _edit("dose_selection.regimens", ["high", "high"]),
        "dose_selection.regimens[1]: 'high' is given more than once",
    ),  # fmt: skip
    "dose-selection regimens not a list": (
        _edit("dose_selection.regimens", {"high": 1}),
        "dose_selection.regimens: a list of names of `regimens`",
    ),  # fmt: skip
    "one candidate dose": (
        _edit("dose_selection.doses", [100]),
        "dose_selection.doses: give at least two candidate doses (cell) to search between",
    ),  # fmt: skip
    "decreasing doses": (
        _edit("dose_selection.doses", [10, 100, 50]),
        "dose_selection.doses[2]: doses must be increasing; 50 comes after 100",
    ),  # fmt: skip
    "zero dose": (_edit("dose_selection.doses[0]", 0), "dose_selection.doses[0]: must be > 0"),
    "dose not a number": (
        _edit("dose_selection.doses[1]", "many"),
        "dose_selection.doses[1]: must be a number, got 'many'",
    ),  # fmt: skip
    "doses missing": (_edit("dose_selection.doses", ...), "dose_selection.doses: missing"),
    "attainment out of range": (
        _edit("dose_selection.attainment", 90),
        "dose_selection.attainment: the fraction of subjects meeting the target: a probability between 0 and 1",
    ),  # fmt: skip
    "confidence out of range": (
        _edit("dose_selection.confidence", 0),
        "dose_selection.confidence: the fraction of trials in which the attainment is reached: a probability between 0 and 1",
    ),  # fmt: skip
    "unknown dose-selection key": (
        _edit("dose_selection.dose", [1, 2]),
        "dose_selection.dose: unknown key — did you mean 'doses'?",
    ),  # fmt: skip
    "duplicate target names": (
        _edit("targets[1].name", "lung exposure"),
        "targets[1].name: 'lung exposure' is already the name",
    ),  # fmt: skip
}


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if a refusal reaches a simulation, a compilation or the run."""

    def boom(*args, **kwargs):
        raise AssertionError("a bad design file reached the computation")

    import ldpk.design._dose as dose_mod
    import ldpk.design._fim as fim_mod
    import ldpk.design._run as run_mod
    import ldpk.design._trials as trials_mod

    monkeypatch.setattr(trials_mod, "sweep", boom)
    monkeypatch.setattr(fim_mod, "prepare", boom)
    monkeypatch.setattr(dose_mod, "virtual_trial", boom)
    for name in ("virtual_trial", "fisher_information", "select_dose"):
        monkeypatch.setattr(run_mod, name, boom)


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_design_files_are_refused_naming_the_entry(case, tmp_path, capsys, nothing_runs):
    spec, expected = BAD[case]
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["design", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ldpk design: error: {path}: "), err
    assert expected in err, err
    assert "Traceback" not in err and err.count("\n") == 1  # one line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["design.yaml"]


def test_refusals_from_python_are_one_data_error(tmp_path, nothing_runs):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(_edit("targets[0].op", "==")), encoding="utf-8")
    with pytest.raises(ldpk.DataError, match=r"d\.yaml: targets\[0\]\.op: '==' is not a comparison"):  # fmt: skip
        dz.read_design_file(path)
    path.write_text("model: msc_pbpk\nregimens: {a: 1 iv\n", encoding="utf-8")
    with pytest.raises(ldpk.DataError, match=r"d\.yaml, line \d+, column \d+: not valid YAML"):
        dz.read_design_file(path)
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ldpk.DataError, match="a design file is a mapping with keys title, model"):
        dz.read_design_file(path)
    with pytest.raises(ldpk.DataError, match="no such design file"):
        dz.read_design_file(tmp_path / "missing.yaml")


def test_unusable_output_folders_are_refused_before_anything_runs(tmp_path, capsys, nothing_runs):  # fmt: skip
    """--out a file, a folder holding a fit report (both have report.html), or a folder where
    a report file would overwrite an input (the design file itself): refused before
    anything is computed, nothing touched."""
    (tmp_path / "file").write_text("x")
    assert main(["design", str(EXAMPLE), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    (fit_dir / "posterior.nc").write_text("a fit")
    assert main(["design", str(EXAMPLE), "--out", str(fit_dir)]) == 2
    assert f"{fit_dir}: holds a fit report (posterior.nc)" in capsys.readouterr().err
    assert [p.name for p in fit_dir.iterdir()] == ["posterior.nc"]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    design = inputs / "fim.csv"  # a design file whose name a report file has
    design.write_text(EXAMPLE.read_text())
    assert main(["design", str(design), "--out", str(inputs)]) == 2
    assert f"{design}: refusing to overwrite an input file" in capsys.readouterr().err
    assert design.read_text() == EXAMPLE.read_text()


def test_defaults_small_and_short_doses(tmp_path):
    """What the file may leave out: population (priors), outputs, metrics, `at` in a dose;
    and DesignFile.small()."""
    path = tmp_path / "d.yaml"
    text = (
        "model: one_compartment\nregimens: {single: '100 oral', daily: '100 oral every 24 for 3'}\n"
        "times: {start: 0, stop: 72, step: 0.5}\ntrial: {n_trials: 30, n_subjects: 40}\n"
        "sampling:\n  output: cp\n  residual: {proportional: 0.01}\n"
        "  groups: [{n: 10, regimen: single, times: [1, 4, 12, 24]}]\n"
        "  optimise: {windows: [0.5, 72], starts: 5}\n"
    )
    path.write_text(text, encoding="utf-8")
    d = dz.read_design_file(path)
    model = ldpk.load_model("one_compartment")
    assert d.population_source == "priors" and d.outputs == model.output_names
    assert d.metrics == ("auc", "cmax", "tmax") and d.seed == 0 and d.interval == 0.9
    assert d.regimens["single"] == [ldpk.parse_dose("100 oral at 0", model)]
    assert d.regimens["daily"] == [ldpk.parse_dose("100 oral at 0 every 24 for 3", model)]
    np.testing.assert_array_equal(d.times, np.arange(0, 72.25, 0.5))
    s = d.sampling
    varied = [p.name for p in model.parameters if (p.prior is not None and p.prior.dist != "fixed") or p.iiv]  # fmt: skip
    assert list(s.design.fixed_effects) == varied and s.defaulted == ("fixed_effects", "omega2")
    assert s.design.fixed_effects == {k: model.parameter(k).value for k in varied}
    assert s.design.omega2 == {p.name: p.iiv**2 for p in model.parameters if p.iiv}
    pop = d.trial_population()  # population_from_priors with the trial's seed
    expected = dz.population_from_priors(model, 30, 0)
    for k, v in expected["typical"].items():
        np.testing.assert_array_equal(pop["typical"][k], v)
    small = d.small()
    assert (small.n_trials, small.n_subjects, small.sampling.optimise["starts"]) == (20, 20, 2)
    assert (d.n_trials, d.sampling.optimise["starts"]) == (30, 5)  # the original is unchanged
    path.write_text(text.replace("single: '100 oral'", "single: 100"), encoding="utf-8")
    with pytest.raises(ldpk.DataError, match=r"d\.yaml: regimens\.single: '100' has no route and model 'one_compartment' has no default route; give one, e.g. \"100 iv\" \(routes: iv, oral\)"):  # fmt: skip
        dz.read_design_file(path)
    path.write_text(yaml.safe_dump(_edit("regimens.low", 50)), encoding="utf-8")
    assert dz.read_design_file(path).regimens["low"] == [ldpk.Bolus(50, 0, "iv")]  # default iv


def test_a_saved_fit_is_the_population(tmp_path, reference_data_dir):
    """`fit:` a saved fit (a quick MAP fit of theophylline: one posterior draw, so one trial):
    its model, its typical values and ω per trial, and the default fixed effects and ω² of
    `sampling:` from its posterior."""
    import warnings

    model = ldpk.load_model("one_compartment")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # F and TLAG held at their model values
        data = ldpk.read_data(model, reference_data_dir / "theo_sd.csv")
        fit = ldpk.fit(model, data, config={"error": {"cp": {"model": "additive"}}}, method="map", progress=False)  # fmt: skip
    (tmp_path / "fits").mkdir()
    fit.save(tmp_path / "fits" / "posterior.nc")
    text = (
        "fit: fits\nregimens: {a: '320 oral'}\ntimes: {start: 0, stop: 24, n: 49}\n"
        "metrics: [auc, cmax]\ntrial: {n_trials: 1, n_subjects: 30, seed: 4}\n"
        "targets: [{variable: cp_cmax, op: '>=', threshold: 5}]\n"
        "sampling: {output: cp, residual: {additive: 0.5}, groups: [{n: 12, regimen: a, times: [0.5, 1, 2, 6, 24]}]}\n"
    )  # fmt: skip
    path = tmp_path / "design.yaml"
    path.write_text(text, encoding="utf-8")
    d = dz.read_design_file(path)
    assert d.population_source == "fit" and d.model == fit.model
    table, draws = fit.parameter_table(1), fit.population_draws(1)
    fe = d.sampling.design.fixed_effects
    assert list(fe) == ["CL", "V", "KA"]
    for p in fe:
        assert fe[p] == float(table[p][0])
        assert d.sampling.design.omega2[p] == float(draws[f"omega_{p}"].reshape(-1)[0]) ** 2
    path.write_text(text.replace("n_trials: 1", "n_trials: 2"), encoding="utf-8")
    with pytest.raises(ldpk.DataError, match=r"trial\.n_trials: 2 trials, but the fit has 1 posterior draws"):  # fmt: skip
        dz.read_design_file(path)
    result = dz.run_design(d, progress=False)
    assert not (tmp_path / "out").exists()  # run_design writes nothing
    ldpk.report.write_design_report(result, tmp_path / "out")
    trial = result.trial
    np.testing.assert_array_equal(trial["typical_CL"].values, table["CL"])
    np.testing.assert_array_equal(trial["omega_V"].values, draws["omega_V"].reshape(-1))
    direct = dz.virtual_trial(
        fit.model, fit, {"a": [ldpk.Bolus(320, 0, "oral")]}, np.linspace(0, 24, 49),
        n_trials=1, n_subjects=30, seed=4, metrics=["auc", "cmax"],
    )  # fmt: skip
    expected = float((direct["cp_cmax"].values >= 5).mean())  # the one trial's fraction
    assert result.tables["attainment"]["median"].iloc[0] == expected
    assert result.attainment["cp_cmax >= 5"].summary["n_trials"].item() == 1
    assert (tmp_path / "out" / "report.html").is_file() and not result.warnings


# ---- the split: run_design computes, report writes, plots draw ------------------------------
SMALL = (
    "title: small\nmodel: one_compartment\nregimens: {a: '100 iv', b: '200 iv'}\n"
    "times: {start: 0, stop: 24, n: 25}\noutputs: [cp]\nmetrics: [auc]\n"
    "population: {omega: {CL: 0.3}}\ntrial: {n_trials: 4, n_subjects: 6, seed: 3}\n"
    "targets: [{name: exposure, variable: cp_auc, op: '>=', threshold: 10}]\n"
)


def test_run_design_writes_nothing_and_the_report_replaces_its_own_files(tmp_path, monkeypatch):
    """run_design takes a path or a DesignFile and writes nothing; write_design_report
    writes a new folder whole, and into an existing one replaces the files of an earlier
    design report (deleting those this run does not write: sampling_times.png of a design
    with `sampling:`) and keeps the user's other files."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.yaml"
    path.write_text(SMALL, encoding="utf-8")
    result = dz.run_design(path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.yaml"]
    assert isinstance(result, dz.DesignResult) and result.design.path == path
    assert list(result.tables) == ["attainment", "prediction_intervals"]
    assert result.fim is None and result.optimised is None and result.dose_selection is None
    assert set(result.timings) == {"trial_s", "total_s"} and not result.warnings
    # the bands are prediction_intervals of the trial, the CSV frame their long form
    direct = dz.prediction_intervals(result.trial, percentiles=(5, 50, 95), interval=0.9)
    np.testing.assert_array_equal(result.bands["cp_upper"].values, direct["cp_upper"].values)
    frame = result.tables["prediction_intervals"]
    rows = frame[frame["regimen"] == "b"]
    np.testing.assert_array_equal(rows["p95_lower"], direct["cp_lower"].sel(regimen="b", percentile=95).values)  # fmt: skip
    assert (frame["unit"] == "mg/L").all()

    out = tmp_path / "out"
    written = ldpk.report.write_design_report(result, out)
    names = ["attainment.csv", "prediction_intervals.csv", "prediction_bands.png", "attainment.png", "report.html"]  # fmt: skip
    assert [p.name for p in written] == names and written[0].parent == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.yaml", "out"]  # no temporary left
    pd.testing.assert_frame_equal(_read_csv(out / "attainment.csv"), result.tables["attainment"])
    (out / "sampling_times.png").write_bytes(PNG)  # from an earlier run with `sampling:`
    (out / "notes.txt").write_text("mine")
    (out / "report.html").write_text("old")
    ldpk.report.write_design_report(result, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "notes.txt"])
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(ldpk.DataError, match="give the DesignResult of ldpk.design.run_design"):
        ldpk.report.write_design_report(result.tables, tmp_path / "other")
    with pytest.raises(ldpk.DataError, match="no such design file"):
        dz.run_design(tmp_path / "missing.yaml")


def test_a_figure_that_fails_costs_only_itself(tmp_path, monkeypatch):
    """A figure whose drawing raises is reported (a warning and a line on the page) and the
    rest of the report is written."""
    import ldpk.plots as plots

    path = tmp_path / "d.yaml"
    path.write_text(SMALL, encoding="utf-8")
    result = dz.run_design(path, progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "plot_attainment", broken)
    with pytest.warns(UserWarning, match="figure attainment.png could not be drawn: RuntimeError: no ink"):  # fmt: skip
        written = ldpk.report.write_design_report(result, tmp_path / "out")
    names = [p.name for p in written]
    assert "attainment.png" not in names and "prediction_bands.png" in names
    assert names[-1] == "report.html"
    assert "could not be drawn: RuntimeError: no ink" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")  # fmt: skip


def test_design_figures_draw_the_results(tmp_path):
    """ldpk.plots' design figures draw what they are given: the bands' median line is the
    median over trials of the subjects' 50th percentile, the attainment points the medians
    over trials; bad inputs are refused with one DataError."""
    import ldpk.plots as plots

    path = tmp_path / "d.yaml"
    path.write_text(SMALL, encoding="utf-8")
    result = dz.run_design(path, progress=False)
    fig = plots.plot_prediction_bands(result.bands, tmp_path / "bands.png", title="t")
    assert (tmp_path / "bands.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("a", "b")]
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    np.testing.assert_array_equal(lines[1].get_ydata(), result.bands["cp_median"].sel(regimen="b", percentile=50).values)  # fmt: skip
    assert ax.get_ylabel() == "cp [mg/L]" and ax.get_xlabel() == "time [h]"
    fig = plots.plot_attainment(result.attainment)
    points = fig.axes[0].get_lines()[0].get_ydata()
    np.testing.assert_array_equal(points, result.tables["attainment"]["median"].to_numpy())
    with pytest.raises(ldpk.DataError, match="no output 'cq' in the prediction intervals; valid: cp"):  # fmt: skip
        plots.plot_prediction_bands(result.bands, outputs=["cq"])
    with pytest.raises(ldpk.DataError, match="give the Dataset of ldpk.design.prediction_intervals"):  # fmt: skip
        plots.plot_prediction_bands(result.trial)
    with pytest.raises(ldpk.DataError, match="give an ldpk.design.Attainment or a mapping"):
        plots.plot_attainment({"x": 1})


def test_dose_selection_of_a_schedule_family_and_a_dose_not_reached(tmp_path):
    """Two templates of the same shape (one IV bolus each, 100 and 200): scaled so that the
    first dose equals the candidate, they are the same schedule, so the same mice (common
    random numbers) give the same dose for both, and the first is recommended. Candidates
    too low for the target: 'not reached', NaN, and a warning asking for higher doses."""
    path = tmp_path / "d.yaml"
    ds = "dose_selection: {target: exposure, regimens: [a, b], doses: [5, 20, 80], attainment: 0.5, confidence: 0.5}\n"  # fmt: skip
    path.write_text(SMALL + ds, encoding="utf-8")
    d = dz.read_design_file(path)
    assert d.dose_selection.regimens == ("a", "b") and d.dose_selection.doses == (5.0, 20.0, 80.0)  # fmt: skip
    assert d.dose_selection.criterion == {"variable": "cp_auc", "op": ">=", "threshold": 10.0}
    result = dz.run_design(d, progress=False)
    table = result.tables["dose_selection"]
    assert list(table["schedule"]) == ["a", "b"] and list(table["status"]) == ["selected"] * 2
    assert table["dose"].iloc[0] == table["dose"].iloc[1] == result.dose_selection.dose
    assert list(table["recommended"]) == [True, False] and not result.warnings
    assert "dose_selection_s" in result.timings
    path.write_text(SMALL + ds.replace("[5, 20, 80]", "[0.01, 0.02]"), encoding="utf-8")
    result = dz.run_design(path, progress=False)
    assert list(result.tables["dose_selection"]["status"]) == ["not reached"] * 2
    assert np.isnan(result.dose_selection.dose)
    assert result.warnings == ("dose selection: no candidate dose reaches 50% of subjects in 50% of trials, up to 0.02; give higher doses",)  # fmt: skip
