"""The executables cache (ldpk._compiled) unpickles its entries: only entries that this user
wrote, that nobody else can change and whose HMAC verifies are ever loaded. Anything else is
deleted and compiled again, with the same result."""

from __future__ import annotations

import os
import pickle
import stat

import jax.numpy as jnp
import numpy as np
import pytest

from ldpk import _compiled
from ldpk._compiled import KEY_FILE, MAGIC, jit

pytestmark = pytest.mark.skipif(
    _compiled.executables_dir() is None or not hasattr(os, "getuid"),
    reason="executables cache off (LDPK_NO_CACHE, or not the CPU), or not POSIX",
)


def _stored(tmp_path, monkeypatch):
    """A function stored in a fresh cache folder: (function, argument, expected, entry)."""
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))
    c = np.random.default_rng().random(6)  # a program new to JAX's own cache: stored here

    def f(x):
        return jnp.cumsum(x * c) ** 2

    x = jnp.arange(6.0)
    expected = np.cumsum(np.arange(6.0) * c) ** 2
    before = _compiled.stats["stored"]
    np.testing.assert_allclose(jit(f)(x), expected, rtol=1e-15)
    assert _compiled.stats["stored"] == before + 1
    (entry,) = [p for p in (tmp_path / "executables").iterdir() if p.suffix == ".exe"]
    return f, x, expected, entry


def _not_loaded(f, x, expected, entry):
    """A new jit of ``f`` compiles (does not load ``entry``), computes ``expected`` and
    replaces the entry with a good one."""
    before = dict(_compiled.stats)
    np.testing.assert_allclose(jit(f)(x), expected, rtol=1e-15)
    assert _compiled.stats["loaded"] == before["loaded"]
    assert _compiled.stats["stored"] == before["stored"] + 1
    # the replacement is trusted: loaded by the next one
    np.testing.assert_allclose(jit(f)(x), expected, rtol=1e-15)
    assert _compiled.stats["loaded"] == before["loaded"] + 1
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_folder_and_key_are_private(tmp_path, monkeypatch):
    *_, entry = _stored(tmp_path, monkeypatch)
    folder = tmp_path / "executables"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    assert len((folder / KEY_FILE).read_bytes()) == 32
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert entry.read_bytes().startswith(MAGIC)


def test_an_existing_open_folder_is_made_private(tmp_path, monkeypatch):
    (tmp_path / "executables").mkdir()
    (tmp_path / "executables").chmod(0o777)
    _stored(tmp_path, monkeypatch)
    assert stat.S_IMODE((tmp_path / "executables").stat().st_mode) == 0o700


def test_a_tampered_payload_is_never_unpickled(tmp_path, monkeypatch):
    """An entry whose payload was replaced (a pickle that would create a folder when loaded)
    keeping the old tag: not unpickled, deleted, compiled again."""
    f, x, expected, entry = _stored(tmp_path, monkeypatch)
    witness = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(witness),))

    data = entry.read_bytes()
    head = data[: len(MAGIC) + 32]
    entry.write_bytes(head + pickle.dumps(Evil()))
    _not_loaded(f, x, expected, entry)
    assert not witness.exists()
    # a payload with one bit flipped, and a valid pickle without any tag, fare the same
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))
    _not_loaded(f, x, expected, entry)
    entry.write_bytes(pickle.dumps(Evil()))
    _not_loaded(f, x, expected, entry)
    assert not witness.exists()


def test_an_entry_writable_by_others_is_not_loaded(tmp_path, monkeypatch):
    f, x, expected, entry = _stored(tmp_path, monkeypatch)
    for mode in (0o620, 0o602, 0o666):
        entry.chmod(mode)
        _not_loaded(f, x, expected, entry)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_an_entry_of_another_user_is_not_loaded(tmp_path, monkeypatch):
    f, x, expected, entry = _stored(tmp_path, monkeypatch)
    os.chown(entry, 54321, -1)
    _not_loaded(f, x, expected, entry)


def test_a_bad_key_file_is_replaced(tmp_path, monkeypatch):
    """A key file readable by others is not used: a new key is made, and entries signed
    with the old one no longer verify."""
    f, x, expected, entry = _stored(tmp_path, monkeypatch)
    key = tmp_path / "executables" / KEY_FILE
    old = key.read_bytes()
    key.chmod(0o644)
    _compiled._keys.clear()  # as in a new process
    _not_loaded(f, x, expected, entry)
    assert key.read_bytes() != old
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
