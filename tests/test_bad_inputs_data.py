"""Bad data tables (issue #22, "Ready for real users"): every class of bad input is refused with a
DataError naming the file, the row (1-based data rows; the header is row 0) and the column, and
the input file is left as it was. Grouped by input class: missing values, duplicate columns,
encodings, aggregation, limits, DVID text, reader equivalence (``ldpk fit`` and ``ldpk simulate
--data`` parse NONMEM tables through one function)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.data import nonmem_table, read_biodistribution, read_data, read_table, records_from_table
from ldpk.dosing import Bolus, make_records, parse_dose
from ldpk.errors import DataError


@pytest.fixture(scope="module")
def one_cpt():
    """Routes iv and oral (CMT 1 = depot, 2 = central), one output cp."""
    return ldpk.load_model("one_compartment")


@pytest.fixture(scope="module")
def cart():
    """One route (iv), outputs transgene and log10_transgene."""
    return ldpk.load_model("cart_cellular_kinetics")


GOOD = """ID,TIME,EVID,AMT,CMT,DV,MDV
1,0,1,100,2,.,1
1,1,0,.,.,9.5,0
1,2,0,.,.,8.1,0
2,0,1,50,central,.,1
2,1.5,0,.,.,4.2,0
"""


def write(tmp_path: Path, text: str, name: str = "study.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def both_refuse(model, path: Path, *fragments: str) -> str:
    """``ldpk fit``'s reader and ``ldpk simulate --data``'s reader refuse ``path`` with the same
    message, naming the file and ``fragments``; the file is unchanged. Returns the message."""
    before = path.read_bytes()
    with pytest.raises(DataError) as fit_exc:
        read_data(model, path)
    with pytest.raises(DataError) as sim_exc:
        records_from_table(model, read_table(path), where=str(path))
    assert path.read_bytes() == before
    msg = str(fit_exc.value)
    assert msg == str(sim_exc.value)
    assert msg.startswith(str(path))
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def assert_same_records(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for sid in a:
        ra, rb = a[sid], b[sid]
        for field in ("time", "evid", "amt", "route", "rate", "ii", "addl", "ss", "cov", "source_rows"):  # fmt: skip
            np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field), err_msg=field)


# ---- missing values ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "replacement", "fragments"),
    [
        ("1,1,0,.,.,9.5,0", "1,,0,.,.,9.5,0", ("row 2, column TIME: missing",)),
        ("1,1,0,.,.,9.5,0", "1,.,0,.,.,9.5,0", ("row 2, column TIME: missing",)),
        ("1,1,0,.,.,9.5,0", "1,nan,0,.,.,9.5,0", ("row 2, column TIME: missing",)),
        ("1,0,1,100,2,.,1", "1,0,1,,2,.,1", ("row 1, column AMT: missing on a dose row",)),
        ("1,0,1,100,2,.,1", "1,0,1,.,2,.,1", ("row 1, column AMT: missing on a dose row",)),
        ("2,1.5,0,.,.,4.2,0", ",1.5,0,.,.,4.2,0", ("row 5, column ID: missing",)),
        ("2,1.5,0,.,.,4.2,0", ".,1.5,0,.,.,4.2,0", ("row 5, column ID: missing",)),
        ("1,2,0,.,.,8.1,0", "1,2,,.,.,8.1,0", ("row 3, column EVID: missing",)),
        ("1,2,0,.,.,8.1,0", "1,-2,0,.,.,8.1,0", ("row 3, column TIME: -2 is negative",)),
    ],
)
def test_missing_values_are_errors_not_zero(one_cpt, tmp_path, line, replacement, fragments):
    path = write(tmp_path, GOOD.replace(line, replacement))
    both_refuse(one_cpt, path, *fragments, "rows are data rows counted from 1")


def test_dot_stays_missing_where_nonmem_allows_it(one_cpt, tmp_path):
    """'.' in DV on dose rows, in AMT/CMT on observation rows: missing, no problem."""
    path = write(tmp_path, GOOD)
    ds = read_data(one_cpt, path)
    np.testing.assert_array_equal(ds.dv, [9.5, 8.1, 4.2])
    np.testing.assert_array_equal(ds.records[0].amt, [100.0, 0.0, 0.0])


def test_missing_time_in_make_records_is_an_error(one_cpt):
    with pytest.raises(DataError, match=r"<regimen>: row 2, column TIME: missing"):
        make_records(one_cpt, [{"time": 0.0, "evid": 1, "amt": 1.0, "route": "iv"}, {"time": None}])


def test_missing_dose_time_in_biodistribution(cart, tmp_path):
    text = "ID,TIME,ORGAN,VALUE,UNIT,DOSE,DOSE_TIME\na,1,blood,5,copies,100,0\nb,2,blood,4,copies,100,\n"  # fmt: skip
    path = write(tmp_path, text)
    before = path.read_bytes()
    with pytest.raises(DataError) as exc:
        read_biodistribution(cart, path, time_unit="d", outputs={"blood": "transgene"})
    assert str(exc.value).startswith(str(path))
    assert "row 2, column DOSE_TIME: missing for ID b" in str(exc.value)
    assert path.read_bytes() == before


# ---- duplicate columns ---------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["ID,TIME,EVID,AMT,CMT,DV,time", "ID,TIME,EVID,AMT,CMT,DV,TIME"])
def test_duplicate_columns_refused(one_cpt, tmp_path, header):
    rows = [",".join(r.split(",")[:6] + ["5"]) for r in GOOD.splitlines()[1:]]
    path = write(tmp_path, header + "\n" + "\n".join(rows) + "\n")
    msg = both_refuse_read(path)
    assert "'TIME' and " in msg and "same name" in msg


def both_refuse_read(path: Path) -> str:
    before = path.read_bytes()
    with pytest.raises(DataError) as exc:
        read_table(path)
    with pytest.raises(DataError) as exc2:
        read_data(ldpk.load_model("one_compartment"), path)
    assert str(exc.value) == str(exc2.value) and str(exc.value).startswith(str(path))
    assert path.read_bytes() == before
    return str(exc.value)


def test_duplicate_columns_in_a_dataframe_and_after_renaming(one_cpt):
    df = pd.read_csv(__import__("io").StringIO(GOOD))
    with pytest.raises(DataError, match="'ID' and 'id' have the same name"):
        read_data(one_cpt, df.assign(id=df.ID))
    with pytest.raises(DataError, match="'ID' and 'id' have the same name"):
        records_from_table(one_cpt, df.assign(id=df.ID))
    with pytest.raises(DataError, match=r"after columns=.*'DV' and 'DV' have the same name"):
        read_data(one_cpt, df.assign(CONC=1.0), columns={"CONC": "DV"})


# ---- encodings -----------------------------------------------------------------------------------
LATIN = "ID,TIME,EVID,AMT,CMT,DV,MDV,NOTE\n" + "\n".join(r + ",µ-dose" for r in GOOD.splitlines()[1:]) + "\n"  # fmt: skip


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32"])  # fmt: skip
def test_unicode_encodings_with_bom_are_read(one_cpt, tmp_path, encoding):
    path = tmp_path / "study.csv"
    if encoding.endswith("-bom"):
        codec = encoding[:-4]
        bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
        path.write_bytes(bom + LATIN.encode(codec))
    else:
        path.write_bytes(LATIN.encode(encoding))
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = read_data(one_cpt, path)
    assert ds.subjects == (1, 2) and ds.n_obs == 3
    assert list(read_table(path).columns)[0] == "ID"  # no BOM left in the first name
    assert read_table(path)["NOTE"][0] == "µ-dose"
    assert path.read_bytes() == before


def test_latin1_is_read_with_a_warning_naming_the_file(one_cpt, tmp_path):
    path = write(tmp_path, LATIN, encoding="latin-1")
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=re.escape(str(path)) + r".*not valid UTF-8.*Latin-1"):
        frame = read_table(path)
    assert frame["NOTE"][0] == "µ-dose"
    with pytest.warns(UserWarning, match="Latin-1"):
        assert read_data(one_cpt, path).n_obs == 3
    assert path.read_bytes() == before


def test_utf16_without_bom_and_broken_bom_refused_naming_the_encoding(one_cpt, tmp_path):
    path = tmp_path / "nobom.csv"
    path.write_bytes(LATIN.encode("utf-16-le"))
    msg = both_refuse_read(path)
    assert "UTF-16" in msg and "UTF-8" in msg
    path = tmp_path / "broken.csv"
    path.write_bytes(b"\xef\xbb\xbfID,TIME\n1,\xff\n")
    msg = both_refuse_read(path)
    assert "UTF-8 byte-order mark but is not valid UTF-8" in msg


def test_unreadable_files_are_data_errors(one_cpt, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_data(one_cpt, tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)


# ---- aggregation ---------------------------------------------------------------------------------
def test_one_line_per_kind_of_problem(one_cpt, tmp_path):
    """589 doses without CMT or ROUTE (the model has two routes): one line with the count and
    the first rows, not 589 lines."""
    n = 589
    df = pd.DataFrame({"ID": np.arange(1, n + 1), "TIME": 0.0, "EVID": 1, "AMT": 100.0, "DV": "."})  # fmt: skip
    path = tmp_path / "doses.csv"
    df.to_csv(path, index=False)
    msg = both_refuse(one_cpt, path)
    lines = msg.splitlines()
    assert len(lines) == 2, msg
    assert f"{n} problems in the data" in lines[0]
    assert lines[1].strip().startswith(f"rows 1, 2, 3, 4, 5, ... ({n} rows), column CMT: missing on a dose row")  # fmt: skip
    assert "routes: iv, oral" in lines[1] and "1=depot" in lines[1]


def test_kinds_with_values_list_each_rows_value(one_cpt):
    df = pd.DataFrame({"ID": 1, "TIME": ["0", "x", "y", "z", "1", "w", "v", "u"], "DV": 1.0})
    with pytest.raises(DataError) as exc:
        read_data(one_cpt, df)
    msg = str(exc.value)
    assert "rows 2 ('x'), 3 ('y'), 4 ('z'), 6 ('w'), 7 ('v'), ... (6 rows), column TIME: not a number" in msg  # fmt: skip


def test_numbers_in_messages_are_plain(one_cpt, cart, tmp_path):
    """No numpy reprs (np.float64(2.5), np.int64(5)) in any message."""
    msgs = []

    def catch(fn, *a, **kw):
        with pytest.raises(DataError) as exc:
            fn(*a, **kw)
        msgs.append(str(exc.value))

    f = np.float64
    catch(make_records, one_cpt, [{"time": f(0), "evid": np.int64(7)}])
    catch(make_records, one_cpt, [{"time": f(0), "evid": 1, "amt": f(2.5), "cmt": f(9)}])
    catch(make_records, one_cpt, [{"time": f(0), "evid": 1, "amt": f(-2.5), "cmt": np.int64(2)}])
    catch(make_records, one_cpt, [{"time": f(0), "evid": 1, "amt": f(1), "cmt": 2, "rate": f(-3.5), "ss": f(4), "addl": f(1.5)}])  # fmt: skip
    catch(make_records, one_cpt, [{"time": f(1), "evid": 0}, {"time": f(0.5), "evid": 0}])
    df = pd.DataFrame({"ID": [1, 1, 2], "TIME": [0.0, -2.5, 1.0], "EVID": [1, 9, 0], "AMT": [1.0, 0, 0], "CMT": [7, 2, 2], "DV": [np.nan, 1.0, 2.0]})  # fmt: skip
    catch(read_data, one_cpt, df)
    catch(records_from_table, one_cpt, df)
    catch(read_data, one_cpt, df.assign(DVID=[1, 2, 3]), dvid={1: "cp"})
    catch(read_data, cart, df.assign(CMT=1, EVID=[1, 0, 0], TIME=[0, 1, 2], DVID=[np.nan, 3, 4]), dvid={3: "transgene"})  # fmt: skip
    catch(parse_dose, "1 iv at 0 every 1 for 1e9")
    catch(Bolus(1.0, every=1.0, count=np.int64(10**9)).record)
    bio = pd.DataFrame({"ID": ["a", "a"], "TIME": [1, 2], "ORGAN": "blood", "VALUE": 1.0, "UNIT": "copies", "DOSE": [f(100), f(2.5)]})  # fmt: skip
    catch(read_biodistribution, cart, bio, time_unit="d", outputs={"blood": "transgene"})
    for m in msgs:
        assert "np." not in m and "numpy" not in m, m
    assert any("2.5" in m for m in msgs)


# ---- limits --------------------------------------------------------------------------------------
def test_addl_beyond_the_dose_limit_refused_before_expansion(one_cpt, tmp_path, monkeypatch):
    import ldpk.dosing

    def no_expansion(*a, **kw):
        raise AssertionError("event_table called before the dose limit was checked")

    monkeypatch.setattr(ldpk.dosing, "event_table", no_expansion)
    text = "ID,TIME,AMT,II,ADDL,CMT,DV\n1,0,100,1,200000,2,.\n1,1,0,0,0,.,3\n"
    path = write(tmp_path, text)
    both_refuse(one_cpt, path, "row 1, column ADDL: ID 1: 200001 doses, more than the limit of 100000", "LDPK_MAX_DOSES")  # fmt: skip
    with pytest.raises(DataError, match="more than the limit of 100000 doses per subject"):
        make_records(one_cpt, [{"time": 0.0, "evid": 1, "amt": 1.0, "cmt": 2, "ii": 1.0, "addl": 1e12}])  # fmt: skip
    monkeypatch.setenv("LDPK_MAX_DOSES", "300000")
    assert len(records_from_table(one_cpt, read_table(path))[1]) == 2  # raised: accepted


def test_dose_strings_beyond_the_limit_refused(one_cpt, monkeypatch):
    with pytest.raises(DataError, match=r"'1 iv at 0 every 1 for 200000'.*limit of 100000.*LDPK_MAX_DOSES"):  # fmt: skip
        parse_dose("1 iv at 0 every 1 for 200000", one_cpt)
    with pytest.raises(DataError, match="limit of 100000"):
        Bolus(1.0, every=1.0, count=100_001).record()
    monkeypatch.setenv("LDPK_MAX_DOSES", "10")
    assert parse_dose("1 iv at 0 every 1 for 10", one_cpt).count == 10
    with pytest.raises(DataError, match="limit of 10 doses"):
        parse_dose("1 iv at 0 every 1 for 11", one_cpt)


def test_file_size_limit(one_cpt, tmp_path, monkeypatch):
    import ldpk.data

    assert ldpk.data.MAX_FILE_BYTES == 1 << 30
    path = write(tmp_path, GOOD)
    size = path.stat().st_size
    with pytest.raises(DataError) as exc:
        read_table(path, max_bytes=size - 1)
    assert str(exc.value).startswith(str(path)) and "LDPK_MAX_FILE_BYTES" in str(exc.value)
    monkeypatch.setenv("LDPK_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(DataError, match=f"{size} bytes, larger than the limit of {size - 1}"):
        read_data(one_cpt, path)
    monkeypatch.setenv("LDPK_MAX_FILE_BYTES", str(size))
    assert read_data(one_cpt, path).n_obs == 3


# ---- DVID text, unknown outputs, default route -----------------------------------------------------
CART = """ID,TIME,AMT,DVID,DV
1,0,1e7,.,.
1,1,0,transgene,500
1,2,0,LOG10_TRANSGENE,2.5
1,3,0,liver,7
1,4,0,liver,8
1,5,0,Transgene,300
"""


def test_text_dvid_maps_to_outputs_case_insensitively(cart, tmp_path):
    path = write(tmp_path, CART.replace("liver", "transgene"))
    ds = read_data(cart, path)
    np.testing.assert_array_equal(ds.output, [0, 1, 0, 0, 0])
    # the dose has no CMT: it goes to the model's one route
    assert ds.records[0].route[0] == 0


def test_numeric_dvid_as_before(cart, tmp_path):
    path = write(tmp_path, CART.replace("LOG10_TRANSGENE", "2").replace("Transgene", "1").replace("transgene", "1").replace("liver", "1"))  # fmt: skip
    ds = read_data(cart, path, dvid={1: "transgene", 2: "log10_transgene"})
    np.testing.assert_array_equal(ds.output, [0, 1, 0, 0, 0])


def test_unknown_outputs_refused_or_skipped(cart, tmp_path):
    path = write(tmp_path, CART)
    before = path.read_bytes()
    with pytest.raises(DataError) as exc:
        read_data(cart, path)
    msg = str(exc.value)
    assert msg.startswith(str(path))
    assert "rows 4, 5 (2 rows), column DVID: 'liver' is not an output of" in msg
    assert "skip_unknown_outputs=True" in msg
    with pytest.warns(UserWarning, match=r"skipped 2 observation rows of output 'liver'"):
        ds = read_data(cart, path, skip_unknown_outputs=True)
    np.testing.assert_array_equal(ds.row, [2, 3, 6])
    assert path.read_bytes() == before


def test_doses_without_cmt_need_a_route_when_the_model_has_several(one_cpt, tmp_path):
    path = write(tmp_path, "ID,TIME,AMT,DV\n1,0,100,.\n1,1,0,5\n2,0,100,.\n2,1,0,4\n")
    msg = both_refuse(one_cpt, path, "rows 1, 3 (2 rows), column CMT: missing on a dose row")
    assert len(msg.splitlines()) == 2


# ---- reader equivalence --------------------------------------------------------------------------
EQUIVALENT_GOOD = {
    "plain": GOOD,
    "no_evid": "ID,TIME,AMT,CMT,DV,MDV\n1,0,100,depot,.,1\n1,1,.,.,3,0\n1,2,.,.,.,1\n",
    "addl_ss_rate": "ID,TIME,EVID,AMT,CMT,RATE,II,ADDL,SS,DV\n1,0,1,100,2,50,12,3,0,.\n1,1,0,.,.,.,.,.,.,4\n2,0,1,100,1,.,24,.,1,.\n2,2,0,.,.,.,.,.,.,5\n",  # fmt: skip
    "rxode_evid": "ID,TIME,EVID,AMT,CMT,DV\n1,0,101,100,.,.\n1,1,0,0,.,2\n1,2,4,10,2,.\n1,3,0,0,.,1\n",
    "route_col": "id,time,evid,amt,route,dv\n1,0,1,5,iv,.\n1,0.5,2,.,.,.\n1,1,3,.,.,.\n1,2,0,.,.,7\n",
}
EQUIVALENT_BAD = {
    "neg_time": (
        GOOD.replace("1,2,0,.,.,8.1", "1,-1,0,.,.,8.1"),
        "row 3, column TIME: -1 is negative",
    ),  # fmt: skip
    "order": (
        GOOD.replace("1,2,0,.,.,8.1", "1,0.5,0,.,.,8.1"),
        "row 3, column TIME: 0.5 is earlier than row 2 (1) of ID 1",
    ),  # fmt: skip
    "evid": (GOOD.replace("2,1.5,0", "2,1.5,7"), "row 5, column EVID: 7 is not valid"),
    "cmt": (
        GOOD.replace("central", "liver"),
        "row 4, column CMT: CMT 'liver' is not a compartment",
    ),  # fmt: skip
    "cmt_num": (
        GOOD.replace("1,0,1,100,2", "1,0,1,100,9"),
        "row 1, column CMT: CMT 9 is not a compartment number",
    ),  # fmt: skip
    "text": (
        GOOD.replace("1,2,0,.,.,8.1", "1,2h,0,.,.,8.1"),
        "row 3, column TIME: '2h' is not a number",
    ),  # fmt: skip
    "rate": (
        GOOD.replace("ID,TIME", "RATE,ID,TIME")
        .replace("\n1,", "\n-5,1,")
        .replace("\n2,", "\n0,2,"),
        "row 1, column RATE: -5 is not valid",
    ),  # fmt: skip
    "ss": ("ID,TIME,AMT,CMT,SS,DV\n1,0,100,2,1,.\n1,1,0,.,.,3\n", "row 1, columns SS/II"),
    "addl": ("ID,TIME,AMT,CMT,ADDL,DV\n1,0,100,2,2,.\n1,1,0,.,.,3\n", "row 1, columns ADDL/II"),
}


@pytest.mark.parametrize("name", sorted(EQUIVALENT_GOOD))
def test_both_readers_parse_good_tables_identically(one_cpt, tmp_path, name):
    path = write(tmp_path, EQUIVALENT_GOOD[name])
    before = path.read_bytes()
    fit = read_data(one_cpt, path)
    sim = records_from_table(one_cpt, read_table(path), where=str(path))
    assert_same_records(dict(zip(fit.subjects, fit.records, strict=True)), sim)
    assert_same_records(sim, nonmem_table(one_cpt, path).records())
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", sorted(EQUIVALENT_BAD))
def test_both_readers_refuse_bad_tables_identically(one_cpt, tmp_path, name):
    text, fragment = EQUIVALENT_BAD[name]
    path = write(tmp_path, text)
    both_refuse(one_cpt, path, fragment)
