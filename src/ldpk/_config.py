"""JAX configuration applied when ldpk is imported: float64, persistent compilation cache.

Environment variables:
  LDPK_FLOAT32=1          keep JAX's default float32 (e.g. on a GPU; see the README)
  LDPK_CACHE_DIR=PATH     where compiled kernels are cached (default: the user cache dir).
                          Every compiled function is cached, however small (a fit also
                          runs a hundred small ones: starting points, transforms, draws;
                          compiling them afresh made a warm fit of the Stan benchmark
                          take 12 s, against 3.8 s from the cache). Beyond CACHE_MAX_BYTES
                          (2 GiB) the oldest entries are deleted when ldpk is imported,
                          checked once a day (JAX's own size limit locks every cache
                          access: 13 s).
                          Fits also keep their compiled functions in the folder's
                          `executables` folder, keyed by the traced program, which skips
                          lowering as well (see ldpk._compiled).
  LDPK_NO_CACHE=1         turn both caches off
  LDPK_HOST_DEVICES=N     split the CPU into N JAX devices (default: the number of cores, at
                          least 4), so that large parameter batches run on every core and
                          4 NUTS chains run in parallel; 1 turns it off.
                          Takes effect only if JAX's backend has not started yet.
  EQX_ON_ERROR            set to 'nan' unless already set (Equinox reads it when first
                          imported): a runtime check inside a solve that fails (lineax
                          differentiating a Newton step whose state overflowed to inf or
                          NaN) gives NaN, which the fit treats as a rejected point, instead
                          of aborting the fit. ldpk's solves return failures as NaN anyway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax

#: Size limit of the persistent compilation cache (bytes): beyond it, the oldest entries go.
CACHE_MAX_BYTES = 2 * 1024**3
#: Seconds between two checks of the cache's size (a check stats every file: 0.2 s for 6,000)
PRUNE_EVERY_S = 24 * 3600


def cache_dir() -> Path:
    if os.environ.get("LDPK_CACHE_DIR"):
        return Path(os.environ["LDPK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ldpk" / "jax"


def _host_devices() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = os.environ.get("LDPK_HOST_DEVICES") or str(max(os.cpu_count() or 1, 4))
    if n.isdigit() and int(n) > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def configure() -> None:
    _host_devices()
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    if os.environ.get("LDPK_FLOAT32", "") not in ("1", "true"):
        jax.config.update("jax_enable_x64", True)
    if os.environ.get("LDPK_NO_CACHE", "") in ("1", "true"):
        return
    try:
        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        marker = path / ".ldpk-pruned"  # when the size was last checked
        if not marker.exists() or time.time() - marker.stat().st_mtime > PRUNE_EVERY_S:
            marker.touch()
            prune_cache(path, CACHE_MAX_BYTES)
    except OSError:  # read-only home: run without the cache
        pass


def prune_cache(path: Path, max_bytes: int) -> list[Path]:
    """Delete the oldest files (by modification time) of the cache folder ``path`` and of its
    ``executables`` folder (see :mod:`ldpk._compiled`) until their files total at most 3/4
    of ``max_bytes``, if they exceed ``max_bytes``; the deleted files. Hidden files (ldpk's
    marker, temporary files being written) are kept; a file another process removes
    meanwhile is skipped."""
    entries = []
    for folder in (path, path / "executables"):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file(follow_symlinks=False) and not e.name.startswith("."):
                    st = e.stat(follow_symlinks=False)
                    entries.append((st.st_mtime, st.st_size, Path(e.path)))
    total = sum(size for _, size, _ in entries)
    if total <= max_bytes:
        return []
    removed = []
    for _, size, file in sorted(entries):
        if total <= 0.75 * max_bytes:
            break
        try:
            file.unlink()
        except FileNotFoundError:
            continue
        total -= size
        removed.append(file)
    return removed
