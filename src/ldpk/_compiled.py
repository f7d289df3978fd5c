"""A ``jax.jit`` whose compiled executables are cached on disk, keyed by the traced program.

JAX's persistent compilation cache (see :mod:`ldpk._config`) skips XLA's compilation, but its
key is computed from the lowered StableHLO module, so every process still traces and lowers
every function it calls. Lowering (jaxpr to MLIR) took about a third of a fit of the
one-compartment Stan benchmark in a new process: the model's potential and gradient are
lowered into the MAP search, NUTS's start, NUTS's transitions and the draws' post-processing,
and the sampler's transitions alone took 0.3-0.4 s. :func:`jit` keys a cache of serialised
executables by a hash of the jaxpr instead (every equation, parameter, literal and
constant; the arguments' types and shardings; the devices, JAX's version and
configuration) and loads the executable from it without lowering.

A cached executable is used only for an identical traced program: the key covers everything
lowering reads. A program it cannot hash reliably (a host callback, a parameter whose
``repr`` shows a memory address or that it does not know) is compiled as by ``jax.jit``.
Only executables that XLA has just compiled are stored: one that JAX loaded from its own
cache serialises incompletely (it failed with "Function ... not found" when loaded again).
So a program that JAX's cache already holds (compiled by an earlier ldpk, or before this
cache's key changed) is loaded from there, lowered as before, and enters this cache only
once JAX's entry is gone (pruned, or the cache folder deleted): storing it would take a
fresh compilation, seconds per program where loading takes a tenth of that. Entries are
written whole (a temporary file renamed) in ``LDPK_CACHE_DIR/executables`` (off with
``LDPK_NO_CACHE=1``, or whenever :func:`ldpk._config.configure` left the caches off) and
pruned with JAX's.

Loading an entry unpickles it, which can run any code: so an entry is loaded only from a
folder private to the user (mode 0700, see :func:`ldpk._config.private_dir`), only if it is
a regular file owned by the user and not writable by group or others, and only if its
HMAC-SHA256 verifies (each entry is ``MAGIC``, the 32-byte tag, then the pickled payload;
the key is 32 random bytes in the folder's ``.key``, mode 0600, made by the first process
that needs it). Anything else is never unpickled: the entry is deleted and the program
compiled again. CPU only, so far: on a GPU, where lowering
initialises solver kernels that loading would skip, nothing has been checked, and programs
are compiled as by ``jax.jit``.
"""

from __future__ import annotations

import contextlib
import copyreg
import enum
import hashlib
import hmac
import os
import pickle
import stat
import tempfile
import threading
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental.serialize_executable import deserialize_and_load, serialize
from jax.extend import core as jcore

#: Changes whenever what the key covers or what an entry holds changes: old entries are then
#: never read.
KEY_VERSION = 3
#: The first bytes of an entry (then its HMAC-SHA256 tag and the pickled payload).
MAGIC = b"LDPK-EXE\x01"
#: The HMAC key's file name in the executables folder (hidden: never pruned).
KEY_FILE = ".key"
#: Primitives whose lowering does more than emit code (GPU eig initialises hybrid kernels):
#: a program with one is compiled as by jax.jit. (LAPACK, which CPU linear algebra's lowering
#: initialises, is initialised before any executable is loaded: see _prepared.)
_LOWERING_SIDE_EFFECTS = {"eig"}
#: Parameters of these primitives that lowering ignores (their ``call_jaxpr`` is lowered;
#: the derivative rules are used by transformations before lowering): skipped by the key.
_IGNORED_PARAMS = {
    "custom_jvp_call": {"jvp_jaxpr_fun", "jvp_jaxpr_thunk", "symbolic_zeros"},
    "custom_vjp_call": {"fwd_jaxpr_thunk", "bwd", "out_trees", "symbolic_zeros"},
}


class _Unhashable(Exception):
    """The traced program holds something the key cannot cover."""


