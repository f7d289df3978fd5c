"""Study data: reading and validating NONMEM-style tables into padded, masked arrays.

:func:`read_data` turns a table (CSV, Parquet or a pandas DataFrame) and a model into a
:class:`Dataset`: every subject's dosing records as one stacked :class:`~ldpk.EventTable` (so one
compiled kernel serves all subjects) and the observations as flat vectors with the subject, the
position among that subject's observations and the model output each one measures.

Every problem in the table is collected and reported at once, with its row number (1-based data
rows; the header is row 0), column and what would be valid, before anything is compiled.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldpk._limits import limit_from_env
from ldpk.dosing import (
    _EVID_HELP,
    EventTable,
    Records,
    _given,
    _make_records,
    _Problems,
    _too_many_doses,
    event_table,
    make_records,
    max_doses,
    resolve_route,
    show,
    stack_tables,
)
from ldpk.dosing import (
    MAX_LISTED as MAX_LISTED,  # problems listed in one message (ldpk.dosing._Problems)
)
from ldpk.errors import DataError, LdpkError
from ldpk.model import Model
from ldpk.tracer import convert, valid_units

#: Conversion factors from a time unit to hours.
TIME_UNITS = {
    "s": 1 / 3600,
    "min": 1 / 60,
    "h": 1.0,
    "d": 24.0,
    "day": 24.0,
    "days": 24.0,
    "week": 168.0,
    "weeks": 168.0,
    "wk": 168.0,
    "sec": 1 / 3600,
    "second": 1 / 3600,
    "seconds": 1 / 3600,
    "minute": 1 / 60,
    "minutes": 1 / 60,
    "hr": 1.0,
    "hour": 1.0,
    "hours": 1.0,
}

#: Columns with a NONMEM meaning (lower case). Any other numeric column is a covariate.
STANDARD_COLUMNS = (
    "id", "time", "evid", "amt", "cmt", "rate", "ii", "addl", "ss", "mdv", "dv", "route",
    "output", "dvid", "blq", "cens", "limit", "lloq", "study",
)  # fmt: skip


def example_data_dir() -> Path:
    """The bundled example studies: ``ldpk/_examples`` in a wheel, ``<repo>/examples/data`` in
    a checkout (see ``examples/data/README.md`` for how each was simulated)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_examples", here.parent.parent / "examples" / "data"):
        if cand.is_dir():
            return cand
    raise DataError("the bundled example studies are missing from this installation of ldpk")


def convert_time(values: np.ndarray, unit: str, to: str) -> np.ndarray:
    """Convert times from ``unit`` to ``to`` (units: s, min, h, d/day/days, week/weeks/wk)."""
    for u in (unit, to):
        if u not in TIME_UNITS:
            raise DataError(f"unknown time unit {u!r}; valid: {', '.join(TIME_UNITS)}")
    return np.asarray(values, dtype=float) * (TIME_UNITS[unit] / TIME_UNITS[to])


@dataclass(frozen=True)
class Dataset:
    """A validated study, ready for fitting.

    Observations are flat vectors (length ``n_obs``): ``subject`` (index into ``subjects``),
    ``position`` (index among that subject's observation records, i.e. into the kernel's output),
    ``output`` (index into ``output_names``), ``time`` (model time unit), ``dv`` (value in the
    output's unit), ``censored`` (+1 below a lower limit, -1 above an upper limit, 0 not
    censored), ``limit`` (the censoring limit; NaN where none), ``bound`` (None, or the other
    end of each censoring interval: the value lies between ``bound`` and ``limit``; NaN where
    the interval is unbounded) and ``row`` (row number in the source table). ``covariates`` holds each subject's first value of every numeric covariate
    column; ``study`` the study index of each subject (all 0 without a STUDY column)."""

    model: Model
    source: str
    subjects: tuple[Any, ...]
    table: EventTable
    records: tuple[Records, ...]
    subject: np.ndarray
    position: np.ndarray
    output: np.ndarray
    time: np.ndarray
    dv: np.ndarray
    censored: np.ndarray
    limit: np.ndarray
    row: np.ndarray
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    scale: np.ndarray | None = None
    study: np.ndarray | None = None
    study_names: tuple[Any, ...] = ()
    decay_corrected: bool = True
    bound: np.ndarray | None = None

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_obs(self) -> int:
        return len(self.dv)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.model.output_names

    @property
    def obs_scale(self) -> np.ndarray:
        """Factor from model output unit to observation unit per observation (ones if none)."""
        return np.ones(self.n_obs) if self.scale is None else self.scale

    def outputs_observed(self) -> tuple[str, ...]:
        """Names of the model outputs that have at least one observation, in model order."""
        used = set(self.output.tolist())
        return tuple(n for i, n in enumerate(self.output_names) if i in used)

    def frame(self) -> Any:
        """The observations as a pandas DataFrame (one row per observation)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "ID": [self.subjects[i] for i in self.subject],
                "TIME": self.time,
                "OUTPUT": [self.output_names[i] for i in self.output],
                "DV": self.dv,
                "CENS": self.censored,
                "LIMIT": self.limit,
                "ROW": self.row,
                "SCALE": self.obs_scale,
            }
            | ({} if self.bound is None else {"BOUND": self.bound})
        )


#: A data file larger than this (bytes) is refused before it is read. Raise it with the
#: environment variable LDPK_MAX_FILE_BYTES or ``read_table(..., max_bytes=)``.
MAX_FILE_BYTES = 1 << 30

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _max_file_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return int(max_bytes)
    return limit_from_env("LDPK_MAX_FILE_BYTES", MAX_FILE_BYTES, "bytes")


def _decode(raw: bytes, where: str) -> str:
    """The text of a CSV file: a byte-order mark (UTF-8, UTF-16, UTF-32) decides the encoding;
    without one UTF-8, else Latin-1 with a warning naming the file. Text that cannot be read is
    a DataError naming the encoding (never a UnicodeDecodeError)."""
    for bom, codec, name in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{where}: starts with a {name} byte-order mark but is not valid {name} (byte "
                    f"{exc.start}); save it as UTF-8"
                ) from None
    if b"\x00" in raw[:65536]:
        raise DataError(
            f"{where}: has NUL bytes, so it is not a text file in UTF-8 or Latin-1 (UTF-16 or "
            "UTF-32 without a byte-order mark, or a binary file?); save it as UTF-8 CSV, or "
            "give a .parquet file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        warnings.warn(
            f"{where}: not valid UTF-8 (byte {exc.start}); read as Latin-1 (ISO-8859-1). Check "
            "non-ASCII names and units, or save the file as UTF-8",
            stacklevel=4,
        )
        return raw.decode("latin-1")


def _check_columns(names: list[Any], where: str) -> None:
    """Column names must differ, also up to case ('TIME' and 'time' are refused)."""
    seen: dict[str, list[str]] = {}
    for c in names:
        seen.setdefault(str(c).strip().lower(), []).append(str(c))
    dup = [v for v in seen.values() if len(v) > 1]
    if dup:
        which = "; ".join(" and ".join(repr(c) for c in v) for v in dup)
        raise DataError(
            f"{where}: columns {which} have the same name (column names are compared ignoring "
            "case); rename or remove one of each"
        )


def read_table(path: str | Path, max_bytes: int | None = None) -> Any:
    """Read a CSV or Parquet file into a pandas DataFrame; every failure is a DataError.

    A file larger than ``max_bytes`` (default :data:`MAX_FILE_BYTES`, 1 GiB, or the environment
    variable ``LDPK_MAX_FILE_BYTES``) is refused before it is read. CSV text may be UTF-8 (with
    or without a byte-order mark), UTF-16 or UTF-32 with a byte-order mark, or Latin-1 (read as
    such, with a warning, only when it is not valid UTF-8). Columns whose names differ only in
    case, or repeat, are refused."""
    import pandas as pd

    p = Path(path)
    where = str(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read: {exc.strerror or exc}") from None
    limit = _max_file_bytes(max_bytes)
    if size > limit:
        raise DataError(
            f"{where}: {size} bytes, larger than the limit of {limit} bytes for a data file "
            "(ldpk.data.MAX_FILE_BYTES); raise it with the environment variable "
            "LDPK_MAX_FILE_BYTES=<bytes> or read_table(..., max_bytes=)"
        )
    if p.is_dir():
        raise DataError(f"{where}: is a directory, not a table")
    try:
        if where.endswith(".parquet"):
            frame = pd.read_parquet(p)
            _check_columns(list(frame.columns), where)
            return frame
        text = _decode(p.read_bytes(), where)
        header = next(csv.reader(io.StringIO(text)), [])
        _check_columns(header, where)
        return pd.read_csv(io.StringIO(text))
    except DataError:
        raise
    except Exception as exc:  # pandas raises many kinds
        raise DataError(f"{where}: cannot read as a table: {exc}") from None


def _missing(v: Any) -> bool:
    """Whether a cell is missing: None, NaN, blank or NONMEM's '.'."""
    return not _given(v)


def _numeric(frame: Any, col: str, problems: _Problems, label: str) -> np.ndarray:
    """A column as floats; blanks and '.' become NaN, every other non-number is a problem."""
    import pandas as pd

    raw = frame[col]
    if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:
        raw = raw.map(lambda v: np.nan if _missing(v) else v)
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(num) & ~raw.isna().to_numpy()
    for i in np.flatnonzero(bad):
        v = raw.iloc[i]
        problems.add(i + 1, label, f"{show(v)} is not a number", kind="not a number", value=show(v))
    return num


