"""Kernels behind one :func:`simulate`: exact (matrix exponential) and ODE (diffrax)."""

from ldpk.solve._kernels import ODEOptions
from ldpk.solve._simulate import (
    Simulation,
    Simulator,
    choose_kernel,
    parameter_matrix,
    prepare,
    simulate,
)

__all__ = [
    "ODEOptions",
    "Simulation",
    "Simulator",
    "choose_kernel",
    "parameter_matrix",
    "prepare",
    "simulate",
]