@cache
def _prepared() -> bool:
    """Do, once, what caching executables needs: initialise LAPACK, as lowering CPU linear
    algebra would have done (an executable calling it uninitialised crashed the process);
    count JAX's cache hits per thread (see the module docstring); and pickle JAX's AutoLayout
    singleton as a reference to it. (Serialised executables carry their output types;
    unpickled as a copy, AutoLayout made them unequal to every other type of the same shape,
    and differentiating through a loaded executable's output failed: "Expected cotangent
    type float64[12,3] but got float64[12,3]".) False where this JAX lacks any of these
    hooks, and on other backends than the CPU, where what lowering initialises (GPU solver
    kernels, for one) has not been checked: executables are then not cached."""
    if jax.default_backend() != "cpu":
        return False
    try:
        from jax._src.lax.linalg import initialize_lapack
        from jax._src.layout import AutoLayout, AutoLayoutSingleton

        if AutoLayoutSingleton.__module__ != "jax._src.layout":  # where pickle will look
            return False
        initialize_lapack()
        jax.monitoring.register_event_listener(_count_hits)
        copyreg.pickle(AutoLayoutSingleton, lambda _: "AutoLayout")
        if pickle.loads(pickle.dumps(AutoLayout)) is not AutoLayout:
            return False
    except (ImportError, AttributeError, pickle.PicklingError):
        return False
    return True


_hits = threading.local()
#: What this process's programs did: 'loaded' from the cache, 'stored' in it after compiling,
#: 'compiled' without storing (JAX's cache supplied them, or storing failed) and 'uncached'
#: (no key: a host callback, LDPK_NO_CACHE). For tests and benchmarks.
stats = {"loaded": 0, "stored": 0, "compiled": 0, "uncached": 0}


#: Keys of programs that JAX's cache supplied in this process: compiled again, JAX's memory
#: hands back that executable (no cache event), which must not be stored either.
_supplied: set[str] = set()


