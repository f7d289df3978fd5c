"""ldpk's JAX configuration (the persistent compilation cache and its size limit) and file writing."""

from __future__ import annotations

import os

import jax
import pytest

from ldpk._config import prune_cache


def test_every_compiled_function_is_cached():
    """A fit runs about a hundred small compiled functions; below a compile-time threshold
    they were compiled afresh in every process (12 s against 3.8 s for a warm fit of the
    Stan benchmark)."""
    if os.environ.get("LDPK_NO_CACHE", "") in ("1", "true"):
        pytest.skip("LDPK_NO_CACHE is set: the cache is off on purpose")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax.config.jax_compilation_cache_dir


def test_prune_cache_deletes_the_oldest_files_beyond_the_limit(tmp_path):
    """JAX's entries and ldpk's executables (every other file, in their own folder) are
    pruned together, oldest first."""
    (tmp_path / "executables").mkdir()
    for i in range(10):  # 10 files of 100 bytes, file 0 the oldest
        f = tmp_path / ("executables" if i % 2 else ".") / f"entry{i}-cache"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / ".ldpk-pruned").write_bytes(b"x" * 5000)  # ldpk's marker: never counted
    (tmp_path / "executables" / ".tmp-being-written").write_bytes(b"x" * 5000)
    assert prune_cache(tmp_path, 1000) == []  # at the limit: nothing goes
    removed = prune_cache(tmp_path, 800)  # down to 3/4 of it: 600 bytes, 6 files left
    assert sorted(p.name for p in removed) == [f"entry{i}-cache" for i in range(4)]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted([".ldpk-pruned", "executables/.tmp-being-written", *(f"{'executables/' if i % 2 else ''}entry{i}-cache" for i in range(4, 10))])  # fmt: skip


def test_written_files_get_the_permissions_open_would_give(tmp_path):
    """atomic_path writes through a mkstemp file (mode 0600); the renamed output must be
    readable as a file written with open() is (0666 less the umask)."""
    from ldpk._io import atomic_path

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
