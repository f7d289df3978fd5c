"""Design files: a small YAML file describing a trial design, read and checked in Python.

:func:`read_design_file` parses and validates the whole file before anything is simulated or
compiled, and returns a :class:`DesignFile` for :func:`ldpk.design.run_design` (and ``ldpk
design``). A mistake raises one :class:`~ldpk.errors.DataError` naming the file, the entry
(``design.yaml: targets[1].op``) and what would be valid.

Layout (every entry optional unless marked *required*; times in the model's time unit, doses
in its amount unit, each threshold in the unit of its variable)::

    title: MSC lung exposure in mice     # a heading for the report
    model: msc_pbpk            # a built-in model name, or a model file (.yaml, relative to
                               # this file); give `model` or `fit`, not both
    species: mouse             # Model.for_species (only with `model`)
    fit: fits/msc              # a saved fit (ldpk.load_fit: posterior.nc or its folder,
                               # relative to this file); the population is then the posterior
    population:                # only with `model`; default {from: priors}
      from: priors             # typical values drawn from the model file's priors, ω its iiv
      seed: 1                  # (optional; default trial.seed) seed of those draws
      # ... or instead of `from`:
      typical: {KD: 0.004}     # typical values: a number, or one per trial (n_trials values)
      omega: {E_LUNG: 0.3}     # between-subject SD of log (>= 0): a number or one per trial
    regimens:                  # *required*: name -> a dose text, or a list of dose texts
      low: "1e5 iv"            #   "AMOUNT ROUTE [at TIME] [over D | rate R] [every II for N]
      high: "1e6 iv"           #   [ss]" (ldpk.parse_dose; `at 0` when `at` is left out, the
                               #   model's default route for a bare amount)
    times: {start: 0, stop: 240, n: 121}   # *required*: {start, stop, n} or {start, stop,
                               # step}, or a list of times; at least 2, increasing, >= 0
    outputs: [In111_lung]      # default: every output of the model
    metrics: [auc, cmax]       # exposure metrics (ldpk.exposure.METRICS); default auc, cmax, tmax
    metric_options: {threshold: 5}   # options of the metrics (e.g. time_above's threshold)
    trial:                     # *required*
      n_trials: 200            # *required*: trials (each one draw of the population)
      n_subjects: 50           # *required*: subjects per trial
      seed: 0                  # default 0
      interval: 0.9            # central interval over trials (0-1), default 0.9
    targets:                   # probability of target attainment (ldpk.design.attainment)
      - {name: lung exposure, variable: In111_lung_auc, op: ">=", threshold: 100}
      - {name: day-7 lung, variable: In111_lung, op: "<=", threshold: 5, at: 168}
    sampling:                  # the population FIM and optimal sampling times (FO)
      output: In111_lung       # *required*: the observed output
      residual: {proportional: 0.04, convention: variance}   # *required*: ldpk.design.Residual
      fixed_effects: {E_LUNG: 0.23}   # default: the population's typical values of the
                               # parameters it varies (fit: posterior medians)
      omega2: {E_LUNG: 0.09}   # ω² by parameter; default: the population's ω² of those
      fixed: [sigma2_prop]     # FIM parameters held fixed
      kind: reduced            # FIM kind: reduced (default) or full
      groups:                  # *required*: the arms
        - {name: arm A, n: 12, regimen: high, times: [1, 24, 72, 168], covariates: {}}
      optimise:                # D-optimal times (ldpk.design.optimise_times)
        windows: [0.5, 240]    # a (lo, hi) pair for every group, or one entry per group
        grid: [1, 2, 4, 8]     # candidate times (method exchange)
        method: gradient       # auto (default), gradient or exchange
        min_spacing: 1         # default 0
        replicates: false
        starts: 8              # gradient: optimiser runs (default 8)
        seed: 0
    dose_selection:            # the lowest dose reaching a target (ldpk.design.select_dose)
      target: lung exposure    # *required*: the name of an entry of `targets` (its criterion;
                               # a <= or < criterion, a safety limit, gives the highest dose)
      regimens: [high]         # *required*: names of `regimens`, the templates: their amounts
                               # are scaled so that the first dose equals the candidate dose;
                               # several are a schedule family (the smallest total recommended)
      doses: [10, 30, 100]     # *required*: candidate levels (model amount unit), >= 2,
                               # increasing, > 0; each is simulated for every subject
      attainment: 0.9          # fraction of subjects meeting the target (0-1), default 0.9
      confidence: 0.8          # fraction of trials in which it must (0-1), default 0.8

A target's ``variable`` is an output (then ``at`` is required: the time at which it is
compared, within ``times``) or ``<output>_<metric>`` of the requested outputs and metrics
(then ``at`` is left out). Group regimens name entries of ``regimens``. The dose selection
runs its own virtual trial (the population, times, outputs, metrics, ``trial`` sizes and seed
of the file) with every candidate dose for every schedule: len(doses) x len(regimens) times
the simulations of one regimen.

Adding a section: each top-level section is read by its own function ``_read_<section>(ctx,
value)`` called from :func:`read_design_file`; a new section (e.g. ``dose_selection:``) adds
its key to :data:`SECTIONS`, a reader, and a field of :class:`DesignFile`. Keys not in
:data:`SECTIONS` are refused with the list of valid keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldpk.design._fim import KINDS
from ldpk.design._optimise import METHODS, _spaces
from ldpk.design._spec import CONVENTIONS, Design, Group, Residual, check_design
from ldpk.design._trials import OPERATORS
from ldpk.dosing import Bolus, Infusion, parse_dose
from ldpk.errors import DataError, LdpkError
from ldpk.exposure import METRICS
from ldpk.model import Model, load_model
from ldpk.model._expr import lookalike_hint
from ldpk.model._load import read_yaml_file
from ldpk.sweep import DEFAULT_METRICS

#: Top-level keys of a design file, in the order they are read.
SECTIONS = (
    "title",
    "model",
    "species",
    "fit",
    "population",
    "regimens",
    "times",
    "outputs",
    "metrics",
    "metric_options",
    "trial",
    "targets",
    "sampling",
    "dose_selection",
)
#: Most output times a design file may ask for (counted before any array is built).
MAX_TIMES = 100_000

_TRIAL_KEYS = ("n_trials", "n_subjects", "seed", "interval")
_TARGET_KEYS = ("name", "variable", "op", "threshold", "at")
_SAMPLING_KEYS = ("output", "residual", "fixed_effects", "omega2", "fixed", "kind", "groups", "optimise")  # fmt: skip
_RESIDUAL_KEYS = ("additive", "proportional", "convention", "estimate")
_GROUP_KEYS = ("name", "n", "regimen", "times", "covariates")
_OPTIMISE_KEYS = ("windows", "grid", "method", "min_spacing", "replicates", "starts", "seed")
_DOSE_KEYS = ("target", "regimens", "doses", "attainment", "confidence")


@dataclass(frozen=True)
class Target:
    """A target of attainment: subjects with ``variable op threshold`` (at time ``at`` for a
    time course), as :func:`ldpk.design.attainment` takes it. ``name``: its label."""

    name: str
    variable: str
    op: str
    threshold: float
    at: float | None = None

    @property
    def criterion(self) -> dict[str, Any]:
        """The criterion mapping of :func:`ldpk.design.attainment`."""
        out: dict[str, Any] = {"variable": self.variable, "op": self.op, "threshold": self.threshold}  # fmt: skip
        if self.at is not None:
            out["at"] = self.at
        return out


@dataclass(frozen=True)
class Sampling:
    """The ``sampling:`` section: the :class:`~ldpk.design.Design` (groups with their doses,
    output, residual, fixed effects, ω²), the regimen name of each group, the FIM ``kind``,
    ``optimise`` (keyword arguments of :func:`~ldpk.design.optimise_times`, or None) and
    ``defaulted`` (the entries taken from the population: 'fixed_effects', 'omega2')."""

    design: Design
    regimens: tuple[str, ...]
    kind: str = "reduced"
    optimise: Mapping[str, Any] | None = None
    defaulted: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoseSection:
    """The ``dose_selection:`` section, as :func:`ldpk.design.select_dose` takes it:
    ``target`` the name of the :class:`Target` whose criterion is used, ``criterion`` that
    criterion, ``regimens`` the names of the template regimens (a schedule family when
    several), ``doses`` the candidate levels (model amount unit, increasing), ``attainment``
    the fraction of subjects (select_dose's ``target``) and ``confidence`` the fraction of
    trials."""

    target: str
    criterion: Mapping[str, Any]
    regimens: tuple[str, ...]
    doses: tuple[float, ...]
    attainment: float = 0.9
    confidence: float = 0.8


@dataclass(frozen=True)
class DesignFile:
    """A checked design file (see the module docstring for its layout).

    ``path``: the file. ``model``: the :class:`~ldpk.Model` (for the species). ``fit``: the
    :class:`~ldpk.Fit` of ``fit:`` or None. ``population``: the ``population`` argument of
    :func:`~ldpk.design.virtual_trial` (a Fit, or a mapping ``{"typical", "omega"}``), or
    None for the model's priors (:meth:`trial_population` draws them). ``population_source``:
    'fit', 'priors' or 'mapping'. ``regimens``: name -> doses; ``regimen_texts``: the dose
    texts as written. ``times``: output times (model time unit). ``outputs``, ``metrics``,
    ``metric_options``: as for :func:`ldpk.sweep`. ``n_trials``, ``n_subjects``, ``seed``,
    ``interval``: the virtual trial and the central interval over trials. ``targets``: the
    :class:`Target` s. ``sampling``: the :class:`Sampling` or None. ``dose_selection``: the
    :class:`DoseSection` or None. ``inputs``: the files the design reads (the design file, a
    model file, a fit), which its results must not overwrite. ``text``: the file's text,
    ``title`` its heading."""

    path: Path
    model: Model
    fit: Any
    population: Any
    population_source: str
    population_seed: int
    regimens: dict[str, list[Any]]
    regimen_texts: dict[str, list[str]]
    times: np.ndarray
    outputs: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_options: dict[str, float]
    n_trials: int
    n_subjects: int
    seed: int
    interval: float
    targets: tuple[Target, ...]
    sampling: Sampling | None
    title: str
    dose_selection: DoseSection | None = None
    inputs: tuple[Path, ...] = ()
    text: str = field(default="", repr=False)

    def trial_population(self) -> Any:
        """The ``population`` of :func:`~ldpk.design.virtual_trial`: the fit, the mapping,
        or ``population_from_priors(model, n_trials, population_seed)``."""
        from ldpk.design._trials import population_from_priors

        if self.population_source == "priors":
            return population_from_priors(self.model, self.n_trials, self.population_seed)
        return self.population

    def small(self, n_trials: int = 20, n_subjects: int = 20, starts: int = 2) -> DesignFile:
        """A quick version (``ldpk design --small``): at most ``n_trials`` trials of at most
        ``n_subjects`` subjects, and at most ``starts`` optimiser runs. Per-trial population
        values (lists of n_trials numbers) keep their first ``n_trials``."""
        nt, ns = min(self.n_trials, n_trials), min(self.n_subjects, n_subjects)
        pop = self.population
        if self.population_source == "mapping":
            pop = {
                k: {p: (v[:nt] if isinstance(v, np.ndarray) else v) for p, v in block.items()}
                for k, block in pop.items()
            }
        sampling = self.sampling
        if sampling is not None and sampling.optimise is not None:
            opt = dict(sampling.optimise)
            opt["starts"] = min(int(opt.get("starts", 8)), starts)
            sampling = dataclasses.replace(sampling, optimise=opt)
        return dataclasses.replace(self, n_trials=nt, n_subjects=ns, population=pop, sampling=sampling)  # fmt: skip


# ---- reading ------------------------------------------------------------------------------
class _Context:
    """The file being read and what is known so far (the model, regimens, outputs...)."""

    def __init__(self, path: Path, raw: Mapping[str, Any]) -> None:
        self.path = path
        self.raw = raw
        self.model: Model | None = None
        self.fit: Any = None
        self.regimens: dict[str, list[Any]] = {}
        self.times = np.zeros(0)
        self.outputs: tuple[str, ...] = ()
        self.metrics: tuple[str, ...] = ()
        self.n_trials = 0
        self.population: Any = None
        self.population_source = "priors"
        self.trial: dict[str, Any] = {}
        self.inputs: list[Path] = []  # files read besides the design file

    def error(self, entry: str, message: str) -> DataError:
        return DataError(f"{self.path}: {entry}: {message}")

    def mapping(self, value: Any, entry: str, keys: Sequence[str] | None = None) -> dict:
        """``value`` as a dict with string keys, refusing keys not in ``keys``."""
        if not isinstance(value, Mapping):
            what = f" with keys {', '.join(keys)}" if keys else ""
            raise self.error(entry, f"must be a mapping{what}, got {_shown(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.error(entry, f"keys must be names, got {k!r}")
            if keys is not None and k not in keys:
                raise self.error(f"{entry}.{k}" if entry else k, f"unknown key{lookalike_hint(k, keys)}; valid keys: {', '.join(keys)}")  # fmt: skip
        return dict(value)

    def number(self, value: Any, entry: str, *, positive: bool = False, nonneg: bool = False) -> float:  # fmt: skip
        if isinstance(value, str):  # YAML reads 1e5 (no dot) as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.error(entry, f"must be a number, got {_shown(value)}")
        v = float(value)
        if not math.isfinite(v):
            raise self.error(entry, f"must be a finite number, got {v}")
        if positive and v <= 0:
            raise self.error(entry, f"must be > 0, got {v:g}")
        if nonneg and v < 0:
            raise self.error(entry, f"must be >= 0, got {v:g}")
        return v

    def integer(self, value: Any, entry: str, *, minimum: int | None = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.error(entry, f"must be a whole number, got {_shown(value)}")
        if minimum is not None and value < minimum:
            raise self.error(entry, f"must be a whole number >= {minimum}, got {value}")
        return int(value)

    def numbers(self, value: Any, entry: str) -> np.ndarray:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            raise self.error(entry, f"must be a list of numbers, got {_shown(value)}")
        return np.asarray([self.number(v, f"{entry}[{i}]") for i, v in enumerate(value)], dtype=float)  # fmt: skip

    def name(self, value: Any, entry: str, valid: Sequence[str], what: str, extra: str = "") -> str:
        if not isinstance(value, str) or value not in valid:
            hint = lookalike_hint(str(value), valid) if isinstance(value, str) else ""
            raise self.error(entry, f"{what} {_shown(value)}{hint}; valid: {', '.join(valid) or '(none)'}{extra}")  # fmt: skip
        return value

    def parameter(self, value: Any, entry: str) -> str:
        m = self.model
        assert m is not None
        scalar = [p.name for p in m.parameters if np.ndim(p.value) == 0]
        if isinstance(value, str) and value in m.parameter_names and value not in scalar:
            raise self.error(entry, f"parameter {value!r} of {m.name} is not a scalar; parameters: {', '.join(scalar)}")  # fmt: skip
        return self.name(value, entry, scalar, f"model {m.name!r} has no parameter")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_design_file(path: str | Path) -> DesignFile:
    """Read and check a design file (its layout: the docstring of :mod:`ldpk.design._file`;
    an example: ``examples/designs/msc_mouse.yaml``). Paths in it (a model file, a fit) are
    relative to the file's folder.

    Everything is checked here, in Python, before anything is simulated or compiled: names
    against the model (parameters, outputs, covariates, routes), regimens referenced by
    groups, target variables against the requested outputs and metrics, numbers, unknown
    keys. Raises one :class:`~ldpk.errors.DataError` that names the file, the entry (e.g.
    ``design.yaml: targets[1].op``) and what would be valid."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such design file" + (" (a folder)" if path.is_dir() else ""))  # fmt: skip
    try:
        raw = read_yaml_file(path, "design file")
    except LdpkError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(f"{path}: a design file is a mapping with keys {', '.join(SECTIONS)}")
    ctx = _Context(path, raw)
    ctx.mapping(raw, "", SECTIONS)
    for key in ("regimens", "times", "trial"):
        if key not in raw:
            raise ctx.error(key, "missing; a design file needs `regimens`, `times` and `trial` (and `model` or `fit`)")  # fmt: skip
    title = raw.get("title")
    if title is not None and not isinstance(title, str):
        raise ctx.error("title", f"must be text, got {_shown(title)}")
    _read_model(ctx)
    trial = _read_trial(ctx, raw["trial"])
    _read_population(ctx, raw.get("population"))
    texts = _read_regimens(ctx, raw["regimens"])
    _read_times(ctx, raw["times"])
    _read_outputs(ctx, raw.get("outputs"))
    options = _read_metrics(ctx, raw.get("metrics"), raw.get("metric_options"))
    targets = _read_targets(ctx, raw.get("targets"))
    sampling = None if raw.get("sampling") is None else _read_sampling(ctx, raw["sampling"])
    dose = None if raw.get("dose_selection") is None else _read_dose_selection(ctx, raw["dose_selection"], targets)  # fmt: skip
    assert ctx.model is not None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError):
        text = ""
    return DesignFile(
        path=path,
        model=ctx.model,
        fit=ctx.fit,
        population=ctx.population,
        population_source=ctx.population_source,
        population_seed=trial["population_seed"],
        regimens=ctx.regimens,
        regimen_texts=texts,
        times=ctx.times,
        outputs=ctx.outputs,
        metrics=ctx.metrics,
        metric_options=options,
        n_trials=trial["n_trials"],
        n_subjects=trial["n_subjects"],
        seed=trial["seed"],
        interval=trial["interval"],
        targets=targets,
        sampling=sampling,
        title=title or f"Design: {path.stem}",
        dose_selection=dose,
        inputs=(path, *ctx.inputs),
        text=text,
    )