def _rxode_evid(evid: np.ndarray, cmt: np.ndarray | None, problems: _Problems) -> tuple:
    """rxode2's classic EVID codes 100*c + 1 (bolus into compartment c) read as EVID 1, CMT c."""
    evid = evid.copy()
    cmt = None if cmt is None else cmt.copy()
    coded = np.isfinite(evid) & (evid >= 100) & (evid < 10000) & (np.mod(evid, 100) == 1)
    if not coded.any():
        return evid, cmt
    c = np.floor(evid / 100)
    if cmt is None:
        cmt = np.where(coded, c, np.nan)
    else:
        for i in np.flatnonzero(coded & np.isfinite(cmt) & (cmt != c)):
            problems.add(
                i + 1, "EVID/CMT", f"EVID {evid[i]:g} means a dose into compartment {c[i]:g} "
                f"(rxode2 coding) but CMT is {cmt[i]:g}"
            )  # fmt: skip
        cmt = np.where(coded, c, cmt)
    evid[coded] = 1
    return evid, cmt


def _load_frame(data: str | Path | Any, columns: Mapping[str, str] | None, fn: str) -> tuple:
    """The table as a pandas DataFrame (columns renamed by ``columns``) and its name for messages."""
    import pandas as pd

    where = str(data) if isinstance(data, (str, Path)) else "<DataFrame>"
    frame = read_table(data) if isinstance(data, (str, Path)) else data.copy()
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{fn}(): expected a path or a pandas DataFrame, got {type(data)}")
    _check_columns(list(frame.columns), where)
    frame = _rename(frame, columns or {}, where)
    if columns:
        _check_columns(list(frame.columns), f"{where} (after columns=)")
    return frame, where


def _require(frame: Any, cols: Mapping[str, str], need: tuple[str, ...], problems: _Problems, columns: Any) -> None:  # fmt: skip
    """A problem for every column of ``need`` (lower case) the table lacks."""
    for c in need:
        if c not in cols:
            problems.add(
                None, c.upper(), f"missing; columns present: {', '.join(map(str, frame.columns))}"
                + (" (give `columns=` to map other names)" if columns is None else "")
            )  # fmt: skip


def _check_model_time_unit(model: Model) -> None:
    if model.time_unit not in TIME_UNITS:
        raise DataError(
            f"{model.source}: model time unit {model.time_unit!r} is not one of {', '.join(TIME_UNITS)}"
        )


