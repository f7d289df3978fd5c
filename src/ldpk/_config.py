"""Process-wide settings that ``import ldpk`` applies, each documented here and each switchable.

``import ldpk`` calls :func:`configure` with no arguments, which applies the four defaults
below (right for the ``ldpk`` command and for most scripts and notebooks). Each one can be
turned off by an environment variable set before ``import ldpk``, and
``LDPK_NO_CONFIG=1`` turns off all four (the process then keeps JAX's and Equinox's own
defaults; :func:`configure` can still be called afterwards with keyword switches).

1. float64 (``jax.config.update("jax_enable_x64", True)``). Why: pharmacokinetic curves
   span many decades and fits difference log-densities; float32 loses digits in the matrix
   exponentials. Off: ``LDPK_FLOAT32=1`` (keeps JAX's default float32, e.g. on a GPU; see
   the README), or ``configure(float64=False)``. Switchable at any time, but arrays already
   created keep their dtype.
2. Host devices (appends ``--xla_force_host_platform_device_count=N`` to ``XLA_FLAGS``).
   Why: large parameter batches then run on every core and NUTS chains in parallel.
   N is ``LDPK_HOST_DEVICES`` or the number of cores, at least 4; ``LDPK_HOST_DEVICES=1``
   turns it off, and so does an ``XLA_FLAGS`` that already sets the device count (left
   alone). Takes effect only if JAX's backend has not started yet.
3. Persistent compilation caches (``jax_compilation_cache_dir`` and a zero compile-time
   threshold). Why: a fit also runs a hundred small compiled functions (starting points,
   transforms, draws); compiling them afresh made a warm fit of the Stan benchmark take
   12 s, against 3.8 s from the cache. The folder is ``LDPK_CACHE_DIR`` or
   ``$XDG_CACHE_HOME/ldpk/jax`` (``~/.cache/ldpk/jax``), made private to the user (mode
   0700; an existing folder with group or other permissions is fixed, one owned by
   another user is refused with a warning and the process runs without the cache). Beyond
   :data:`CACHE_MAX_BYTES` (2 GiB) the oldest entries are deleted when ldpk is imported,
   checked once a day (JAX's own size limit locks every cache access: 13 s). Fits also keep
   their compiled executables in the folder's ``executables`` folder, keyed by the traced
   program, which skips lowering as well (see :mod:`ldpk._compiled`; its entries are
   authenticated before they are loaded). Off (both caches): ``LDPK_NO_CACHE=1``, or
   ``configure(cache=False)``. Takes effect before the first compilation.
4. ``EQX_ON_ERROR=nan`` (set unless already set). Why: a runtime check inside a solve that
   fails (lineax differentiating a Newton step whose state overflowed to inf or NaN) then
   gives NaN, which a fit treats as a rejected point, instead of aborting the fit; ldpk's
   solves return failures as NaN anyway. Off: ``LDPK_NO_EQX_ON_ERROR=1`` (or set
   ``EQX_ON_ERROR`` yourself). Equinox reads the variable when it is first imported, which
   ``import ldpk`` does: after that, changing it has no effect.

An environment variable counts as set when it is ``1`` or ``true``. What the last call
applied is in :data:`applied`.
"""

from __future__ import annotations

import os
import stat
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax

#: Size limit of the persistent compilation cache (bytes): beyond it, the oldest entries go.
CACHE_MAX_BYTES = 2 * 1024**3
#: Seconds between two checks of the cache's size (a check stats every file: 0.2 s for 6,000)
PRUNE_EVERY_S = 24 * 3600
#: The device-count flag of XLA_FLAGS.
_DEVICE_FLAG = "--xla_force_host_platform_device_count"

#: What ldpk has set in this process: ``float64`` (bool), ``host_devices`` (the count, or
#: None), ``cache`` (the folder, or None; ``cache_given``: the folder given to
#: :func:`configure`), ``eqx_on_error`` (the value set, or None), and ``cache_saved``, JAX's
#: cache options before (to restore them). Empty until :func:`configure` runs.
applied: dict[str, Any] = {}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


