"""Dose events with NONMEM record semantics, and their padded array form.

A *regimen* is a time-ordered list of NONMEM-style records for one subject:

========  ==============================================================================
EVID      0 observation, 1 dose, 2 other (a prediction time), 3 reset, 4 reset and dose
AMT       amount (model amount unit)
RATE      0 bolus; > 0 infusion at RATE (amount/time, duration F·AMT/RATE);
          -1 rate modelled by the route's ``rate``; -2 duration modelled by ``duration``
II, ADDL  ADDL additional doses every II (time)
SS        1 steady state (resets the system first), 2 steady state added to the current state;
          AMT = 0 with RATE > 0 and II = 0 is a steady-state constant infusion
CMT/route the dose target; a route carries lag time, bioavailability F, modelled rate/duration
========  ==============================================================================

Semantics follow NONMEM 7 (checked against NONMEM 7.4.3 output, ``tests/test_nmtest.py``):
a reset (EVID 3/4, SS = 1) sets amounts to their initial values, stops running infusions and
cancels doses not yet given (lagged doses, additional doses). Records at equal times are taken
in data order; a lagged or additional dose that lands on a record's time is given before it.
For a steady-state dose with lag time L, the steady state is that of doses at T + L + k·II:
the state at T is the periodic steady state a time II - L after the dose at T + L - II (for
L > II NONMEM extrapolates this backwards in time, and so does ldpk).

Python users build the same records with :class:`Bolus`, :class:`Infusion` and :class:`Reset`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldpk._limits import limit_from_env
from ldpk.errors import DataError
from ldpk.model import Model

# Event kinds of the static timeline (see ``ldpk.solve._timeline``).
PAD, OBS, RESET, BOLUS, INF_START, INF_STOP, SS_SET, SS_RUNSTOP = range(8)
KIND_NAMES = ("pad", "obs", "reset", "bolus", "inf_start", "inf_stop", "ss_set", "ss_runstop")
#: How many infusions of a steady-state train may still be running at the steady-state time.
MAX_SS_OVERLAP = 8


# ---- problems: collected, grouped by kind, reported at once -------------------------------------
#: Kinds of problem listed in one error message (the count of the rest is given).
MAX_LISTED = 25
#: Rows listed for one kind of problem (the count of all is given).
ROWS_LISTED = 5
#: Where row numbers in messages count from: the first data row (the line after the header).
ROW_CONVENTION = "rows are data rows counted from 1; the header line is row 0"


def show(v: Any) -> str:
    """A value for a message: numbers as '%g' (never ``np.float64(2.5)``), text as its repr."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, np.str_):
        return repr(str(v))
    return repr(v)