def _relative(ctx: _Context, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else ctx.path.parent / p


def _read_model(ctx: _Context) -> None:
    raw = ctx.raw
    has_model, has_fit = raw.get("model") is not None, raw.get("fit") is not None
    if has_model == has_fit:
        raise ctx.error("model", "give `model` (a built-in model name or a model file) or `fit` (a saved fit), one of them" if not has_model else "give `model` or `fit`, not both (a fit carries its model)")  # fmt: skip
    if has_fit:
        for key in ("species", "population"):
            if raw.get(key) is not None:
                raise ctx.error(key, f"not with `fit`: the fit's model and posterior are used; drop `{key}` or give `model` instead of `fit`")  # fmt: skip
        value = raw["fit"]
        if not isinstance(value, str) or not value.strip():
            raise ctx.error("fit", f"the path of a saved fit (posterior.nc or its folder), got {_shown(value)}")  # fmt: skip
        from ldpk.inference import load_fit

        try:
            ctx.fit = load_fit(_relative(ctx, value))
        except LdpkError as exc:
            raise ctx.error("fit", str(exc)) from None
        fit_path = _relative(ctx, value)
        ctx.inputs.append(fit_path / "posterior.nc" if fit_path.is_dir() else fit_path)
        ctx.model = ctx.fit.model
        ctx.population, ctx.population_source = ctx.fit, "fit"
        return
    value = raw["model"]
    if not isinstance(value, str) or not value.strip():
        raise ctx.error("model", f"a built-in model name or a model file path, got {_shown(value)}")  # fmt: skip
    target: str | Path = value
    if Path(value).suffix.lower() in (".yaml", ".yml"):
        target = _relative(ctx, value)
        if not target.is_file():
            raise ctx.error("model", f"no model file {target} (paths are relative to the design file)")  # fmt: skip
        ctx.inputs.append(target)
    try:
        model = load_model(target)
    except LdpkError as exc:
        raise ctx.error("model", str(exc)) from None
    species = raw.get("species")
    if species is not None:
        from ldpk.model.physiology import species_names

        names = species_names()
        ctx.name(species, "species", names, "unknown species")
        try:
            model = model.for_species(species)
        except LdpkError as exc:
            raise ctx.error("species", str(exc)) from None
    ctx.model = model


def _read_trial(ctx: _Context, value: Any) -> dict[str, Any]:
    t = ctx.mapping(value, "trial", _TRIAL_KEYS)
    for key in ("n_trials", "n_subjects"):
        if key not in t:
            raise ctx.error(f"trial.{key}", "missing; give the number of trials (n_trials) and of subjects per trial (n_subjects)")  # fmt: skip
    out = {k: ctx.integer(t[k], f"trial.{k}") for k in ("n_trials", "n_subjects")}
    out["seed"] = ctx.integer(t.get("seed", 0), "trial.seed", minimum=0)
    interval = ctx.number(t.get("interval", 0.9), "trial.interval")
    if not 0 < interval < 1:
        raise ctx.error("trial.interval", f"a probability between 0 and 1 (e.g. 0.9), got {interval:g}")  # fmt: skip
    out["interval"] = interval
    out["population_seed"] = out["seed"]
    if ctx.fit is not None:
        post = ctx.fit.posterior["posterior"]
        total = int(post.sizes["chain"] * post.sizes["draw"])
        if out["n_trials"] > total:
            raise ctx.error("trial.n_trials", f"{out['n_trials']} trials, but the fit has {total} posterior draws (one per trial); ask for at most {total}")  # fmt: skip
    ctx.n_trials = out["n_trials"]
    ctx.trial = out
    return out


def _read_population(ctx: _Context, value: Any) -> None:
    if ctx.fit is not None:
        return
    m = ctx.model
    assert m is not None
    value = {"from": "priors"} if value is None else value
    pop = ctx.mapping(value, "population", ("from", "seed", "typical", "omega"))
    if "from" in pop:
        if pop["from"] != "priors":
            raise ctx.error("population.from", f"{_shown(pop['from'])}; valid: priors (or give `typical`/`omega` instead of `from`, or `fit` instead of `model`)")  # fmt: skip
        if bad := [k for k in ("typical", "omega") if k in pop]:
            raise ctx.error(f"population.{bad[0]}", "give `from: priors` or `typical`/`omega`, not both")  # fmt: skip
        if "seed" in pop:
            ctx.trial["population_seed"] = ctx.integer(pop["seed"], "population.seed", minimum=0)
        varying = [p.name for p in m.parameters if np.ndim(p.value) == 0 and ((p.prior is not None and p.prior.dist != "fixed") or p.iiv)]  # fmt: skip
        if not varying:
            raise ctx.error("population", f"model {m.name!r} has no priors and no between-subject variability (iiv), so `from: priors` varies nothing; give `typical:` and `omega:` (SD of log), e.g. omega: {{{m.parameter_names[0]}: 0.3}}")  # fmt: skip
        ctx.population, ctx.population_source = None, "priors"
        return
    if "seed" in pop:
        raise ctx.error("population.seed", "the seed of `from: priors`; with `typical`/`omega` the trial's seed (trial.seed) draws the subjects")  # fmt: skip
    if not pop.get("typical") and not pop.get("omega"):
        raise ctx.error("population", "give `from: priors`, or `typical:` and/or `omega:` (parameter -> value)")  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for what in ("typical", "omega"):
        block = ctx.mapping(pop.get(what) or {}, f"population.{what}")
        values: dict[str, Any] = {}
        for p, v in block.items():
            entry = f"population.{what}.{p}"
            ctx.parameter(p, entry)
            if isinstance(v, Sequence) and not isinstance(v, str):
                arr = ctx.numbers(v, entry)
                if arr.size != ctx.n_trials:
                    raise ctx.error(entry, f"{arr.size} values; give one number, or one per trial (trial.n_trials = {ctx.n_trials})")  # fmt: skip
            else:
                arr = None
            if what == "omega":
                if arr is None:
                    values[p] = ctx.number(v, entry, nonneg=True)
                elif np.any(arr < 0):
                    raise ctx.error(entry, "an SD of log must be >= 0")
                else:
                    values[p] = arr
            else:
                values[p] = ctx.number(v, entry) if arr is None else arr
        out[what] = values
    ctx.population, ctx.population_source = out, "mapping"


def _dose_text(ctx: _Context, text: str, entry: str) -> str:
    """The dose text for :func:`ldpk.parse_dose`: ``at 0`` added after the route when it has
    no ``at`` clause, the model's default route before the clauses of a bare amount."""
    m = ctx.model
    assert m is not None
    words = text.replace(",", " ").split()
    if len(words) == 1 or (len(words) > 1 and words[1] in ("at", "over", "rate", "every", "ss")):
        route = m.default_route or (m.route_names[0] if len(m.route_names) == 1 else None)
        if route is None:
            raise ctx.error(entry, f"{text!r} has no route and model {m.name!r} has no default route; give one, e.g. \"{words[0]} {m.route_names[0]}\" (routes: {', '.join(m.route_names)})")  # fmt: skip
        words.insert(1, route)
    if len(words) >= 2 and (len(words) < 3 or words[2] != "at"):
        words[2:2] = ["at", "0"]
    return " ".join(words)


def _read_regimens(ctx: _Context, value: Any) -> dict[str, list[str]]:
    regs = ctx.mapping(value, "regimens")
    if not regs:
        raise ctx.error("regimens", 'give at least one regimen: name -> dose text, e.g. high: "1e6 iv"')  # fmt: skip
    texts: dict[str, list[str]] = {}
    for name, doses in regs.items():
        if not name.strip():
            raise ctx.error("regimens", "a regimen name must not be empty")
        if isinstance(doses, int | float) and not isinstance(doses, bool):
            doses = repr(doses)  # a bare amount: the model's default route, at 0
        items = [doses] if isinstance(doses, str) else doses
        if not isinstance(items, Sequence) or isinstance(items, bytes) or not items:
            raise ctx.error(f"regimens.{name}", f'a dose text or a list of them, e.g. "1e6 iv" or ["1e6 iv", "1e6 iv at 24"]; got {_shown(doses)}')  # fmt: skip
        parsed = []
        for i, d in enumerate(items):
            entry = f"regimens.{name}" + (f"[{i}]" if not isinstance(doses, str) else "")
            if not isinstance(d, str):
                raise ctx.error(entry, f'a dose text such as "1e6 iv", got {_shown(d)}')
            try:
                parsed.append(parse_dose(_dose_text(ctx, d, entry), ctx.model))
            except LdpkError as exc:
                raise ctx.error(entry, str(exc)) from None
            if not parsed[-1].amount > 0 or not math.isfinite(parsed[-1].amount):
                raise ctx.error(entry, f"a dose amount must be a finite number > 0, got {parsed[-1].amount:g}")  # fmt: skip
        ctx.regimens[name] = parsed
        texts[name] = list(items)
    return texts


def _read_times(ctx: _Context, value: Any) -> None:
    if isinstance(value, Mapping):
        t = ctx.mapping(value, "times", ("start", "stop", "n", "step"))
        if "start" not in t or "stop" not in t or ("n" in t) == ("step" in t):
            raise ctx.error("times", "give {start, stop, n} or {start, stop, step} (model time unit), or a list of times")  # fmt: skip
        start = ctx.number(t["start"], "times.start", nonneg=True)
        stop = ctx.number(t["stop"], "times.stop", positive=True)
        if stop <= start:
            raise ctx.error("times.stop", f"must be after times.start ({start:g}), got {stop:g}")
        if "n" in t:
            n = ctx.integer(t["n"], "times.n", minimum=2)
            if n > MAX_TIMES:
                raise ctx.error("times.n", f"{n:,} times is more than the limit of {MAX_TIMES:,}")
            times = np.linspace(start, stop, n)
        else:
            step = ctx.number(t["step"], "times.step", positive=True)
            n = int((stop - start) / step + 1e-9) + 1
            if n > MAX_TIMES:
                raise ctx.error("times.step", f"{n:,} times is more than the limit of {MAX_TIMES:,}; use a larger step")  # fmt: skip
            if n < 2:
                raise ctx.error("times.step", f"gives one time only; use a step below {stop - start:g}")  # fmt: skip
            times = start + step * np.arange(n)
    else:
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > MAX_TIMES:
            raise ctx.error("times", f"{len(value):,} times is more than the limit of {MAX_TIMES:,}")  # fmt: skip
        times = ctx.numbers(value, "times")
        if times.size < 2:
            raise ctx.error("times", "give at least two times (the metrics are computed on them)")
        if np.any(times < 0):
            raise ctx.error(f"times[{int(np.argmax(times < 0))}]", "times must be >= 0")
        if np.any(np.diff(times) <= 0):
            j = int(np.argmax(np.diff(times) <= 0)) + 1
            raise ctx.error(f"times[{j}]", f"times must be strictly increasing; {times[j]:g} comes after {times[j - 1]:g}")  # fmt: skip
    ctx.times = np.asarray(times, dtype=float)


def _read_outputs(ctx: _Context, value: Any) -> None:
    m = ctx.model
    assert m is not None
    if value is None:
        ctx.outputs = m.output_names
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items:
        raise ctx.error("outputs", f"a list of output names, got {_shown(value)}; outputs: {', '.join(m.output_names)}")  # fmt: skip
    out = []
    for i, o in enumerate(items):
        out.append(ctx.name(o, f"outputs[{i}]", m.output_names, f"model {m.name!r} has no output"))
    if dup := sorted({o for o in out if out.count(o) > 1}):
        raise ctx.error("outputs", f"{', '.join(dup)} given more than once")
    ctx.outputs = tuple(out)


def _read_metrics(ctx: _Context, value: Any, options: Any) -> dict[str, float]:
    if value is None:
        metrics = list(DEFAULT_METRICS)
    else:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence):
            raise ctx.error("metrics", f"a list of metric names, got {_shown(value)}; metrics: {', '.join(METRICS)}")  # fmt: skip
        metrics = [ctx.name(x, f"metrics[{i}]", list(METRICS), "unknown metric") for i, x in enumerate(items)]  # fmt: skip
        if dup := sorted({x for x in metrics if metrics.count(x) > 1}):
            raise ctx.error("metrics", f"{', '.join(dup)} given more than once")
    known = sorted({o for x in METRICS.values() for o in x.options})
    opts = ctx.mapping(options or {}, "metric_options", known)
    out = {k: ctx.number(v, f"metric_options.{k}") for k, v in opts.items()}
    for x in metrics:
        if missing := [o for o, required in METRICS[x].options.items() if required and o not in out]:  # fmt: skip
            raise ctx.error("metric_options", f"metric {x!r} needs {', '.join(missing)}; e.g. metric_options: {{{missing[0]}: ...}}")  # fmt: skip
    ctx.metrics = tuple(metrics)
    return out


