"""Study data: reading and validating NONMEM-style tables into padded, masked arrays.

:func:`read_data` turns a table (CSV, Parquet or a pandas DataFrame) and a model into a
:class:`Dataset`: every subject's dosing records as one stacked :class:`~ldpk.EventTable` (so one
compiled kernel serves all subjects) and the observations as flat vectors with the subject, the
position among that subject's observations and the model output each one measures.

Every problem in the table is collected and reported at once, with its row number (1-based data
rows; the header is row 0), column and what would be valid, before anything is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldpk.dosing import (
    EventTable,
    Records,
    event_table,
    read_table,
    records_from_table,
    resolve_route,
    stack_tables,
)
from ldpk.errors import DataError, LdpkError
from ldpk.model import Model

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
}

#: Columns with a NONMEM meaning (lower case). Any other numeric column is a covariate.
STANDARD_COLUMNS = (
    "id", "time", "evid", "amt", "cmt", "rate", "ii", "addl", "ss", "mdv", "dv", "route",
    "output", "dvid", "blq", "cens", "limit", "lloq", "study",
)  # fmt: skip

#: Problems listed in one error message (the count of the rest is given).
MAX_LISTED = 25


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
    censored), ``limit`` (the censoring limit; NaN where none) and ``row`` (row number in the
    source table). ``covariates`` holds each subject's first value of every numeric covariate
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
        )


class _Problems:
    """Collects every problem in a table, then raises one DataError listing them."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, row: int | None, column: str | None, text: str) -> None:
        at = []
        if row is not None:
            at.append(f"row {row}")
        if column is not None:
            at.append(f"column {column}")
        self.items.append(f"{', '.join(at)}: {text}" if at else text)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        n = len(self.items)
        shown = self.items[:MAX_LISTED]
        more = f"\n  ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
        raise DataError(
            f"{self.where}: {n} problem{'s' if n > 1 else ''} in the data:\n  "
            + "\n  ".join(shown)
            + more
        )


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v)


def _numeric(frame: Any, col: str, problems: _Problems, label: str) -> np.ndarray:
    """A column as floats; every non-numeric entry is a problem (blanks become NaN)."""
    import pandas as pd

    raw = frame[col]
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(num) & ~raw.isna().to_numpy()
    if isinstance(raw.dtype, pd.StringDtype) or raw.dtype == object:
        bad &= raw.astype(str).str.strip().to_numpy() != "."
    for i in np.flatnonzero(bad):
        problems.add(i + 1, label, f"{raw.iloc[i]!r} is not a number")
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


