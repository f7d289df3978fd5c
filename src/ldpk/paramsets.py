"""Parameter tables for parameter sweeps: Cartesian grids and (quasi-)random samples.

A :class:`ParameterTable` maps each parameter name to a 1-D float64 array of parameter values
in the model's units; all arrays have the same length ``n`` (one row per parameter set).
:func:`grid` builds the Cartesian product of given values, :func:`sample` draws ``n`` sets from
distributions (Sobol', Latin hypercube or plain random points mapped through inverse CDFs),
and :func:`parse_distribution` / :func:`parse_assignment` read the text forms used on the
command line (``CL=lognormal(5, 0.3)``, ``DOSE=1e6,1e7,1e8``, ``DOSE=logspace(1e6, 1e9, 4)``).
"""

from __future__ import annotations

import ast
import copy
import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy import stats
from scipy.stats import qmc

from ldpk.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "Distribution",
    "ParameterTable",
    "grid",
    "parse_assignment",
    "parse_distribution",
    "sample",
    "virtual_subjects",
]

#: Distribution names of the text grammar and their arguments, in positional order.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "normal": ("mean", "sd"),
    "lognormal": ("median", "sigma"),
    "truncnormal": ("mean", "sd", "low", "high"),
    "triangular": ("low", "mode", "high"),
    "constant": ("value",),
}
#: Sampling methods of :func:`sample`.
METHODS = ("sobol", "lhs", "random")
MAX_GRID = 10**9
_U_CLIP = 1e-12
_GRID_FORM = "NAME=v1,v2,... or NAME=linspace(start, stop, num) or NAME=logspace(start, stop, num)"
_SAMPLE_FORM = "NAME=distribution(args), e.g. CL=lognormal(5, 0.3)"


class _HasPpf(Protocol):
    def ppf(self, q: Any) -> Any: ...


def _fmt(v: float) -> str:
    """Shortest text that reads back as ``v`` (``5.0`` -> ``5``)."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _form(name: str) -> str:
    return f"{name}({', '.join(DISTRIBUTIONS[name])})"


def _pre(where: str) -> str:
    return f"{where}: " if where else ""


def _valid_list() -> str:
    return ", ".join(_form(n) for n in DISTRIBUTIONS)


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Distribution:
    """A distribution of the text grammar, e.g. ``lognormal(median=5, sigma=0.3)``.

    ``args`` holds ``(key, value)`` pairs in the order of :data:`DISTRIBUTIONS`; values are in
    the parameter's (model) units, except ``sigma`` of ``lognormal`` (SD of log(value),
    dimensionless). ``text`` is the text it was parsed from; ``str()`` gives canonical text.
    """

    name: str
    args: tuple[tuple[str, float], ...]
    text: str = ""

    def __post_init__(self) -> None:
        _check_args(self.name, tuple(self.args), "")
        object.__setattr__(self, "args", tuple((k, float(v)) for k, v in self.args))

    @property
    def params(self) -> dict[str, float]:
        """The arguments as a dict."""
        return dict(self.args)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={_fmt(v)}' for k, v in self.args)})"

    def ppf(self, u: Any) -> np.ndarray:
        """Inverse CDF at probabilities ``u`` (vectorised), in the parameter's units."""
        u = np.asarray(u, dtype=np.float64)
        p = self.params
        match self.name:
            case "uniform":
                d = stats.uniform(loc=p["low"], scale=p["high"] - p["low"])
            case "loguniform":
                d = stats.loguniform(p["low"], p["high"])
            case "normal":
                d = stats.norm(loc=p["mean"], scale=p["sd"])
            case "lognormal":
                d = stats.lognorm(p["sigma"], scale=p["median"])
            case "truncnormal":
                a, b = ((p[k] - p["mean"]) / p["sd"] for k in ("low", "high"))
                d = stats.truncnorm(a, b, loc=p["mean"], scale=p["sd"])
            case "triangular":
                width = p["high"] - p["low"]
                d = stats.triang((p["mode"] - p["low"]) / width, loc=p["low"], scale=width)
            case _:  # constant
                return np.full(u.shape, p["value"])
        return np.asarray(d.ppf(u), dtype=np.float64)