class _Problems:
    """Collects every problem in a table, grouped by kind, then raises one DataError.

    A kind is a column and a text (or an explicit ``kind`` text for problems whose texts differ
    only in the value): one kind on many rows is one line, e.g. ``rows 2, 3, 4, 5, 6, ... (589
    rows), column CMT: missing on dose rows; ...``, listing the first :data:`ROWS_LISTED` rows
    and the count. ``single_line``: one problem is reported on one line (``where: row 3, column
    AMT: ...``) rather than under a header."""

    def __init__(self, where: str, single_line: bool = False) -> None:
        self.where = where
        self.single_line = single_line
        self._groups: dict[Any, tuple[str | None, str, list[tuple[int | None, str, str | None]]]] = {}  # fmt: skip
        self.count = 0

    def add(
        self, row: int | None, column: str | None, text: str, *, kind: str | None = None,
        value: str | None = None,
    ) -> None:  # fmt: skip
        """One problem on ``row`` (1-based data row; None: the table) in ``column``. Problems of
        one ``(column, kind or text)`` on several rows are one line listing the rows (with
        ``value`` beside each, if given); ``text`` is used when the kind has one row."""
        key: Any = (column, kind or text) if row is not None else object()
        group = self._groups.setdefault(key, (column, kind or text, []))
        group[2].append((row, text, value))
        self.count += 1

    def add_line(self, text: str) -> None:
        """A problem already written out (listed as it is)."""
        self._groups[object()] = (None, text, [(None, text, None)])
        self.count += 1

    def __bool__(self) -> bool:
        return self.count > 0

    @property
    def items(self) -> list[str]:
        """One line per kind of problem."""
        lines = []
        for column, kind, entries in self._groups.values():
            col = column if column is None or column.startswith("columns ") else f"column {column}"
            if len(entries) == 1:
                row, text, _ = entries[0]
                at = [a for a in (None if row is None else f"row {row}", col) if a]
                lines.append(f"{', '.join(at)}: {text}" if at else text)
                continue
            listed = ", ".join(
                f"{r}" + ("" if v is None else f" ({v})") for r, _, v in entries[:ROWS_LISTED]
            )
            more = ", ..." if len(entries) > ROWS_LISTED else ""
            at = f"rows {listed}{more} ({len(entries)} rows)" + (f", {col}" if col else "")
            lines.append(f"{at}: {kind}")
        return lines

    def message(self) -> str:
        items = self.items
        if self.single_line and self.count == 1:
            return f"{self.where}: {items[0]}"
        shown = items[:MAX_LISTED]
        more = (
            f"\n  ... and {len(items) - MAX_LISTED} more kinds of problem"
            if len(items) > MAX_LISTED else ""
        )  # fmt: skip
        n = self.count
        return (
            f"{self.where}: {n} problem{'s' if n > 1 else ''} in the data ({ROW_CONVENTION}):\n  "
            + "\n  ".join(shown)
            + more
        )

    def raise_if_any(self) -> None:
        if self.count:
            raise DataError(self.message())


# ---- limits -------------------------------------------------------------------------------------
#: Doses one subject may expand to (each ADDL dose and each repeat of a dose string counts), checked
#: before any array is allocated. Raise it with the environment variable LDPK_MAX_DOSES.
MAX_DOSES_PER_SUBJECT = 100_000


def max_doses() -> int:
    """The dose limit per subject: ``LDPK_MAX_DOSES`` if set, else :data:`MAX_DOSES_PER_SUBJECT`."""
    return limit_from_env("LDPK_MAX_DOSES", MAX_DOSES_PER_SUBJECT, "doses")


def _too_many_doses(n: float, limit: int) -> str:
    return (
        f"{n:g} doses, more than the limit of {limit} doses per subject "
        "(ldpk.dosing.MAX_DOSES_PER_SUBJECT); raise it with the environment variable "
        "LDPK_MAX_DOSES=<n> if this many doses are meant"
    )


# ---- Python-side dose objects ---------------------------------------------------------------
@dataclass(frozen=True)
class Bolus:
    """A bolus of ``amount`` (model amount unit) at ``time`` (model time unit) into ``route``.

    ``every``/``count``: repeat every ``every`` time units, ``count`` doses in all (NONMEM II and
    ADDL = count - 1). ``ss``: 1 or 2 for steady state (see module docs)."""

    amount: float
    time: float = 0.0
    route: str | None = None
    every: float = 0.0
    count: int = 1
    ss: int = 0

    def record(self) -> dict[str, Any]:
        return _record(self, rate=0.0)


@dataclass(frozen=True)
class Infusion:
    """A zero-order input of ``amount`` starting at ``time``.

    Give exactly one of ``rate`` (amount/time) or ``duration`` (time), or neither to use the
    route's modelled rate or duration (NONMEM RATE = -1 / -2). A given duration becomes
    RATE = amount / duration, so bioavailability changes the duration, as in NONMEM."""

    amount: float
    time: float = 0.0
    route: str | None = None
    rate: float | None = None
    duration: float | None = None
    every: float = 0.0
    count: int = 1
    ss: int = 0
    modelled: str | None = field(default=None, compare=False)

    def record(self) -> dict[str, Any]:
        if self.rate is not None and self.duration is not None:
            raise DataError("Infusion: give `rate` or `duration`, not both")
        if self.rate is not None:
            rate = float(self.rate)
            if rate <= 0:
                raise DataError(f"Infusion: rate must be > 0, got {self.rate}")
        elif self.duration is not None:
            if self.duration <= 0:
                raise DataError(f"Infusion: duration must be > 0, got {self.duration}")
            rate = float(self.amount) / float(self.duration)
        else:
            rate = -1.0 if self.modelled == "rate" else -2.0
        return _record(self, rate=rate)