def read_data(
    model: Model,
    data: str | Path | Any,
    *,
    time_unit: str | None = None,
    columns: Mapping[str, str] | None = None,
    dvid: Mapping[Any, str] | None = None,
    decay_corrected: bool = True,
) -> Dataset:
    """Read and validate a NONMEM-style study table for ``model``.

    Parameters
    ----------
    model: the model the data are fitted with (its routes, compartments and outputs).
    data: a CSV or Parquet path, or a pandas DataFrame.
    time_unit: the unit of the TIME, II and (for infusions) RATE-derived columns in the file;
        converted to the model's ``time_unit``. Default: the data are in the model's time unit.
    columns: renames for non-standard column names, ``{name in file: standard name}``, e.g.
        ``{"SUBJ": "ID", "CONC": "DV"}``. Matching of names is case-insensitive.
    dvid: with a DVID column, which model output each DVID value measures, e.g.
        ``{1: "cp", 2: "effect"}``. Alternatively an OUTPUT column holds output names; a model
        with one output needs neither.
    decay_corrected: whether radioactivity values in the file are decay-corrected to the time
        of dosing (True) or raw (False); predictions of outputs marked ``decay:`` follow it.

    Columns (case-insensitive): ID, TIME, DV, and optionally EVID, AMT, CMT, ROUTE, RATE, II,
    ADDL, SS, MDV, OUTPUT or DVID, STUDY, and censoring as either BLQ (1 = below the limit) with
    LLOQ (or with DV holding the limit), or an LLOQ column alone (DV < LLOQ is censored), or
    CENS (1 below, -1 above the limit in DV) with optional LIMIT. Rows with EVID 0 and MDV 0 are
    observations; EVID 2 rows and MDV 1 rows are not fitted. rxode2's EVID 101 (dose into
    compartment 1) is read as EVID 1 with CMT 1. Other numeric columns are covariates.
    """
    import pandas as pd

    where = str(data) if isinstance(data, (str, Path)) else "<DataFrame>"
    frame = read_table(data) if isinstance(data, (str, Path)) else data.copy()
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"read_data(): expected a path or a pandas DataFrame, got {type(data)}")
    problems = _Problems(where)
    frame = _rename(frame, columns or {}, where)
    cols = {c.lower(): c for c in frame.columns}
    for need in ("id", "time", "dv"):
        if need not in cols:
            problems.add(
                None, need.upper(), f"missing; columns present: {', '.join(map(str, frame.columns))}"
                + (" (give `columns=` to map other names)" if columns is None else "")
            )  # fmt: skip
    problems.raise_if_any()
    if len(frame) == 0:
        raise DataError(f"{where}: the table has no rows")
    unit = time_unit or model.time_unit
    if unit not in TIME_UNITS:
        raise DataError(f"{where}: unknown time unit {unit!r}; valid: {', '.join(TIME_UNITS)}")
    if model.time_unit not in TIME_UNITS:
        raise DataError(
            f"{model.source}: model time unit {model.time_unit!r} is not one of {', '.join(TIME_UNITS)}"
        )

    num = {}
    for c in ("time", "evid", "amt", "rate", "ii", "addl", "ss", "mdv", "dv", "blq", "cens", "limit", "lloq", "dvid"):  # fmt: skip
        if c in cols:
            num[c] = _numeric(frame, cols[c], problems, c.upper())
    cmt_num = None
    if "cmt" in cols:
        raw = frame[cols["cmt"]]
        as_num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        if not (np.isnan(as_num) & ~raw.isna().to_numpy()).any():
            cmt_num = as_num
    n = len(frame)
    evid = num.get("evid")
    if evid is None:
        amt = np.nan_to_num(num.get("amt", np.zeros(n)))
        mdv = np.nan_to_num(num.get("mdv", np.zeros(n)))
        evid = np.where(amt > 0, 1.0, np.where(mdv == 1, 2.0, 0.0))
    evid, cmt_num = _rxode_evid(evid, cmt_num, problems)
    time = num["time"]
    for i in np.flatnonzero(frame[cols["time"]].isna().to_numpy()):
        problems.add(i + 1, "TIME", "missing; every record needs a time")
    for i in np.flatnonzero(time < 0):
        problems.add(i + 1, "TIME", f"{time[i]:g} is negative; times are >= 0 since the start")
    mdv = np.nan_to_num(num.get("mdv", np.zeros(n)))
    dv = num["dv"]
    is_obs = (evid == 0) & (mdv != 1)
    ids = frame[cols["id"]].to_numpy()
    for i in np.flatnonzero(pd.isna(ids)):
        problems.add(i + 1, "ID", "missing")

    # Which output each observation measures.
    out_names = list(model.output_names)
    out_idx = np.full(n, -1, dtype=np.int64)
    if "output" in cols:
        raw = frame[cols["output"]].to_numpy()
        for i in np.flatnonzero(is_obs):
            name = str(raw[i])
            if name in out_names:
                out_idx[i] = out_names.index(name)
            else:
                problems.add(i + 1, "OUTPUT", f"{raw[i]!r} is not an output of {model.name}; outputs: {', '.join(out_names)}")  # fmt: skip
    elif "dvid" in cols:
        if dvid is None:
            if len(out_names) == 1:
                out_idx[:] = 0
            else:
                problems.add(None, "DVID", f"give `dvid=` mapping DVID values to outputs ({', '.join(out_names)})")  # fmt: skip
        else:
            for v in dvid.values():
                if v not in out_names:
                    raise DataError(f"dvid: {v!r} is not an output of {model.name}; outputs: {', '.join(out_names)}")  # fmt: skip
            lookup = {float(k): out_names.index(v) for k, v in dvid.items()}
            for i in np.flatnonzero(is_obs):
                d = num["dvid"][i]
                if d in lookup:
                    out_idx[i] = lookup[d]
                else:
                    problems.add(i + 1, "DVID", f"{d:g} is not in the dvid mapping ({', '.join(f'{k}={v}' for k, v in dvid.items())})")  # fmt: skip
    elif len(out_names) == 1:
        out_idx[:] = 0
    else:
        problems.add(None, "OUTPUT", f"{model.name} has several outputs ({', '.join(out_names)}); add an OUTPUT column naming the output of each observation, or DVID with `dvid=`")  # fmt: skip

    # Censoring.
    cens = np.zeros(n, dtype=np.int64)
    limit = np.full(n, np.nan)
    if "cens" in cols:
        c = np.nan_to_num(num["cens"])
        for i in np.flatnonzero(is_obs & ~np.isin(c, (-1, 0, 1))):
            problems.add(i + 1, "CENS", f"{c[i]:g} is not valid; use 0, 1 (below the limit in DV) or -1 (above)")  # fmt: skip
        cens = np.where(np.isin(c, (-1, 1)), c, 0).astype(np.int64)
        limit = np.where(cens != 0, dv, np.nan)
    if "blq" in cols:
        b = np.nan_to_num(num["blq"])
        for i in np.flatnonzero(is_obs & ~np.isin(b, (0, 1))):
            problems.add(i + 1, "BLQ", f"{b[i]:g} is not valid; use 0 or 1")
        cens = np.where(b == 1, 1, cens)
        limit = np.where(b == 1, num["lloq"] if "lloq" in cols else dv, limit)
    elif "lloq" in cols:
        lloq = num["lloq"]
        below = is_obs & np.isfinite(lloq) & (np.isnan(dv) | (dv < lloq))
        cens = np.where(below, 1, cens)
        limit = np.where(below, lloq, limit)
    for i in np.flatnonzero(is_obs & (cens != 0) & ~np.isfinite(limit)):
        problems.add(i + 1, "LLOQ" if "lloq" in cols else "DV", "a censored observation needs its limit (LLOQ column, or the limit in DV)")  # fmt: skip
    for i in np.flatnonzero(is_obs & (cens == 0) & ~np.isfinite(dv)):
        problems.add(i + 1, "DV", "missing for an observation (EVID 0); set MDV 1 to skip the row, or mark it censored (BLQ/CENS)")  # fmt: skip

    # Doses into routes/compartments the model has.
    route_col = frame[cols["route"]].to_numpy() if "route" in cols else None
    cmt_col = frame[cols["cmt"]].to_numpy() if "cmt" in cols else None
    for i in np.flatnonzero(np.isin(evid, (1, 4))):
        try:
            cmt = (
                cmt_num[i] if cmt_num is not None else (cmt_col[i] if cmt_col is not None else None)
            )
            resolve_route(model, None if route_col is None else route_col[i], cmt, "")
        except DataError as exc:
            problems.add(i + 1, "ROUTE" if route_col is not None else "CMT", str(exc).lstrip(": "))
    # Time order within subjects.
    seen_last: dict[Any, tuple[float, int]] = {}
    for i in range(n):
        if np.isnan(time[i]):
            continue
        last = seen_last.get(ids[i])
        if last is not None and time[i] < last[0]:
            problems.add(i + 1, "TIME", f"{time[i]:g} is earlier than row {last[1]} ({last[0]:g}) of ID {ids[i]}; sort each subject's records by time")  # fmt: skip
        seen_last[ids[i]] = (time[i], i + 1)
    problems.raise_if_any()

    # Convert times and build the NONMEM records per subject.
    factor = TIME_UNITS[unit] / TIME_UNITS[model.time_unit]
    work = pd.DataFrame({"ID": ids, "TIME": time * factor, "EVID": evid})
    for c in ("amt", "ii", "addl", "ss", "mdv"):
        if c in num:
            work[c.upper()] = num[c] * (factor if c == "ii" else 1.0)
    if "rate" in num:
        r = num["rate"]
        work["RATE"] = np.where(r > 0, r / factor, r)
    if cmt_num is not None:
        work["CMT"] = cmt_num
    elif cmt_col is not None:
        work["CMT"] = cmt_col
    if route_col is not None:
        work["ROUTE"] = route_col
    cov_cols = [c for c in frame.columns if c.lower() not in STANDARD_COLUMNS]
    for c in cov_cols:
        work[c] = frame[c].to_numpy()
    try:
        per_id = records_from_table(model, work, where)
    except LdpkError as exc:
        raise DataError(str(exc)) from None
    subjects = tuple(per_id)
    recs = tuple(per_id[s] for s in subjects)
    table = stack_tables([event_table(r) for r in recs])

    # Observations as flat vectors, in subject then record order.
    obs_rows = np.flatnonzero(is_obs)
    sub_of = {s: k for k, s in enumerate(subjects)}
    # The kernel returns every EVID 0 or 2 record of a subject, in data order; the fitted
    # observations are a subset of them.
    pos_of_row = np.full(n, -1, dtype=np.int64)
    count: dict[Any, int] = {}
    for i in np.flatnonzero(np.isin(evid, (0, 2))):
        pos_of_row[i] = count.get(ids[i], 0)
        count[ids[i]] = pos_of_row[i] + 1
    position = pos_of_row[obs_rows]
    subject = np.array([sub_of[ids[i]] for i in obs_rows], dtype=np.int64)
    covs = {}
    for c in cov_cols:
        vals = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        if np.isnan(vals).all():
            continue
        covs[c] = np.array([vals[np.flatnonzero(ids == s)[0]] for s in subjects])
    study = None
    study_names: tuple[Any, ...] = ()
    if "study" in cols:
        raw = frame[cols["study"]].to_numpy()
        first = [raw[np.flatnonzero(ids == s)[0]] for s in subjects]
        study_names = tuple(dict.fromkeys(first))
        study = np.array([study_names.index(v) for v in first], dtype=np.int64)
    dv_obs = dv[obs_rows].copy()
    cens_obs = cens[obs_rows]
    lim_obs = limit[obs_rows]
    dv_obs = np.where(cens_obs != 0, lim_obs, dv_obs)
    return Dataset(
        model=model, source=where, subjects=subjects, table=table, records=recs,
        subject=subject, position=position, output=out_idx[obs_rows], time=time[obs_rows] * factor,
        dv=dv_obs, censored=cens_obs, limit=lim_obs, row=obs_rows + 1, covariates=covs,
        study=study, study_names=study_names, decay_corrected=decay_corrected,
    )  # fmt: skip


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