def cache_dir() -> Path:
    """The caches' folder: the one given to :func:`configure` (``cache=PATH``), else
    ``LDPK_CACHE_DIR``, else ``$XDG_CACHE_HOME/ldpk/jax`` (``~/.cache/ldpk/jax``)."""
    if applied.get("cache_given") is not None:
        return applied["cache_given"]
    if os.environ.get("LDPK_CACHE_DIR"):
        return Path(os.environ["LDPK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ldpk" / "jax"


def cache_enabled() -> bool:
    """Whether ldpk's caches are on: :func:`configure` turned them on and ``LDPK_NO_CACHE``
    is not set (now)."""
    return applied.get("cache") is not None and not _flag("LDPK_NO_CACHE")


def private_dir(path: Path) -> bool:
    """Create ``path`` (and its parents) if needed and make sure only this user can use it:
    created with mode 0700; an existing folder of this user with group or other permissions
    is set to 0700. False, with a warning, for a folder owned by another user or a path
    that is not a folder (it is then not to be used). POSIX only: elsewhere just created."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not hasattr(os, "getuid"):
        return True
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        warnings.warn(f"ldpk: {path} is not a folder: cache not used", stacklevel=3)
        return False
    if st.st_uid != os.getuid():
        warnings.warn(
            f"ldpk: cache folder {path} belongs to another user (uid {st.st_uid}): not used",
            stacklevel=3,
        )
        return False
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(0o700)
    return True


def _host_devices(n: int | None) -> int | None:
    """Add the device-count flag for ``n`` devices (None: the default) unless XLA_FLAGS sets
    one; the count added, or None."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_FLAG in flags:
        return None
    if n is None:
        env = os.environ.get("LDPK_HOST_DEVICES", "").strip()
        n = int(env) if env.isdigit() else max(os.cpu_count() or 1, 4)
    if n <= 1:
        return None
    os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={n}".strip()
    return n


def _drop_host_devices() -> None:
    """Remove the flag that ldpk added (if JAX's backend has not read it yet)."""
    n = applied.get("host_devices")
    if n is None:
        return
    flags = os.environ.get("XLA_FLAGS", "").replace(f"{_DEVICE_FLAG}={n}", "").strip()
    if flags:
        os.environ["XLA_FLAGS"] = " ".join(flags.split())
    else:
        os.environ.pop("XLA_FLAGS", None)
    applied["host_devices"] = None


_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


def _cache(path: Path) -> Path | None:
    """Turn JAX's persistent cache on in ``path`` (pruned when due); the folder, or None
    where it cannot be used."""
    try:
        if not private_dir(path):
            return None
        if "cache_saved" not in applied:
            applied["cache_saved"] = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        marker = path / ".ldpk-pruned"  # when the size was last checked
        if not marker.exists() or time.time() - marker.stat().st_mtime > PRUNE_EVERY_S:
            marker.touch()
            prune_cache(path, CACHE_MAX_BYTES)
    except OSError:  # read-only home: run without the cache
        return None
    return path


def configure(
    *,
    float64: bool | None = None,
    host_devices: int | bool | None = None,
    cache: bool | str | Path | None = None,
    eqx_on_error: str | bool | None = None,
) -> dict[str, Any]:
    """Apply ldpk's process-wide settings (see the module docstring); ``import ldpk`` calls it
    with no arguments. Each switch left None follows the environment (on unless its variable
    turns it off); ``LDPK_NO_CONFIG=1`` makes them all off unless given here.

    ``float64``: enable JAX's 64-bit mode (False: undo what ldpk set). ``host_devices``: the
    number of host devices (True: the default count; False or 1: none; before JAX's backend
    starts). ``cache``: True, or a folder, for the persistent caches (False: off, and JAX's
    cache options restored; before the first compilation). ``eqx_on_error``: the value of
    ``EQX_ON_ERROR`` (True: 'nan' unless the variable is set; a string: that value; False:
    remove the value ldpk set), read by Equinox when first imported. Returns
    :data:`applied`."""
    skip = _flag("LDPK_NO_CONFIG")
    explicit_eqx = eqx_on_error is not None
    if float64 is None:
        float64 = not (skip or _flag("LDPK_FLOAT32"))
    if host_devices is None:
        host_devices = not skip
    if cache is None:
        cache = not (skip or _flag("LDPK_NO_CACHE"))
    if eqx_on_error is None:
        eqx_on_error = not (skip or _flag("LDPK_NO_EQX_ON_ERROR"))

    if float64:
        jax.config.update("jax_enable_x64", True)
        applied["float64"] = True
    elif applied.get("float64"):
        jax.config.update("jax_enable_x64", False)
        applied["float64"] = False
    else:
        applied["float64"] = False

    if host_devices is False or (host_devices is not True and int(host_devices) <= 1):
        _drop_host_devices()
    elif applied.get("host_devices") is None:
        applied["host_devices"] = _host_devices(None if host_devices is True else int(host_devices))  # fmt: skip

    mine = applied.get("eqx_on_error")
    if mine and os.environ.get("EQX_ON_ERROR") == mine:
        os.environ.pop("EQX_ON_ERROR")  # ldpk's own value: replaced or removed below
    applied["eqx_on_error"] = None
    if eqx_on_error and (isinstance(eqx_on_error, str) or "EQX_ON_ERROR" not in os.environ):
        value = "nan" if eqx_on_error is True else str(eqx_on_error)
        os.environ["EQX_ON_ERROR"] = applied["eqx_on_error"] = value
    if explicit_eqx and "equinox" in sys.modules:
        warnings.warn(
            "ldpk configure(eqx_on_error=...): Equinox is already imported and has read "
            "EQX_ON_ERROR; set the variable before importing ldpk (or Equinox) instead",
            stacklevel=2,
        )

    if cache:
        applied["cache_given"] = None if cache is True else Path(cache)
        applied["cache"] = _cache(cache_dir())
    else:
        for k, v in applied.pop("cache_saved", {}).items():
            jax.config.update(k, v)
        applied["cache"] = None
    return applied


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
