"""ldpk: pharmacokinetics, biodistribution and PK-PD of living drugs, on JAX.

The public API is what this module exports (``__all__``); everything else is private.
"""

from ldpk._config import configure

configure()

from ldpk import design, exposure, plots, report, sensitivity, tracer  # noqa: E402
from ldpk._version import __version__  # noqa: E402
from ldpk.data import Dataset, read_biodistribution, read_data, read_study  # noqa: E402
from ldpk.dosing import (  # noqa: E402
    Bolus,
    EventTable,
    Infusion,
    Records,
    Reset,
    example_regimen,
    parse_dose,
)
from ldpk.errors import DataError, LdpkError, ModelError, SolverError  # noqa: E402
from ldpk.inference import Fit, FitOptions, WeaklyInformedWarning, fit, load_fit  # noqa: E402
from ldpk.model import (  # noqa: E402
    Model,
    build_model,
    builtin_models,
    check_model,
    load_model,
    model_template,
    physiology,  # noqa: E402
    scale_species,
)
from ldpk.paramsets import ParameterTable, grid, sample, virtual_subjects  # noqa: E402
from ldpk.population import read_config  # noqa: E402
from ldpk.solve import ODEOptions, Simulation, Simulator, prepare, simulate  # noqa: E402
from ldpk.sweep import regimens, sweep  # noqa: E402  (the function: the module is sys.modules["ldpk.sweep"])

__all__ = [
    "Bolus",
    "DataError",
    "Dataset",
    "EventTable",
    "Fit",
    "FitOptions",
    "Infusion",
    "LdpkError",
    "Model",
    "ModelError",
    "ODEOptions",
    "ParameterTable",
    "Records",
    "Reset",
    "Simulation",
    "Simulator",
    "SolverError",
    "__version__",
    "build_model",
    "builtin_models",
    "check_model",
    "configure",
    "design",
    "example_regimen",
    "exposure",
    "fit",
    "grid",
    "load_fit",
    "WeaklyInformedWarning",
    "load_model",
    "model_template",
    "parse_dose",
    "physiology",
    "plots",
    "prepare",
    "read_biodistribution",
    "read_config",
    "read_data",
    "read_study",
    "regimens",
    "report",
    "sample",
    "scale_species",
    "sensitivity",
    "simulate",
    "sweep",
    "tracer",
    "virtual_subjects",
]
