"""Shared pytest fixtures for ldpk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def reference_data_dir() -> Path:
    """Directory of published reference outputs used as test oracles.

    ``$LDPK_REFERENCE_DATA`` if set, else ``<repo>/../shared/data``. Missing data fails
    the run under CI (``CI=true``) and skips the requesting tests elsewhere.
    """
    env = os.environ.get("LDPK_REFERENCE_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        source = "$LDPK_REFERENCE_DATA" if env else "default location"
        msg = (
            f"reference data directory not found: {path} ({source}); "
            "set LDPK_REFERENCE_DATA to the directory holding the reference data"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path