@dataclass(frozen=True)
class Reset:
    """Reset the system at ``time`` (NONMEM EVID 3)."""

    time: float

    def record(self) -> dict[str, Any]:
        return {"time": float(self.time), "evid": 3}


def _record(d: Bolus | Infusion, rate: float) -> dict[str, Any]:
    if d.count < 1 or int(d.count) != d.count:
        raise DataError(
            f"{type(d).__name__}: count must be a whole number >= 1, got {show(d.count)}"
        )
    limit = max_doses()
    if d.count > limit:
        raise DataError(f"{type(d).__name__}: count {d.count:g}: {_too_many_doses(d.count, limit)}")
    if d.count > 1 and not d.every > 0:
        raise DataError(f"{type(d).__name__}: repeated doses need every > 0, got {show(d.every)}")
    return {
        "time": float(d.time),
        "evid": 1,
        "amt": float(d.amount),
        "route": d.route,
        "rate": rate,
        "ii": float(d.every),
        "addl": int(d.count) - 1,
        "ss": int(d.ss),
    }


# ---- records ------------------------------------------------------------------------------
_NUMERIC = ("time", "evid", "amt", "rate", "ii", "addl", "ss")


@dataclass(frozen=True)
class Records:
    """Validated records of one subject (NumPy arrays, one row per record, time-ordered).

    ``route`` indexes the model's route table (declared routes, then ``cmt:<name>``)."""

    time: np.ndarray
    evid: np.ndarray
    amt: np.ndarray
    route: np.ndarray
    rate: np.ndarray
    ii: np.ndarray
    addl: np.ndarray
    ss: np.ndarray
    cov: np.ndarray  # (n_records, n_covariates), last value carried forward
    source_rows: np.ndarray  # row numbers in the user's input, for messages
    where: str = "<regimen>"

    def __len__(self) -> int:
        return len(self.time)


def resolve_route(model: Model, route: Any, cmt: Any, where: str) -> int:
    """Route index for a dose given by route name, or by compartment (name or 1-based number).

    A dose into a compartment uses the declared route targeting it when there is exactly one
    (so its lag and bioavailability apply, as NONMEM's ALAGn/Fn do), else a plain route. A
    dose with neither goes to the model's only route, or else its ``default_route``."""
    names = list(model.route_names)
    cmts = list(model.compartment_names)
    n_declared = len(names)
    if _given(route):
        r = str(route).strip()
        if r in names:
            return names.index(r)
        if r.startswith("cmt:") and r[4:] in cmts:
            return n_declared + cmts.index(r[4:])
        raise DataError(f"{where}: unknown route {r!r}; routes: {', '.join(names) or '(none)'}")
    if not _given(cmt):
        if len(names) == 1:
            return 0
        if model.default_route is not None:
            return names.index(model.default_route)
        raise DataError(
            f"{where}: a dose needs a route or CMT (or the model's `default_route:`); routes: {', '.join(names) or '(none)'}, "
            f"compartments: {', '.join(f'{i + 1}={c}' for i, c in enumerate(cmts))}"
        )
    if isinstance(cmt, str) and not _is_number(cmt):
        cmt = cmt.strip()
        if cmt not in cmts:
            raise DataError(
                f"{where}: CMT {cmt!r} is not a compartment; compartments: {', '.join(cmts)}"
            )
        idx = cmts.index(cmt)
    else:
        try:
            num = float(cmt)
        except (TypeError, ValueError):
            raise DataError(f"{where}: CMT {show(cmt)} is not a compartment number") from None
        if not np.isfinite(num) or num != int(num) or not 1 <= num <= len(cmts):
            raise DataError(
                f"{where}: CMT {show(num)} is not a compartment number; valid: 1 to {len(cmts)} "
                f"({', '.join(f'{i + 1}={c}' for i, c in enumerate(cmts))})"
            )
        idx = int(num) - 1
    declared = [i for i, r in enumerate(model.routes) if r.target == cmts[idx]]
    return declared[0] if len(declared) == 1 else n_declared + idx


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def make_records(
    model: Model,
    rows: Sequence[Mapping[str, Any]],
    where: str = "<regimen>",
    row_numbers: Sequence[int] | None = None,
) -> Records:
    """Validate NONMEM-style rows of one subject (keys: time, evid, amt, route or cmt, rate, ii,
    addl, ss and covariate names) into :class:`Records`. Errors name the row and field; every
    problem is reported at once (one line per kind). A missing TIME is an error; other missing
    numbers are 0."""
    problems = _Problems(where, single_line=True)
    rec = _make_records(model, rows, where, row_numbers, problems)
    problems.raise_if_any()
    assert rec is not None
    return rec


