"""Shared helpers of the benchmark scripts: timing, machine information, atomic JSON output
and markdown tables. Not part of the ldpk package; scripts import it from their own folder."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---- timing ---------------------------------------------------------------------------------
def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call of ``fn`` and its result. ``fn`` must block until its
    work is done (e.g. call ``jax.block_until_ready`` on what it returns)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_best(
    fn: Callable[[], Any], *, min_total_s: float = 1.0, max_repeats: int = 5
) -> tuple[float, list[float], Any]:
    """Repeat ``fn`` until ``min_total_s`` seconds have been spent or ``max_repeats`` calls made
    (at least once). Returns (best wall seconds, every call's seconds, last result)."""
    times: list[float] = []
    out = None
    while True:
        dt, out = time_once(fn)
        times.append(dt)
        if sum(times) >= min_total_s or len(times) >= max_repeats:
            break
    return min(times), times, out


def posterior_functions(pm: Any, dv: Any) -> tuple[Any, Any, Any]:
    """(jitted potential, jitted value-and-gradient, a starting point) of the posterior of
    the population model ``pm`` with observations ``dv``, in numpyro's unconstrained space;
    the start is the prior medians with the subjects' effects at 0."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import initialize_model

    info = initialize_model(
        jax.random.PRNGKey(0),
        pm,
        model_args=(jnp.asarray(dv),),
        init_strategy=init_to_median(num_samples=31),
    )
    z0 = {k: (jnp.zeros_like(v) if k.startswith("eta_") else v) for k, v in info.param_info.z.items()}  # fmt: skip
    flat0, unravel = ravel_pytree(z0)

    def pot(x: Any) -> Any:
        return info.potential_fn(unravel(x))

    return jax.jit(pot), jax.jit(jax.value_and_grad(pot)), flat0


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_seconds = [0.0]
_listening = [False]


def _on_duration(event: str, duration: float, **_: Any) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


class CompileTimer:
    """Seconds JAX spends tracing, lowering and compiling (XLA) inside a ``with`` block, from
    ``jax.monitoring`` duration events; execution time is not counted. ``.seconds`` after exit."""

    seconds: float = 0.0

    def __enter__(self) -> CompileTimer:
        if not _listening[0]:
            import jax

            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _listening[0] = True
        self._start = _compile_seconds[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = _compile_seconds[0] - self._start


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def settle(below: float, max_s: float = 120.0) -> float:
    """Wait until the 1-minute load average is below ``below`` (the previous measurement's
    processes have left it high for a minute), at most ``max_s`` seconds; the seconds
    waited."""
    t0 = time.perf_counter()
    while (load := load_average()) and load[0] >= below and time.perf_counter() - t0 < max_s:
        time.sleep(2.0)
    return time.perf_counter() - t0


# ---- machine information --------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """CPU count, memory, platform, Python and package versions, and the JAX backend."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable,
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "python": sys.version.split()[0],
    }
    versions = {}
    for dist in ("ldpk", "jax", "jaxlib", "numpy", "scipy", "diffrax", *extra_packages):
        versions[dist] = _version(dist)
    info["versions"] = versions
    if "jax" in sys.modules:
        import jax

        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
        info["jax_enable_x64"] = bool(jax.config.read("jax_enable_x64"))
    env = {k: v for k, v in os.environ.items() if k.startswith(("LDPK_", "XLA_", "JAX_"))}
    if env:
        info["environment"] = env
    return info


def git_info(repo: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Commit of the checkout and whether its tracked files (or untracked ones under src/)
    differ from it: numbers measured on a dirty tree say so."""
    import subprocess

    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "pyproject.toml"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "src_dirty": bool(status), "src_changes": [s.strip() for s in status]}


# ---- output ---------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """NumPy scalars and arrays to Python; non-finite floats to null (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON to ``path``: to a temporary file in the same folder first, then
    renamed into place (``os.replace``), so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(data), fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, thousands separators for large values."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()
) -> str:
    """A GitHub-flavoured markdown table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def fmt(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in cells)])
