"""ldpk._compiled: executables cached by the traced program. The key must change with
anything that changes the program (else a wrong executable runs); a process that loads
executables must compute what one that compiled them did, bit for bit; programs the key
cannot cover, damaged entries and JAX's own cache hits must fall back to compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldpk import _compiled
from ldpk._compiled import jit, program_key


def _entries(folder):
    """The cache entries of an executables folder (not its hidden key file)."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _key(f, *args, **jit_kwargs):
    return program_key(jax.jit(f, **jit_kwargs).trace(*args), args, jit_kwargs)


def test_the_key_follows_every_part_of_the_program():
    x = jnp.arange(3.0)
    c1, c2 = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])

    def loop(factor):
        return lambda x: jax.lax.fori_loop(0, 3, lambda i, v: v * factor, x)

    base = _key(lambda x: jnp.sin(x * c1) + 1.0, x)
    assert base is not None
    # another closure with the same program: the same key
    assert _key(lambda x: jnp.sin(x * c1) + 1.0, x) == base
    variants = [
        _key(lambda x: jnp.sin(x * c2) + 1.0, x),  # a closed-over constant's values
        _key(lambda x: jnp.sin(x * c1) + 2.0, x),  # a literal
        _key(lambda x: jnp.cos(x * c1) + 1.0, x),  # a primitive
        _key(lambda x: jnp.sin(x * c1) + 1.0, jnp.arange(3.0)[::-1][:2].sum() + x),  # same
        _key(lambda x: jnp.sin(x * c1[:2]) + 1.0, x[:2]),  # a shape
        _key(lambda x: jnp.sin(x * c1) + 1.0, x.astype(jnp.float32)),  # a dtype
        _key(lambda x: jnp.sin(x * c1) + 1.0, x, donate_argnums=0),  # the jit's options
        _key(loop(2.0), x),  # a sub-program (a loop's body)
    ]
    assert variants[3] == base  # the same types and program, other argument values
    del variants[3]
    assert len({base, *variants}) == len(variants) + 1
    assert _key(loop(2.0), x) != _key(loop(3.0), x)
    # a Python scalar is weakly typed, a NumPy one is not: different programs
    assert _key(lambda x, s: x * s, x, 2.0) != _key(lambda x, s: x * s, x, np.float64(2.0))


def test_a_host_callback_is_not_cached_and_still_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))

    def f(x):
        y = jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)  # fmt: skip
        return y + 1

    x = jnp.arange(3.0)
    assert _key(f, x) is None
    before = dict(_compiled.stats)
    np.testing.assert_array_equal(jit(f)(x), [1.0, 3.0, 5.0])
    assert _compiled.stats["uncached"] == before["uncached"] + 1
    assert not (tmp_path / "executables").exists()


def test_no_cache_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LDPK_NO_CACHE", "1")
    assert _compiled.executables_dir() is None
    np.testing.assert_array_equal(jit(lambda x: x + 1)(jnp.arange(2.0)), [1.0, 2.0])
    assert not (tmp_path / "executables").exists()


def test_a_damaged_entry_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))
    # constants new to JAX's own cache (shared by the test runs): else JAX's cache supplies
    # the executable and nothing is stored
    c = np.random.default_rng().random(7)

    def f(x):
        return jnp.cumsum(x * c) ** 2

    x = jnp.arange(7.0)
    expected = np.cumsum(np.arange(7.0) * c) ** 2
    np.testing.assert_allclose(jit(f)(x), expected, rtol=1e-15)
    (entry,) = _entries(tmp_path / "executables")
    entry.write_bytes(b"not an executable")
    before = dict(_compiled.stats)
    np.testing.assert_allclose(jit(f)(x), expected, rtol=1e-15)
    assert _compiled.stats["loaded"] == before["loaded"]  # it was not used
    assert not entry.exists() or entry.read_bytes() != b"not an executable"  # removed or replaced
    hidden = [p.name for p in (tmp_path / "executables").iterdir() if p.name.startswith(".")]
    assert hidden == [_compiled.KEY_FILE]  # no temporary file left