_EVID_HELP = "use 0 observation, 1 dose, 2 other, 3 reset, 4 reset and dose"


def _make_records(
    model: Model,
    rows: Sequence[Mapping[str, Any]],
    where: str,
    row_numbers: Sequence[int] | None,
    problems: _Problems,
) -> Records | None:
    """:func:`make_records`, adding its problems to ``problems``; None if it found any."""
    cov_names = model.covariate_names
    n = len(rows)
    before = problems.count
    out = {k: np.zeros(n) for k in _NUMERIC}
    route = np.zeros(n, dtype=np.int32)
    cov = np.full((n, len(cov_names)), np.nan)
    rownum = np.asarray(row_numbers if row_numbers is not None else range(1, n + 1))
    limit = max_doses()
    n_doses = 0.0
    for i, row in enumerate(rows):
        r = int(rownum[i])

        def bad(column: str, text: str, kind: str | None = None, value: Any = None) -> None:
            problems.add(r, column, text, kind=kind, value=None if value is None else show(value))  # noqa: B023

        ok = True
        for k in _NUMERIC:
            v = row.get(k, 0.0)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                if k == "time":
                    bad("TIME", "missing; every record needs a time")
                    ok = False
                    continue
                v = 0.0
            try:
                out[k][i] = float(v)
            except (TypeError, ValueError):
                bad(k.upper(), f"{show(v)} is not a number", "not a number", v)
                ok = False
                continue
            if not np.isfinite(out[k][i]):
                bad(k.upper(), f"{show(v)} is not finite", "not finite", v)
                ok = False
        if not ok:
            continue
        evid = out["evid"][i]
        if evid not in (0, 1, 2, 3, 4):
            bad("EVID", f"{show(row.get('evid'))} is not valid; {_EVID_HELP}", f"not valid; {_EVID_HELP}", evid)  # fmt: skip
            continue
        if evid in (1, 4):
            try:
                route[i] = resolve_route(model, row.get("route"), row.get("cmt"), "")
            except DataError as exc:
                bad("ROUTE" if _given(row.get("route")) else "CMT", str(exc).lstrip(": "))
                continue
            amt, rate, ii, addl, ss = (out[k][i] for k in ("amt", "rate", "ii", "addl", "ss"))
            if amt < 0:
                bad("AMT", f"{amt:g} is negative", "negative", amt)
            if rate < 0 and rate not in (-1.0, -2.0):
                bad("RATE", f"{rate:g} is not valid; use 0, > 0, -1 or -2", "not valid; use 0, > 0, -1 or -2", rate)  # fmt: skip
            if ss not in (0, 1, 2):
                bad("SS", f"{ss:g} is not valid; use 0, 1 or 2", "not valid; use 0, 1 or 2", ss)
            if addl < 0 or addl != int(addl):
                bad("ADDL", f"{addl:g} must be a whole number >= 0", "must be a whole number >= 0", addl)  # fmt: skip
            else:
                n_doses += addl + 1
            if ii < 0:
                bad("II", f"{ii:g} is negative", "negative", ii)
            if addl > 0 and ii <= 0:
                bad("columns ADDL/II", "additional doses need II > 0")
            if ss and ii <= 0 and not (amt == 0 and rate > 0):
                bad("columns SS/II", "a steady-state dose needs II > 0 (or AMT = 0 with RATE > 0 for a steady-state infusion)")  # fmt: skip
            if rate in (-1.0, -2.0):
                rt = model.routes[route[i]] if route[i] < len(model.routes) else None
                attr = "rate" if rate == -1.0 else "duration"
                if rt is None or getattr(rt, attr) is None:
                    name = rt.name if rt is not None else f"cmt route {route[i]}"
                    bad("RATE", f"{rate:g} asks for a modelled {attr}, but route {name!r} has no `{attr}:` expression in {model.source}")  # fmt: skip
            if amt == 0 and not (ss and rate > 0):
                bad("AMT", "a dose needs AMT > 0")
        for j, c in enumerate(cov_names):
            if c in row and _given(row[c]):
                try:
                    cov[i, j] = float(row[c])
                except (TypeError, ValueError):
                    bad(c, f"{show(row[c])} is not a number", "not a number", row[c])
    if n_doses > limit:
        problems.add(None, "ADDL", f"{where}: {_too_many_doses(n_doses, limit)}")
    if problems.count > before:
        return None
    t = out["time"]
    if n and np.any(np.diff(t) < 0):
        i = int(np.argmax(np.diff(t) < 0)) + 1
        problems.add(
            int(rownum[i]), "TIME", f"{t[i]:g} is earlier than the previous record ({t[i - 1]:g}); "
            "records must be in time order",
        )  # fmt: skip
        return None
    # Covariates: last value carried forward, first value carried back, then the default.
    for j, c in enumerate(model.covariates):
        col = cov[:, j]
        seen = ~np.isnan(col)
        if not seen.any():
            if c.default is None:
                problems.add(None, None, f"covariate {c.name!r} has no values and no default in {model.source}")  # fmt: skip
                return None
            col[:] = c.default
            continue
        idx = np.where(seen, np.arange(n), -1)
        np.maximum.accumulate(idx, out=idx)
        first = int(np.argmax(seen))
        idx[idx < 0] = first
        cov[:, j] = col[idx]
    return Records(
        out["time"], out["evid"].astype(np.int32), out["amt"], route, out["rate"], out["ii"],
        out["addl"].astype(np.int64), out["ss"].astype(np.int32), cov, rownum, where,
    )  # fmt: skip