def _censoring(
    cols: Mapping[str, str], num: Mapping[str, np.ndarray], is_obs: np.ndarray, dv: np.ndarray,
    problems: _Problems, dv_label: str, missing_dv: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Censoring flags (+1 below, -1 above a limit, 0 none), limits (NaN where none) and the
    other ends of censoring intervals (NaN where none) from the CENS/LIMIT, BLQ and LLOQ
    columns; problems name ``dv_label`` for the value column. As in NONMEM's M4 data and
    nlmixr2: with CENS 1 the value lies between LIMIT and the limit in DV (LIMIT < DV), with
    CENS -1 between DV and LIMIT (LIMIT > DV); without a finite LIMIT, beyond the limit."""
    n = len(dv)
    cens = np.zeros(n, dtype=np.int64)
    limit = np.full(n, np.nan)
    bound = np.full(n, np.nan)
    if "cens" in cols:
        c = np.nan_to_num(num["cens"])
        for i in np.flatnonzero(is_obs & ~np.isin(c, (-1, 0, 1))):
            problems.add(i + 1, "CENS", f"{c[i]:g} is not valid; use 0, 1 (below the limit in {dv_label}) or -1 (above)")  # fmt: skip
        cens = np.where(np.isin(c, (-1, 1)), c, 0).astype(np.int64)
        limit = np.where(cens != 0, dv, np.nan)
        if "limit" in cols:
            other = num["limit"]
            bound = np.where((cens != 0) & np.isfinite(other), other, np.nan)
            wrong = is_obs & np.isfinite(bound) & np.isfinite(limit) & (cens * (limit - bound) <= 0)
            for i in np.flatnonzero(wrong):
                rel = "below" if cens[i] > 0 else "above"
                problems.add(i + 1, "LIMIT", f"{bound[i]:g} must be {rel} the censoring limit in {dv_label} ({limit[i]:g}) with CENS {cens[i]}: the value lies between them; leave LIMIT empty for a value anywhere {rel} the limit")  # fmt: skip
    if "blq" in cols:
        b = np.nan_to_num(num["blq"])
        for i in np.flatnonzero(is_obs & ~np.isin(b, (0, 1))):
            problems.add(i + 1, "BLQ", f"{b[i]:g} is not valid; use 0 or 1")
        cens = np.where(b == 1, 1, cens)
        limit = np.where(b == 1, num["lloq"] if "lloq" in cols else dv, limit)
        bound = np.where(b == 1, np.nan, bound)
    elif "lloq" in cols:
        lloq = num["lloq"]
        below = is_obs & np.isfinite(lloq) & (np.isnan(dv) | (dv < lloq))
        cens = np.where(below, 1, cens)
        limit = np.where(below, lloq, limit)
        bound = np.where(below, np.nan, bound)
    for i in np.flatnonzero(is_obs & (cens != 0) & ~np.isfinite(limit)):
        problems.add(i + 1, "LLOQ" if "lloq" in cols else dv_label, f"a censored observation needs its limit (LLOQ column, or the limit in {dv_label})")  # fmt: skip
    for i in np.flatnonzero(is_obs & (cens == 0) & ~np.isfinite(dv)):
        problems.add(i + 1, dv_label, missing_dv)
    return cens, limit, bound


def _first_per_subject(values: np.ndarray, ids: np.ndarray, subjects: tuple[Any, ...]) -> list:
    """Each subject's value on its first row (``ids`` and ``values`` aligned, in table order)."""
    first: dict[Any, int] = {}
    for i, s in enumerate(ids):
        first.setdefault(s, i)
    return [values[first[s]] for s in subjects]


def _covariates(frame: Any, cov_cols: list, ids: np.ndarray, subjects: tuple[Any, ...]) -> dict[str, np.ndarray]:  # fmt: skip
    """Each subject's first value of every numeric covariate column (all-blank columns dropped)."""
    import pandas as pd

    covs = {}
    for c in cov_cols:
        vals = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        if np.isnan(vals).all():
            continue
        covs[c] = np.array(_first_per_subject(vals, ids, subjects), dtype=float)
    return covs


def _study(raw: np.ndarray, ids: np.ndarray, subjects: tuple[Any, ...]) -> tuple:
    """Study index of every subject (by its first row) and the study names in order of appearance."""
    first = _first_per_subject(raw, ids, subjects)
    names = tuple(dict.fromkeys(first))
    return np.array([names.index(v) for v in first], dtype=np.int64), names


def _assemble(
    model: Model, where: str, per_id: Mapping[Any, Records], rec_ids: np.ndarray,
    rec_returned: np.ndarray, obs_rec: np.ndarray, *, output: np.ndarray, time: np.ndarray,
    dv: np.ndarray, censored: np.ndarray, limit: np.ndarray, bound: np.ndarray, row: np.ndarray,
    covariates: dict[str, np.ndarray], study: np.ndarray | None, study_names: tuple[Any, ...],
    decay_corrected: bool, scale: np.ndarray | None = None,
) -> Dataset:  # fmt: skip
    """The Dataset from each subject's validated records.

    ``rec_ids`` and ``rec_returned`` run over all records in record order (each subject's in
    the order of its Records); ``rec_returned`` marks those the kernel returns (EVID 0 or 2).
    ``obs_rec`` indexes the fitted observations among the records; the other arguments are
    per observation. A censored observation's DV is its limit."""
    subjects = tuple(per_id)
    recs = tuple(per_id[s] for s in subjects)
    table = stack_tables([event_table(r) for r in recs])
    sub_of = {s: k for k, s in enumerate(subjects)}
    pos_of_rec = np.full(len(rec_ids), -1, dtype=np.int64)
    count: dict[Any, int] = {}
    for i in np.flatnonzero(rec_returned):
        pos_of_rec[i] = count.get(rec_ids[i], 0)
        count[rec_ids[i]] = pos_of_rec[i] + 1
    return Dataset(
        model=model, source=where, subjects=subjects, table=table, records=recs,
        subject=np.array([sub_of[rec_ids[i]] for i in obs_rec], dtype=np.int64),
        position=pos_of_rec[obs_rec], output=np.asarray(output, dtype=np.int64), time=time,
        dv=np.where(censored != 0, limit, dv), censored=censored, limit=limit, row=row,
        covariates=covariates, scale=scale, study=study, study_names=study_names,
        decay_corrected=decay_corrected, bound=bound if np.any(np.isfinite(bound)) else None,
    )  # fmt: skip


# ---- NONMEM-style tables: the one parser ---------------------------------------------------------
#: Columns the NONMEM parser reads (lower case); a covariate column of the model is matched
#: case-insensitively unless its name is one of these.
NONMEM_COLUMNS = ("id", "time", "evid", "amt", "cmt", "rate", "ii", "addl", "ss", "mdv", "dv", "route")  # fmt: skip


@dataclass
class NonmemTable:
    """A NONMEM-style table parsed and validated row by row (:func:`nonmem_table`).

    Per row (table order): ``ids`` (subject; 0 for all rows without an ID column), ``evid``
    (0-4, after inferring it from AMT/MDV and reading rxode2's EVID 100·c + 1), ``time`` (model
    time unit), ``mdv`` (0 where blank), ``num`` (every numeric NONMEM column as read, file
    units), ``route`` and ``cmt`` (the dose target as given; None where missing, except that a
    dose row without either has the model's ``default_route`` as its route). ``subjects``
    maps each ID, in order of appearance, to its row indices."""

    model: Model
    where: str
    ids: np.ndarray
    evid: np.ndarray
    time: np.ndarray
    mdv: np.ndarray
    num: dict[str, np.ndarray]
    route: list[Any]
    cmt: list[Any]
    covariates: dict[str, np.ndarray]
    subjects: dict[Any, list[int]]
    factor: float = 1.0

    def rows(self, idx: list[int]) -> list[dict[str, Any]]:
        """Records (model units) of the rows ``idx``, as :func:`~ldpk.dosing.make_records` takes."""
        f = self.factor
        out = []
        for i in idx:
            row: dict[str, Any] = {"time": self.time[i], "evid": self.evid[i]}
            for c in ("amt", "ii", "addl", "ss", "rate"):
                if c in self.num:
                    v = self.num[c][i]
                    row[c] = v * f if c == "ii" else (v / f if c == "rate" and v > 0 else v)
            row["route"] = self.route[i]
            row["cmt"] = self.cmt[i]
            row.update({c: v[i] for c, v in self.covariates.items()})
            out.append(row)
        return out

    def records(self, problems: _Problems | None = None) -> dict[Any, Records]:
        """Validated Records per subject. Problems go to ``problems`` (the caller raises), or
        are raised here, all at once."""
        own = problems is None
        probs = _Problems(self.where) if problems is None else problems
        out: dict[Any, Records] = {}
        for sid, idx in self.subjects.items():
            rec = _make_records(
                self.model, self.rows(idx), f"{self.where} (ID {sid})", [i + 1 for i in idx], probs
            )  # fmt: skip
            if rec is not None:
                out[sid] = rec
        if own:
            probs.raise_if_any()
        return out


def nonmem_table(
    model: Model, data: Any, where: str | None = None, *, time_factor: float = 1.0,
    problems: _Problems | None = None, need: tuple[str, ...] = ("time",),
) -> NonmemTable:  # fmt: skip
    """Parse and validate a NONMEM-style table: the one parser behind :func:`read_data`
    (``ldpk fit``) and :func:`records_from_table` (``ldpk simulate --data``).

    ``data``: a DataFrame (or a path, read by :func:`read_table`). Column names are
    case-insensitive (two equal up to case are refused); ``.`` and blanks are missing. Missing
    TIME, ID (with an ID column), EVID (with an EVID column) and AMT on a dose row are errors
    naming the rows; missing RATE, II, ADDL, SS, MDV are 0. Without EVID a row with AMT > 0 is a
    dose (EVID 1), with MDV 1 EVID 2, else EVID 0; rxode2's EVID 100·c + 1 is EVID 1 into CMT c.
    CMT is a compartment number or name, ROUTE a route name; a dose without either goes to the
    model's ``default_route`` (model file ``default_route:``), else to its route if it has
    exactly one. Negative TIME and times out of order within a subject
    are errors. ``time_factor`` converts TIME and II (RATE divides by it) to the model's unit.

    Problems go to ``problems`` (the caller raises them, with its own), else are raised here,
    grouped by kind (:class:`~ldpk.dosing._Problems`)."""
    import pandas as pd

    if isinstance(data, (str, Path)):
        where = str(data) if where is None else where
        frame = read_table(data)
    else:
        frame = data
        where = "<table>" if where is None else where
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a path or a pandas DataFrame, got {type(data)}")
    _check_columns(list(frame.columns), where)
    own = problems is None
    probs = _Problems(where) if problems is None else problems
    cols = {str(c).lower(): c for c in frame.columns}
    for c in need:
        if c not in cols:
            probs.add(None, c.upper(), f"missing; columns present: {', '.join(map(str, frame.columns))}")  # fmt: skip
    if "time" not in cols:
        probs.raise_if_any()
    n = len(frame)
    num = {}
    for c in ("time", "evid", "amt", "rate", "ii", "addl", "ss", "mdv"):
        if c in cols:
            num[c] = _numeric(frame, cols[c], probs, c.upper())
    route = [None] * n
    if "route" in cols:
        route = [None if _missing(v) else str(v).strip() for v in frame[cols["route"]].to_numpy()]
    cmt: list[Any] = [None] * n
    if "cmt" in cols:
        cmt = [_cmt_value(v) for v in frame[cols["cmt"]].to_numpy()]
    if "id" in cols:
        ids = frame[cols["id"]].to_numpy()
        for i in np.flatnonzero([_missing(v) for v in ids]):
            probs.add(i + 1, "ID", "missing")
    else:
        ids = np.zeros(n, dtype=np.int64)
    mdv = np.nan_to_num(num.get("mdv", np.zeros(n)))
    if "evid" in cols:
        evid = num["evid"]
        for i in np.flatnonzero(np.isnan(evid) & frame[cols["evid"]].map(_missing).to_numpy()):
            probs.add(i + 1, "EVID", f"missing; {_EVID_HELP}")
    else:
        amt0 = np.nan_to_num(num.get("amt", np.zeros(n)))
        evid = np.where(amt0 > 0, 1.0, np.where(mdv == 1, 2.0, 0.0))
    cmt_num = np.array([c if isinstance(c, float) else np.nan for c in cmt])
    evid, cmt_coded = _rxode_evid(evid, cmt_num if "cmt" in cols else None, probs)
    if cmt_coded is not None:
        cmt = [float(cmt_coded[i]) if np.isfinite(cmt_coded[i]) else cmt[i] for i in range(n)]
    for i in np.flatnonzero(np.isfinite(evid) & ~np.isin(evid, (0, 1, 2, 3, 4))):
        probs.add(i + 1, "EVID", f"{evid[i]:g} is not valid; {_EVID_HELP}", kind=f"not valid; {_EVID_HELP}", value=show(evid[i]))  # fmt: skip
    time = num.get("time", np.full(n, np.nan))
    if "time" in cols:
        for i in np.flatnonzero(frame[cols["time"]].map(_missing).to_numpy()):
            probs.add(i + 1, "TIME", "missing; every record needs a time")
    for i in np.flatnonzero(time < 0):
        probs.add(i + 1, "TIME", f"{time[i]:g} is negative; times are >= 0 since the start", kind="negative; times are >= 0 since the start", value=show(time[i]))  # fmt: skip
    # Doses: an amount and a target.
    is_dose = np.isin(evid, (1, 4))
    amt = num.get("amt", np.full(n, np.nan))
    amt_missing = (
        frame[cols["amt"]].map(_missing).to_numpy(dtype=bool) if "amt" in cols else np.ones(n, bool)
    )  # fmt: skip
    for i in np.flatnonzero(is_dose & np.isnan(amt) & amt_missing):
        probs.add(i + 1, "AMT", "missing on a dose row (EVID 1 or 4); give the amount")
    targets = _targets_help(model)
    target_problem: dict[tuple[Any, Any], str | None] = {}
    for i in np.flatnonzero(is_dose):
        if route[i] is None and cmt[i] is None:
            if model.default_route is not None:
                route[i] = model.default_route
            elif len(model.routes) != 1:
                probs.add(i + 1, "CMT", f"missing on a dose row, and no ROUTE; {model.name} has {len(model.routes)} routes and no `default_route:`, so each dose needs one: give CMT or ROUTE ({targets}), or declare `default_route: NAME` in the model file")  # fmt: skip
                continue
        key = (route[i], cmt[i])
        if key not in target_problem:
            try:
                resolve_route(model, route[i], cmt[i], "")
                target_problem[key] = None
            except DataError as exc:
                target_problem[key] = str(exc).lstrip(": ")
        if target_problem[key] is not None:
            probs.add(i + 1, "ROUTE" if route[i] is not None else "CMT", target_problem[key])
    # Subjects, time order, and the dose count before anything is expanded.
    subjects: dict[Any, list[int]] = {}
    for i, s in enumerate(ids):
        if not _missing(s):
            subjects.setdefault(s, []).append(i)
    addl = np.nan_to_num(num.get("addl", np.zeros(n)))
    limit = max_doses()
    for sid, idx in subjects.items():
        last: tuple[float, int] | None = None
        for i in idx:
            if np.isnan(time[i]):
                continue
            if last is not None and time[i] < last[0]:
                probs.add(i + 1, "TIME", f"{time[i]:g} is earlier than row {last[1]} ({last[0]:g}) of ID {show(sid) if not isinstance(sid, str) else sid}; sort each subject's records by time", kind="earlier than the subject's previous row; sort each subject's records by time", value=show(time[i]))  # fmt: skip
            last = (time[i], i + 1)
        doses = is_dose[idx]
        total = float(np.sum(np.where(doses, np.maximum(addl[idx], 0) + 1, 0)))
        if total > limit:
            first = idx[int(np.argmax(doses))]
            probs.add(first + 1, "ADDL", f"ID {sid}: {_too_many_doses(total, limit)}")
    covs = {}
    for c in model.covariate_names:
        if c in frame.columns:
            covs[c] = frame[c].map(lambda v: np.nan if _missing(v) else v).to_numpy()
        elif c.lower() in cols and c.lower() not in NONMEM_COLUMNS:
            covs[c] = frame[cols[c.lower()]].map(lambda v: np.nan if _missing(v) else v).to_numpy()
    table = NonmemTable(
        model=model, where=where, ids=ids, evid=evid, time=time * time_factor, mdv=mdv, num=num,
        route=route, cmt=cmt, covariates=covs, subjects=subjects, factor=time_factor,
    )  # fmt: skip
    if own:
        probs.raise_if_any()
    return table


def _number_or_name(v: Any) -> float | str:
    """A cell that holds a number or a name: a float if it reads as a number, else the text
    (stripped)."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return float(v)
    text = str(v).strip()
    try:
        return float(text)
    except ValueError:
        return text


def _cmt_value(v: Any) -> Any:
    """A CMT cell: None if missing, a float if a number, else the name (stripped)."""
    return None if _missing(v) else _number_or_name(v)


def _targets_help(model: Model) -> str:
    cmts = ", ".join(f"{i + 1}={c}" for i, c in enumerate(model.compartment_names))
    return f"routes: {', '.join(model.route_names) or '(none)'}; compartments: {cmts}"


def read_data(
    model: Model,
    data: str | Path | Any,
    *,
    time_unit: str | None = None,
    columns: Mapping[str, str] | None = None,
    dvid: Mapping[Any, str] | None = None,
    decay_corrected: bool = True,
    skip_unknown_outputs: bool = False,
) -> Dataset:
    """Read and validate a NONMEM-style study table for ``model``.

    Parameters
    ----------
    model: the model the data are fitted with (its routes, compartments and outputs).
    data: a CSV or Parquet path (see :func:`read_table`: encodings, size limit), or a pandas
        DataFrame.
    time_unit: the unit of the TIME, II and (for infusions) RATE-derived columns in the file;
        converted to the model's ``time_unit``. Default: the data are in the model's time unit.
    columns: renames for non-standard column names, ``{name in file: standard name}``, e.g.
        ``{"SUBJ": "ID", "CONC": "DV"}``. Matching of names is case-insensitive.
    dvid: with a DVID column, which model output each DVID value measures, e.g.
        ``{1: "cp", 2: "effect"}``. Text DVID values (e.g. "plasma") that are output names
        (case-insensitive) need no mapping. Alternatively an OUTPUT column holds output names; a
        model with one output needs neither.
    decay_corrected: whether radioactivity values in the file are decay-corrected to the time
        of dosing (True) or raw (False); predictions of outputs marked ``decay:`` follow it.
    skip_unknown_outputs: observations of outputs the model does not have (an OUTPUT or DVID
        the model lacks) are an error naming them unless this is True; then they are not
        fitted, with a warning giving their count.

    Columns (case-insensitive): ID, TIME, DV, and optionally EVID, AMT, CMT, ROUTE, RATE, II,
    ADDL, SS, MDV, OUTPUT or DVID, STUDY, and censoring as either BLQ (1 = below the limit) with
    LLOQ (or with DV holding the limit), or an LLOQ column alone (DV < LLOQ is censored), or
    CENS (1 below, -1 above the limit in DV) with optional LIMIT, the other end of the interval
    the value lies in (as nlmixr2 and Monolix: LIMIT < DV with CENS 1, e.g. 0 for a
    concentration; empty for no other end). Rows with EVID 0 and MDV 0 are
    observations; EVID 2 rows and MDV 1 rows are not fitted. rxode2's EVID 101 (dose into
    compartment 1) is read as EVID 1 with CMT 1. Other numeric columns are covariates. The
    dosing columns are parsed by :func:`nonmem_table`, as ``ldpk simulate --data`` parses them.
    """
    frame, where = _load_frame(data, columns, "read_data")
    problems = _Problems(where)
    cols = {c.lower(): c for c in frame.columns}
    _require(frame, cols, ("id", "time", "dv"), problems, columns)
    problems.raise_if_any()
    if len(frame) == 0:
        raise DataError(f"{where}: the table has no rows")
    unit = time_unit or model.time_unit
    if unit not in TIME_UNITS:
        raise DataError(f"{where}: unknown time unit {unit!r}; valid: {', '.join(TIME_UNITS)}")
    _check_model_time_unit(model)
    factor = TIME_UNITS[unit] / TIME_UNITS[model.time_unit]
    table = nonmem_table(model, frame, where, time_factor=factor, problems=problems)

    num = {}
    for c in ("dv", "blq", "cens", "limit", "lloq"):
        if c in cols:
            num[c] = _numeric(frame, cols[c], problems, c.upper())
    n = len(frame)
    evid, ids, dv = table.evid, table.ids, num["dv"]
    is_obs = (evid == 0) & (table.mdv != 1)
    out_idx, unknown = _observed_outputs(model, frame, cols, is_obs, dvid, problems)
    if unknown:
        rows = sorted(i for v in unknown.values() for i in v)
        if skip_unknown_outputs:
            is_obs[rows] = False
            warnings.warn(
                f"{where}: skipped {len(rows)} observation row{'s' if len(rows) > 1 else ''} of "
                f"output{'s' if len(unknown) > 1 else ''} {', '.join(map(show, unknown))} that "
                f"{model.name} does not have (skip_unknown_outputs=True)",
                stacklevel=2,
            )
        else:
            col = "OUTPUT" if "output" in cols else "DVID"
            skip = "pass skip_unknown_outputs=True (data: skip_unknown_outputs: true in a fit config) to skip these rows"  # fmt: skip
            for v, rows_v in unknown.items():
                if isinstance(v, float) and dvid is not None:
                    mapping = ", ".join(f"{show(k)}={o}" for k, o in dvid.items())
                    text = f"{show(v)} is not in the dvid mapping ({mapping}); add it to dvid=, or {skip}"  # fmt: skip
                else:
                    text = f"{show(v)} is not an output of {model.name}; outputs: {', '.join(model.output_names)}; {skip}"  # fmt: skip
                for i in rows_v:
                    problems.add(i + 1, col, text)

    cens, limit, bound = _censoring(
        cols, num, is_obs, dv, problems, "DV",
        "missing for an observation (EVID 0); set MDV 1 to skip the row, or mark it censored (BLQ/CENS)",
    )  # fmt: skip
    problems.raise_if_any()
    per_id = table.records(problems)
    problems.raise_if_any()
    subjects = tuple(per_id)

    # Observations as flat vectors, in data order. The kernel returns every EVID 0 or 2 record
    # of a subject, in data order; the fitted observations are a subset of them.
    obs_rows = np.flatnonzero(is_obs)
    study, study_names = None, ()
    if "study" in cols:
        study, study_names = _study(frame[cols["study"]].to_numpy(), ids, subjects)
    cov_cols = [c for c in frame.columns if c.lower() not in STANDARD_COLUMNS]
    assert len(ids) == n
    return _assemble(
        model, where, per_id, ids, np.isin(evid, (0, 2)), obs_rows, output=out_idx[obs_rows],
        time=table.time[obs_rows], dv=dv[obs_rows], censored=cens[obs_rows],
        limit=limit[obs_rows], bound=bound[obs_rows], row=obs_rows + 1, covariates=_covariates(frame, cov_cols, ids, subjects),
        study=study, study_names=study_names, decay_corrected=decay_corrected,
    )  # fmt: skip


def _observed_outputs(
    model: Model, frame: Any, cols: Mapping[str, str], is_obs: np.ndarray,
    dvid: Mapping[Any, str] | None, problems: _Problems,
) -> tuple[np.ndarray, dict[Any, list[int]]]:  # fmt: skip
    """The output index of every observation row (-1 elsewhere) from OUTPUT (output names) or
    DVID (numbers through ``dvid=``; text: output names, case-insensitive, or ``dvid=`` keys),
    and the rows of each value naming an output the model does not have."""
    names = list(model.output_names)
    lower: dict[str, int] = {}
    for k, nm in enumerate(names):
        lower.setdefault(nm.lower(), k)
    n = len(frame)
    out_idx = np.full(n, -1, dtype=np.int64)
    unknown: dict[Any, list[int]] = {}
    if "output" not in cols and "dvid" not in cols:
        if len(names) == 1:
            out_idx[:] = 0
        else:
            problems.add(None, "OUTPUT", f"{model.name} has several outputs ({', '.join(names)}); add an OUTPUT column naming the output of each observation, or DVID with `dvid=`")  # fmt: skip
        return out_idx, unknown
    col = "output" if "output" in cols else "dvid"
    raw = frame[cols[col]].to_numpy()
    lookup: dict[Any, int] = {}
    for k, v in (dvid or {}).items() if col == "dvid" else ():
        if v not in names:
            raise DataError(f"dvid: {v!r} is not an output of {model.name}; outputs: {', '.join(names)}")  # fmt: skip
        lookup[_dvid_key(k)] = names.index(v)
    numeric_unmapped: list[int] = []
    for i in np.flatnonzero(is_obs):
        v = raw[i]
        if _missing(v):
            problems.add(i + 1, col.upper(), f"missing on an observation row; name the output ({', '.join(names)})")  # fmt: skip
            continue
        key = _dvid_key(v) if col == "dvid" else str(v).strip()
        if key in lookup:
            out_idx[i] = lookup[key]
        elif isinstance(key, float):
            if dvid is None and len(names) == 1:
                out_idx[i] = 0
            elif dvid is None:
                numeric_unmapped.append(i)
            else:
                unknown.setdefault(float(key), []).append(i)
        elif key in names:
            out_idx[i] = names.index(key)
        elif key.lower() in lower:
            out_idx[i] = lower[key.lower()]
        else:
            unknown.setdefault(key, []).append(i)
    if numeric_unmapped:
        problems.add(None, "DVID", f"give `dvid=` mapping DVID values to outputs ({', '.join(names)}), or write output names as DVID")  # fmt: skip
    return out_idx, unknown


def _dvid_key(v: Any) -> Any:
    """A DVID value or ``dvid=`` key as compared: a float if a number, else stripped text
    (case-insensitive matching is done against output names)."""
    key = _number_or_name(v)
    return key.lower() if isinstance(key, str) else key


def _rename(frame: Any, columns: Mapping[str, str], where: str) -> Any:
    if not columns:
        return frame
    lower = {c.lower(): c for c in frame.columns}
    mapping = {}
    for src, dst in columns.items():
        if src in frame.columns:
            mapping[src] = dst
        elif src.lower() in lower:
            mapping[lower[src.lower()]] = dst
        else:
            raise DataError(f"{where}: columns= names {src!r}, which is not a column; columns: {', '.join(map(str, frame.columns))}")  # fmt: skip
    return frame.rename(columns=mapping)


# ---- tidy biodistribution tables ---------------------------------------------------------------
#: Columns of a tidy biodistribution table with a meaning (lower case). Any other numeric column
#: is a covariate.
BIODISTRIBUTION_COLUMNS = (
    "id", "time", "organ", "value", "dv", "unit", "weight", "lloq", "blq", "cens", "limit",
    "dose", "route", "dose_time", "study", "group", "time_unit", "output",
)  # fmt: skip

#: Tissue names besides the physiology tables' organs; an output named ``*_<one of these>`` is
#: never matched to a different organ by unit alone.
_TISSUE_WORDS = (
    "plasma", "serum", "body", "whole_body", "urine", "feces", "faeces", "carcass", "tumor",
    "tumour", "injury", "bone", "marrow", "skin", "fat", "adipose", "stomach", "intestine", "gut",
    "pancreas", "bladder", "thymus", "lymph_node", "ovary", "testis", "uterus", "eye",
)  # fmt: skip
_ROWS_LISTED = 5


def _organ_key(organ: Any) -> str:
    """An organ name as matched against output names: lower case, spaces and '-' as '_'."""
    return re.sub(r"[\s\-]+", "_", str(organ).strip()).lower()


def _unit_key(unit: Any) -> str:
    """A unit as compared: no white space, 'µ'/'μ' written 'u' (case kept: mCi is not MCi)."""
    return "".join(str(unit).split()).replace("µ", "u").replace("μ", "u")


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:_ROWS_LISTED]))
    more = f" (and {len(rows) - _ROWS_LISTED} more)" if len(rows) > _ROWS_LISTED else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _split_volume(unit: str) -> tuple[str, str]:
    """A unit without its '/mL' suffix, and the suffix ('' if none)."""
    return (unit[:-3], "/mL") if unit.endswith("/mL") else (unit, "")


def _relative(unit: str) -> bool:
    """Whether ``unit`` (whole organ) is dose-relative ('fraction', 'ID', '%ID')."""
    try:
        convert(1.0, unit, "fraction")
    except DataError:
        return False
    return True


@dataclass(frozen=True)
class _Match:
    """Row value = model output · factor · WEIGHT**exponent (exponent -1: per gram from a
    whole-organ output; +1: whole organ from a per-gram output; 0: weight not used), divided
    by the animal's DOSE if ``per_dose`` (a dose-relative row such as %ID measuring an output
    that is an amount in the model's dose unit: %ID = 100 · amount / DOSE)."""

    output: int
    factor: float
    exponent: int
    per_dose: bool = False