def _check_args(name: str, args: tuple[tuple[str, float], ...], where: str) -> None:
    """Raise DataError unless ``args`` are valid arguments of distribution ``name``."""
    pre = _pre(where)
    if name not in DISTRIBUTIONS:
        raise DataError(f"{pre}unknown distribution {name!r}; valid ones: {_valid_list()}")
    keys = DISTRIBUTIONS[name]
    form = _form(name)
    if tuple(k for k, _ in args) != keys:
        raise DataError(f"{pre}{name} needs arguments {', '.join(keys)} in that order, as {form}; got {', '.join(k for k, _ in args) or 'none'}")  # fmt: skip
    p = dict(args)
    for k, v in args:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            raise DataError(f"{pre}{name} argument {k} must be a finite number, got {v!r}; expected {form}")  # fmt: skip
    problems = []
    if "sd" in p and p["sd"] <= 0:
        problems.append(f"sd must be > 0 (got {_fmt(p['sd'])})")
    if "sigma" in p and p["sigma"] <= 0:
        problems.append(f"sigma must be > 0 (got {_fmt(p['sigma'])})")
    if "median" in p and p["median"] <= 0:
        problems.append(f"median must be > 0 (got {_fmt(p['median'])})")
    if "low" in p and p["low"] >= p["high"]:
        problems.append(f"low must be < high (got low={_fmt(p['low'])}, high={_fmt(p['high'])})")
    if name == "loguniform" and p["low"] <= 0:
        problems.append(f"low must be > 0 (got {_fmt(p['low'])})")
    if "mode" in p and not p["low"] <= p["mode"] <= p["high"]:
        problems.append(f"mode must lie in [low, high] (got mode={_fmt(p['mode'])}, low={_fmt(p['low'])}, high={_fmt(p['high'])})")  # fmt: skip
    if problems:
        raise DataError(f"{pre}invalid {name}: {'; '.join(problems)}; expected {form}")