def _given(v: Any) -> bool:
    """Whether ``v`` is a value (not None, NaN, blank or NONMEM's '.')."""
    if v is None:
        return False
    if isinstance(v, (float, np.floating)):
        return not np.isnan(v)
    if isinstance(v, str):
        return v.strip() not in ("", ".")
    try:
        import pandas as pd

        return not bool(pd.isna(v))
    except (TypeError, ValueError):
        return True


def regimen_records(
    model: Model,
    doses: Iterable[Bolus | Infusion | Reset | Mapping[str, Any]],
    times: Sequence[float] | np.ndarray,
    covariates: Mapping[str, float] | None = None,
) -> Records:
    """Records for ``doses`` plus an observation (EVID 2) at each of ``times``. At equal times
    doses come first, so a prediction at a bolus time includes the bolus."""
    rows: list[dict[str, Any]] = []
    for d in doses:
        rows.append(dict(d) if isinstance(d, Mapping) else d.record())
    for r in rows:
        r.setdefault("time", 0.0)
    rows.sort(key=lambda r: r["time"])
    obs = [{"time": float(t), "evid": 2} for t in np.asarray(times, dtype=float).ravel()]
    merged = sorted(rows + obs, key=lambda r: (r["time"], r["evid"] == 2))
    if covariates:
        for r in merged:
            for k, v in covariates.items():
                r.setdefault(k, v)
    return make_records(model, merged)