class _OutputMatcher:
    """Which model output a (organ, unit) row measures, and the factor to the row's unit."""

    def __init__(self, model: Model, decay_corrected: bool, file_organs: set[str]) -> None:
        from ldpk.model.physiology import ORGANS

        self.model = model
        self.outputs = model.outputs
        self.decay_corrected = decay_corrected
        words = {*ORGANS, *_TISSUE_WORDS, *file_organs}
        self.words = sorted(words, key=len, reverse=True)
        self._conv: dict[tuple[str, str], tuple[float, int] | None] = {}

    def named(self, organ: str) -> list[int]:
        """Outputs named for ``organ``: the organ is a '_'-separated part of the name (case
        ignored), e.g. 'lung' names pct_lung, pct_per_g_lung, radio_lung_g and lung_conc."""
        return [i for i, o in enumerate(self.outputs) if f"_{organ}_" in f"_{o.name.lower()}_"]

    def organ_of(self, name: str) -> str | None:
        """The tissue an output is named for (longest known tissue word in the name), or None."""
        n = f"_{name.lower()}_"
        return next((w for w in self.words if f"_{w}_" in n), None)

    def conversion(self, i: int, unit: str) -> tuple[float, int, bool] | None:
        """(factor, weight exponent, per dose) from output ``i``'s unit to ``unit``, or None.

        Without a dose: the units are equal or convert by :func:`ldpk.tracer.convert` (no
        counting efficiency). Else, per dose: ``unit`` is dose-relative ('%ID', 'fraction',
        'ID'; per gram with '/g' or per mL with '/mL') and the output is an amount in the
        model's dose unit (:meth:`_dose_amount`), e.g. 'cell-eq' -> '%ID' × 100/DOSE,
        'cell-eq' -> '%ID/g' × 100/(DOSE·WEIGHT), 'cell-eq/mL' -> '%ID/mL' × 100/DOSE."""
        src = _unit_key(self.outputs[i].unit)
        key = (src, unit)
        if key not in self._conv:
            if src == unit:
                self._conv[key] = (1.0, 0, False)
            else:
                conv = self._factor(src, unit, {})
                if conv is None and self._dose_amount(src):
                    conv = self._per_dose(src, unit)
                self._conv[key] = conv
        return self._conv[key]

    @staticmethod
    def _factor(src: str, unit: str, kw: dict[str, float], per_dose: bool = False) -> tuple[float, int, bool] | None:  # fmt: skip
        """(factor, weight exponent, ``per_dose``) from ``src`` to ``unit`` by convert(), or None."""
        try:
            f1 = float(convert(1.0, src, unit, organ_weight_g=1.0, **kw))
            f2 = float(convert(1.0, src, unit, organ_weight_g=2.0, **kw))
        except DataError:
            return None
        r = f2 / f1
        return f1, 0 if np.isclose(r, 1.0) else (1 if r > 1 else -1), per_dose

    def _dose_amount(self, unit: str) -> bool:
        """Whether an output in ``unit`` is an amount in the model's dose unit (whole organ, per
        gram or per mL): the model's amount unit itself, or 'cell-eq' / 'amount', which
        :mod:`ldpk.tracer` defines as the unit of the dose. A dose-relative unit is not."""
        base = _split_volume(unit)[0]
        base = base[:-2] if base.endswith("/g") else base
        if not base or _relative(base):
            return False
        return base in {"cell-eq", "amount", _unit_key(self.model.amount_unit)}

    def _dose_units(self) -> list[str]:
        """The amount units :meth:`_dose_amount` takes as the model's dose unit (for messages)."""
        own = _unit_key(self.model.amount_unit)
        extra = [own] if own and not _relative(own) and own not in ("cell-eq", "amount") else []
        return [*extra, "cell-eq", "amount"]

    @staticmethod
    def _per_dose(src: str, unit: str) -> tuple[float, int, bool] | None:
        """The conversion from an amount in the dose unit (``src``) to a dose-relative
        ``unit``, with the dose taken as 1 (the row's DOSE divides it), or None."""
        sb, s_ml = _split_volume(src)
        ub, u_ml = _split_volume(unit)
        if s_ml != u_ml or not _relative(ub[:-2] if ub.endswith("/g") else ub):
            return None  # per mL only from per mL: no volume to convert with
        src_g = "/g" if sb.endswith("/g") else ""
        if s_ml and (src_g or ub.endswith("/g")):
            return None
        return _OutputMatcher._factor(f"amount{src_g}", ub, {"dose": 1.0}, per_dose=True)

    def _describe(self, idx: list[int]) -> str:
        return ", ".join(
            f"{self.outputs[i].name} ({self.outputs[i].unit or 'no unit'})" for i in idx
        )

    def explicit(self, i: int, organ: str, unit: str | None, has_weight: bool) -> _Match | tuple[str, str]:  # fmt: skip
        """The match for output ``i`` named by OUTPUT or ``outputs=``, or (column, problem)."""
        if unit is None:
            return _Match(i, 1.0, 0)
        out = self.outputs[i]
        conv = self.conversion(i, unit)
        if conv is None:
            return "UNIT", (
                f"organ {organ!r}, unit {unit!r}: output {out.name} is in {out.unit!r}, which does "
                f"not convert to {unit!r}; units that convert: {', '.join(valid_units())} "
                "(each also per gram with '/g'); amounts in the model's dose unit "
                f"({', '.join(self._dose_units())}) convert to '%ID', '%ID/g' and (per mL) "
                "'%ID/mL' through each animal's DOSE"
            )
        if conv[1] != 0 and not has_weight:
            return "WEIGHT", (
                f"organ {organ!r}, unit {unit!r}: output {out.name} is in {out.unit!r}; the "
                "conversion needs the organ weight (g) in a WEIGHT column"
            )
        return _Match(i, *conv)

    def automatic(self, organ: str, unit: str | None, has_weight: bool) -> _Match | tuple[str, str]:  # fmt: skip
        """The output measured by a row of ``organ`` in ``unit`` (None: no UNIT column), or
        (column, problem). Candidates are the outputs named for the organ (else, with a unit,
        the one output in that unit not named for any organ); among those usable in the row's
        unit, raw data (``decay_corrected=False``) take outputs marked ``decay:`` if any, then an
        exact unit match is preferred to a converted one; candidates with the same expression
        and unit count once."""
        named = self.named(organ)
        fallback = not named
        pool = named or (
            [i for i, o in enumerate(self.outputs) if self.organ_of(o.name) is None]
            if unit is not None else []
        )  # fmt: skip
        usable: list[_Match] = []
        need_weight: list[int] = []
        per_dose: set[int] = set()
        for i in pool:
            conv = (1.0, 0, False) if unit is None else self.conversion(i, unit)
            if conv is None:
                continue
            if conv[2]:
                per_dose.add(i)
            if conv[1] != 0 and not has_weight:
                need_weight.append(i)
                continue
            usable.append(_Match(i, *conv))
        # Conversions through the dose only where nothing converts without it, and never for
        # the unit-only fallback (an unnamed amount output is not taken for an organ's %ID).
        if per_dose and (fallback or len(per_dose) < len({*need_weight, *(m.output for m in usable)})):  # fmt: skip
            usable = [m for m in usable if not m.per_dose]
            need_weight = [i for i in need_weight if i not in per_dose]
        decayed = {i for i in [*need_weight, *(m.output for m in usable)] if self.outputs[i].decay}
        if not self.decay_corrected and decayed:
            usable = [m for m in usable if m.output in decayed]
            need_weight = [i for i in need_weight if i in decayed]
        fix = (
            f"map it with outputs={{{organ!r}: '<output>'}} or "
            f"{{({organ!r}, {unit!r}): '<output>'}}, or an OUTPUT column"
        )
        if fallback and len(usable) != 1:
            organs = sorted({w for o in self.outputs if (w := self.organ_of(o.name)) is not None})
            have = (
                f"organs with outputs: {', '.join(organs)}" if organs
                else f"outputs: {self._describe(list(range(len(self.outputs))))}"
            )  # fmt: skip
            return "ORGAN", (
                f"organ {organ!r}, unit {unit!r}: {self.model.name} has no output for this organ "
                f"(no output name has '{organ}' as a '_'-separated part); {have}; {fix}"
            )
        if not usable:
            if need_weight:
                return "WEIGHT", (
                    f"organ {organ!r}, unit {unit!r}: the output for this organ "
                    f"({self._describe(need_weight)}) needs the organ weight (g) to give "
                    f"{unit!r}; add a WEIGHT column or {fix}"
                    + (" (raw data are predicted by `decay:` outputs)" if not self.decay_corrected and decayed else "")
                )  # fmt: skip
            return "UNIT", (
                f"organ {organ!r}, unit {unit!r}: no output for this organ is in or converts to "
                f"{unit!r}; candidates: {self._describe(named)}"
            )
        exact = [m for m in usable if unit is not None and _unit_key(self.outputs[m.output].unit) == unit]  # fmt: skip
        usable = exact or usable
        distinct: list[_Match] = []
        for m in usable:
            if not any(self._same(m, d) for d in distinct):
                distinct.append(m)
        if len(distinct) == 1:
            return distinct[0]
        return "ORGAN", (
            f"organ {organ!r}, unit {unit!r}: several outputs match: "
            f"{self._describe([m.output for m in distinct])}; "
            + ("add a UNIT column, or " if unit is None else "")
            + fix
        )

    def _same(self, a: _Match, b: _Match) -> bool:
        """Whether two matches predict the same values (same expression, unit and factor; the
        decay flag matters only for raw data)."""
        oa, ob = self.outputs[a.output], self.outputs[b.output]
        return (
            oa.expr.source == ob.expr.source and _unit_key(oa.unit) == _unit_key(ob.unit)
            and (a.factor, a.exponent, a.per_dose) == (b.factor, b.exponent, b.per_dose)
            and (self.decay_corrected or oa.decay == ob.decay)
        )  # fmt: skip