def _number(node: ast.expr) -> float | None:
    """The value of a numeric literal (optionally signed), else None."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            return sign * float(node.value)
        except OverflowError:  # an integer literal beyond float range
            return sign * math.inf
    return None


def _parse_call(
    text: str, keys_of: Mapping[str, tuple[str, ...]], where: str, what: str, example: str
) -> tuple[str, tuple[tuple[str, float], ...]]:
    """Parse ``name(args)`` with literal numeric args (positional, then keywords) via ``ast``.

    Never evaluates anything: only a bare function name and number literals are accepted.
    """
    pre = _pre(where)
    src = text.strip()
    valid = ", ".join(f"{n}({', '.join(k)})" for n, k in keys_of.items())
    try:
        tree = ast.parse(src, mode="eval") if len(src) <= 1000 else None
    except (SyntaxError, ValueError):
        tree = None
    node = tree.body if tree is not None else None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise DataError(f"{pre}cannot read {what} {src!r}: expected a form such as {example}; valid ones: {valid}")  # fmt: skip
    name = node.func.id
    if name not in keys_of:
        raise DataError(f"{pre}unknown {what} {name!r} in {src!r}; valid ones: {valid}")
    keys = keys_of[name]
    form = f"{name}({', '.join(keys)})"
    if len(node.args) > len(keys):
        raise DataError(f"{pre}{name} takes {len(keys)} argument{'s' * (len(keys) > 1)}, got {len(node.args)} in {src!r}; expected {form}")  # fmt: skip
    given: dict[str, ast.expr] = {}
    for key, arg in zip(keys, node.args, strict=False):
        if isinstance(arg, ast.Starred):
            raise DataError(f"{pre}{name}: *args are not accepted in {src!r}; expected {form}")
        given[key] = arg
    for kw in node.keywords:
        if kw.arg is None:
            raise DataError(f"{pre}{name}: **kwargs are not accepted in {src!r}; expected {form}")
        if kw.arg not in keys:
            raise DataError(f"{pre}{name} has no argument {kw.arg!r} in {src!r}; expected {form}")
        if kw.arg in given:
            raise DataError(f"{pre}{name} argument {kw.arg} is given twice in {src!r}; expected {form}")  # fmt: skip
        given[kw.arg] = kw.value
    if missing := [k for k in keys if k not in given]:
        raise DataError(f"{pre}{name} takes {len(keys)} argument{'s' * (len(keys) > 1)}, got {len(given)} in {src!r} (missing {', '.join(missing)}); expected {form}")  # fmt: skip
    args = []
    for key in keys:
        value = _number(given[key])
        if value is None:
            bad = ast.get_source_segment(src, given[key]) or "?"
            raise DataError(f"{pre}{name} argument {key} must be a number, got {bad} in {src!r}; expected {form}")  # fmt: skip
        args.append((key, value))
    return name, tuple(args)


def parse_distribution(text: str, where: str = "") -> Distribution:
    """Read a distribution such as ``"lognormal(5, 0.3)"`` or ``"lognormal(median=5, sigma=0.3)"``.

    Arguments (positional in this order, or as keywords), values in the parameter's units:
    ``uniform(low, high)``, ``loguniform(low, high)`` (low > 0), ``normal(mean, sd)``,
    ``lognormal(median, sigma)``, ``truncnormal(mean, sd, low, high)``,
    ``triangular(low, mode, high)``, ``constant(value)``.

    ``lognormal`` takes the median in the parameter's unit and ``sigma``, the SD of log(value).
    This differs from the model-file prior ``lognormal``, whose ``loc`` is the log of the median.

    The text is parsed with :mod:`ast` and never evaluated. Errors raise DataError whose
    message starts with ``where`` (e.g. ``"--sample CL"``) when given.
    """
    if not isinstance(text, str):
        raise DataError(f"{_pre(where)}a distribution must be text such as 'lognormal(5, 0.3)', got {type(text).__name__}")  # fmt: skip
    name, args = _parse_call(text, DISTRIBUTIONS, where, "distribution", "lognormal(5, 0.3)")
    _check_args(name, args, where)
    return Distribution(name, args, text.strip())


# --------------------------------------------------------------------------- tables


def _as_values(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array of its own shape; DataError naming the first bad entry."""
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nested sequences
        raise DataError(f"parameter {name}: values are not a regular array ({e})") from None

    def at(i: int) -> int | tuple[int, ...]:
        return i if arr.ndim <= 1 else tuple(int(j) for j in np.unravel_index(i, arr.shape))

    if arr.dtype.kind not in "iuf":
        if arr.dtype.kind in "US" and not isinstance(value, np.ndarray):  # mixed numbers and text
            arr = np.asarray(value, dtype=object)
        for i, x in enumerate(arr.reshape(-1).tolist()):
            if not isinstance(x, numbers.Real) or isinstance(x, bool):
                raise DataError(f"parameter {name}: value at index {at(i)} is not a number ({x!r})")  # fmt: skip
    try:
        arr = arr.astype(np.float64)
    except OverflowError:
        arr = np.array([float(x) if abs(x) < 1e308 else math.inf for x in arr.reshape(-1).tolist()]).reshape(arr.shape)  # fmt: skip
    finite = np.isfinite(arr).reshape(-1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DataError(f"parameter {name}: value at index {at(i)} is not finite ({float(arr.reshape(-1)[i])})")  # fmt: skip
    return arr


def _default_provenance() -> dict[str, Any]:
    return {"method": "table", "seed": None, "distributions": {}, "grid": {}}


class ParameterTable(Mapping[str, np.ndarray]):
    """Immutable table of parameter sets: name -> 1-D float64 array of length :attr:`n`.

    Values are in the model's units. ``len(table)`` is the number of parameters (as for any
    Mapping); :attr:`n` is the number of parameter sets. :attr:`provenance` records how the
    table was made: ``{"method": "grid"|"sobol"|"lhs"|"random"|"table", "seed": int|None,
    "distributions": {name: text}, "grid": {name: [values]}}``. Arrays are read-only.
    """

    __slots__ = ("_n", "_provenance", "_values")

    def __init__(self, values: Mapping[str, np.ndarray], provenance: Mapping[str, Any]) -> None:
        """Internal: use :meth:`from_mapping`, :func:`grid` or :func:`sample`."""
        self._values = dict(values)
        self._n = len(next(iter(self._values.values())))
        self._provenance = {**_default_provenance(), **copy.deepcopy(dict(provenance))}

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], provenance: Mapping[str, Any] | None = None
    ) -> ParameterTable:
        """Table from name -> scalar or array (any shape, in the model's units).

        Values are broadcast together with numpy's rules and flattened (C order) to 1-D.
        DataError when there are no parameters, a name is not text, the shapes do not
        broadcast (names each parameter's shape), or a value is non-numeric or non-finite
        (names the parameter and the index of the first bad value).
        """
        if not isinstance(values, Mapping) or not values:
            raise DataError("a parameter table needs at least one parameter (a mapping name -> values)")  # fmt: skip
        arrays = {}
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise DataError(f"parameter names must be non-empty text, got {name!r}")
            arrays[name] = _as_values(name, value)
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
        except ValueError:
            shapes = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
            raise DataError(f"parameter values do not broadcast together: {shapes}") from None
        out = {}
        for name, a in arrays.items():
            flat = np.array(np.broadcast_to(a, shape).reshape(-1), dtype=np.float64)
            flat.setflags(write=False)
            out[name] = flat
        return cls(out, provenance if provenance is not None else _default_provenance())

    @property
    def n(self) -> int:
        """Number of parameter sets (rows)."""
        return self._n

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        return tuple(self._values)

    @property
    def provenance(self) -> dict[str, Any]:
        """How the table was made (a copy)."""
        return copy.deepcopy(self._provenance)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParameterTable):
            return NotImplemented
        return self.names == other.names and all(
            np.array_equal(self[k], other[k]) for k in self.names
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ParameterTable(n={self.n}, names={list(self.names)}, method={self._provenance.get('method')!r})"  # fmt: skip

    def subset(self, rows: slice | int | Sequence[int] | np.ndarray) -> ParameterTable:
        """Rows picked by a slice, an integer index array (negative counts from the end), or
        a boolean mask of length :attr:`n`. Provenance is the parent's."""
        if isinstance(rows, slice):
            idx = np.arange(self.n)[rows]
        else:
            idx = np.atleast_1d(np.asarray(rows))
            if idx.dtype.kind == "b":
                if idx.shape != (self.n,):
                    raise DataError(f"a boolean row mask needs length {self.n}, got shape {idx.shape}")  # fmt: skip
                idx = np.flatnonzero(idx)
            elif idx.dtype.kind not in "iu" and not (idx.size == 0 and idx.dtype.kind == "f"):
                raise DataError(f"rows must be a slice, integers or a boolean mask, got {idx.dtype} values")  # fmt: skip
            idx = idx.astype(np.intp).reshape(-1)
            if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
                raise DataError(f"row index out of range for a table of {self.n} sets: {idx[(idx < -self.n) | (idx >= self.n)][0]}")  # fmt: skip
        out = {}
        for k, v in self._values.items():
            a = v[idx]
            a.setflags(write=False)
            out[k] = a
        return ParameterTable(out, self._provenance)

    @classmethod
    def concat(cls, tables: Iterable[ParameterTable]) -> ParameterTable:
        """Rows of ``tables`` one after another; all must have the same parameter names.

        The result's provenance has method ``"table"`` and ``"parts"``: each input's
        provenance, in order.
        """
        tables = list(tables)
        if not tables or not all(isinstance(t, ParameterTable) for t in tables):
            raise DataError("concat needs one or more ParameterTables")
        names = tables[0].names
        for i, t in enumerate(tables[1:], 1):
            if set(t.names) != set(names):
                missing = sorted(set(names) - set(t.names))
                extra = sorted(set(t.names) - set(names))
                raise DataError(f"concat: table {i} has different parameters from table 0 (missing {missing}, extra {extra})")  # fmt: skip
        out = {}
        for k in names:
            a = np.concatenate([t[k] for t in tables])
            a.setflags(write=False)
            out[k] = a
        return cls(out, {**_default_provenance(), "parts": [t.provenance for t in tables]})

    def to_pandas(self) -> pd.DataFrame:
        """A pandas DataFrame, one column per parameter and one row per set (copies)."""
        import pandas as pd

        return pd.DataFrame({k: np.array(v) for k, v in self._values.items()})


# --------------------------------------------------------------------------- grid and sample


def grid(**values: Any) -> ParameterTable:
    """Cartesian product of 1-D sequences of parameter values (in the model's units).

    A scalar counts as a single value. The first name varies slowest, as in
    ``itertools.product``. DataError for an empty or multi-dimensional sequence, a non-numeric
    or non-finite value, or more than 10**9 sets (use :func:`sample` instead).
    """
    if not values:
        raise DataError("grid needs at least one parameter, e.g. grid(CL=[1, 2], V=10)")
    axes = {}
    for name, v in values.items():
        a = _as_values(name, v)
        if a.ndim > 1:
            raise DataError(f"grid parameter {name}: values must be a 1-D sequence, got shape {a.shape}")  # fmt: skip
        if a.size == 0:
            raise DataError(f"grid parameter {name}: no values given")
        axes[name] = a.reshape(-1)
    size = math.prod(a.size for a in axes.values())
    if size > MAX_GRID:
        sizes = " x ".join(f"{a.size} ({k})" for k, a in axes.items())
        raise DataError(f"grid of {size:,} parameter sets ({sizes}) exceeds the limit of {MAX_GRID:,}; use ldpk.sample to draw a (quasi-)random subset instead")  # fmt: skip
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    prov = {"method": "grid", "grid": {k: a.tolist() for k, a in axes.items()}}
    return ParameterTable.from_mapping(dict(zip(axes, mesh, strict=True)), prov)


def _describe(d: Any) -> str:
    """Text for a scipy frozen distribution (or any object with .ppf)."""
    inner = getattr(d, "dist", None)
    if inner is not None and hasattr(d, "args"):
        parts = [repr(a) for a in d.args] + [
            f"{k}={v!r}" for k, v in getattr(d, "kwds", {}).items()
        ]
        return f"scipy.stats.{getattr(inner, 'name', type(inner).__name__)}({', '.join(parts)})"
    return repr(d)


def _qmc_engine(cls: Any, d: int, rng: np.random.Generator) -> Any:
    try:
        return cls(d, rng=rng)
    except TypeError:  # SciPy < 1.15 names it seed
        return cls(d, seed=rng)


def split_distributions(
    distributions: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """(varying: name -> object with ``.ppf``, constant: name -> value, texts: name -> a
    description) of the mapping name -> distribution text (:func:`parse_distribution`),
    :class:`Distribution`, scipy.stats frozen distribution or number. ``where`` starts each
    error message."""
    if not isinstance(distributions, Mapping) or not distributions:
        raise DataError(f"{where}: give at least one parameter distribution, e.g. {{'CL': 'lognormal(5, 0.3)'}}")  # fmt: skip
    consts: dict[str, float] = {}
    dists: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for name, d in distributions.items():
        if isinstance(d, str):
            d = parse_distribution(d, where=f"{where}: parameter {name}")
        if isinstance(d, Distribution) and d.name == "constant":
            d = d.params["value"]
        if isinstance(d, numbers.Real) and not isinstance(d, bool):
            consts[name] = float(_as_values(name, d))
            texts[name] = f"constant(value={_fmt(consts[name])})"
        elif hasattr(d, "ppf"):
            dists[name] = d
            texts[name] = str(d) if isinstance(d, Distribution) else _describe(d)
        else:
            raise DataError(f"{where}: parameter {name}: expected a distribution text such as 'lognormal(5, 0.3)', a scipy.stats distribution or a number, got {type(d).__name__}")  # fmt: skip
    return dists, consts, texts


def sample(
    distributions: Mapping[str, str | Distribution | _HasPpf | float],
    n: int,
    method: str = "sobol",
    seed: int | None = 0,
) -> ParameterTable:
    """Draw ``n`` parameter sets (values in the model's units) from per-parameter distributions.

    ``distributions`` maps name -> text (see :func:`parse_distribution`), a
    :class:`Distribution`, a scipy.stats frozen continuous distribution (anything with
    ``.ppf``), or a plain number (a constant). Points ``u`` in (0, 1)^d, one dimension per
    non-constant parameter in the mapping's order, are drawn by ``method``:

    - ``"sobol"``: scrambled Sobol' points (:class:`scipy.stats.qmc.Sobol`). Any ``n`` is
      drawn, but only powers of two keep the balance (stratification) properties: with
      ``n = 2**k`` each 1-D projection has one point in each of ``n`` equal bins.
    - ``"lhs"``: Latin hypercube (:class:`scipy.stats.qmc.LatinHypercube`).
    - ``"random"``: independent uniforms from ``numpy.random.default_rng(seed)``.

    ``u`` is clipped to [1e-12, 1 - 1e-12] and mapped through each inverse CDF, so unbounded
    distributions give finite values. The same ``seed`` gives the same table bit for bit;
    ``seed=None`` draws fresh entropy.
    """
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise DataError(f"sample: n (the number of parameter sets) must be a positive integer, got n={n!r}")  # fmt: skip
    n = int(n)
    if method not in METHODS:
        raise DataError(f"sample: unknown method {method!r}; valid ones: {', '.join(METHODS)}")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise DataError(f"sample: seed must be an integer or None, got {seed!r}")
    dists, consts, texts = split_distributions(distributions, "sample")
    dim = len(dists)
    rng = np.random.default_rng(seed)
    if dim == 0:
        u = np.empty((n, 0))
    elif method == "random":
        u = rng.random((n, dim))
    elif method == "lhs":
        u = _qmc_engine(qmc.LatinHypercube, dim, rng).random(n)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol", category=UserWarning)  # fmt: skip
            u = _qmc_engine(qmc.Sobol, dim, rng).random(n)
    u = np.clip(u, _U_CLIP, 1.0 - _U_CLIP)
    columns: dict[str, Any] = {}
    j = 0
    for name in distributions:
        if name in consts:
            columns[name] = np.full(n, consts[name])
            continue
        x = np.asarray(dists[name].ppf(u[:, j]), dtype=np.float64)
        j += 1
        if x.shape != (n,):
            raise DataError(f"parameter {name}: its distribution gave values of shape {x.shape} for {n} probabilities; give a distribution of one scalar parameter")  # fmt: skip
        columns[name] = x
    prov = {"method": method, "seed": None if seed is None else int(seed), "distributions": texts}
    return ParameterTable.from_mapping(columns, prov)


def virtual_subjects(model: Any, n: int, seed: int | None = 0) -> ParameterTable:
    """``n`` virtual subjects of ``model`` (a :class:`~ldpk.Model`): every parameter with
    between-subject variability (``iiv``, the SD of log) drawn as ``value * exp(iiv * z)``,
    ``z`` standard normal from ``numpy.random.default_rng(seed)`` (one block of ``n`` per
    parameter, in the model's order); the other parameters keep their values and are not in
    the table. Values in the model's units. DataError when the model has no variability."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise DataError(f"virtual subjects: n must be a positive integer, got {n!r}")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise DataError(f"virtual subjects: seed must be an integer or None, got {seed!r}")
    varying = [p for p in model.parameters if p.iiv and np.ndim(p.value) == 0]
    if not varying:
        raise DataError(
            f"model {model.name} has no between-subject variability (no parameter has `iiv:`), "
            "so its virtual subjects would all be the typical subject"
        )
    rng = np.random.default_rng(seed)
    columns = {
        p.name: float(p.value) * np.exp(p.iiv * rng.standard_normal(int(n))) for p in varying
    }
    prov = {"method": "virtual subjects", "seed": None if seed is None else int(seed),
            "distributions": {p.name: f"lognormal({_fmt(float(p.value))}, {_fmt(p.iiv)})" for p in varying}}  # fmt: skip
    return ParameterTable.from_mapping(columns, prov)


# --------------------------------------------------------------------------- CLI strings

_RANGES = {"linspace": ("start", "stop", "num"), "logspace": ("start", "stop", "num")}


def _grid_values(rhs: str, where: str) -> np.ndarray:
    """Values of a ``--grid`` assignment's right-hand side."""
    if rhs.split("(", 1)[0].strip() in _RANGES:
        name, args = _parse_call(rhs, _RANGES, where, "range", "linspace(1, 10, 5)")
        start, stop, num = (v for _, v in args)
        form = f"{name}(start, stop, num)"
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise DataError(f"{where}: start and stop must be finite numbers in {rhs!r}; expected {form}")  # fmt: skip
        if num != int(num) or not 1 <= num <= MAX_GRID:
            raise DataError(f"{where}: num must be an integer from 1 to {MAX_GRID:,}, got {_fmt(num)} in {rhs!r}; expected {form}")  # fmt: skip
        if name == "linspace":
            return np.linspace(start, stop, int(num))
        if start <= 0 or stop <= 0:
            raise DataError(f"{where}: logspace takes its end values (not exponents), which must be > 0, got {rhs!r}; expected {form}")  # fmt: skip
        return np.geomspace(start, stop, int(num))
    values = []
    for i, item in enumerate(s.strip() for s in rhs.split(",")):
        if not item:
            raise DataError(f"{where}: value {i + 1} is empty in {rhs!r}; expected {_GRID_FORM}")
        try:
            v = float(item)
        except ValueError:
            raise DataError(f"{where}: {item!r} is not a number in {rhs!r}; expected {_GRID_FORM}") from None  # fmt: skip
        if not math.isfinite(v):
            raise DataError(f"{where}: {item!r} is not a finite number in {rhs!r}; expected {_GRID_FORM}")  # fmt: skip
        values.append(v)
    return np.array(values, dtype=np.float64)


def parse_assignment(text: str, kind: str) -> tuple[str, Distribution | np.ndarray]:
    """Read a command-line assignment; values in the model's units.

    - ``kind="sample"``: ``"CL=lognormal(5, 0.3)"`` -> ``("CL", Distribution)``.
    - ``kind="grid"``: ``"DOSE=1e6,1e7,1e8"`` -> ``("DOSE", array)``; also
      ``"DOSE=linspace(1, 10, 5)"`` and ``"DOSE=logspace(1e6, 1e9, 4)"``. ``logspace`` is given
      by its end values (1e6 to 1e9), not by exponents as in numpy.logspace.

    DataError naming the argument text and the valid form when it is malformed.
    """
    if kind not in ("sample", "grid"):
        raise DataError(f"parse_assignment: kind must be 'sample' or 'grid', got {kind!r}")
    form = _SAMPLE_FORM if kind == "sample" else _GRID_FORM
    if not isinstance(text, str) or "=" not in text:
        raise DataError(f"--{kind} {text!r}: missing '='; expected {form}")
    name, rhs = (s.strip() for s in text.split("=", 1))
    if not name.isidentifier():
        raise DataError(f"--{kind} {text!r}: {name!r} is not a valid parameter name (letters, digits, _; not starting with a digit); expected {form}")  # fmt: skip
    if not rhs:
        raise DataError(f"--{kind} {text!r}: no value after '='; expected {form}")
    where = f"--{kind} {name}"
    if kind == "sample":
        return name, parse_distribution(rhs, where=where)
    return name, _grid_values(rhs, where)