# ---- static timeline ----------------------------------------------------------------------
@dataclass(frozen=True)
class EventTable:
    """The padded, static form of one or more subjects' records, consumed by the kernels.

    Leading axis (if any) is the subject. Per-subject arrays:
    ``rec_time`` (Nrec,), ``rec_cov`` (Nrec, C); doses (Nd,): ``d_time d_amt d_route d_rate
    d_rec``; steady-state doses (Ns,): ``s_time s_amt s_route s_rate s_ii s_mode s_rec``;
    events (Ne,): ``e_kind e_ref e_slot e_epoch e_rec e_time``; observations (No,): ``obs_event``
    (event index of each observation) and ``obs_mask``."""

    arrays: dict[str, np.ndarray]
    n_obs: tuple[int, ...] | int

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def batched(self) -> bool:
        return self.arrays["e_kind"].ndim == 2


def event_table(rec: Records, max_overlap: int = MAX_SS_OVERLAP) -> EventTable:
    """Expand records into the static event list: ADDL doses, infusion stops, steady states."""
    ev: list[
        tuple[int, int, int, int, int, float, float]
    ] = []  # seq, kind, ref, slot, epoch, rec, t
    d_rows: list[tuple[float, float, int, float, int]] = []
    s_rows: list[tuple[float, float, int, float, float, int, int]] = []
    obs_events: list[int] = []
    epoch = 0
    for i in range(len(rec)):
        t, evid = float(rec.time[i]), int(rec.evid[i])
        if evid in (3, 4):
            epoch += 1
            ev.append((4 * i, RESET, -1, 0, epoch, i, t))
        if evid in (0, 2):
            ev.append((4 * i + 3, OBS, len(obs_events), 0, epoch, i, t))
            obs_events.append(-1)  # filled after sorting
        if evid not in (1, 4):
            continue
        amt, rate, ss = float(rec.amt[i]), float(rec.rate[i]), int(rec.ss[i])
        route = int(rec.route[i])
        if ss:
            if ss == 1:
                epoch += 1
            s = len(s_rows)
            s_rows.append((t, amt, route, rate, float(rec.ii[i]), ss, i))
            ev.append((4 * i, SS_SET, s, 0, epoch, i, t))
            if amt == 0:  # steady-state constant infusion: no dose events
                continue
            if rate != 0:
                for m in range(max_overlap):
                    ev.append((4 * i + 2, SS_RUNSTOP, s, m, epoch, i, t))
        for k in range(int(rec.addl[i]) + 1):
            tk = t + k * float(rec.ii[i])
            d = len(d_rows)
            d_rows.append((tk, amt, route, rate, i))
            if rate == 0:
                ev.append((4 * i + 1, BOLUS, d, 0, epoch, i, tk))
            else:
                ev.append((4 * i + 1, INF_START, d, 0, epoch, i, tk))
                ev.append((4 * i + 2, INF_STOP, d, 0, epoch, i, tk))
    d_recs = np.array([r[4] for r in d_rows], dtype=np.int64)
    if not d_rows:  # keep arrays non-empty; nothing refers to this row
        d_rows.append((0.0, 0.0, 0, 0.0, 0))
    n_ss = len(s_rows)
    if not s_rows:
        s_rows.append((0.0, 0.0, 0, 0.0, 1.0, 2, 0))
    # Static order: data order (seq), which a stable sort by event time keeps for ties.
    ev.sort(key=lambda e: e[0])
    kinds = np.array([e[1] for e in ev], dtype=np.int32)
    for pos, e in enumerate(ev):
        if e[1] == OBS:
            obs_events[e[2]] = pos
    obs_slot, slot_obs = _observation_slots(ev, obs_events, d_recs)
    arrays = {
        "rec_time": rec.time.astype(float),
        "rec_cov": rec.cov.astype(float),
        "d_time": np.array([r[0] for r in d_rows], dtype=float),
        "d_amt": np.array([r[1] for r in d_rows], dtype=float),
        "d_route": np.array([r[2] for r in d_rows], dtype=np.int32),
        "d_rate": np.array([r[3] for r in d_rows], dtype=float),
        "d_rec": np.array([r[4] for r in d_rows], dtype=np.int32),
        "s_time": np.array([r[0] for r in s_rows], dtype=float),
        "s_amt": np.array([r[1] for r in s_rows], dtype=float),
        "s_route": np.array([r[2] for r in s_rows], dtype=np.int32),
        "s_rate": np.array([r[3] for r in s_rows], dtype=float),
        "s_ii": np.array([r[4] for r in s_rows], dtype=float),
        "s_mode": np.array([r[5] for r in s_rows], dtype=np.int32),
        "s_rec": np.array([r[6] for r in s_rows], dtype=np.int32),
        "s_valid": np.arange(len(s_rows)) < n_ss,
        "s_const": np.array([r[1] == 0 and r[3] > 0 for r in s_rows], dtype=bool),
        "e_kind": kinds,
        "e_ref": np.array([e[2] for e in ev], dtype=np.int32),
        "e_slot": np.array([e[3] for e in ev], dtype=np.int32),
        "e_epoch": np.array([e[4] for e in ev], dtype=np.int32),
        "e_rec": np.array([e[5] for e in ev], dtype=np.int32),
        "e_time": np.array([e[6] for e in ev], dtype=float),
        "obs_event": np.array(obs_events, dtype=np.int32),
        "obs_mask": np.ones(len(obs_events), dtype=bool),
        "obs_slot": obs_slot,
        "slot_obs": slot_obs,
    }
    return EventTable(arrays, len(obs_events))