def _time_unit(
    frame: Any, cols: Mapping[str, str], time_unit: str | None, model: Model, problems: _Problems
) -> str | None:
    """The declared unit of TIME (TIME_UNIT column, one value, or ``time_unit=``); problems if
    neither, both disagreeing, several values or an unknown unit."""
    valid = ", ".join(TIME_UNITS)
    declared = None
    if "time_unit" in cols:
        raw = frame[cols["time_unit"]].to_numpy()
        seen: dict[str, int] = {}
        for i, v in enumerate(raw):
            if not _missing(v) and not (isinstance(v, str) and not v.strip()):
                seen.setdefault(str(v).strip().lower(), i + 1)
        if len(seen) > 1:
            first = ", ".join(f"{u!r} (row {r})" for u, r in seen.items())
            problems.add(None, "TIME_UNIT", f"one unit for the whole file, found {first}; convert the times to one unit")  # fmt: skip
        elif seen:
            declared = next(iter(seen))
        else:
            problems.add(None, "TIME_UNIT", f"empty; give the unit of TIME (one of {valid})")
    arg = None if time_unit is None else str(time_unit).strip().lower()
    if arg is not None and declared is not None and arg != declared:
        problems.add(None, "TIME_UNIT", f"{declared!r} disagrees with time_unit={time_unit!r}")
    unit = arg or declared
    if unit is None:
        if "time_unit" not in cols:
            problems.add(
                None, "TIME_UNIT", "the unit of TIME is not declared (times are never guessed): "
                f"add a TIME_UNIT column (one value for the file, e.g. 'h') or pass time_unit=; "
                f"valid: {valid}; the model's time unit is {model.time_unit!r}"
            )  # fmt: skip
        return None
    if unit not in TIME_UNITS:
        problems.add(None, "TIME_UNIT", f"unknown time unit {unit!r}; valid: {valid}")
        return None
    return unit