def _count_hits(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _hits.n = getattr(_hits, "n", 0) + 1


def executables_dir() -> Path | None:
    """Where executables are cached (made on first store), or None when the caches are off."""
    from ldpk._config import cache_dir, cache_enabled

    if not cache_enabled() or not _prepared():
        return None
    return cache_dir() / "executables"


#: The HMAC key of each executables folder used by this process (None: not usable).
_keys: dict[Path, bytes | None] = {}


def _secret(folder: Path) -> bytes | None:
    """The HMAC key of ``folder``, made private (0700) and given a key (0600) on first use;
    None, with a warning, where that fails (the cache is then not used)."""
    if folder in _keys:
        return _keys[folder]
    from ldpk._config import private_dir

    key = None
    try:
        if private_dir(folder):
            key = _read_key(folder / KEY_FILE)
            if key is None:
                _new_key(folder)
                key = _read_key(folder / KEY_FILE)
    except OSError as exc:
        warnings.warn(f"ldpk: executables cache {folder} not used: {exc}", stacklevel=3)
    _keys[folder] = key
    return key


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``, or None where there is none; a key file that is not a regular
    file of this user, private to it and 32 bytes long is deleted (a new key then makes
    every entry written with the old one fail to verify)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:  # a link (O_NOFOLLOW), or unreadable
        path.unlink(missing_ok=True)
        return None
    with os.fdopen(fd, "rb") as f:
        key = f.read(64)
        if _trusted(os.fstat(f.fileno()), private=True) and len(key) == 32:
            return key
    path.unlink(missing_ok=True)
    return None


def _new_key(folder: Path) -> None:
    """Write a random key to ``folder/KEY_FILE`` (mode 0600) unless another process just did:
    written whole and linked into place, which fails if the file exists."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        with contextlib.suppress(FileExistsError):  # another process's key: use that one
            os.link(tmp, folder / KEY_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _trusted(st: os.stat_result, private: bool = False) -> bool:
    """Whether a file with status ``st`` may be trusted: a regular file owned by this user,
    not writable by group or others (``private``: nor readable by them). Always true where
    there are no user ids (not POSIX)."""
    if not stat.S_ISREG(st.st_mode):
        return False
    if not hasattr(os, "getuid"):
        return True
    mask = 0o077 if private else 0o022
    return st.st_uid == os.getuid() and not stat.S_IMODE(st.st_mode) & mask


def _seal(key: bytes, payload: bytes) -> bytes:
    """An entry: ``MAGIC``, the HMAC-SHA256 of ``payload`` under ``key``, then ``payload``."""
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def _read_entry(path: Path, key: bytes) -> bytes | None:
    """The payload of the entry at ``path`` if it is trusted (see :func:`_trusted`) and its
    tag verifies; None if there is no entry. Raises ``ValueError`` for an untrusted or
    damaged one (never to be unpickled)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link (O_NOFOLLOW), or unreadable
        raise ValueError(f"unreadable entry: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not _trusted(os.fstat(f.fileno())):
            raise ValueError("entry not owned by this user, or writable by others")
        data = f.read()
    n = len(MAGIC)
    tag, payload = data[n : n + 32], data[n + 32 :]
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if data[:n] != MAGIC or not hmac.compare_digest(tag, expected):
        raise ValueError("entry fails its checksum")
    return payload


class _Hasher:
    """SHA-256 of a jaxpr, its constants and parameters (sub-jaxprs hashed once each)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.arrays = hashlib.sha256()  # array contents, hashed as they come
        self.seen: dict[int, int] = {}  # id(jaxpr) -> its index in hashing order
        self.keep: list[Any] = []  # the jaxprs seen, alive while their ids are keys
        self.types: dict[Any, str] = {}  # aval -> its text

    def add(self, *parts: Any) -> None:
        self.parts.extend(map(str, parts))

    def array(self, x: Any) -> None:
        a = np.ascontiguousarray(x)
        self.parts.append(f"array {a.dtype.str} {a.shape}")
        self.arrays.update(a.tobytes())

    def aval(self, a: Any) -> str:
        text = self.types.get(a)
        if text is None:
            text = self.types[a] = f"{a.str_short()} weak={getattr(a, 'weak_type', False)}"
        return text

    def jaxpr(self, j: Any) -> None:
        if isinstance(j, jcore.ClosedJaxpr):
            self.add("closed", len(j.consts))
            for c in j.consts:
                self.value(c, "")
            j = j.jaxpr
        if id(j) in self.seen:  # the same sub-program again (e.g. in several branches)
            self.add("seen", self.seen[id(j)])
            return
        self.seen[id(j)] = len(self.seen)
        self.keep.append(j)
        for c in getattr(j, "consts", ()) or ():
            self.value(c, "")
        names: dict[Any, int] = {}
        parts = self.parts

        def var(v: Any) -> None:
            if isinstance(v, jcore.Literal):
                parts.append("lit " + self.aval(v.aval))
                self.array(v.val)
            else:
                parts.append(f"{names.setdefault(v, len(names))} {self.aval(v.aval)}")

        self.add("in", len(j.constvars), len(j.invars))
        for v in (*j.constvars, *j.invars):
            var(v)
        for eqn in j.eqns:
            name = eqn.primitive.name
            if name in _LOWERING_SIDE_EFFECTS:
                raise _Unhashable(name)
            parts.append(f"eqn {name} {len(eqn.invars)}")
            for v in eqn.invars:
                var(v)
            ignored = _IGNORED_PARAMS.get(name, ())
            for k in sorted(eqn.params):
                if k not in ignored:
                    parts.append(k)
                    self.value(eqn.params[k], name)
            parts.append(f"out {len(eqn.outvars)}")
            for v in eqn.outvars:
                var(v)
            if eqn.effects:
                self.add("effects", sorted(map(str, eqn.effects)))
        self.add("result", len(j.outvars))
        for v in j.outvars:
            var(v)
        self.add("effects", sorted(map(str, j.effects)))

    def value(self, v: Any, prim: str) -> None:
        if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)):
            self.jaxpr(v)
        elif isinstance(v, (np.ndarray, np.generic, jax.Array)):
            self.array(v)
        elif v is None or isinstance(v, (bool, int, float, complex, str, bytes, np.dtype, enum.Enum)):  # fmt: skip
            self.parts.append(f"{type(v).__name__} {v!r}")
        elif type(v).__name__ == "PRNGImpl":  # a random number generator: its name says which
            self.add("prng", v.name, v.key_shape)
        elif isinstance(v, (tuple, list)):  # NamedTuples too: their fields are their content
            self.add(type(v).__name__, len(v))
            for x in v:
                self.value(x, prim)
        elif isinstance(v, dict):
            self.add("dict", len(v))
            for k in sorted(v, key=repr):
                self.add(repr(k))
                self.value(v[k], prim)
        elif isinstance(v, jax.sharding.Mesh):
            self.add(
                "mesh",
                repr(v),
                [getattr(d, "id", d) for d in np.ravel(np.asarray(v.devices, dtype=object))],
            )
        else:
            text = repr(v)
            if callable(v) or " at 0x" in text or " object at " in text:
                raise _Unhashable(f"{prim}: {type(v).__name__}")
            self.add(type(v).__module__, type(v).__qualname__, text)

    def hexdigest(self) -> str:
        h = hashlib.sha256("\x00".join(self.parts).encode())
        h.update(self.arrays.digest())
        return h.hexdigest()


def _environment() -> tuple:
    """What besides the program decides its executable: versions, devices, configuration."""
    import jaxlib

    devices = jax.devices()
    config = sorted((k, repr(v)) for k, v in jax.config.values.items() if k != "jax_compilation_cache_dir")  # fmt: skip
    return (
        KEY_VERSION, jax.__version__, jaxlib.__version__, devices[0].platform,
        devices[0].client.platform_version, [(d.id, d.device_kind) for d in devices],
        os.environ.get("XLA_FLAGS", ""), config,
    )  # fmt: skip


def program_key(traced: Any, args: tuple, jit_kwargs: dict) -> str | None:
    """The cache key of a traced program (``jax.jit(f, **jit_kwargs).trace(*args)``), or None
    where it holds something the key cannot cover."""
    h = _Hasher()
    try:
        h.add(repr(_environment()), repr(sorted(jit_kwargs.items())), traced.in_tree, traced.out_tree)  # fmt: skip
        for x in jax.tree.leaves(args):
            h.add(*_signature(x))
        h.jaxpr(traced.jaxpr)
    except (_Unhashable, TypeError, ValueError):  # e.g. a typed PRNG key as a parameter
        return None
    return h.hexdigest()


def _signature(x: Any) -> tuple[str, str]:
    """An argument's type (shape, dtype, weak type) and, if committed, placement."""
    t = jax.typeof(x)
    where = "uncommitted"
    if isinstance(x, jax.Array) and x.committed:
        where = f"{x.sharding!r} on {sorted(d.id for d in x.sharding.device_set)}"
    return f"{t.str_short()} weak={getattr(t, 'weak_type', False)}", where


class jit:  # noqa: N801  (a drop-in for jax.jit)
    """``jax.jit(fun, **jit_kwargs)`` whose executables are loaded from and stored in the
    executables cache (see the module docstring). Called with tracers (inside another
    transformation) it is ``jax.jit``. Executables are kept per argument signature for the
    life of this object."""

    def __init__(self, fun: Any, **jit_kwargs: Any) -> None:
        self._jitted = jax.jit(fun, **jit_kwargs)
        self._kwargs = jit_kwargs
        self._compiled: dict[Any, Any] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, tree = jax.tree.flatten(args)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return self._jitted(*args)
        signature = (tree, *map(_signature, leaves))
        compiled = self._compiled.get(signature)
        if compiled is None:
            compiled = self._compiled[signature] = self._compile(args)
        return compiled(*args)

    def _compile(self, args: tuple) -> Any:
        traced = self._jitted.trace(*args)
        folder = executables_dir()
        key = program_key(traced, args, self._kwargs) if folder is not None else None
        if key is None:
            stats["uncached"] += 1
            return traced.lower().compile()  # as jax.jit would
        path = folder / f"{key}.exe"
        payload = None
        secret = _secret(folder) if folder.is_dir() else None
        if secret is not None:
            try:
                payload = _read_entry(path, secret)
            except ValueError:  # untrusted or damaged: never unpickled, compiled again
                path.unlink(missing_ok=True)
        if payload is not None:
            try:  # (the executing devices' ids, the serialised executable)
                ids, exe = pickle.loads(payload)
                devices = {d.id: d for d in jax.devices()}
                loaded = deserialize_and_load(exe, traced.in_tree, traced.out_tree, execution_devices=[devices[i] for i in ids])  # fmt: skip
                stats["loaded"] += 1
                return loaded
            except Exception:  # noqa: BLE001  (an entry of another JAX: compile again)
                path.unlink(missing_ok=True)
        before = getattr(_hits, "n", 0)
        compiled = traced.lower().compile()
        if getattr(_hits, "n", 0) != before:  # from JAX's cache: it serialises incompletely
            _supplied.add(key)
        stored = False
        secret = None if key in _supplied else _secret(folder)
        if secret is not None:
            try:
                ids = [d.id for d in compiled.runtime_executable().local_devices()]
                _write_whole(path, _seal(secret, pickle.dumps((ids, serialize(compiled)[0]))))
                stored = True
            except (OSError, ValueError, TypeError, pickle.PicklingError):
                pass  # not serialisable, or a read-only cache: compiled all the same
        stats["stored" if stored else "compiled"] += 1
        return compiled


def _write_whole(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file (mode 0600) renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
