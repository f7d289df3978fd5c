"""Exceptions raised by ldpk. All derive from :class:`LdpkError`."""

from __future__ import annotations


class LdpkError(Exception):
    """Base class of every error ldpk raises on purpose."""


class ModelError(LdpkError, ValueError):
    """A model file or model definition is invalid (names the file, the entry and the fix)."""


class DataError(LdpkError, ValueError):
    """Input data (an event table, a regimen, parameters) are invalid (names row and field)."""


class SolverError(LdpkError, RuntimeError):
    """The solver failed for one or more parameter sets (names them)."""
