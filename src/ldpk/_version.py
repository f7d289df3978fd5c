"""The package version, in a module of its own so that modules inside ldpk can read it without
importing the package root (``ldpk/__init__.py`` re-exports it as ``ldpk.__version__``)."""

__version__ = "0.1.0"
