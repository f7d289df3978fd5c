"""Packaging: the built-in models ship inside the wheel (load_model works from an installed
package), and every package ldpk imports is declared, the JAX stack within tested ranges."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
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


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(top-level module, required) of every absolute import in ``tree``: required when it
    runs at import time, unguarded (not in a function, nor in a ``try`` that catches
    ImportError, nor under TYPE_CHECKING)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, required: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name.split(".")[0], required) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], required))
        in_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        guarded = isinstance(node, ast.Try) and any(
            "ImportError" in ast.unparse(h.type or ast.Name("BaseException")) for h in node.handlers
        )
        type_checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        inner = required and not (in_function or guarded or type_checking)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return found


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[\s<>=!~;\[(]", r.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
    }


def test_every_imported_package_is_declared():
    """Each third-party package that src/ldpk imports is a declared requirement: in the core
    dependencies if imported unguarded at module level, else in the core or an extra. Module
    names map to distributions through the installed packages' metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    extras = set().union(*map(_requirement_names, project["optional-dependencies"].values()))
    dists = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for path in sorted((ROOT / "src" / "ldpk").rglob("*.py")):
        for module, required in _imports(ast.parse(path.read_text(), str(path))):
            if module in stdlib or module in ("ldpk", "__future__"):
                continue
            names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
            if not names:
                missing.append(f"{path.relative_to(ROOT)}: {module} (not installed)")
            elif not names & (core if required else core | extras):
                where = "dependencies" if required else "dependencies or an extra"
                missing.append(f"{path.relative_to(ROOT)}: {module} ({'/'.join(sorted(names))}) not in {where}")  # fmt: skip
    assert not missing, "\n".join(sorted(set(missing)))


def test_file_format_engines_are_declared():
    """Packages that ldpk uses by name rather than by import (xarray's engines, pandas'
    parquet) are core dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "ldpk").rglob("*.py"))
    used = {"h5netcdf": 'engine="h5netcdf"', "zarr": 'engine="zarr"', "pyarrow": "to_parquet("}
    for dist, marker in used.items():
        if marker in source:
            assert dist in core, f"{marker} needs {dist} in the dependencies"


def test_the_jax_stack_is_pinned_to_a_tested_range_and_constrained():
    """jax, jaxlib, numpyro, diffrax, arviz, equinox and lineax have a lower and an upper
    bound that admit the installed (tested) version, and constraints.txt pins each exactly."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    assert "ldpk" not in pins
    for name in ("jax", "jaxlib", "numpyro", "diffrax", "arviz", "equinox", "lineax"):
        spec = reqs[name].specifier
        assert any(s.operator in (">=", "~=") for s in spec), f"{name}: no lower bound"
        assert any(s.operator == "<" for s in spec), f"{name}: no upper bound"
        installed = importlib.metadata.version(name)
        assert spec.contains(installed), f"{name} {installed} outside {spec}"
        assert pins.get(name) == installed, f"constraints.txt: {name}=={pins.get(name)}, installed {installed}"  # fmt: skip
