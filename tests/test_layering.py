"""The import layering of ``src/ldpk`` (DESIGN.md, "Layout"): a module imports only modules
listed above it, with ``__init__.py`` and ``cli.py`` aside; nothing imports ``cli``; the CLI
calls the public API only. Imports are read with ``ast`` from the source (module-level,
function-level and ``TYPE_CHECKING`` imports, absolute and relative), nothing is imported."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ldpk"

#: Modules below everything DESIGN.md lists (it does not name them): errors, the version,
#: atomic files, global JAX settings and the compilation cache. In this order.
FOUNDATION = ["errors", "_limits", "_version", "_io", "_config", "_compiled"]
#: The order of DESIGN.md's "Layout" (src/ldpk/, top to bottom; "plots.py, report.py" in
#: that order), ``__init__.py`` and ``cli.py`` aside. ``design`` is planned.
DESIGN_ORDER = [
    "tracer",
    "model",
    "dosing",
    "solve",
    "exposure",
    "sweep",
    "sensitivity",
    "data",
    "population",
    "diagnostics",
    "inference",
    "design",
    "plots",
    "report",
]
#: Modules DESIGN.md does not list, each placed just before the module named: the parameter
#: tables sweep takes ("grids, samples" under sweep.py in DESIGN.md), and sweep's Dask
#: backend, which runs chunks handed to it and so sits below sweep.
EXTRA_BEFORE = {"paramsets": "sweep", "_cluster": "sweep"}


def _layers() -> list[str]:
    order = FOUNDATION + DESIGN_ORDER
    for extra, before in EXTRA_BEFORE.items():
        order.insert(order.index(before), extra)
    return order + ["cli"]


#: Every top-level module or package of src/ldpk (the unit the layering orders), lowest first.
LAYERS = _layers()

#: Violations that exist today, each with the file that has to change and its owner. The
#: tests fail for any violation not listed here, and for an entry that no longer occurs
#: (delete it once fixed). Keys: (importing module, what it imports).
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Imported:
    """One imported module: ``module`` the importing module's name, ``target`` the module
    imported (a submodule where the import names one), ``via_root`` whether it is reached
    through the package root's namespace (``import ldpk``, ``from ldpk import x``, or
    ``import ldpk.x`` where the root binds ``x`` to something else), ``names`` what a
    from-import takes from it, ``line`` the source line."""

    module: str
    target: str
    via_root: bool
    names: tuple[str, ...]
    line: int

    def key(self) -> tuple[str, str]:
        if self.target == "ldpk":
            return (self.module, "ldpk")
        if self.via_root:
            return (self.module, f"ldpk:{self.target.removeprefix('ldpk.')}")
        return (self.module, self.target)

    def __str__(self) -> str:
        path = self.module.replace(".", "/")
        return f"src/{path}:{self.line} imports {self.target}" + (" (through the package root)" if self.via_root else "")  # fmt: skip


def _modules() -> dict[str, Path]:
    """Every module under src/ldpk by dotted name (packages by their __init__.py)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _root_shadowed() -> set[str]:
    """Names the package root binds to something other than its submodule of that name
    (``from ldpk.sweep import sweep``: ``ldpk.sweep`` is then the function)."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "ldpk":
            out |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in out if f"ldpk.{n}" in MODULES}


SHADOWED = _root_shadowed()


def _public_api() -> tuple[set[str], set[str]]:
    """``ldpk.__all__`` (read from the source), and the modules among its names (dotted)."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    names: set[str] = set()
    modules: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):  # fmt: skip
            names = set(ast.literal_eval(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if (a.asname or a.name) in names and f"{node.module}.{a.name}" in MODULES:
                    modules.add(f"{node.module}.{a.name}")
    return names, modules


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) from-import's module."""
    if not level:
        return name or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str) -> list[Imported]:
    """Every import of an ldpk module in ``module``'s source, wherever it stands."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "ldpk" or a.name.startswith("ldpk."):
                    head = a.name.split(".")[1] if "." in a.name else None
                    via = a.name == "ldpk" or head in SHADOWED
                    out.append(Imported(module, a.name, via, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module)
            if base != "ldpk" and not base.startswith("ldpk."):
                continue
            names = tuple(a.name for a in node.names)
            root = base == "ldpk"
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            for sub in subs:  # `from ldpk.model import physiology`: the submodule
                out.append(Imported(module, sub, root, (), node.lineno))
            rest = tuple(n for n in names if f"{base}.{n}" not in MODULES)
            if rest or not subs:
                out.append(Imported(module, base, root, rest, node.lineno))
    return out


def _unit(module: str) -> str:
    """The layer a module belongs to: its top-level module or package under ldpk."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ldpk"


