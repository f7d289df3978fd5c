"""The built-in models ship inside the wheel: load_model works from an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_models_and_loads_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("ldpk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for model in (ROOT / "models").glob("*.yaml"):
        assert f"ldpk/_models/{model.name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import ldpk, pathlib; m = ldpk.load_model('two_compartment'); "
        "assert pathlib.Path(m.source).parent.name == '_models', m.source; "
        f"assert ldpk.__file__.startswith({str(site)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "LDPK_HOST_DEVICES": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


def test_fitting_works_after_importing_arviz_first():
    """ArviZ loads numpyro lazily; ldpk imported after it must still leave numpyro whole
    (numpyro.factor, used by every fit's MAP start, needs numpyro.distributions.distribution).
    A fresh process, since the import order is the point."""
    code = (
        "import arviz\n"
        "import ldpk\n"
        "import numpyro, numpyro.distributions as d\n"
        "from numpyro import handlers\n"
        "assert hasattr(d, 'distribution')\n"
        "tr = handlers.trace(lambda: numpyro.factor('f', 1.0)).get_trace()\n"
        "assert float(tr['f']['fn'].log_prob(None)) == 1.0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