def _dose_use(rows: np.ndarray, out_idx: np.ndarray, row_unit: list, names: list[str], model: Model) -> str:  # fmt: skip
    """For a DOSE problem: what the dose also converts on which rows (``rows`` 0-based), e.g.
    "; the dose also converts In111_lung (cell-eq) to '%ID' on rows 1, 7 (%ID = 100 · amount
    / DOSE)"; '' if none."""
    if len(rows) == 0:
        return ""
    pairs = dict.fromkeys((int(out_idx[i]), row_unit[i]) for i in rows)
    what = "; ".join(
        f"{names[o]} ({model.outputs[o].unit}) to {u!r}" for o, u in list(pairs)[:3]
    ) + ("; ..." if len(pairs) > 3 else "")
    return (
        f"; the dose also converts {what} on {_rows_text([int(i) + 1 for i in rows])} "
        "(%ID = 100 · amount / DOSE)"
    )


def _per_animal(
    values: np.ndarray, ids: np.ndarray, label: str, problems: _Problems
) -> dict[Any, tuple[Any, int]]:
    """Each animal's first non-blank value and its row index; a differing value is a problem."""
    first: dict[Any, tuple[Any, int]] = {}
    for i, (a, v) in enumerate(zip(ids, values, strict=True)):
        if _missing(v) or _missing(a) or (isinstance(v, str) and not v.strip()):
            continue
        if a not in first:
            first[a] = (v, i)
        elif v != first[a][0]:
            v0, i0 = first[a]
            problems.add(i + 1, label, f"{show(v)} differs from row {i0 + 1} ({show(v0)}) of ID {a}; one value per animal")  # fmt: skip
    return first