def _violations() -> list[tuple[tuple[str, str], str]]:
    out = []
    for module in MODULES:
        if module == "ldpk":
            for imp in _imports(module):
                if _unit(imp.target) == "cli":
                    out.append((imp.key(), f"{imp}: nothing imports cli"))
            continue
        unit = _unit(module)
        for imp in _imports(module):
            target = _unit(imp.target)
            if target == "cli" and unit != "cli":
                out.append((imp.key(), f"{imp}: nothing imports cli"))
            elif unit == "cli":
                continue  # the CLI's own rule: test_cli_imports_only_the_public_api
            elif imp.target == "ldpk" or imp.via_root:
                out.append((imp.key(), f"{imp}: only cli and the package __init__ import the package root ldpk; import the module itself (`from ldpk.x import y`, `import ldpk.x as x`; the version: `from ldpk._version import __version__`)"))  # fmt: skip
            elif target == unit:
                if imp.target == f"ldpk.{unit}" and module != imp.target:
                    out.append((imp.key(), f"{imp}: a submodule imports its siblings directly, never its own package's __init__ (which imports it)"))  # fmt: skip
            elif target not in LAYERS:
                out.append((imp.key(), f"{imp}: {target} has no place in the layering; add it to tests/test_layering.py (and DESIGN.md)"))  # fmt: skip
            elif LAYERS.index(target) > LAYERS.index(unit):
                out.append((imp.key(), f"{imp}: {target} comes after {unit} in DESIGN.md's layering ({' < '.join(LAYERS)})"))  # fmt: skip
    return out


def test_every_module_has_a_layer():
    units = {_unit(m) for m in MODULES} - {"ldpk"}
    assert not units - set(LAYERS), f"modules without a place in LAYERS: {sorted(units - set(LAYERS))}"  # fmt: skip


def test_imports_follow_the_layering():
    """A module imports only modules listed before it in DESIGN.md (its own package's
    modules aside); nothing imports cli; only cli and ``__init__`` import the package root."""
    found = _violations()
    new = [msg for key, msg in found if key not in KNOWN]
    assert not new, "import layering violated:\n" + "\n".join(new)
    stale = set(KNOWN) - {key for key, _ in found}
    assert not stale, f"fixed, delete from KNOWN in tests/test_layering.py: {sorted(stale)}"


def test_no_import_cycles_inside_packages():
    """The modules of one package (model, solve, inference) import each other one way."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        if module.count(".") == 2:  # ldpk.<package>.<module>
            pkg = module.rsplit(".", 1)[0]
            graph[module] = {i.target for i in _imports(module) if i.target.startswith(pkg + ".")}  # fmt: skip
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(n) :], n]))
            if n in graph and not state.get(n):
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])


def _declared_public(module: str, names: tuple[str, ...]) -> bool:
    """``module`` is public (no part of its dotted name starts with ``_``) and lists every
    one of ``names`` in its ``__all__`` (its declared public interface, PEP 8)."""
    import importlib

    if not names or any(part.startswith("_") for part in module.split(".")):
        return False
    importlib.import_module(module)
    declared = getattr(sys.modules[module], "__all__", ())  # sys.modules: ldpk.sweep is shadowed
    return all(n in declared for n in names)


def test_cli_imports_only_the_public_api():
    """cli.py calls the public API and nothing else (DESIGN.md): ``import ldpk``, ``from ldpk
    import <name in ldpk.__all__>``, a module listed in ``ldpk.__all__`` (exposure, plots,
    report, sensitivity, tracer, physiology) and its public names, or names a public module
    declares in its ``__all__`` (``from ldpk.sweep import save``)."""
    public, modules = _public_api()
    bad = []
    for imp in _imports("ldpk.cli"):
        if imp.target == "ldpk":
            ok = all(n in public for n in imp.names)
        else:
            ok = (imp.target in modules and not any(n.startswith("_") for n in imp.names)) or _declared_public(imp.target, imp.names)  # fmt: skip
        if not ok:
            what = f" {', '.join(imp.names)}" if imp.names else ""
            bad.append(f"{imp}{what}")
    assert not bad, "cli.py imports beyond the public API (ldpk.__all__):\n" + "\n".join(bad)


def _design_md() -> Path | None:
    for path in (ROOT / "DESIGN.md", ROOT / "docs" / "DESIGN.md", ROOT.parent / "shared" / "DESIGN.md"):  # fmt: skip
        if path.is_file():
            return path
    return None


def test_layering_matches_design_md():
    """DESIGN_ORDER is DESIGN.md's "Layout" list, read from its code block when the design
    notes are at hand (they are not part of the package)."""
    path = _design_md()
    if path is None:
        pytest.skip("DESIGN.md not found beside the checkout")
    text = path.read_text()
    block = re.search(r"## Layout\s*```\n(.*?)```", text, re.S)
    assert block, f"{path}: no code block under '## Layout'"
    listed = []
    inside = False
    for line in block.group(1).splitlines():
        if line.startswith("src/ldpk/"):
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            entry = re.split(r"\s{2,}", line.strip())[0]
            listed += [n.strip().removesuffix(".py").removesuffix("/") for n in entry.split(",")]  # fmt: skip
        elif inside:
            break
    listed = [n for n in listed if n not in ("__init__", "cli")]
    assert listed == DESIGN_ORDER, f"{path} lists {listed}"