def _observation_slots(ev: list, obs_events: list[int], d_recs: np.ndarray) -> tuple:
    """Observations that see the same state: the same time, and the same dose records before
    them in data order (which decides ties with doses at that time). Several outputs measured
    at one time (organs of one animal) share a slot, so a kernel that computes each
    observation's state independently computes it once per slot. Returns each observation's
    slot (No,) and each slot's first observation (Nu,)."""
    slot_of: dict[tuple[float, int], int] = {}
    obs_slot = np.zeros(len(obs_events), dtype=np.int32)
    slot_obs: list[int] = []
    for j, pos in enumerate(obs_events):
        t, rec = ev[pos][6], ev[pos][5]
        key = (t, int(np.sum(d_recs < rec)))
        if key not in slot_of:
            slot_of[key] = len(slot_obs)
            slot_obs.append(j)
        obs_slot[j] = slot_of[key]
    return obs_slot, np.array(slot_obs, dtype=np.int32)


_PAD_VALUES = {"e_kind": PAD, "obs_mask": False, "s_valid": False, "s_ii": 1.0, "s_mode": 2}


def stack_tables(tables: Sequence[EventTable]) -> EventTable:
    """Pad several subjects' tables to common sizes and stack them on a leading axis, so one
    compiled kernel serves every subject."""
    if not tables:
        raise DataError("no subjects to stack")
    out = {}
    for key in tables[0].arrays:
        arrs = [t.arrays[key] for t in tables]
        size = max(a.shape[0] for a in arrs)
        padded = []
        for a in arrs:
            width = [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
            fill = _PAD_VALUES.get(key, 0)
            if key in ("rec_time", "rec_cov") and a.shape[0]:
                p = np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)])
            else:
                p = np.pad(a, width, constant_values=fill)
            padded.append(p)
        out[key] = np.stack(padded)
    return EventTable(out, tuple(int(t.n_obs) for t in tables))


