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
``LDPK_NO_CACHE=1``) and pruned with JAX's. CPU only, so far: on a GPU, where lowering
initialises solver kernels that loading would skip, nothing has been checked, and programs
are compiled as by ``jax.jit``.
"""

from __future__ import annotations

import copyreg
import enum
import hashlib
import os
import pickle
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental.serialize_executable import deserialize_and_load, serialize
from jax.extend import core as jcore

#: Changes whenever what the key covers or what an entry holds changes: old entries are then
#: never read.
KEY_VERSION = 2
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
    """Where executables are cached, or None when the persistent cache is off."""
    if os.environ.get("LDPK_NO_CACHE", "") in ("1", "true") or not _prepared():
        return None
    from ldpk._config import cache_dir

    return cache_dir() / "executables"


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
        try:
            payload = path.read_bytes()
        except OSError:
            payload = None
        if payload is not None:
            try:  # (the executing devices' ids, the serialised executable)
                ids, exe = pickle.loads(payload)
                devices = {d.id: d for d in jax.devices()}
                loaded = deserialize_and_load(exe, traced.in_tree, traced.out_tree, execution_devices=[devices[i] for i in ids])  # fmt: skip
                stats["loaded"] += 1
                return loaded
            except Exception:  # noqa: BLE001  (a damaged entry: compile again)
                path.unlink(missing_ok=True)
        before = getattr(_hits, "n", 0)
        compiled = traced.lower().compile()
        if getattr(_hits, "n", 0) != before:  # from JAX's cache: it serialises incompletely
            _supplied.add(key)
        stored = False
        if key not in _supplied:
            try:
                ids = [d.id for d in compiled.runtime_executable().local_devices()]
                _write_whole(path, pickle.dumps((ids, serialize(compiled)[0])))
                stored = True
            except (OSError, ValueError, TypeError, pickle.PicklingError):
                pass  # not serialisable, or a read-only cache: compiled all the same
        stats["stored" if stored else "compiled"] += 1
        return compiled


def _write_whole(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