def read_biodistribution(
    model: Model,
    data: str | Path | Any,
    *,
    time_unit: str | None = None,
    outputs: Mapping[str | tuple[str, str], str] | None = None,
    columns: Mapping[str, str] | None = None,
    decay_corrected: bool = True,
    dose: float | None = None,
    route: str | None = None,
) -> Dataset:
    """Read and validate a tidy biodistribution table (one row per animal × organ × time).

    Parameters
    ----------
    model: the model the data are fitted with.
    data: a CSV or Parquet path, or a pandas DataFrame.
    time_unit: the unit of TIME and DOSE_TIME (s, min, h, d, week and spelled-out forms);
        converted to ``model.time_unit``. Required unless the file has a TIME_UNIT column.
    outputs: which model output an organ's rows measure, ``{organ: output}`` or
        ``{(organ, unit): output}`` (the pair wins); organs left out are mapped automatically.
    columns: renames for non-standard column names, ``{name in file: standard name}``, e.g.
        ``{"Mouse": "ID", "Tissue": "ORGAN", "pct": "VALUE"}``. Names match case-insensitively.
    decay_corrected: whether radioactivity values are decay-corrected to the time of dosing
        (True) or raw (False); predictions of outputs marked ``decay:`` follow it, and raw data
        are matched to ``decay:`` outputs first.
    dose: the dose of every animal without a DOSE value (model amount unit, ``model.amount_unit``;
        e.g. 100 for a model whose amounts are %ID, 1e6 for 1e6 cells of a model in cells). It
        also converts amount outputs to the %ID of the rows (see below).
    route: the route of every animal without a ROUTE value (a route name of the model); not
        needed for a model with one route or a ``default_route`` (used when this is None).

    Columns (case-insensitive): ID (animal), TIME (time of the measurement, on the same clock as
    DOSE_TIME), ORGAN, VALUE (or DV), and optionally UNIT (of VALUE: '%ID', '%ID/g',
    'fraction', 'cells', 'cells/g', 'Bq', 'MBq', 'uCi', 'cpm', ... or exactly an output's unit
    such as 'copies' or 'photons/s'), WEIGHT (organ weight, g), LLOQ and/or BLQ (as in
    :func:`read_data`; CENS works too), DOSE, ROUTE, DOSE_TIME (default 0), STUDY or GROUP,
    TIME_UNIT (one value for the file), OUTPUT (an output name, overriding the matching).
    DOSE, ROUTE, DOSE_TIME and STUDY/GROUP hold one value per animal. Other numeric columns are
    covariates (each animal's first value).

    Every animal is a subject with one dose (EVID 1) at DOSE_TIME and an observation at each of
    its rows, so destructive designs (one time per animal, many organs) and longitudinal
    imaging (many times per animal) are read alike. A row measures the output named OUTPUT,
    else ``outputs[(organ, unit)]`` or ``outputs[organ]``, else the output whose name has the organ
    as a '_'-separated part ('lung' names pct_lung, pct_per_g_lung, radio_lung_g, lung_conc;
    case-insensitive; spaces and '-' in organ names read as '_') whose unit is the row's unit or converts to it by :func:`ldpk.tracer.convert`
    without a dose (e.g. '%ID' -> 'fraction' × 0.01; '%ID' -> '%ID/g' × 1/WEIGHT). If no output
    is named for the organ, the one output in the row's unit not named for any organ is used
    (e.g. a blood qPCR model with a single output). Among several candidates: raw data
    (``decay_corrected=False``) take the ``decay:`` outputs if any is in a matching unit; then
    an output in exactly the row's unit wins over a converted one (so a model's own '%ID/g'
    output wins over '%ID' / WEIGHT: map explicitly to use the measured weight); outputs with
    the same expression and unit count once. Anything else ambiguous is a problem.

    Dose-relative rows ('%ID', 'fraction', 'ID'; per gram with WEIGHT; per mL) also measure
    outputs that are amounts in the model's dose unit (``model.amount_unit``, or 'cell-eq' /
    'amount', which :mod:`ldpk.tracer` defines as the unit of the dose), through each animal's
    DOSE (or ``dose=``): '%ID' = 100 · amount / DOSE, '%ID/g' = 100 · amount / (DOSE · WEIGHT)
    (or 100 · amount-per-g / DOSE), '%ID/mL' = 100 · amount-per-mL / DOSE. E.g. 111In SPECT in
    %ID of 1e6 MSCs (DOSE 1e6 cells) against In111_lung in cell-eq: scale 1e-4. Such outputs
    are candidates only where no output converts without the dose, and never for the
    unit-only fallback. A missing or non-positive DOSE is a problem naming the rows it
    would convert. ``Dataset.scale`` holds the factor from output to row unit (prediction ×
    scale is compared with VALUE).

    Every problem is listed at once (rows are 1-based data rows; the header is row 0).
    """
    import pandas as pd

    frame, where = _load_frame(data, columns, "read_biodistribution")
    problems = _Problems(where)
    cols = {c.lower(): c for c in frame.columns}
    _require(frame, cols, ("id", "time", "organ"), problems, columns)
    if "value" in cols and "dv" in cols:
        problems.add(None, "VALUE/DV", "give one of VALUE or DV, not both")
    elif "value" not in cols and "dv" not in cols:
        _require(frame, cols, ("value",), problems, columns)
    problems.raise_if_any()
    if len(frame) == 0:
        raise DataError(f"{where}: the table has no rows")
    # Problems with the doses are listed after the output matching, which says which rows
    # also need the dose to convert the model's amounts to %ID: (animal or None, row, text).
    dose_problems: list[tuple[Any, int | None, str]] = []
    if "dose" not in cols and dose is None:
        dose_problems.append((None, None, (
            f"missing; add a DOSE column or pass dose= (the amount given, in the model's amount "
            f"unit {model.amount_unit!r})"
        )))  # fmt: skip
    # The route of an animal without a ROUTE value: route=, else the model's default_route.
    fallback = route if route is not None else model.default_route
    if "route" not in cols and fallback is None and len(model.routes) != 1:
        problems.add(None, "ROUTE", f"missing; add a ROUTE column or pass route=; routes of {model.name}: {', '.join(model.route_names) or '(none)'} (or declare `default_route: NAME` in the model file)")  # fmt: skip
    names = list(model.output_names)
    by_organ: dict[str, int] = {}
    by_pair: dict[tuple[str, str], int] = {}
    for key, name in (outputs or {}).items():
        if name not in names:
            problems.add(None, None, f"outputs=: {name!r} (for {key!r}) is not an output of {model.name}; outputs: {', '.join(names)}")  # fmt: skip
        elif isinstance(key, tuple) and len(key) == 2:
            by_pair[(_organ_key(key[0]), _unit_key(key[1]))] = names.index(name)
        elif isinstance(key, str):
            by_organ[_organ_key(key)] = names.index(name)
        else:
            problems.add(None, None, f"outputs=: key {key!r} is not an organ or (organ, unit)")
    _check_model_time_unit(model)
    unit = _time_unit(frame, cols, time_unit, model, problems)
    n = len(frame)
    value_key = "value" if "value" in cols else "dv"
    value_label = value_key.upper()

    num = {}
    for c in ("time", value_key, "weight", "lloq", "blq", "cens", "limit", "dose", "dose_time"):
        if c in cols:
            num[c] = _numeric(frame, cols[c], problems, c.upper())
    time = num["time"]
    for i in np.flatnonzero(frame[cols["time"]].isna().to_numpy()):
        problems.add(i + 1, "TIME", "missing; every measurement needs a time")
    for i in np.flatnonzero(time < 0):
        problems.add(i + 1, "TIME", f"{time[i]:g} is negative; times are >= 0 (time of dosing: DOSE_TIME, default 0)")  # fmt: skip
    ids = frame[cols["id"]].to_numpy()
    for i in np.flatnonzero([_missing(a) for a in ids]):
        problems.add(i + 1, "ID", "missing")
    organ_raw = frame[cols["organ"]].to_numpy()
    organ = np.array(["" if _missing(o) else _organ_key(o) for o in organ_raw], dtype=object)
    for i in np.flatnonzero(organ == ""):
        problems.add(i + 1, "ORGAN", "missing")
    weight = num.get("weight", np.full(n, np.nan))
    for i in np.flatnonzero(weight <= 0):
        problems.add(i + 1, "WEIGHT", f"{weight[i]:g} is not a weight; organ weights are > 0 (g)")
    if "lloq" in num:
        for i in np.flatnonzero(num["lloq"] < 0):
            problems.add(i + 1, "LLOQ", f"{num['lloq'][i]:g} is negative")
    value = num[value_key]
    cens, limit, bound = _censoring(
        cols, num, np.ones(n, dtype=bool), value, problems, value_label,
        "missing; give the measured value, or mark the row censored (BLQ 1 with LLOQ, or an "
        "LLOQ with the value blank)",
    )  # fmt: skip

    # One dose per animal: amount, route, time; study.
    animals = tuple(dict.fromkeys(a for a in ids if not _missing(a)))
    dose_of = _per_animal(num["dose"], ids, "DOSE", problems) if "dose" in num else {}
    route_of = (
        _per_animal(frame[cols["route"]].to_numpy(), ids, "ROUTE", problems) if "route" in cols else {}
    )  # fmt: skip
    dtime = num.get("dose_time", np.zeros(n))
    for i in np.flatnonzero(dtime < 0):
        problems.add(i + 1, "DOSE_TIME", f"{dtime[i]:g} is negative")
    dtime_of = _per_animal(dtime, ids, "DOSE_TIME", problems)
    if "dose_time" in num:
        for a in dict.fromkeys(a for a in ids if not _missing(a)):
            if a not in dtime_of:
                i = next(j for j, b in enumerate(ids) if b == a)
                problems.add(i + 1, "DOSE_TIME", f"missing for ID {a}; give the time of dosing on its rows (or drop the column for 0)", kind="missing for these animals; give the time of dosing on their rows (or drop the column for 0)")  # fmt: skip
    study_col = cols.get("study", cols.get("group"))
    study_label = "STUDY" if "study" in cols else "GROUP"
    if study_col is not None:
        _per_animal(frame[study_col].to_numpy(), ids, study_label, problems)
    first_row = {a: i for i, a in reversed(list(enumerate(ids)))}
    if dose is not None and not (np.isfinite(dose) and dose > 0):
        shown = repr(float(dose)) if isinstance(dose, (int, float, np.number)) else repr(dose)
        problems.add(None, None, f"dose=: {shown} is not a dose; give an amount > 0")
    amount: dict[Any, float] = {}
    route_name: dict[Any, Any] = {}
    route_problem: dict[Any, str | None] = {}
    bad_route: dict[str, list[int]] = {}
    for a in animals:
        if a in dose_of:
            d, i = dose_of[a]
            if np.isfinite(d) and d > 0:
                amount[a] = float(d)
            else:
                dose_problems.append((a, i + 1, f"{d:g} is not a dose; give an amount > 0 (model amount unit {model.amount_unit!r})"))  # fmt: skip
        elif dose is not None:
            amount[a] = float(dose)
        elif "dose" in cols:
            dose_problems.append((a, first_row[a] + 1, f"missing for ID {a}; give the dose (model amount unit {model.amount_unit!r}) on its rows or pass dose="))  # fmt: skip
        r = route_of[a][0] if a in route_of else fallback
        if r is None and len(model.routes) != 1:
            if "route" in cols:
                problems.add(first_row[a] + 1, "ROUTE", f"missing for ID {a}; routes: {', '.join(model.route_names)} (or pass route=, or declare `default_route: NAME` in the model file)", kind=f"missing for these animals; routes: {', '.join(model.route_names)} (or pass route=, or declare `default_route: NAME` in the model file)")  # fmt: skip
            continue
        route_name[a] = None if r is None else str(r).strip()
        if route_name[a] not in route_problem:
            try:
                resolve_route(model, route_name[a], None, "")
                route_problem[route_name[a]] = None
            except DataError as exc:
                route_problem[route_name[a]] = str(exc).lstrip(": ")
        text = route_problem[route_name[a]]
        if text is not None:
            bad_route.setdefault(text, [])
            if a in route_of:
                bad_route[text].append(route_of[a][1] + 1)
    for text, rows in bad_route.items():
        problems.add_line(f"{_rows_text(rows)}, column ROUTE: {text}" if rows else f"route=: {text}")  # fmt: skip

    # Which output each row measures, and the factor from the output's unit to the row's unit.
    if "unit" in cols:
        unit_raw = frame[cols["unit"]].to_numpy()
        row_unit: list[str | None] = []
        for i, u in enumerate(unit_raw):
            if _missing(u) or not str(u).strip():
                problems.add(i + 1, "UNIT", "missing; give the unit of the value (e.g. '%ID', '%ID/g')")  # fmt: skip
                row_unit.append(None)
            else:
                row_unit.append(_unit_key(u))
    else:
        row_unit = [None] * n
    out_raw = frame[cols["output"]].to_numpy() if "output" in cols else None
    matcher = _OutputMatcher(model, decay_corrected, {o for o in organ if o})
    has_w = np.isfinite(weight) & (weight > 0)
    out_idx = np.full(n, -1, dtype=np.int64)
    scale = np.ones(n)
    per_dose = np.zeros(n, dtype=bool)
    results: dict[tuple, _Match | tuple[str, str]] = {}
    failed: dict[tuple[str, str], list[int]] = {}
    for i in range(n):
        if organ[i] == "" or ("unit" in cols and row_unit[i] is None):
            continue
        explicit = None
        if out_raw is not None and not _missing(out_raw[i]) and str(out_raw[i]).strip():
            name = str(out_raw[i]).strip()
            if name not in names:
                failed.setdefault(("OUTPUT", f"{name!r} is not an output of {model.name}; outputs: {', '.join(names)}"), []).append(i + 1)  # fmt: skip
                continue
            explicit = names.index(name)
        elif (organ[i], row_unit[i]) in by_pair:
            explicit = by_pair[(organ[i], row_unit[i])]
        elif organ[i] in by_organ:
            explicit = by_organ[organ[i]]
        key = (organ[i], row_unit[i], bool(has_w[i]), explicit)
        if key not in results:
            results[key] = (
                matcher.automatic(organ[i], row_unit[i], bool(has_w[i])) if explicit is None
                else matcher.explicit(explicit, organ[i], row_unit[i], bool(has_w[i]))
            )  # fmt: skip
        res = results[key]
        if isinstance(res, _Match):
            out_idx[i] = res.output
            scale[i] = res.factor * (weight[i] ** res.exponent if res.exponent else 1.0)
            if res.per_dose:
                per_dose[i] = True
        else:
            failed.setdefault(res, []).append(i + 1)
    for (column, text), rows in failed.items():
        problems.add_line(f"{_rows_text(rows)}, column {column}: {text}")
    for a, row, text in dose_problems:
        sel = np.flatnonzero(per_dose & (ids == a)) if a is not None else np.flatnonzero(per_dose)
        problems.add(row, "DOSE", text + _dose_use(sel, out_idx, row_unit, names, model))
    problems.raise_if_any()
    assert unit is not None
    # Dose-relative rows of an amount output: divided by the animal's dose (model amount unit).
    for i in np.flatnonzero(per_dose):
        scale[i] /= amount[ids[i]]

    # Records: per animal the dose at DOSE_TIME and an observation at each row, in time order.
    factor = TIME_UNITS[unit] / TIME_UNITS[model.time_unit]
    cov_cols = [c for c in frame.columns if c.lower() not in BIODISTRIBUTION_COLUMNS]
    lower_cov = {c.lower(): c for c in cov_cols}
    model_cov = {c: c if c in cov_cols else lower_cov.get(c.lower()) for c in model.covariate_names}
    cov_vals = {
        c: pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        for c, col in model_cov.items() if col is not None
    }  # fmt: skip
    rows_of: dict[Any, list[int]] = {a: [] for a in animals}
    for i, a in enumerate(ids):
        rows_of[a].append(i)
    per_id: dict[Any, Records] = {}
    rec_ids: list[Any] = []
    obs_rec: list[int] = []
    obs_row: list[int] = []
    for a in animals:
        idx = sorted(rows_of[a], key=lambda i: time[i])
        t_dose = float(dtime_of[a][0]) if a in dtime_of else 0.0
        i0 = rows_of[a][0]
        dose_rec = {"time": t_dose * factor, "evid": 1, "amt": amount[a], "route": route_name[a]}
        dose_rec.update({c: v[i0] for c, v in cov_vals.items()})
        recs: list[dict[str, Any]] = []
        nums: list[int] = []
        for i in idx:
            if dose_rec is not None and time[i] >= t_dose:
                recs.append(dose_rec)
                nums.append(i0 + 1)
                rec_ids.append(a)
                dose_rec = None
            obs_rec.append(len(rec_ids))
            obs_row.append(i)
            rec_ids.append(a)
            recs.append({"time": time[i] * factor, "evid": 0, **{c: v[i] for c, v in cov_vals.items()}})  # fmt: skip
            nums.append(i + 1)
        if dose_rec is not None:
            recs.append(dose_rec)
            nums.append(i0 + 1)
            rec_ids.append(a)
        try:
            per_id[a] = make_records(model, recs, where=f"{where} (ID {a})", row_numbers=nums)
        except LdpkError as exc:
            raise DataError(str(exc)) from None
    rid = np.empty(len(rec_ids), dtype=object)
    rid[:] = rec_ids
    returned = np.zeros(len(rec_ids), dtype=bool)
    returned[obs_rec] = True
    sel = np.asarray(obs_row, dtype=np.int64)
    study, study_names = None, ()
    if study_col is not None:
        study, study_names = _study(frame[study_col].to_numpy(), ids, animals)
    return _assemble(
        model, where, per_id, rid, returned, np.asarray(obs_rec, dtype=np.int64),
        output=out_idx[sel], time=time[sel] * factor, dv=value[sel], censored=cens[sel],
        limit=limit[sel], bound=bound[sel], row=sel + 1, covariates=_covariates(frame, cov_cols, ids, animals),
        study=study, study_names=study_names, decay_corrected=decay_corrected, scale=scale[sel],
    )  # fmt: skip