_DOSE_HELP = (
    'a dose is "AMOUNT ROUTE at TIME [over DURATION | rate RATE] [every II for N] [ss]", '
    'e.g. "100 iv at 0", "500 iv at 0 over 1", "320 oral at 0 every 12 for 6"'
)


def parse_dose(text: str, model: Model | None = None) -> Bolus | Infusion:
    """Parse a dose written as ``AMOUNT ROUTE at TIME [over D | rate R] [every II for N] [ss]``
    (model units). ``over``/``rate`` make it an infusion; ``ss`` makes it a steady-state dose
    (it needs ``every``, the dosing interval). Each clause at most once; ``every`` always with
    its count ``for N`` (a dose repeated "until the end" would depend on the output times)."""
    words = text.replace(",", " ").split()
    problem = None
    try:
        amount = float(words[0])
        route = words[1]
        if words[2] != "at":
            raise ValueError
        time = float(words[3])
        rest = words[4:]
        opts: dict[str, Any] = {}
        seen: list[str] = []
        while rest:
            w = rest.pop(0)
            if w in seen:
                problem = f"the clause {w!r} is given twice"
                raise ValueError
            seen.append(w)
            if w == "over":
                opts["duration"] = float(rest.pop(0))
            elif w == "rate":
                opts["rate"] = float(rest.pop(0))
            elif w == "every":
                opts["every"] = float(rest.pop(0))
                if rest[:1] != ["for"]:
                    problem = f'"every {opts["every"]:g}" needs the number of doses: "every {opts["every"]:g} for N"'  # fmt: skip
                    raise ValueError
                rest.pop(0)
                n = float(rest.pop(0))
                if not np.isfinite(n) or n != int(n) or n < 1:
                    problem = "the count after 'for' must be a whole number of doses, at least 1"
                    raise ValueError
                opts["count"] = int(n)
            elif w == "ss":
                opts["ss"] = 1
            else:
                raise ValueError
        if "duration" in opts and "rate" in opts:
            problem = "give 'over' (a duration) or 'rate', not both"
            raise ValueError
        if "ss" in opts and "every" not in opts:
            problem = "'ss' (steady state) needs the dosing interval: \"every II for N ss\""
            raise ValueError
    except (ValueError, IndexError):
        why = f"{problem}; " if problem else ""
        raise DataError(f"cannot read dose {text!r}: {why}{_DOSE_HELP}") from None
    if opts.get("count", 1) > max_doses():  # before any dose is expanded
        raise DataError(f"dose {text!r}: {_too_many_doses(opts['count'], max_doses())}")
    if model is not None and route not in model.route_names:
        cmts = model.compartment_names
        if not (route.startswith("cmt:") and route[4:] in cmts):
            raise DataError(
                f"dose {text!r}: unknown route {route!r}; routes of {model.name}: "
                f"{', '.join(model.route_names) or '(none)'}"
            )
    if "duration" in opts or "rate" in opts:
        return Infusion(amount, time, route, **opts)
    return Bolus(amount, time, route, **opts)


def example_regimen(model: Model) -> tuple[list[Bolus | Infusion], np.ndarray]:
    """The example regimen and prediction times declared in a model file (``example:``)."""
    spec = dict(model.extra).get("example")
    if not spec:
        raise DataError(f"{model.source}: the model has no `example:` regimen; give --dose")
    doses: list[Bolus | Infusion] = []
    for i, d in enumerate(spec.get("doses", [])):
        d = dict(d)
        kind = d.pop("type", "bolus")
        try:
            doses.append(Infusion(**d) if kind == "infusion" else Bolus(**d))
        except TypeError as exc:
            raise DataError(f"{model.source}: example.doses[{i}]: {exc}") from None
    tt = spec.get("times", {"start": 0, "stop": 24, "step": 0.5})
    times = np.arange(tt["start"], tt["stop"] + tt["step"] / 2, tt["step"])
    return doses, times