def test_calls_on_its_own_sharded_output_compile_once(tmp_path, monkeypatch):
    """Arrays placed on several devices have equal types whose hashes differ between calls
    (an early version compiled NUTS's transitions again for every block: 9x slower)."""
    from jax.sharding import Mesh, PartitionSpec

    assert jax.local_device_count() >= 2  # ldpk splits the CPU into >= 4 devices
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))
    mesh = Mesh(np.asarray(jax.local_devices()[:2]), ("c",))
    step = jax.shard_map(lambda x: x * 2.0, mesh=mesh, in_specs=PartitionSpec("c"), out_specs=PartitionSpec("c"))  # fmt: skip
    f = jit(step)
    x = jnp.ones((2, 3))
    for _ in range(4):
        x = f(x)
    np.testing.assert_array_equal(x, np.full((2, 3), 16.0))
    assert len(f._compiled) == 2  # the first, uncommitted argument; then its own output


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from functools import partial
    import jax, jax.numpy as jnp, numpy as np
    import ldpk
    from ldpk import _compiled

    c = np.linspace(1.0, 2.0, 4)

    def g(key, x):  # LAPACK (Cholesky), a custom JVP (softplus), random numbers, a loop
        a = jnp.outer(x, x) + jnp.diag(c)
        draws = jax.random.multivariate_normal(key, x, a, shape=(3,))
        y = jax.nn.softplus(jnp.linalg.solve(a, x))
        return draws, jax.lax.fori_loop(0, 5, lambda i, v: v * 0.5 + y, y)

    args = (jax.random.PRNGKey(3), jnp.arange(4.0))
    draws, loop = _compiled.jit(g)(*args)
    # outputs typed as jax.jit's are (the types decide whether JAX can differentiate them)
    same_types = [jax.typeof(a) == jax.typeof(b) for a, b in zip((draws, loop), jax.jit(g)(*args))]
    grad = jax.jit(jax.grad(lambda v: jnp.sum(v[1:] ** 2)))(loop)
    model = ldpk.load_model("one_compartment")
    data = ldpk.read_data(model, sys.argv[2])
    fit = ldpk.fit(model, data, config={"error": {"cp": {"model": "additive"}}},
                   chains=2, warmup=30, samples=20, progress=False, seed=4)
    np.savez(sys.argv[1], draws=draws, loop=loop, grad=grad, ka=fit.draws("KA"), cl=fit.draws("CL"))
    print(json.dumps({**_compiled.stats, "same_types": all(same_types)}))
    """
)


def test_a_new_process_loads_what_another_compiled(tmp_path, reference_data_dir):
    """Three processes with one cache folder: the first compiles and stores; the second
    loads every executable (no lowering) and computes the same numbers bit for bit,
    NUTS draws included, with outputs typed as jax.jit's; with ldpk's entries deleted, the
    third gets them from JAX's cache, which serialises incompletely, so it stores none."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "LDPK_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("LDPK_NO_CACHE", None)
    theo = str(reference_data_dir / "theo_sd.csv")

    def run(i: int) -> tuple[dict, dict]:
        out = tmp_path / f"out{i}.npz"
        proc = subprocess.run([sys.executable, str(script), str(out), theo], env=env, capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1]), dict(np.load(out))

    exe = tmp_path / "cache" / "executables"
    stats1, out1 = run(1)
    assert stats1["stored"] >= 10 and stats1["loaded"] == stats1["compiled"] == 0, stats1
    entries = sorted(p.name for p in _entries(exe))
    stats2, out2 = run(2)
    assert stats2["loaded"] == stats1["stored"] and stats2["stored"] == 0, stats2
    assert stats1["same_types"] and stats2["same_types"]
    assert sorted(p.name for p in _entries(exe)) == entries  # nothing new
    for k in out1:
        np.testing.assert_array_equal(out2[k], out1[k], err_msg=k)
    for p in _entries(exe):
        p.unlink()
    stats3, out3 = run(3)
    assert stats3["stored"] == 0 and stats3["compiled"] == stats1["stored"], stats3
    assert not _entries(exe)
    for k in out1:
        np.testing.assert_array_equal(out3[k], out1[k], err_msg=k)


def test_an_executable_from_jax_cache_is_used_but_not_stored(tmp_path, monkeypatch):
    """An executable that JAX's persistent cache supplies is used and not stored: it would
    serialise incompletely ("Function ... not found" when run from ldpk's cache), and so is
    the same executable when JAX's memory hands it back for another compilation."""
    monkeypatch.setenv("LDPK_CACHE_DIR", str(tmp_path))
    c = np.random.default_rng().random(5)  # a program new to JAX's cache

    def f(x):
        return jnp.sort(x * c)[::-1]

    x = jnp.arange(5.0)
    jax.jit(f).trace(x).lower().compile()  # into JAX's persistent cache
    jax.clear_caches()  # and out of its memory: compiled again, it comes from the disk
    before = dict(_compiled.stats)
    for _ in range(2):  # the second time from JAX's memory, without a cache event
        np.testing.assert_array_equal(jit(f)(x), np.sort(np.arange(5.0) * c)[::-1])
    assert _compiled.stats["compiled"] == before["compiled"] + 2
    assert _compiled.stats["stored"] == before["stored"]
    assert not (tmp_path / "executables").exists()


@pytest.mark.parametrize("name", ["custom_jvp_call", "custom_vjp_call"])
def test_derivative_rules_are_left_out_of_the_key_only_where_lowering_ignores_them(name):
    """Lowering custom_jvp_call and custom_vjp_call lowers their call_jaxpr alone; the rules
    (Python functions, which the key cannot hash) are used by transformations before."""
    import inspect

    from jax._src import custom_derivatives

    source = inspect.getsource(custom_derivatives._custom_jvp_vjp_call_lowering)
    assert "call_jaxpr: core.Jaxpr, **_)" in source
    assert set(_compiled._IGNORED_PARAMS[name]).isdisjoint({"call_jaxpr", "num_consts"})
