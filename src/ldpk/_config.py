"""JAX configuration applied when ldpk is imported: float64, persistent compilation cache.

Environment variables:
  LDPK_FLOAT32=1          keep JAX's default float32 (e.g. on a GPU; see the README)
  LDPK_CACHE_DIR=PATH     where compiled kernels are cached (default: the user cache dir)
  LDPK_NO_CACHE=1         turn the persistent compilation cache off
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_dir() -> Path:
    if os.environ.get("LDPK_CACHE_DIR"):
        return Path(os.environ["LDPK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ldpk" / "jax"


def configure() -> None:
    if os.environ.get("LDPK_FLOAT32", "") not in ("1", "true"):
        jax.config.update("jax_enable_x64", True)
    if os.environ.get("LDPK_NO_CACHE", "") in ("1", "true"):
        return
    try:
        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:  # read-only home: run without the cache
        pass
