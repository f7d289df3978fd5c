"""The example notebooks (``examples/*.ipynb``): each is stored without outputs, and each runs
end to end at its small size (``LDPK_NOTEBOOK_SIZE=small``, read by the notebook's first code
cell) in a fresh kernel of this interpreter, in a temporary working directory.

``make notebooks`` runs them at full size and writes HTML copies to ``examples/output/``.
Measured at small size on the 2-core CI-class machine (shared, load about 2), kernel start
included (target: under 2 minutes each): from an empty compilation cache 01 mitochondria
34 s, 02 MSC sweep 15 s, 04 CAR-T 54 s; with the cache warm 17 s, 10 s, 27 s; 03 mouse to
human 89 s from an empty cache on a loaded machine, 23 s warm. The limit
:data:`NOTEBOOK_TIMEOUT_S` leaves room for a CI machine that runs two test workers at once.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
#: The notebooks that must exist.
EXPECTED = {
    "01_mitochondria_biodistribution.ipynb",
    "02_msc_dose_route_sweep.ipynb",
    "03_msc_mouse_to_human_design.ipynb",
    "04_cart_virtual_trial.ipynb",
}
#: Wall-clock limit of one notebook at small size (s), kernel start included.
NOTEBOOK_TIMEOUT_S = 300
#: Seconds to wait for the kernel to start.
STARTUP_TIMEOUT_S = 120
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _kernel_manager() -> Any:
    """A manager of ipykernel's own kernel for *this* interpreter (``sys.executable``, the
    venv's python under ``make test``): no kernel spec directory is searched, so a
    ``python3`` spec registered for another interpreter (user or system wide) is never used,
    and nothing is registered."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _code_cells(nb: Any) -> list[tuple[int, Any]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _failure(nb: Any, name: str, error: BaseException) -> str:
    """The failing cell's number and source and its error (without terminal colours)."""
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                trace = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                return f"{name}: cell {i} failed:\n---- source\n{cell.source}\n---- {out['ename']}: {out['evalue']}\n{trace}"  # fmt: skip
    return f"{name}: {type(error).__name__}: {_ANSI.sub('', str(error))}"


def _execute(nb: Any, cwd: Path, deadline: float) -> Any:
    """Run every cell of ``nb`` in a fresh kernel in ``cwd``; each cell may take what is left
    until ``deadline`` (``time.monotonic()``)."""
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(),
        timeout_func=lambda cell: max(1.0, deadline - time.monotonic()),
        startup_timeout=STARTUP_TIMEOUT_S,
        resources={"metadata": {"path": str(cwd)}},
    )
    return client.execute()


def test_the_example_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert not EXPECTED - names, f"missing notebooks: {sorted(EXPECTED - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    """Stored clean: no outputs, no execution counts, valid nbformat 4, and the first code
    cell reads the size switch."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    dirty = [i for i, c in cells if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before saving (e.g. jupyter nbconvert --clear-output --inplace)"  # fmt: skip
    assert cells and "LDPK_NOTEBOOK_SIZE" in cells[0][1].source, f"{path.name}: the first code cell must read LDPK_NOTEBOOK_SIZE"  # fmt: skip
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_the_kernel_is_this_interpreter(tmp_path):
    """The notebooks' kernel runs the interpreter of the test run (the venv's, with its
    packages: the same ``sys.prefix``), in the working directory given."""
    nb = nbformat.v4.new_notebook()
    code = "import os, sys\nprint(sys.executable, sys.prefix, os.getcwd(), sep='\\n')"
    nb.cells.append(nbformat.v4.new_code_cell(code))
    out = _execute(nb, tmp_path, time.monotonic() + STARTUP_TIMEOUT_S)
    executable, prefix, cwd = out.cells[0].outputs[0]["text"].splitlines()
    # not resolved: a venv's python is a link to the base interpreter's file
    assert Path(executable).absolute() == Path(sys.executable).absolute()
    assert Path(prefix) == Path(sys.prefix)
    assert Path(cwd).resolve() == tmp_path.resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_small_size(path, tmp_path, monkeypatch):
    """The notebook runs top to bottom at ``LDPK_NOTEBOOK_SIZE=small`` in a temporary working
    directory within :data:`NOTEBOOK_TIMEOUT_S`; every figure cell shows a figure. A failure
    names the failing cell and shows its source and error."""
    monkeypatch.setenv("LDPK_NOTEBOOK_SIZE", "small")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    t0 = time.monotonic()
    try:
        _execute(nb, tmp_path, t0 + NOTEBOOK_TIMEOUT_S)
    except Exception as error:  # a failing cell or a timeout: report the cell
        pytest.fail(_failure(nb, path.name, error), pytrace=False)
    elapsed = time.monotonic() - t0
    assert elapsed < NOTEBOOK_TIMEOUT_S, f"{path.name}: {elapsed:.0f} s"
    for i, cell in _code_cells(nb):
        if "plt.show()" in cell.source or "ldpk.plots.plot_" in cell.source:
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"{path.name}: cell {i} draws a figure but shows none"


def test_a_failing_cell_is_reported_with_its_source_and_error(tmp_path):
    """What a notebook failure shows: the number and source of the failing cell and its error,
    without terminal colour codes."""
    nb = nbformat.v4.new_notebook()
    nb.cells += [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = x / 0  # the bad cell")]  # fmt: skip
    with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
        _execute(nb, tmp_path, time.monotonic() + STARTUP_TIMEOUT_S)
    text = _failure(nb, "bad.ipynb", err.value)
    assert text.startswith("bad.ipynb: cell 2 failed:")
    assert "y = x / 0  # the bad cell" in text and "ZeroDivisionError: division by zero" in text
    assert "\x1b[" not in text
