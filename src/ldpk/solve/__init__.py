"""Kernels behind one :func:`simulate`: exact (matrix exponential) and ODE (diffrax)."""

from ldpk.solve._kernels import ODEOptions
from ldpk.solve._simulate import Simulation, choose_kernel, parameter_matrix, simulate

__all__ = ["ODEOptions", "Simulation", "choose_kernel", "parameter_matrix", "simulate"]