def _read_targets(ctx: _Context, value: Any) -> tuple[Target, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ctx.error("targets", f"a list of targets {{name, variable, op, threshold[, at]}}, got {_shown(value)}")  # fmt: skip
    series = list(ctx.outputs)
    metrics = [f"{o}_{x}" for o in ctx.outputs for x in ctx.metrics]
    out: list[Target] = []
    for i, item in enumerate(value):
        where = f"targets[{i}]"
        t = ctx.mapping(item, where, _TARGET_KEYS)
        for key in ("variable", "op", "threshold"):
            if key not in t:
                raise ctx.error(f"{where}.{key}", "missing; a target needs variable, op and threshold (and `at` for an output)")  # fmt: skip
        var = t["variable"]
        if not isinstance(var, str) or var not in series + metrics:
            raise ctx.error(f"{where}.variable", _variable_problem(ctx, var, series + metrics))
        op = t["op"]
        if op not in OPERATORS:
            raise ctx.error(f"{where}.op", f"{_shown(op)} is not a comparison; valid: {', '.join(OPERATORS)}")  # fmt: skip
        thr = ctx.number(t["threshold"], f"{where}.threshold")
        at = None
        if var in series:
            if t.get("at") is None:
                raise ctx.error(f"{where}.at", f"{var!r} is a time course: give the time `at` (model time unit) to compare it at, within times [{ctx.times[0]:g}, {ctx.times[-1]:g}]")  # fmt: skip
            at = ctx.number(t["at"], f"{where}.at")
            if not ctx.times[0] <= at <= ctx.times[-1]:
                raise ctx.error(f"{where}.at", f"{at:g} is outside the times [{ctx.times[0]:g}, {ctx.times[-1]:g}]")  # fmt: skip
        elif t.get("at") is not None:
            raise ctx.error(f"{where}.at", f"{var!r} is a metric (one value per subject): leave `at` out")  # fmt: skip
        name = t.get("name", f"{var} {op} {thr:g}")
        if not isinstance(name, str) or not name.strip():
            raise ctx.error(f"{where}.name", f"a label (text), got {_shown(name)}")
        if name in [x.name for x in out]:
            raise ctx.error(f"{where}.name", f"{name!r} is already the name of another target")
        out.append(Target(name, var, op, thr, at))
    return tuple(out)


def _variable_problem(ctx: _Context, var: Any, valid: Sequence[str]) -> str:
    """Why ``var`` is not a variable of the trial, with what would make it one."""
    m = ctx.model
    assert m is not None
    base = f"{_shown(var)} is not computed"
    if isinstance(var, str):
        if var in m.output_names:
            return f"{base}: output {var!r} is not in `outputs`; add it there (variables: {', '.join(valid)})"  # fmt: skip
        for o in m.output_names:
            metric = var[len(o) + 1 :] if var.startswith(o + "_") else None
            if metric in METRICS:
                missing = [w for w, ok in (("`outputs`", o in ctx.outputs), ("`metrics`", metric in ctx.metrics)) if not ok]  # fmt: skip
                return f"{base}: add {o!r} to `outputs` and {metric!r} to `metrics`" if len(missing) == 2 else f"{base}: add {(o if missing[0] == '`outputs`' else metric)!r} to {missing[0]}"  # fmt: skip
        base += lookalike_hint(var, valid)
    return f"{base}; variables: an output of `outputs` (with `at`) or <output>_<metric> of `metrics`: {', '.join(valid)}"  # fmt: skip


def _population_defaults(ctx: _Context) -> tuple[dict[str, float], dict[str, float]]:
    """Typical values (model units) and ω² of the parameters the population varies: the
    default fixed effects and ω² of ``sampling:``."""
    m = ctx.model
    assert m is not None
    scalar = [p for p in m.parameters if np.ndim(p.value) == 0]
    typical: dict[str, float] = {}
    omega2: dict[str, float] = {}
    if ctx.population_source == "fit":
        fit = ctx.fit
        post = fit.posterior["posterior"]
        n = int(min(post.sizes["chain"] * post.sizes["draw"], 1000))
        table = fit.parameter_table(n)
        draws = fit.population_draws(n)
        for p in scalar:
            if p.name in table:
                typical[p.name] = float(np.median(np.asarray(table[p.name], dtype=float)))
            if p.name in fit.spec.iiv:
                omega2[p.name] = float(np.median(np.asarray(draws[f"omega_{p.name}"], dtype=float) ** 2))  # fmt: skip
                typical.setdefault(p.name, float(p.value))
    elif ctx.population_source == "mapping":
        for p in scalar:
            t = ctx.population["typical"].get(p.name)
            w = ctx.population["omega"].get(p.name)
            if t is not None or w is not None:
                typical[p.name] = float(np.median(t)) if t is not None else float(p.value)
            if w is not None and float(np.median(w)) > 0:
                omega2[p.name] = float(np.median(w)) ** 2
    else:
        for p in scalar:
            if (p.prior is not None and p.prior.dist != "fixed") or p.iiv:
                typical[p.name] = float(p.value)
            if p.iiv:
                omega2[p.name] = float(p.iiv) ** 2
    return typical, omega2


def _read_sampling(ctx: _Context, value: Any) -> Sampling:
    m = ctx.model
    assert m is not None
    s = ctx.mapping(value, "sampling", _SAMPLING_KEYS)
    for key in ("output", "residual", "groups"):
        if key not in s:
            raise ctx.error(f"sampling.{key}", "missing; `sampling` needs output, residual and groups")  # fmt: skip
    output = ctx.name(s["output"], "sampling.output", m.output_names, f"model {m.name!r} has no output")  # fmt: skip
    r = ctx.mapping(s["residual"], "sampling.residual", _RESIDUAL_KEYS)
    parts = {k: ctx.number(r[k], f"sampling.residual.{k}", nonneg=True) for k in ("additive", "proportional") if r.get(k) is not None}  # fmt: skip
    if not any(parts.values()):
        raise ctx.error("sampling.residual", "give a positive `additive` and/or `proportional` residual error")  # fmt: skip
    convention = r.get("convention", "variance")
    if convention not in CONVENTIONS:
        raise ctx.error("sampling.residual.convention", f"{_shown(convention)}; valid: {', '.join(CONVENTIONS)} (variance: the parameters are variances, PopED; sd: standard deviations, PFIM)")  # fmt: skip
    estimate = r.get("estimate", True)
    if not isinstance(estimate, bool):
        raise ctx.error("sampling.residual.estimate", f"true or false, got {_shown(estimate)}")
    residual = Residual(**parts, convention=convention, estimate=estimate)

    typical, omega_pop = _population_defaults(ctx)
    defaulted = []
    if s.get("fixed_effects") is None:
        if not typical:
            raise ctx.error("sampling.fixed_effects", "the population varies no parameter; give the fixed effects (parameter -> value)")  # fmt: skip
        fixed_effects = typical
        defaulted.append("fixed_effects")
    else:
        fe = ctx.mapping(s["fixed_effects"], "sampling.fixed_effects")
        if not fe:
            raise ctx.error("sampling.fixed_effects", "give at least one parameter -> value")
        fixed_effects = {ctx.parameter(k, f"sampling.fixed_effects.{k}"): ctx.number(v, f"sampling.fixed_effects.{k}") for k, v in fe.items()}  # fmt: skip
    if s.get("omega2") is None:
        omega2 = {k: v for k, v in omega_pop.items() if k in fixed_effects}
        defaulted.append("omega2")
    else:
        om = ctx.mapping(s["omega2"], "sampling.omega2")
        omega2 = {}
        for k, v in om.items():
            entry = f"sampling.omega2.{k}"
            ctx.parameter(k, entry)
            if k not in fixed_effects:
                raise ctx.error(entry, f"{k} has no fixed effect; add it to sampling.fixed_effects (fixed effects: {', '.join(fixed_effects)})")  # fmt: skip
            omega2[k] = ctx.number(v, entry, nonneg=True)
    for k, v in fixed_effects.items():
        if v == 0 and k in omega2:
            raise ctx.error(f"sampling.fixed_effects.{k}", "0 leaves its random effect no effect (θ = β·e^η); give a non-zero typical value")  # fmt: skip

    groups_raw = s["groups"]
    if not isinstance(groups_raw, Sequence) or isinstance(groups_raw, str) or not groups_raw:
        raise ctx.error("sampling.groups", "a list of groups {name, n, regimen, times}")
    groups, regimen_names = [], []
    for i, g in enumerate(groups_raw):
        where = f"sampling.groups[{i}]"
        gr = ctx.mapping(g, where, _GROUP_KEYS)
        for key in ("n", "regimen", "times"):
            if key not in gr:
                raise ctx.error(f"{where}.{key}", "missing; a group needs n, regimen and times")
        n = ctx.number(gr["n"], f"{where}.n", positive=True)
        reg = ctx.name(gr["regimen"], f"{where}.regimen", list(ctx.regimens), "unknown regimen", " (the names under `regimens`)")  # fmt: skip
        times = ctx.numbers(gr["times"], f"{where}.times")
        if times.size == 0:
            raise ctx.error(f"{where}.times", "give at least one sampling time")
        if np.any(times < 0):
            raise ctx.error(f"{where}.times[{int(np.argmax(times < 0))}]", "sampling times must be >= 0")  # fmt: skip
        if np.any(np.diff(times) < 0):
            j = int(np.argmax(np.diff(times) < 0)) + 1
            raise ctx.error(f"{where}.times[{j}]", f"sampling times must be sorted; {times[j]:g} comes after {times[j - 1]:g}")  # fmt: skip
        cov = None
        if gr.get("covariates") is not None:
            c = ctx.mapping(gr["covariates"], f"{where}.covariates")
            cov = {ctx.name(k, f"{where}.covariates.{k}", m.covariate_names, f"model {m.name!r} has no covariate"): ctx.number(v, f"{where}.covariates.{k}") for k, v in c.items()}  # fmt: skip
        name = gr.get("name", f"group {i + 1}")
        if not isinstance(name, str) or not name.strip():
            raise ctx.error(f"{where}.name", f"a label (text), got {_shown(name)}")
        if name in [x.name for x in groups]:
            raise ctx.error(f"{where}.name", f"{name!r} is already the name of another group")
        groups.append(Group(n=n, times=times.tolist(), regimen=list(ctx.regimens[reg]), covariates=cov, name=name))  # fmt: skip
        regimen_names.append(reg)
    fixed = s.get("fixed") or []
    if isinstance(fixed, str):
        fixed = [fixed]
    kind = s.get("kind", "reduced")
    if kind not in KINDS:
        raise ctx.error("sampling.kind", f"{_shown(kind)}; valid FIM kinds: {', '.join(KINDS)}")
    try:
        all_names = (*fixed_effects, *(f"omega2_{k}" for k in omega2), *residual.names)
        if not isinstance(fixed, Sequence):
            raise ctx.error("sampling.fixed", f"a list of FIM parameter names, got {_shown(fixed)}")  # fmt: skip
        for i, k in enumerate(fixed):
            ctx.name(k, f"sampling.fixed[{i}]", all_names, "unknown FIM parameter")
        design = Design(groups=groups, output=output, fixed_effects=fixed_effects, residual=residual, omega2=omega2, fixed=list(fixed))  # fmt: skip
        check_design(m, design)
    except DataError as exc:
        if str(exc).startswith(f"{ctx.path}: "):
            raise
        raise ctx.error("sampling", str(exc)) from None
    if not any(design.estimated()):
        raise ctx.error("sampling.fixed", "every parameter is held fixed; nothing to estimate")
    optimise = None if s.get("optimise") is None else _read_optimise(ctx, s["optimise"], design)
    return Sampling(design, tuple(regimen_names), kind, optimise, tuple(defaulted))


def _read_optimise(ctx: _Context, value: Any, design: Design) -> dict[str, Any]:
    o = ctx.mapping(value, "sampling.optimise", _OPTIMISE_KEYS)
    out: dict[str, Any] = {}
    method = o.get("method", "auto")
    if method not in METHODS:
        raise ctx.error("sampling.optimise.method", f"{_shown(method)}; valid: {', '.join(METHODS)}")  # fmt: skip
    out["method"] = method
    out["min_spacing"] = ctx.number(o.get("min_spacing", 0), "sampling.optimise.min_spacing", nonneg=True)  # fmt: skip
    replicates = o.get("replicates", False)
    if not isinstance(replicates, bool):
        raise ctx.error("sampling.optimise.replicates", f"true or false, got {_shown(replicates)}")  # fmt: skip
    if replicates and out["min_spacing"] > 0:
        raise ctx.error("sampling.optimise.replicates", "true (equal times allowed) contradicts min_spacing > 0")  # fmt: skip
    out["replicates"] = replicates
    out["starts"] = ctx.integer(o.get("starts", 8), "sampling.optimise.starts")
    out["seed"] = ctx.integer(o.get("seed", 0), "sampling.optimise.seed", minimum=0)
    grid = o.get("grid")
    if grid is not None:
        if not isinstance(grid, Sequence) or isinstance(grid, str) or not grid:
            raise ctx.error("sampling.optimise.grid", f"a list of candidate times (or one list per group), got {_shown(grid)}")  # fmt: skip
        if all(isinstance(x, Sequence) and not isinstance(x, str) for x in grid):
            grid = [ctx.numbers(x, f"sampling.optimise.grid[{i}]").tolist() for i, x in enumerate(grid)]  # fmt: skip
        else:
            grid = ctx.numbers(grid, "sampling.optimise.grid").tolist()
    if method == "exchange" and grid is None:
        raise ctx.error("sampling.optimise.grid", "method exchange chooses among candidate times: give grid: [t1, t2, ...]")  # fmt: skip
    if method == "gradient" and grid is not None:
        raise ctx.error("sampling.optimise.grid", "a grid is for method exchange (or auto); method gradient searches the windows")  # fmt: skip
    windows = o.get("windows")
    if windows is not None and (not isinstance(windows, Sequence) or isinstance(windows, str)):
        raise ctx.error("sampling.optimise.windows", f"a pair [lo, hi] for every group, or one entry per group; got {_shown(windows)}")  # fmt: skip
    if windows is not None:
        try:
            np.asarray(windows, dtype=float)
        except (TypeError, ValueError):
            raise ctx.error("sampling.optimise.windows", f"times must be numbers: a pair [lo, hi] for every group, or one entry per group; got {_shown(windows)}") from None  # fmt: skip
        windows = np.asarray(windows, dtype=float).tolist()
    try:
        use_grid = grid if method in ("exchange", "auto") else None
        _spaces(design, windows, use_grid, out["min_spacing"], replicates)
    except DataError as exc:
        raise ctx.error("sampling.optimise", str(exc).removeprefix("optimise_times: ")) from None
    out["windows"] = windows
    out["grid"] = grid
    return out


def _read_dose_selection(ctx: _Context, value: Any, targets: Sequence[Target]) -> DoseSection:
    d = ctx.mapping(value, "dose_selection", _DOSE_KEYS)
    for key in ("target", "regimens", "doses"):
        if key not in d:
            raise ctx.error(f"dose_selection.{key}", "missing; `dose_selection` needs target (a name of `targets`), regimens (names of `regimens`) and doses (candidate levels)")  # fmt: skip
    names = [t.name for t in targets]
    if not names:
        raise ctx.error("dose_selection.target", "names an entry of `targets`, and the file has none; add the target there, e.g. targets: [{name: exposure, variable: ..., op: \">=\", threshold: ...}]")  # fmt: skip
    target = ctx.name(d["target"], "dose_selection.target", names, "no target named", " (the names under `targets`)")  # fmt: skip
    crit = next(t for t in targets if t.name == target).criterion

    regs = d["regimens"]
    items = [regs] if isinstance(regs, str) else regs
    if not isinstance(items, Sequence) or not items:
        raise ctx.error("dose_selection.regimens", f"a list of names of `regimens` (the templates whose doses are scaled), got {_shown(regs)}")  # fmt: skip
    chosen: list[str] = []
    for i, r in enumerate(items):
        entry = "dose_selection.regimens" + ("" if isinstance(regs, str) else f"[{i}]")
        name = ctx.name(r, entry, list(ctx.regimens), "unknown regimen", " (the names under `regimens`)")  # fmt: skip
        if name in chosen:
            raise ctx.error(entry, f"{name!r} is given more than once")
        doses = ctx.regimens[name]
        if bad := [k for k, x in enumerate(doses) if not isinstance(x, Bolus | Infusion)]:
            raise ctx.error(entry, f"regimen {name!r} holds a {type(doses[bad[0]]).__name__} (dose {bad[0] + 1}), which cannot be scaled; a template holds boluses and infusions only")  # fmt: skip
        chosen.append(name)

    levels = d["doses"]
    if isinstance(levels, str | bytes | Mapping) or not isinstance(levels, Sequence):
        raise ctx.error("dose_selection.doses", f"a list of at least two candidate doses (model amount unit), e.g. [10, 30, 100]; got {_shown(levels)}")  # fmt: skip
    unit = ctx.model.amount_unit if ctx.model is not None else ""
    x = [ctx.number(v, f"dose_selection.doses[{i}]", positive=True) for i, v in enumerate(levels)]
    if len(x) < 2:
        raise ctx.error("dose_selection.doses", f"give at least two candidate doses ({unit or 'model amount unit'}) to search between, e.g. [10, 30, 100]")  # fmt: skip
    for i in range(1, len(x)):
        if x[i] <= x[i - 1]:
            raise ctx.error(f"dose_selection.doses[{i}]", f"doses must be increasing; {x[i]:g} comes after {x[i - 1]:g}")  # fmt: skip
    probs = {}
    for key, default, what in (("attainment", 0.9, "fraction of subjects meeting the target"), ("confidence", 0.8, "fraction of trials in which the attainment is reached")):  # fmt: skip
        v = ctx.number(d.get(key, default), f"dose_selection.{key}")
        if not 0 < v < 1:
            raise ctx.error(f"dose_selection.{key}", f"the {what}: a probability between 0 and 1 (e.g. {default}), got {v:g}")  # fmt: skip
        probs[key] = v
    return DoseSection(target, crit, tuple(chosen), tuple(x), probs["attainment"], probs["confidence"])  # fmt: skip


__all__ = [
    "MAX_TIMES",
    "SECTIONS",
    "DesignFile",
    "DoseSection",
    "Sampling",
    "Target",
    "read_design_file",
]
