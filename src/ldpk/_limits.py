"""Size limits that an environment variable may raise (dose expansion, data-file size, output
times): one reader, so each limit is read and refused the same way."""

from __future__ import annotations

import os

from ldpk.errors import DataError


def limit_from_env(variable: str, default: int, what: str) -> int:
    """The limit ``default`` unless the environment variable ``variable`` holds another whole
    number >= 1 (``1e6`` is read as 1,000,000); DataError naming the variable otherwise.
    ``what`` names the unit in the message (e.g. "doses")."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise DataError(f"{variable}={text!r} is not a whole number of {what}") from None
    if value < 1:
        raise DataError(f"{variable}={text!r} must be >= 1")
    return value
