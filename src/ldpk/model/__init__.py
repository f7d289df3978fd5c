"""Model files -> :class:`Model`: schema, safe expression compiler, loader and checks."""

from ldpk.model._expr import FUNCTIONS, Expr, compile_expr
from ldpk.model._load import CheckReport, builtin_models, check_model, load_model, models_dir
from ldpk.model._model import (
    Compartment,
    Covariate,
    Derived,
    Flow,
    Model,
    Output,
    Parameter,
    Prior,
    Route,
    build_model,
)
from ldpk.model._template import model_template
from ldpk.model.scaling import SpeciesScaling, scale_species

__all__ = [
    "FUNCTIONS",
    "CheckReport",
    "Compartment",
    "Covariate",
    "Derived",
    "Expr",
    "Flow",
    "Model",
    "Output",
    "Parameter",
    "Prior",
    "Route",
    "SpeciesScaling",
    "build_model",
    "builtin_models",
    "check_model",
    "compile_expr",
    "load_model",
    "model_template",
    "models_dir",
    "scale_species",
]
