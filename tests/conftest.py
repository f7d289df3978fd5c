"""Shared pytest fixtures for ldpk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_folder(variable: str, name: str, what: str) -> Path:
    """``$variable`` if set, else ``<repo>/../shared/<name>``. Missing, it fails the run under
    CI (``CI=true``) and skips the requesting tests elsewhere."""
    env = os.environ.get(variable)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / name
    if not path.is_dir():
        source = f"${variable}" if env else "default location"
        msg = f"{what} directory not found: {path} ({source}); set {variable} to the directory holding them"  # fmt: skip
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def reference_data_dir() -> Path:
    """Directory of published reference outputs used as test oracles:
    ``$LDPK_REFERENCE_DATA`` or ``<repo>/../shared/data`` (see :func:`_shared_folder`)."""
    return _shared_folder("LDPK_REFERENCE_DATA", "data", "reference data")


@pytest.fixture(scope="session")
def design_data_dir() -> Path:
    """Published PopED/PFIM reference values (``fim_cases.yaml``): ``$LDPK_DESIGN_DATA`` or
    ``<repo>/../shared/design`` (see :func:`_shared_folder`)."""
    return _shared_folder("LDPK_DESIGN_DATA", "design", "design reference values")
