"""Reading study data: NONMEM-style tables (read_data) and tidy biodistribution tables
(read_biodistribution). Expected values are worked out by hand from the small tables below."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.data import read_biodistribution, read_data
from ldpk.errors import DataError
from ldpk.population import PopulationModel, fit_spec

TOL = 1e-10

# One compartment with a depot: CMT 1 = depot (route oral), CMT 2 = central (route iv).
PK = {
    "name": "pk1",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
    "parameters": {
        "KA": {"value": 1.0, "unit": "1/h"},
        "CL": {"value": 2.0, "unit": "L/h"},
        "V": {"value": 10.0, "unit": "L"},
    },
    "flows": [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "CL / V"}],
    "routes": {"iv": {"target": "central"}, "oral": {"target": "depot"}},
    "outputs": {
        "cp": {"expr": "central / V", "unit": "mg/L"},
        "ac": {"expr": "central", "unit": "mg"},
    },
}

# Biodistribution: IV into the lung, lung -> liver at KL = 0.5 /h, liver eliminated at
# KE = 0.1 /h. Amounts in %ID (dose 100): lung = D e^{-0.5 t},
# liver = D·KL/(KE - KL)·(e^{-KL t} - e^{-KE t}) = 1.25 D (e^{-0.1 t} - e^{-0.5 t}).
BIO = {
    "name": "bio",
    "time_unit": "h",
    "amount_unit": "%ID",
    "tracer": "18F",
    "compartments": {"lung": {"unit": "%ID"}, "liver": {"unit": "%ID"}},
    "parameters": {
        "KL": {
            "value": 0.5,
            "unit": "1/h",
            "prior": {"dist": "lognormal", "loc": -0.7, "scale": 1},
        },
        "KE": {
            "value": 0.1,
            "unit": "1/h",
            "prior": {"dist": "lognormal", "loc": -2.3, "scale": 1},
        },
        "W_LIVER": {"value": 1.5, "unit": "g"},
    },
    "flows": [{"from": "lung", "to": "liver", "k": "KL"}, {"from": "liver", "k": "KE"}],
    "routes": {"iv": {"target": "lung"}, "ip": {"target": "liver"}},
    "outputs": {
        "pct_lung": {"expr": "lung", "unit": "%ID"},
        "pct_liver": {"expr": "liver", "unit": "%ID"},
        "pct_per_g_liver": {"expr": "liver / W_LIVER", "unit": "%ID/g"},
        "activity_liver": {"expr": "liver", "unit": "%ID", "decay": True},
        "bli_liver": {"expr": "liver", "unit": "photons/s"},
    },
}


def lung(t, d=100.0):
    return d * np.exp(-0.5 * np.asarray(t))


def liver(t, d=100.0):
    t = np.asarray(t)
    return 1.25 * d * (np.exp(-0.1 * t) - np.exp(-0.5 * t))


@pytest.fixture(scope="module")
def pk():
    return ldpk.build_model(PK)


@pytest.fixture(scope="module")
def bio():
    return ldpk.build_model(BIO)


def problems_of(exc: pytest.ExceptionInfo) -> list[str]:
    return [line.strip() for line in str(exc.value).splitlines()[1:]]


# ---- read_data: NONMEM-style tables ------------------------------------------------------------
def nm_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": [1, 1, 1, 1, 1, 2, 2, 2],
            "TIME": [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.5, 6.0],
            "EVID": [1, 0, 2, 0, 0, 1, 0, 0],
            "MDV": [0, 0, 0, 1, 0, 0, 0, 0],
            "AMT": [100, 0, 0, 0, 0, 50, 0, 0],
            "ROUTE": ["iv", None, None, None, None, "oral", None, None],
            "DV": [np.nan, 9.0, np.nan, 1.0, 40.0, np.nan, 2.0, 3.0],
            "OUTPUT": [None, "cp", None, "cp", "ac", None, "cp", "ac"],
            "WT": [70.0, 70.0, 70.0, 70.0, 70.0, 80.0, 81.0, 82.0],
        }
    )


def test_nonmem_positions_outputs_times(pk):
    ds = read_data(pk, nm_table())
    # Observations: rows 2, 5 (ID 1) and 7, 8 (ID 2). The kernel returns every EVID 0/2 record:
    # ID 1 at t = 1 (pos 0), 2 (EVID 2, pos 1), 3 (MDV 1, pos 2), 4 (pos 3).
    np.testing.assert_array_equal(ds.row, [2, 5, 7, 8])
    np.testing.assert_array_equal(ds.subject, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.position, [0, 3, 0, 1])
    np.testing.assert_array_equal(ds.output, [0, 1, 0, 1])
    np.testing.assert_array_equal(ds.time, [1.0, 4.0, 0.5, 6.0])
    np.testing.assert_array_equal(ds.dv, [9.0, 40.0, 2.0, 3.0])
    assert ds.subjects == (1, 2) and ds.n_obs == 4
    np.testing.assert_array_equal(ds.covariates["WT"], [70.0, 80.0])
    assert ds.scale is None and np.all(ds.obs_scale == 1.0)
    assert ds.records[1].route[0] == list(pk.route_names).index("oral")


def test_rxode2_evid_101_is_a_dose_into_compartment_1(pk):
    df = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0, 0, 1], "EVID": [101, 201, 0], "AMT": [10, 5, 0],
         "DV": [0, 0, 1.0]}
    )  # fmt: skip
    ds = read_data(pk, df.assign(OUTPUT=[None, None, "ac"]))
    rec = ds.records[0]
    np.testing.assert_array_equal(rec.evid, [1, 1, 0])
    # CMT 1 = depot: its one declared route is 'oral'; CMT 2 = central: 'iv'.
    names = list(pk.route_names)
    assert rec.route[0] == names.index("oral") and rec.route[1] == names.index("iv")
    np.testing.assert_array_equal(rec.amt[:2], [10, 5])
    with pytest.raises(DataError) as exc:
        read_data(pk, df.assign(OUTPUT=[None, None, "ac"], CMT=[2, 2, 2]))
    assert "row 1, column EVID/CMT" in str(exc.value)


def test_dvid_mapping(pk):
    df = nm_table().drop(columns="OUTPUT").assign(DVID=[0, 1, 0, 1, 2, 0, 1, 2])
    ds = read_data(pk, df, dvid={1: "cp", 2: "ac"})
    np.testing.assert_array_equal(ds.output, [0, 1, 0, 1])
    with pytest.raises(DataError, match="column DVID: give `dvid=`"):
        read_data(pk, df)
    with pytest.raises(DataError) as exc:
        read_data(pk, df, dvid={1: "cp"})
    # One line for the kind of problem, listing its rows (rows 5 and 8 have DVID 2).
    assert "rows 5, 8 (2 rows), column DVID: 2 is not in the dvid mapping" in str(exc.value)


def test_columns_renaming(pk):
    df = nm_table().rename(columns={"ID": "Subj", "TIME": "T", "DV": "Conc"})
    ds = read_data(pk, df, columns={"SUBJ": "ID", "t": "TIME", "Conc": "DV"})
    np.testing.assert_array_equal(ds.dv, [9.0, 40.0, 2.0, 3.0])
    with pytest.raises(DataError, match="columns= names 'NOPE', which is not a column"):
        read_data(pk, df, columns={"NOPE": "ID"})
    with pytest.raises(DataError) as exc:
        read_data(pk, df)
    text = str(exc.value)
    assert "column ID: missing" in text and "column TIME: missing" in text
    assert "give `columns=`" in text


def test_time_unit_conversion(pk):
    # Data in minutes, model in hours: TIME 30 min = 0.5 h, II 720 min = 12 h, RATE 2 mg/min =
    # 120 mg/h.
    df = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0.0, 30.0, 90.0], "EVID": [1, 1, 0], "AMT": [100, 60, 0],
         "RATE": [0, 2.0, 0], "II": [720.0, 0, 0], "ADDL": [2, 0, 0],
         "ROUTE": ["iv", "iv", None], "DV": [np.nan, np.nan, 5.0], "OUTPUT": [None, None, "cp"]}
    )  # fmt: skip
    ds = read_data(pk, df, time_unit="min")
    rec = ds.records[0]
    np.testing.assert_allclose(rec.time, [0.0, 0.5, 1.5], rtol=TOL)
    np.testing.assert_allclose(rec.ii, [12.0, 0.0, 0.0], rtol=TOL)
    np.testing.assert_allclose(rec.rate, [0.0, 120.0, 0.0], rtol=TOL)
    np.testing.assert_allclose(ds.time, [1.5], rtol=TOL)
    with pytest.raises(DataError, match="unknown time unit 'fortnight'"):
        read_data(pk, df, time_unit="fortnight")


def cens_table(**extra) -> pd.DataFrame:
    base = {
        "ID": [1] * 5, "TIME": [0.0, 1.0, 2.0, 3.0, 4.0], "EVID": [1, 0, 0, 0, 0],
        "AMT": [100, 0, 0, 0, 0], "ROUTE": ["iv", None, None, None, None],
        "DV": [np.nan, 5.0, 0.2, np.nan, 0.8], "OUTPUT": [None, "cp", "cp", "cp", "cp"],
    }  # fmt: skip
    return pd.DataFrame(base | extra)


def test_censoring_blq_with_lloq(pk):
    ds = read_data(pk, cens_table(BLQ=[0, 0, 1, 1, 0], LLOQ=[0.5] * 5))
    np.testing.assert_array_equal(ds.censored, [0, 1, 1, 0])
    np.testing.assert_array_equal(ds.limit, [np.nan, 0.5, 0.5, np.nan])
    np.testing.assert_array_equal(ds.dv, [5.0, 0.5, 0.5, 0.8])


def test_censoring_blq_with_limit_in_dv(pk):
    ds = read_data(pk, cens_table(BLQ=[0, 0, 1, 0, 0], DV=[np.nan, 5.0, 0.3, 1.0, 0.8]))
    np.testing.assert_array_equal(ds.censored, [0, 1, 0, 0])
    np.testing.assert_array_equal(ds.dv, [5.0, 0.3, 1.0, 0.8])


def test_censoring_by_lloq_alone(pk):
    # DV < LLOQ or DV blank with an LLOQ: censored at the LLOQ; DV 0.8 >= 0.5 is not.
    ds = read_data(pk, cens_table(LLOQ=[0.5] * 5))
    np.testing.assert_array_equal(ds.censored, [0, 1, 1, 0])
    np.testing.assert_array_equal(ds.dv, [5.0, 0.5, 0.5, 0.8])
    np.testing.assert_array_equal(ds.limit, [np.nan, 0.5, 0.5, np.nan])


def test_censoring_by_cens_left_and_right(pk):
    # CENS 1: below the limit in DV; CENS -1: above the limit in DV (right-censored).
    df = cens_table(CENS=[0, 0, 1, 0, -1], LIMIT=[np.nan, np.nan, 0.0, np.nan, np.nan])
    df.loc[3, "DV"] = 2.0
    ds = read_data(pk, df)
    np.testing.assert_array_equal(ds.censored, [0, 1, 0, -1])
    np.testing.assert_array_equal(ds.limit, [np.nan, 0.2, np.nan, 0.8])
    np.testing.assert_array_equal(ds.dv, [5.0, 0.2, 2.0, 0.8])
    # LIMIT is the other end of the interval (nlmixr2, Monolix): 0 < value < 0.2
    np.testing.assert_array_equal(ds.bound, [np.nan, 0.0, np.nan, np.nan])


def test_censoring_limit_must_lie_beyond_the_censoring_limit(pk):
    df = cens_table(CENS=[0, 0, 1, 0, -1], LIMIT=[np.nan, np.nan, 0.5, np.nan, 0.3])
    df.loc[3, "DV"] = 2.0
    with pytest.raises(DataError) as err:
        read_data(pk, df)
    msg = str(err.value)
    assert "row 3, column LIMIT: 0.5 must be below the censoring limit in DV (0.2)" in msg
    assert "row 5, column LIMIT: 0.3 must be above the censoring limit in DV (0.8)" in msg
    # without CENS, or with BLQ, LIMIT is no interval
    assert read_data(pk, df.drop(columns="CENS").assign(BLQ=[0, 0, 1, 0, 0])).bound is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.drop(columns="DV"), "column DV: missing; columns present: ID, TIME"),
        (
            lambda d: d.assign(TIME=d.TIME.astype(object)).assign(
                **{"TIME": [0.0, "1h", 2.0, 3.0, 4.0, 0.0, 0.5, 6.0]}
            ),
            "row 2, column TIME: '1h' is not a number",
        ),  # fmt: skip
        (
            lambda d: d.assign(TIME=[0.0, -1.0, 2.0, 3.0, 4.0, 0.0, 0.5, 6.0]),
            "row 2, column TIME: -1 is negative",
        ),  # fmt: skip
        (
            lambda d: d.assign(TIME=[0.0, 1.0, 2.0, 3.0, 0.5, 0.0, 0.5, 6.0]),
            "row 5, column TIME: 0.5 is earlier than row 4",
        ),  # fmt: skip
        (
            lambda d: d.assign(ROUTE=["ivv", *[None] * 7]),
            "row 1, column ROUTE: unknown route 'ivv'; routes: iv, oral",
        ),  # fmt: skip
        (
            lambda d: (
                d.assign(OUTPUT=[None, "cq", *[None] * 6])
                .assign(DV=[np.nan, 9.0, *[np.nan] * 6])
                .assign(MDV=[0, 0, 0, 1, 1, 0, 1, 1])
            ),
            "row 2, column OUTPUT: 'cq' is not an output of pk1; outputs: cp, ac",
        ),  # fmt: skip
        (
            lambda d: d.assign(DV=[np.nan, np.nan, *d.DV[2:]]),
            "row 2, column DV: missing for an observation",
        ),  # fmt: skip
        (
            lambda d: d.assign(BLQ=[0, 2, 0, 0, 0, 0, 0, 0]),
            "row 2, column BLQ: 2 is not valid; use 0 or 1",
        ),  # fmt: skip
        (
            lambda d: d.assign(BLQ=[0, 1, 0, 0, 0, 0, 0, 0], DV=[np.nan, np.nan, *d.DV[2:]]),
            "row 2, column DV: a censored observation needs its limit",
        ),  # fmt: skip
        (lambda d: d.assign(CENS=[0, 3, 0, 0, 0, 0, 0, 0]), "row 2, column CENS: 3 is not valid"),
        (lambda d: d.assign(ID=[1, None, 1, 1, 1, 2, 2, 2]), "row 2, column ID: missing"),
    ],
)
def test_read_data_problem_names_row_and_column(pk, change, expected):
    with pytest.raises(DataError) as exc:
        read_data(pk, change(nm_table()))
    assert expected in str(exc.value)


def test_read_data_lists_every_problem_at_once(pk):
    df = nm_table()
    df["TIME"] = df["TIME"].astype(object)
    df.loc[1, "TIME"] = "x"
    df.loc[3, "TIME"] = -2.0
    df.loc[5, "ROUTE"] = "nasal"
    df.loc[6, "OUTPUT"] = "nope"
    with pytest.raises(DataError) as exc:
        read_data(pk, df)
    items = problems_of(exc)
    assert "5 problems in the data" in str(exc.value)  # -2 is also out of time order
    assert any(s.startswith("row 2, column TIME: 'x'") for s in items)
    assert any(s.startswith("row 4, column TIME: -2 is negative") for s in items)
    assert any(s.startswith("row 6, column ROUTE: unknown route 'nasal'") for s in items)
    assert any(s.startswith("row 7, column OUTPUT: 'nope'") for s in items)


def test_read_data_from_csv_row_numbers(pk, tmp_path):
    path = tmp_path / "study.csv"
    df = nm_table()
    df.loc[4, "TIME"] = -4.0
    df.to_csv(path, index=False)
    with pytest.raises(DataError) as exc:
        read_data(pk, path)
    assert str(exc.value).startswith(str(path))
    assert "row 5, column TIME: -4 is negative" in str(exc.value)  # 6th line of the file


# ---- read_biodistribution: tidy tables -----------------------------------------------------------
def destructive() -> pd.DataFrame:
    """Three mice, one time each, lung and liver; rows deliberately not in time order."""
    return pd.DataFrame(
        {
            "Mouse": ["m4", "m4", "m1", "m1", "m2", "m2"],
            "TIME": [4.0, 4.0, 1.0, 1.0, 2.0, 2.0],
            "ORGAN": ["Lung", "liver", "lung", "LIVER", "lung", "liver"],
            "VALUE": [13.0, 60.0, 61.0, 35.0, 37.0, 50.0],
            "UNIT": ["%ID", "%ID/g", "%ID", "%ID/g", "fraction", "%ID/g"],
            "WEIGHT": [0.15, 1.2, 0.16, 1.25, 0.14, 1.3],
            "BW": [25.0, 25.0, 22.0, 22.0, 24.0, 24.0],
            "GROUP": ["A", "A", "B", "B", "A", "A"],
        }
    )


def test_destructive_design(bio):
    ds = read_biodistribution(
        bio, destructive(), time_unit="h", dose=100, route="iv", columns={"mouse": "ID"}
    )
    assert ds.subjects == ("m4", "m1", "m2")
    np.testing.assert_array_equal(ds.subject, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.row, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ds.position, [0, 1, 0, 1, 0, 1])
    names = [ds.output_names[i] for i in ds.output]
    # %ID/g liver: the model's own %ID/g output wins over %ID / WEIGHT; fraction = %ID · 0.01.
    assert names == ["pct_lung", "pct_per_g_liver"] * 3
    np.testing.assert_allclose(ds.obs_scale, [1, 1, 1, 1, 0.01, 1], rtol=TOL)
    np.testing.assert_array_equal(ds.time, [4.0, 4.0, 1.0, 1.0, 2.0, 2.0])
    for rec in ds.records:  # one dose (EVID 1, 100 %ID at t = 0) then the two observations
        np.testing.assert_array_equal(rec.evid, [1, 0, 0])
        np.testing.assert_array_equal(rec.amt[:1], [100.0])
    np.testing.assert_array_equal(ds.covariates["BW"], [25.0, 22.0, 24.0])
    assert ds.study_names == ("A", "B")
    np.testing.assert_array_equal(ds.study, [0, 1, 0])
    assert ds.decay_corrected is True


def test_longitudinal_design_unsorted_rows_and_dose_time(bio):
    # One animal imaged at 3 times (rows out of order), dosed at 0.5 h (DOSE_TIME).
    df = pd.DataFrame(
        {
            "ID": [7] * 6, "TIME": [3.0, 1.0, 3.0, 0.25, 1.0, 0.25],
            "ORGAN": ["lung", "lung", "liver", "lung", "liver", "liver"],
            "DV": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "UNIT": ["%ID"] * 6, "DOSE": [80.0] * 6,
            "DOSE_TIME": [0.5] * 6, "ROUTE": ["iv"] * 6, "TIME_UNIT": ["h"] * 6,
        }
    )  # fmt: skip
    ds = read_biodistribution(bio, df)
    rec = ds.records[0]
    # Records in time order: observations at 0.25 (rows 4, 6), the dose at 0.5, then 1 (rows
    # 2, 5) and 3 (rows 1, 3); positions count observation records only.
    np.testing.assert_array_equal(rec.time, [0.25, 0.25, 0.5, 1.0, 1.0, 3.0, 3.0])
    np.testing.assert_array_equal(rec.evid, [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ds.row, [4, 6, 2, 5, 1, 3])
    np.testing.assert_array_equal(ds.position, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(ds.dv, [4.0, 6.0, 2.0, 5.0, 1.0, 3.0])
    assert [ds.output_names[i] for i in ds.output] == ["pct_lung", "pct_liver"] * 3


def test_predictions_equal_simulate_and_hand_values(bio):
    """%ID/g from a %ID output with WEIGHT: scale 1/WEIGHT; PopulationModel.predict_observations
    equals ldpk.simulate at the same times and the closed form."""
    only_pct = ldpk.build_model({**BIO, "outputs": {"pct_lung": BIO["outputs"]["pct_lung"]}})
    df = pd.DataFrame(
        {
            "ID": [1, 1, 2, 2], "TIME": [120.0, 120.0, 30.0, 30.0],
            "ORGAN": ["lung", "lung", "lung", "lung"], "VALUE": [1.0, 1.0, 1.0, 1.0],
            "UNIT": ["%ID/g", "fraction", "%ID", "%ID/g"], "WEIGHT": [0.25, np.nan, 0.2, 0.5],
            "DOSE": [100.0, 100.0, 50.0, 50.0], "TIME_UNIT": ["min"] * 4,
        }
    )  # fmt: skip
    ds = read_biodistribution(only_pct, df, route="iv")
    np.testing.assert_allclose(ds.time, [2.0, 2.0, 0.5, 0.5], rtol=TOL)
    np.testing.assert_allclose(ds.obs_scale, [4.0, 0.01, 1.0, 2.0], rtol=TOL)
    pm = PopulationModel(only_pct, ds, fit_spec(only_pct, ds))
    pred = np.asarray(pm.predict_observations({"KL": 0.5, "KE": 0.1}))
    # Hand: 100 e^{-1} / 0.25 = 400/e; fraction 100 e^{-1} · 0.01; 50 e^{-0.25}; 50 e^{-0.25}/0.5.
    hand = [400 / math.e, 1 / math.e, 50 * math.exp(-0.25), 100 * math.exp(-0.25)]
    np.testing.assert_allclose(pred, hand, rtol=TOL)
    for s, d in enumerate((100.0, 50.0)):
        sel = ds.subject == s
        sim = ldpk.simulate(only_pct, {"KL": 0.5, "KE": 0.1}, [ldpk.Bolus(d, route="iv")], ds.time[sel])  # fmt: skip
        np.testing.assert_allclose(pred[sel], np.asarray(sim["pct_lung"]) * ds.obs_scale[sel], rtol=TOL)  # fmt: skip


def test_dose_time_and_raw_activity_predictions(bio):
    """A dose at DOSE_TIME shifts the curves; raw (not decay-corrected) data map to the decay
    output and are predicted as corrected amount × exp(-ln 2 t / T½) (18F, T½ = 109.77 min)."""
    df = pd.DataFrame(
        {
            "ID": ["a", "a", "a", "b", "b"], "TIME": [1.0, 3.0, 3.0, 2.0, 2.0],
            "ORGAN": ["lung", "lung", "lung", "liver", "liver"],
            "VALUE": [1.0] * 5, "UNIT": ["%ID", "%ID", "fraction", "%ID", "photons/s"],
            "DOSE_TIME": [1.0, 1.0, 1.0, 0.0, 0.0], "DOSE": [100.0] * 3 + [40.0] * 2,
        }
    )  # fmt: skip
    ds = read_biodistribution(bio, df, time_unit="h", route="iv", decay_corrected=False)
    assert ds.decay_corrected is False
    assert [ds.output_names[i] for i in ds.output] == [
        "pct_lung", "pct_lung", "pct_lung", "activity_liver", "bli_liver",
    ]  # fmt: skip
    pred = np.asarray(PopulationModel(bio, ds, fit_spec(bio, ds)).predict_observations({}))
    lam = math.log(2) / (109.77 / 60)  # 1/h
    # a: dosed at 1 h, so 0 h and 2 h after the dose; b: dosed at 0.
    hand = [lung(0.0), lung(2.0), lung(2.0) * 0.01, liver(2.0, 40.0) * math.exp(-2 * lam), liver(2.0, 40.0)]  # fmt: skip
    np.testing.assert_allclose(pred, hand, rtol=TOL)
    corrected = read_biodistribution(bio, df, time_unit="h", route="iv")
    assert corrected.decay_corrected is True
    # Decay-corrected %ID: pct_liver and activity_liver predict the same, so the first is taken.
    assert corrected.output_names[corrected.output[3]] == "pct_liver"


def test_explicit_outputs_and_output_column(bio):
    df = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [1.0] * 3, "ORGAN": ["liver", "liver", "lung"],
         "VALUE": [1.0] * 3, "UNIT": ["%ID/g", "%ID", "%ID"], "WEIGHT": [2.0, 2.0, 0.1]}
    )  # fmt: skip
    kw = {"time_unit": "h", "dose": 100, "route": "iv"}
    ds = read_biodistribution(bio, df, outputs={("liver", "%ID/g"): "pct_liver", "LIVER": "activity_liver"}, **kw)  # fmt: skip
    assert [ds.output_names[i] for i in ds.output] == ["pct_liver", "activity_liver", "pct_lung"]
    np.testing.assert_allclose(ds.obs_scale, [0.5, 1.0, 1.0], rtol=TOL)
    ds = read_biodistribution(bio, df.assign(OUTPUT=["pct_liver", "", None]), **kw)
    assert [ds.output_names[i] for i in ds.output] == ["pct_liver", "pct_liver", "pct_lung"]
    np.testing.assert_allclose(ds.obs_scale, [0.5, 1.0, 1.0], rtol=TOL)
    with pytest.raises(DataError) as exc:
        read_biodistribution(bio, df, outputs={"liver": "nope", ("lung", "%ID"): "bli_liver"}, **kw)  # fmt: skip
    text = str(exc.value)
    assert "outputs=: 'nope' (for 'liver') is not an output of bio" in text
    assert (
        "row 3, column UNIT: organ 'lung', unit '%ID': output bli_liver is in 'photons/s'" in text
    )


def test_time_unit_must_be_declared(bio):
    df = destructive().rename(columns={"Mouse": "ID"})
    with pytest.raises(DataError) as exc:
        read_biodistribution(bio, df, dose=100, route="iv")
    text = str(exc.value)
    assert "column TIME_UNIT: the unit of TIME is not declared" in text
    assert "time_unit=" in text and "TIME_UNIT column" in text
    with pytest.raises(DataError, match="one unit for the whole file"):
        read_biodistribution(bio, df.assign(TIME_UNIT=["h"] * 5 + ["min"]), dose=100, route="iv")
    with pytest.raises(DataError, match="'min' disagrees with time_unit='h'"):
        read_biodistribution(bio, df.assign(TIME_UNIT="min"), time_unit="h", dose=100, route="iv")
    ds = read_biodistribution(bio, df.assign(TIME_UNIT="d"), dose=100, route="iv")
    np.testing.assert_allclose(ds.time, [96.0, 96.0, 24.0, 24.0, 48.0, 48.0], rtol=TOL)


def test_censoring_in_biodistribution(bio):
    df = pd.DataFrame(
        {"ID": [1, 1, 2, 2], "TIME": [1.0, 1.0, 2.0, 2.0], "ORGAN": ["lung", "liver"] * 2,
         "VALUE": [0.01, 3.0, np.nan, 0.5], "UNIT": ["%ID"] * 4, "LLOQ": [0.05] * 4,
         "BLQ": [0, 0, 1, 1]}
    )  # fmt: skip
    ds = read_biodistribution(bio, df, time_unit="h", dose=100, route="iv")
    np.testing.assert_array_equal(ds.censored, [0, 0, 1, 1])  # with BLQ, BLQ decides
    np.testing.assert_array_equal(ds.dv, [0.01, 3.0, 0.05, 0.05])
    ds = read_biodistribution(bio, df.drop(columns="BLQ"), time_unit="h", dose=100, route="iv")
    np.testing.assert_array_equal(ds.censored, [1, 0, 1, 0])  # LLOQ alone: value < LLOQ
    np.testing.assert_array_equal(ds.limit, [0.05, np.nan, 0.05, np.nan])


def test_biodistribution_lists_every_problem(bio):
    df = pd.DataFrame(
        {
            "ID": [1, 1, 2, 2, 3, 3, 4],
            "TIME": [1.0, "soon", 2.0, -2.0, 4.0, 4.0, 1.0],
            "ORGAN": ["lung", "muscle", "lung", "lung", "lung", "liver", "lung"],
            "VALUE": [1.0, 2.0, "n/a", 1.0, np.nan, 1.0, 1.0],
            "UNIT": ["%ID", "%ID", "%ID", "MBq", "%ID", "%ID/kg", "%ID/g"],
            "DOSE": [100, 100, 100, 90, np.nan, np.nan, 100],
            "ROUTE": ["iv", "iv", "iv", "iv", "oral", "oral", "iv"],
            "BLQ": [0, 0, 0, 0, 2, 0, 0],
        }
    )
    only_pct = ldpk.build_model({**BIO, "outputs": {"pct_lung": BIO["outputs"]["pct_lung"]}})
    with pytest.raises(DataError) as exc:
        read_biodistribution(only_pct, df, time_unit="h")
    items = problems_of(exc)
    expected = [
        "row 2, column TIME: 'soon' is not a number",
        "row 3, column VALUE: 'n/a' is not a number",
        "row 4, column TIME: -2 is negative",
        "row 5, column BLQ: 2 is not valid; use 0 or 1",
        "rows 3, 5 (2 rows), column VALUE: missing",  # one line per kind of problem
        "row 4, column DOSE: 90 differs from row 3 (100) of ID 2; one value per animal",
        "row 5, column DOSE: missing for ID 3",
        "row 5, column ROUTE: unknown route 'oral'; routes: iv, ip",
        "row 2, column ORGAN: organ 'muscle', unit '%ID': bio has no output for this organ",
        "row 4, column UNIT: organ 'lung', unit 'MBq': no output for this organ is in or converts to 'MBq'; candidates: pct_lung (%ID)",  # fmt: skip
        "row 6, column ORGAN: organ 'liver', unit '%ID/kg'",
        "row 7, column WEIGHT: organ 'lung', unit '%ID/g': the output for this organ (pct_lung (%ID)) needs the organ weight (g)",  # fmt: skip
    ]
    for e in expected:
        assert any(s.startswith(e) for s in items), (e, items)
    # 13 problems in 12 lines: the VALUE line lists two rows.
    assert len(items) == 12 and "13 problems in the data" in str(exc.value)


@pytest.mark.parametrize(
    ("change", "kw", "expected"),
    [
        (lambda d: d.drop(columns="ORGAN"), {}, "column ORGAN: missing; columns present"),
        (lambda d: d.drop(columns="VALUE"), {}, "column VALUE: missing"),
        (lambda d: d.assign(DV=1.0), {}, "column VALUE/DV: give one of VALUE or DV"),
        (
            lambda d: d,
            {"dose": None},
            "column DOSE: missing; add a DOSE column or pass dose= (the amount given, in the model's amount unit '%ID')",
        ),  # fmt: skip
        (
            lambda d: d,
            {"route": None},
            "column ROUTE: missing; add a ROUTE column or pass route=; routes of bio: iv, ip",
        ),  # fmt: skip
        (lambda d: d, {"route": "nasal"}, "route=: unknown route 'nasal'"),
        (lambda d: d, {"dose": -1.0}, "dose=: -1.0 is not a dose"),
        (
            lambda d: d.assign(WEIGHT=[0.15, 0.0, 0.16, 1.25, 0.14, 1.3]),
            {},
            "row 2, column WEIGHT: 0 is not a weight",
        ),  # fmt: skip
        (lambda d: d.assign(LLOQ=[-1.0, *[0.1] * 5]), {}, "row 1, column LLOQ: -1 is negative"),
        (
            lambda d: d.assign(BLQ=[1, 0, 0, 0, 0, 0], VALUE=[np.nan, *d.VALUE[1:]]),
            {},
            "row 1, column VALUE: a censored observation needs its limit",
        ),  # fmt: skip
        (lambda d: d.assign(UNIT=[None, *d.UNIT[1:]]), {}, "row 1, column UNIT: missing"),
        (lambda d: d.assign(ORGAN=[None, *d.ORGAN[1:]]), {}, "row 1, column ORGAN: missing"),
        (
            lambda d: d.assign(GROUP=["A", "B", *d.GROUP[2:]]),
            {},
            "row 2, column GROUP: 'B' differs from row 1 ('A') of ID m4",
        ),  # fmt: skip
        (
            lambda d: d.assign(DOSE_TIME=[0.0, 1.0, 0, 0, 0, 0]),
            {},
            "row 2, column DOSE_TIME: 1 differs from row 1 (0) of ID m4",
        ),  # fmt: skip
        (
            lambda d: d.assign(OUTPUT=["cp", *[None] * 5]),
            {},
            "row 1, column OUTPUT: 'cp' is not an output of bio",
        ),  # fmt: skip
    ],
)
def test_biodistribution_problem_names_row_and_column(bio, change, kw, expected):
    args = {"time_unit": "h", "dose": 100.0, "route": "iv", "columns": {"Mouse": "ID"}} | kw
    with pytest.raises(DataError) as exc:
        read_biodistribution(bio, change(destructive()), **args)
    assert expected in str(exc.value)


def test_ambiguous_outputs_are_a_problem(bio):
    two = ldpk.build_model(
        {**BIO, "outputs": {"pct_liver": {"expr": "liver", "unit": "%ID"},
                            "dye_liver": {"expr": "liver + lung", "unit": "%ID"}}}
    )  # fmt: skip
    df = pd.DataFrame({"ID": [1], "TIME": [1.0], "ORGAN": ["liver"], "VALUE": [1.0], "UNIT": ["%ID"]})  # fmt: skip
    with pytest.raises(DataError) as exc:
        read_biodistribution(two, df, time_unit="h", dose=100, route="iv")
    assert (
        "row 1, column ORGAN: organ 'liver', unit '%ID': several outputs match: "
        "pct_liver (%ID), dye_liver (%ID); map it with outputs={'liver': '<output>'}"
    ) in str(exc.value)
    ds = read_biodistribution(two, df, time_unit="h", dose=100, route="iv", outputs={"liver": "dye_liver"})  # fmt: skip
    assert ds.output_names[ds.output[0]] == "dye_liver"


def test_builtin_models_map_automatically():
    """The built-in models' output names (pct_lung, pct_per_g_lung, mtdna_lung, activity_liver,
    radio_liver_g, plasma_conc, In111_lung, transgene) are found from organ and unit."""

    def mapped(name, rows, **kw):
        m = ldpk.load_model(name)
        ds = read_biodistribution(m, pd.DataFrame(rows), time_unit="h", dose=100, **kw)
        return [ds.output_names[i] for i in ds.output], ds.obs_scale

    def rows(*spec):
        return [{"ID": 1, "TIME": 1.0, "ORGAN": o, "VALUE": 1.0, "UNIT": u, "WEIGHT": w} for o, u, w in spec]  # fmt: skip

    names, scale = mapped(
        "mitochondria_iv",
        rows(("lung", "%ID", None), ("lung", "%ID/g", None), ("Spleen", "copies", None),
             ("heart", "fraction", None), ("whole body", "%ID", None), ("kidney", "%ID/g", 0.4)),
        route="iv",
    )  # fmt: skip
    assert names == ["pct_lung", "pct_per_g_lung", "mtdna_spleen", "pct_heart",
                     "activity_whole_body", "pct_per_g_kidney"]  # fmt: skip
    np.testing.assert_allclose(scale, [1, 1, 1, 0.01, 1, 1])
    names, scale = mapped(
        "mitochondria_iv", rows(("liver", "%ID", None), ("liver", "%ID/g", 2.0)),
        route="iv", decay_corrected=False,
    )  # fmt: skip
    assert names == ["activity_liver", "activity_liver"]  # raw data: the decay output
    np.testing.assert_allclose(scale, [1, 0.5])
    names, _ = mapped("ev_iv", rows(("liver", "%ID/g", 1.3), ("plasma", "%ID/mL", None)), route="iv")  # fmt: skip
    assert names == ["radio_liver_g", "plasma_conc"]
    names, _ = mapped("msc_pbpk", rows(("lung", "cell-eq", None), ("lung", "photons/s", None)), route="iv", decay_corrected=False)  # fmt: skip
    assert names == ["In111_lung", "bli_lung"]
    cart = ldpk.load_model("cart_cellular_kinetics")
    df = pd.DataFrame({"ID": [1, 1], "TIME": [1, 7], "ORGAN": ["blood"] * 2, "VALUE": [5.0, 9.0],
                       "UNIT": ["copies/µg"] * 2, "TIME_UNIT": ["day"] * 2})  # fmt: skip
    ds = read_biodistribution(cart, df, dose=10)
    assert [ds.output_names[i] for i in ds.output] == ["transgene", "transgene"]
    np.testing.assert_array_equal(ds.time, [1.0, 7.0])


def test_biodistribution_from_csv(bio, tmp_path):
    path = tmp_path / "biodist.csv"
    destructive().rename(columns={"Mouse": "ID"}).assign(TIME_UNIT="h", DOSE=100, ROUTE="iv").to_csv(path, index=False)  # fmt: skip
    ds = read_biodistribution(bio, path)
    assert ds.source == str(path) and ds.n_obs == 6 and ds.n_subjects == 3
    bad = pd.read_csv(path)
    bad.loc[2, "ROUTE"] = "ip"
    bad.to_csv(path, index=False)
    with pytest.raises(DataError) as exc:
        read_biodistribution(bio, path)
    assert "row 4, column ROUTE: 'iv' differs from row 3 ('ip') of ID m1" in str(exc.value)


# ---- %ID of a model whose amounts are in the dose unit (cells, cell-eq) ---------------------------
# The BIO kinetics with amounts in cells: lung = D e^{-0.5 t} cell-eq for a dose of D cells.
CELLS = {
    **{k: v for k, v in BIO.items() if k not in ("tracer", "outputs")},
    "name": "cells",
    "amount_unit": "cells",
    "compartments": {"lung": {"unit": "cells"}, "liver": {"unit": "cells"}},
    "parameters": {**BIO["parameters"], "V_BLOOD": {"value": 2.0, "unit": "mL"}},
    "outputs": {
        "In111_lung": {"expr": "lung", "unit": "cell-eq"},
        "In111_liver": {"expr": "liver", "unit": "cell-eq"},
        "In111_blood": {"expr": "lung / V_BLOOD", "unit": "cell-eq/mL"},
        "hepatic_cells_g": {"expr": "liver / W_LIVER", "unit": "cells/g"},
        "total_label": {"expr": "lung + liver", "unit": "cell-eq"},
    },
}


@pytest.fixture(scope="module")
def cells():
    return ldpk.build_model(CELLS)


def two_animals() -> pd.DataFrame:
    """Two animals with different doses (cells); %ID, %ID/g (with WEIGHT), %ID/mL, fraction."""
    return pd.DataFrame(
        {
            "ID": ["a", "a", "a", "b", "b", "b", "b"],
            "TIME": [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            "ORGAN": ["lung", "liver", "blood", "lung", "lung", "liver", "liver"],
            "VALUE": [50.0, 20.0, 10.0, 0.4, 30.0, 15.0, 9.0],
            "UNIT": ["%ID", "%ID/g", "%ID/mL", "fraction", "%ID", "%ID/g", "%ID"],
            "WEIGHT": [np.nan, 1.25, np.nan, np.nan, np.nan, 1.6, np.nan],
            "DOSE": [1e6, 1e6, 1e6, 5e5, 5e5, 5e5, 5e5],
        }
    )  # fmt: skip


def test_percent_id_of_cell_eq_outputs_scales_by_each_animals_dose(cells):
    """%ID = 100 · cell-eq / DOSE, %ID/g = 100 · cell-eq / (DOSE · WEIGHT) with the measured
    weight, %ID/mL = 100 · (cell-eq/mL) / DOSE, fraction = cell-eq / DOSE; per animal."""
    ds = read_biodistribution(cells, two_animals(), time_unit="h", route="iv")
    assert [ds.output_names[i] for i in ds.output] == [
        "In111_lung", "In111_liver", "In111_blood", "In111_lung", "In111_lung", "In111_liver",
        "In111_liver",
    ]  # fmt: skip
    hand = [100 / 1e6, 100 / (1e6 * 1.25), 100 / 1e6, 1 / 5e5, 100 / 5e5, 100 / (5e5 * 1.6), 100 / 5e5]  # fmt: skip
    np.testing.assert_allclose(ds.obs_scale, hand, rtol=TOL)
    # The doses go in as cells; prediction × scale is %ID etc. whatever the dose.
    np.testing.assert_array_equal([r.amt[r.evid == 1][0] for r in ds.records], [1e6, 5e5])
    for s, d in enumerate((1e6, 5e5)):
        sel = ds.subject == s
        sim = ldpk.simulate(cells, {}, [ldpk.Bolus(d, route="iv")], ds.time[sel])
        pred = np.array([np.asarray(sim[ds.output_names[o]])[k] for k, o in enumerate(ds.output[sel])])  # fmt: skip
        got = pred * ds.obs_scale[sel]
        t = ds.time[sel]
        if s == 0:  # lung %ID, liver %ID/g of 1.25 g, blood %ID/mL of 2 mL
            want = [lung(t[0]), liver(t[1]) / 1.25, lung(t[2]) / 2.0]
        else:  # lung fraction, lung %ID, liver %ID/g of 1.6 g, liver %ID
            want = [lung(t[0]) / 100, lung(t[1]), liver(t[2]) / 1.6, liver(t[3])]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # dose= gives the dose of animals without DOSE, and divides like the column
    ds2 = read_biodistribution(cells, two_animals().drop(columns="DOSE"), time_unit="h", route="iv", dose=4e5)  # fmt: skip
    np.testing.assert_allclose(ds2.obs_scale, [100 / 4e5, 100 / (4e5 * 1.25), 100 / 4e5, 1 / 4e5, 100 / 4e5, 100 / (4e5 * 1.6), 100 / 4e5], rtol=TOL)  # fmt: skip


def test_percent_id_of_amount_outputs_explicit_and_exact_units(cells):
    df = two_animals()
    # Mapped explicitly: the whole-organ cells/g output × WEIGHT for %ID (100 · W / DOSE).
    with pytest.raises(DataError, match="needs the organ weight"):
        read_biodistribution(cells, df.iloc[[6]], time_unit="h", route="iv", outputs={"liver": "hepatic_cells_g"})  # fmt: skip
    ds = read_biodistribution(cells, df.iloc[[6]].assign(WEIGHT=1.6), time_unit="h", route="iv", outputs={"liver": "hepatic_cells_g"})  # fmt: skip
    assert ds.output_names[ds.output[0]] == "hepatic_cells_g"
    np.testing.assert_allclose(ds.obs_scale, [100 * 1.6 / 5e5], rtol=TOL)
    # A row in the output's own unit is not divided by the dose.
    ds = read_biodistribution(cells, df.assign(UNIT="cell-eq").iloc[[0, 3]], time_unit="h", route="iv")  # fmt: skip
    np.testing.assert_array_equal(ds.obs_scale, [1.0, 1.0])
    # The unit-only fallback never takes an unnamed amount output for an organ's %ID.
    heart = df.iloc[[0]].assign(ORGAN="heart")
    with pytest.raises(DataError, match="organ 'heart', unit '%ID': cells has no output for this organ"):  # fmt: skip
        read_biodistribution(cells, heart, time_unit="h", route="iv")
    # %ID/mL only from a per-mL output; per-mL rows of a whole-organ output are a problem.
    with pytest.raises(DataError, match="organ 'lung', unit '%ID/mL': output In111_lung is in 'cell-eq', which does not convert"):  # fmt: skip
        read_biodistribution(cells, df.iloc[[0]].assign(UNIT="%ID/mL"), time_unit="h", route="iv", outputs={"lung": "In111_lung"})  # fmt: skip


def test_percent_id_of_amount_outputs_needs_the_dose(cells):
    df = two_animals()
    kw = {"time_unit": "h", "route": "iv"}
    with pytest.raises(DataError) as exc:
        read_biodistribution(cells, df.assign(DOSE=[1e6] * 3 + [np.nan] * 4), **kw)
    items = problems_of(exc)
    assert len(items) == 1
    assert items[0].startswith(
        "row 4, column DOSE: missing for ID b; give the dose (model amount unit 'cells') on its "
        "rows or pass dose=; the dose also converts In111_lung (cell-eq) to 'fraction'; "
        "In111_lung (cell-eq) to '%ID'; In111_liver (cell-eq) to '%ID/g'; ... on rows 4, 5, 6, 7"
    ), items
    with pytest.raises(DataError) as exc:
        read_biodistribution(cells, df.assign(DOSE=[0.0] * 3 + [5e5] * 4), **kw)
    assert problems_of(exc) == [
        "row 1, column DOSE: 0 is not a dose; give an amount > 0 (model amount unit 'cells'); "
        "the dose also converts In111_lung (cell-eq) to '%ID'; In111_liver (cell-eq) to '%ID/g'; "
        "In111_blood (cell-eq/mL) to '%ID/mL' on rows 1, 2, 3 (%ID = 100 · amount / DOSE)"
    ]
    with pytest.raises(DataError) as exc:
        read_biodistribution(cells, df.drop(columns="DOSE"), **kw)
    assert problems_of(exc)[0].startswith(
        "column DOSE: missing; add a DOSE column or pass dose= (the amount given, in the model's "
        "amount unit 'cells'); the dose also converts In111_lung (cell-eq) to '%ID'"
    )
    with pytest.raises(DataError, match="row 4, column DOSE: inf is not a dose"):
        read_biodistribution(cells, df.assign(DOSE=[1e6] * 3 + [np.inf] * 4), **kw)