#: Options of a fit config's ``data:`` section, by reader.
READ_OPTIONS = {
    "read_data": ("time_unit", "columns", "dvid", "decay_corrected", "skip_unknown_outputs"),
    "read_biodistribution": ("time_unit", "outputs", "columns", "decay_corrected", "dose", "route"),
}


def read_study(model: Model, data: str | Path | Any, **options: Any) -> Dataset:
    """Read a study table with the right reader: :func:`read_biodistribution` when it has an
    ORGAN column (tidy animal × organ × time tables), else :func:`read_data` (NONMEM style).
    ``options`` go to the reader (``format: nonmem | biodistribution`` forces one); an option
    the chosen reader does not take is an error naming the valid ones."""
    options = dict(options)
    fmt = options.pop("format", None)
    if fmt not in (None, "nonmem", "biodistribution"):
        raise DataError(f"data format {fmt!r}; valid: nonmem, biodistribution")
    if fmt is None:
        frame, _ = _load_frame(data, options.get("columns"), "read_study")
        fmt = "biodistribution" if "organ" in {str(c).lower() for c in frame.columns} else "nonmem"
        data = frame if not isinstance(data, (str, Path)) else data
    reader = read_biodistribution if fmt == "biodistribution" else read_data
    valid = READ_OPTIONS[reader.__name__]
    bad = set(options) - set(valid)
    if bad:
        raise DataError(f"{reader.__name__}() does not take {sorted(bad)}; valid: format, {', '.join(valid)}")  # fmt: skip
    return reader(model, data, **options)


def records_from_table(model: Model, table: Any, where: str = "<table>") -> dict[Any, Records]:
    """Split a NONMEM-style table (pandas DataFrame) into validated Records per ID (what
    ``ldpk simulate --data`` predicts).

    The table is parsed by :func:`nonmem_table`, the one parser of NONMEM-style tables
    (``ldpk fit`` reads the same columns the same way through :func:`read_data`). Column
    names are case-insensitive: ID (optional: one subject), TIME, EVID, AMT, CMT (number or
    name), ROUTE (route name, optional), RATE, II, ADDL, SS, MDV and covariate columns named
    as in the model; '.' and blanks are missing. Without EVID, rows with AMT > 0 are doses and
    the others observations (EVID 0; MDV = 1 makes them EVID 2). Every problem is reported at
    once; row numbers in messages are 1-based data rows (the header is row 0)."""
    return nonmem_table(model, table, where).records()
