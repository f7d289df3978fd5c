"""The `ldpk` command meets mistakes: grouped by input class, each case asserts one clear
message (no traceback, no "internal error"), a non-zero exit, the location named, the inputs
unchanged and no file left behind."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.cli import EXIT_BUG, EXIT_INTERRUPTED, main

THEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "theo_sd.csv"


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its SHA-256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(argv: list[str], capsys: pytest.CaptureFixture, folder: Path, *names: str) -> str:
    """Run ``ldpk argv``; assert exit 2, one message naming each of ``names``, no traceback,
    and ``folder`` (holding the inputs) unchanged: nothing written, nothing overwritten."""
    before = _digest(folder)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith(f"ldpk {argv[0]}: error: "), err
    for name in names:
        assert name in err, (name, err)
    assert "np.float64(" not in err and "np.int64(" not in err
    assert _digest(folder) == before, "the command wrote or changed files"
    return err


@pytest.fixture
def events(tmp_path: Path) -> Path:
    src = tmp_path / "events.csv"
    pd.DataFrame(
        {"ID": [1, 1], "TIME": [0, 1], "EVID": [1, 0], "AMT": [100, 0], "CMT": [2, 2]}
    ).to_csv(src, index=False)
    return src


# ---- arguments that contradict each other ----------------------------------------------------
def test_times_and_times_file_together_are_refused(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("0\n1\n")
    argv = ["simulate", "one_compartment", "--times", "0:1:1", "--times-file", str(tmp_path / "t.txt")]  # fmt: skip
    refused(argv, capsys, tmp_path, "--times", "--times-file")


def test_data_with_dose_is_refused(events, tmp_path, capsys):
    argv = ["simulate", "one_compartment", "--data", str(events), "--dose", "1 iv at 0"]
    refused(argv, capsys, tmp_path, "--data", "--dose")


def test_seed_without_n_is_refused(tmp_path, capsys):
    refused(["simulate", "one_compartment", "--seed", "3"], capsys, tmp_path, "--seed", "--n")


def test_param_that_varies_between_virtual_subjects_is_refused(tmp_path, capsys):
    argv = ["simulate", "one_compartment", "--n", "5", "--param", "CL=3"]
    refused(argv, capsys, tmp_path, "--param CL", "--n")


@pytest.mark.parametrize(
    ("dose", "says"),
    [
        ("320 oral at 0 every 12", '"every 12 for N"'),  # a repeat needs its count
        ("100 iv at 0 over 1 over 2", "'over' is given twice"),
        ("100 iv at 0 every 12 for 2 every 24 for 3", "'every' is given twice"),
        ("100 iv at 0 over 1 rate 5", "not both"),
        ("100 iv at 0 ss", "needs the dosing interval"),
        ("100 iv at 0 every 12 for 0", "at least 1"),
        ("100 iv at 0 every 12 for 2.5", "whole number"),
    ],
)
def test_contradicting_or_incomplete_dose_clauses_are_refused(dose, says, tmp_path, capsys):
    argv = ["simulate", "one_compartment", "--dose", dose]
    refused(argv, capsys, tmp_path, dose, says)


def test_complete_repeated_dose_gives_every_dose():
    dose = ldpk.parse_dose("320 oral at 0 every 12 for 6 ss")
    assert (dose.every, dose.count, dose.ss) == (12.0, 6, 1)


# ---- outputs that would overwrite an input or each other ---------------------------------------
@pytest.mark.parametrize("which", ["model", "data", "times"])
def test_out_never_overwrites_an_input(which, events, tmp_path, capsys):
    model = tmp_path / "m.yaml"
    model.write_text(ldpk.model_template("m"))
    times = tmp_path / "times.csv"
    times.write_text("0\n1\n")
    target = {"model": model, "data": events, "times": times}[which]
    argv = ["simulate", str(model), "--out", str(target)]
    argv += ["--data", str(events)] if which == "data" else ["--times-file", str(times)]
    refused(argv, capsys, tmp_path, str(target))


def test_out_and_plot_on_the_same_file_are_refused(tmp_path, capsys):
    f = str(tmp_path / "x.png")
    refused(["simulate", "one_compartment", "--out", f, "--plot", f], capsys, tmp_path, "same file")


@pytest.mark.parametrize(("flag", "name"), [("--out", "x.txt"), ("--plot", "x.csv")])
def test_output_suffix_is_checked_before_computing(flag, name, tmp_path, capsys):
    refused(["simulate", "one_compartment", flag, str(tmp_path / name)], capsys, tmp_path, name)


# ---- sizes, checked before allocation ------------------------------------------------------------
def test_too_many_output_times_are_refused_with_the_limit(tmp_path, capsys):
    err = refused(["simulate", "one_compartment", "--times", "0:1e9:1"], capsys, tmp_path, "1,000,000")  # fmt: skip
    assert "LDPK_MAX_TIMES" in err


@pytest.mark.parametrize("text", ["0\nnan\n2\n", "0\n2\n1\n", ""])
def test_times_file_values_are_checked(text, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(text)
    refused(["simulate", "one_compartment", "--times-file", str(tmp_path / "t.txt")], capsys, tmp_path, "t.txt")  # fmt: skip


# ---- paths ------------------------------------------------------------------------------------
def test_missing_model_file_is_one_message(tmp_path, capsys):
    refused(["simulate", str(tmp_path / "nope.yaml")], capsys, tmp_path, "nope.yaml")


def test_fit_out_under_a_file_is_refused_before_fitting(tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    t0 = time.perf_counter()
    argv = ["fit", "one_compartment", str(THEO), "--out", str(tmp_path / "plain" / "fit")]
    refused(argv, capsys, tmp_path, "plain")
    assert time.perf_counter() - t0 < 30  # refused before the data are fitted


def test_fit_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "report").write_text("mine")
    argv = ["fit", "one_compartment", str(THEO), "--out", str(tmp_path / "report")]
    refused(argv, capsys, tmp_path, "report", "not a folder")


def test_unwritable_destination_is_one_message(tmp_path, capsys):
    (tmp_path / "plain").write_text("x")  # a file where a folder is needed: ENOTDIR
    argv = ["simulate", "one_compartment", "--out", str(tmp_path / "plain" / "sim.csv")]
    refused(argv, capsys, tmp_path, "plain")


# ---- failures of ldpk itself are called bugs, with the traceback kept ----------------------
def test_internal_error_says_it_is_a_bug(monkeypatch, capsys):
    import ldpk.cli

    def broken(args):
        raise TypeError("something inside ldpk")

    monkeypatch.setattr(ldpk.cli, "cmd_models", broken)
    monkeypatch.delenv("LDPK_DEBUG", raising=False)
    assert main(["models"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "internal error: TypeError: something inside ldpk" in err
    assert "bug in ldpk" in err and ldpk.cli.BUG_REPORTS in err
    report = Path(err.split("the details are in ")[1].strip())
    try:
        assert "Traceback" in report.read_text() and "broken" in report.read_text()
    finally:
        report.unlink()


def _ldpk(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from ldpk.cli import main; sys.exit(main())", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_ctrl_c_during_a_fit_exits_130_and_leaves_no_folder(tmp_path):
    out = tmp_path / "fit"
    proc = _ldpk(
        "fit", "one_compartment", str(THEO), "--out", str(out), "--chains", "1",
        "--warmup", "100000", "--samples", "10", "--no-progress",
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # "fitting ... " is printed just before the fit starts
        assert line.startswith("fitting"), line + proc.stderr.read()
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted; nothing written" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


# ---- the fit report is written whole or not at all ------------------------------------------
def test_report_folder_is_written_whole_or_not_at_all(monkeypatch, tmp_path):
    from ldpk import plots, report

    class FitStub:  # enough of a Fit for the first report file, then a failure
        dataset = type("D", (), {"source": None})()
        model = type("M", (), {"source": None})()

        def save(self, path):
            Path(path).write_text("posterior")
            return Path(path)

    monkeypatch.setattr(report, "fit_summary_frame", lambda fit: pd.DataFrame({"a": [1]}))
    monkeypatch.setattr(plots, "observation_table", lambda fit: (_ for _ in ()).throw(RuntimeError("late failure")))  # fmt: skip
    with pytest.raises(RuntimeError, match="late failure"):
        report.write_fit_report(FitStub(), tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary sibling
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.csv").write_text("earlier fit")
    (old / "notes.txt").write_text("the user's own file")
    before = _digest(tmp_path)
    with pytest.raises(RuntimeError, match="late failure"):
        report.write_fit_report(FitStub(), old)
    assert _digest(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["old"]


# ---- first use --------------------------------------------------------------------------------
def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ldpk") and "simulate" in out and "show" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ldpk {ldpk.__version__}"


def test_show_lists_value_unit_prior_and_variability(capsys):
    assert main(["show", "one_compartment"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["CL"])
    # value, unit, prior with its median exp(1.0116) = 2.750, SD of log 0.3 = CV 31 %
    assert row[1:4] == ["2.75", "L/h", "lognormal(loc=1.012,"] and "2.75)" in row
    assert "SD(log) 0.3 (CV 31 %)" in out
    f_row = next(line for line in out.splitlines() if line.split()[:1] == ["F"])
    assert "fixed (held at its value in a fit)" in f_row  # `prior: {dist: fixed}` in the file


def test_new_writes_a_valid_commented_model_and_never_overwrites(tmp_path, capsys):
    f = tmp_path / "cells.yaml"
    assert main(["new", str(f)]) == 0
    text = f.read_text()
    assert text.count("\n#") + text.count("  # ") > 15 and "name: cells" in text
    report = ldpk.check_model(f)
    assert report.model.name == "cells" and report.linear
    capsys.readouterr()
    refused(["new", str(f)], capsys, tmp_path, "cells.yaml", "never overwrites")


def test_simulate_virtual_subjects_match_the_closed_form(tmp_path):
    out = tmp_path / "subjects.csv"
    argv = ["simulate", "one_compartment", "--n", "7", "--seed", "11", "--dose", "100 iv at 0"]
    assert main([*argv, "--times", "0:6:2", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    model = ldpk.load_model("one_compartment")
    subjects = ldpk.virtual_subjects(model, 7, seed=11)
    assert sorted(frame["ID"].unique()) == list(range(1, 8))
    for i in range(7):
        rows = frame[frame["ID"] == i + 1]
        cl, v = subjects["CL"][i], subjects["V"][i]
        # IV bolus, one compartment: C = D / V exp(-CL / V t); relative tolerance 1e-10
        expect = 100 / v * np.exp(-cl / v * rows["time [h]"].to_numpy())
        np.testing.assert_allclose(rows["cp [mg/L]"], expect, rtol=1e-10)
    # log-normal around the typical value: the same seed gives the same subjects
    np.testing.assert_array_equal(ldpk.virtual_subjects(model, 7, seed=11)["CL"], subjects["CL"])
    assert not np.array_equal(ldpk.virtual_subjects(model, 7, seed=12)["CL"], subjects["CL"])


def test_virtual_subjects_are_log_normal_around_the_typical_value():
    model = ldpk.load_model("one_compartment")
    cl = ldpk.virtual_subjects(model, 20_000, seed=0)["CL"]
    # log CL ~ N(log 2.75, 0.3^2): mean and SD of 20,000 draws within 4 standard errors
    se = 0.3 / np.sqrt(cl.size)
    assert abs(np.log(cl).mean() - np.log(2.75)) < 4 * se
    assert abs(np.log(cl).std() - 0.3) < 4 * 0.3 / np.sqrt(2 * cl.size)
