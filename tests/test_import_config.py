"""What ``import ldpk`` changes in the process (see ldpk._config), and each switch that turns
it off. A fresh process per case: the settings are applied at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: Printed by the child: the four settings after `import ldpk`.
REPORT = """
import json, os, sys
import ldpk, jax
from ldpk import _compiled
print(json.dumps({
    "x64": bool(jax.config.jax_enable_x64),
    "xla_flags": os.environ.get("XLA_FLAGS"),
    "cache_dir": jax.config.jax_compilation_cache_dir,
    "executables": str(_compiled.executables_dir()),
    "eqx": os.environ.get("EQX_ON_ERROR"),
    "eqx_module": sys.modules["equinox._config"].EQX_ON_ERROR,
}))
"""

SWITCHES = ("LDPK_FLOAT32", "LDPK_HOST_DEVICES", "LDPK_NO_CACHE", "LDPK_NO_EQX_ON_ERROR",
            "LDPK_NO_CONFIG", "LDPK_CACHE_DIR", "XLA_FLAGS", "EQX_ON_ERROR", "JAX_ENABLE_X64",
            "JAX_COMPILATION_CACHE_DIR")  # fmt: skip


def _run(tmp_path, code: str = REPORT, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    base["LDPK_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_defaults(tmp_path):
    r = _run(tmp_path)
    assert r["x64"] is True
    assert "--xla_force_host_platform_device_count=" in r["xla_flags"]
    assert r["cache_dir"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert r["eqx"] == r["eqx_module"] == "nan"


def test_float32(tmp_path):
    r = _run(tmp_path, LDPK_FLOAT32="1")
    assert r["x64"] is False
    assert r["cache_dir"] == str(tmp_path / "cache")  # the others still apply


def test_host_devices_off_leaves_xla_flags_alone(tmp_path):
    assert _run(tmp_path, LDPK_HOST_DEVICES="1")["xla_flags"] is None
    flags = "--xla_cpu_enable_fast_math=false"
    assert _run(tmp_path, LDPK_HOST_DEVICES="1", XLA_FLAGS=flags)["xla_flags"] == flags
    # a device count already in XLA_FLAGS is left as it is
    flags = "--xla_force_host_platform_device_count=2"
    assert _run(tmp_path, XLA_FLAGS=flags)["xla_flags"] == flags
    r = _run(tmp_path, LDPK_HOST_DEVICES="3")
    assert r["xla_flags"] == "--xla_force_host_platform_device_count=3"


def test_no_cache(tmp_path):
    r = _run(tmp_path, LDPK_NO_CACHE="1")
    assert r["cache_dir"] is None
    assert r["executables"] == "None"
    assert not (tmp_path / "cache").exists()
    assert r["x64"] is True


def test_no_eqx_on_error(tmp_path):
    r = _run(tmp_path, LDPK_NO_EQX_ON_ERROR="1")
    assert r["eqx"] is None
    assert r["eqx_module"] == "raise"  # Equinox's own default
    # a value of the user's own is kept
    assert _run(tmp_path, EQX_ON_ERROR="raise")["eqx"] == "raise"


def test_no_config_skips_everything(tmp_path):
    r = _run(tmp_path, LDPK_NO_CONFIG="1")
    assert r == {
        "x64": False,
        "xla_flags": None,
        "cache_dir": None,
        "executables": "None",
        "eqx": None,
        "eqx_module": "raise",
    }
    assert not (tmp_path / "cache").exists()


def test_configure_with_keyword_switches(tmp_path):
    """With LDPK_NO_CONFIG=1, configure(...) applies what it is given, and turning a setting
    off again restores JAX's own values."""
    code = f"""
import json, jax, os, warnings
import ldpk
from ldpk import _config
assert not jax.config.jax_enable_x64 and jax.config.jax_compilation_cache_dir is None
_config.configure(float64=True, cache={str(tmp_path / "mine")!r}, host_devices=False, eqx_on_error=False)
on = [jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir, str(_config.cache_dir()),
      jax.config.jax_persistent_cache_min_compile_time_secs, os.environ.get("XLA_FLAGS")]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _config.configure(float64=False, cache=False, host_devices=False, eqx_on_error="nan")
off = [jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir,
       jax.config.jax_persistent_cache_min_compile_time_secs, os.environ.get("EQX_ON_ERROR")]
print(json.dumps({{"on": on, "off": off, "warned": [str(w.message) for w in caught]}}))
"""
    r = _run(tmp_path, code, LDPK_NO_CONFIG="1")
    mine = str(tmp_path / "mine")
    assert r["on"] == [True, mine, mine, 0.0, None]
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700
    assert r["off"][:2] == [False, None] and r["off"][2] > 0  # JAX's defaults again
    assert r["off"][3] == "nan"
    # Equinox was imported with ldpk: too late for EQX_ON_ERROR, and it says so
    assert any("Equinox is already imported" in w for w in r["warned"])


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_cache_folder_is_made_private(tmp_path):
    """An existing cache folder open to group/others is set to 0700; one that belongs to
    another user is not used (a warning; the process runs without the cache)."""
    (tmp_path / "cache").mkdir(mode=0o755)
    (tmp_path / "cache").chmod(0o777)
    assert _run(tmp_path)["cache_dir"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    if os.getuid() != 0:
        return  # giving the folder away needs root
    os.chown(tmp_path / "cache", 54321, -1)
    base = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    proc = subprocess.run([sys.executable, "-c", REPORT], env={**base, "LDPK_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["cache_dir"] is None
    assert "belongs to another user" in proc.stderr


def test_plots_leave_matplotlib_backend_and_pyplot_alone(tmp_path):
    """A plot call never switches matplotlib's backend (it used to force Agg on the whole
    process) and leaves no figure in pyplot's registry."""
    code = f"""
import json, sys
import matplotlib
matplotlib.use("svg")
import numpy as np
import ldpk
from ldpk import plots
m = ldpk.load_model("two_compartment")
sim = ldpk.simulate(m, {{"CL": np.array([4.0, 5.0, 6.0])}}, [ldpk.Bolus(100, route="iv")], times=np.linspace(0, 24, 25))
fig = plots.plot_simulation(sim, {str(tmp_path / "sim.png")!r})
fig2 = plots.plot_simulation(sim)
plt = sys.modules.get("matplotlib.pyplot")
print(json.dumps({{
    "backend": matplotlib.get_backend(),
    "figure": type(fig).__module__ + "." + type(fig).__name__,
    "pyplot_figures": plt.get_fignums() if plt else [],
}}))
"""
    r = _run(tmp_path, code, LDPK_NO_CACHE="1")
    assert r["backend"] == "svg"
    assert r["figure"] == "matplotlib.figure.Figure"
    assert r["pyplot_figures"] == []
    assert (tmp_path / "sim.png").read_bytes().startswith(b"\x89PNG")
