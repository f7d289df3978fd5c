"""Trial design: the population Fisher information matrix of a design (FO approximation,
by JAX autodiff through the model's prepared simulator) and its criteria (PopED's and
PFIM's conventions).

One concern per private module, each importing only those listed before it:

- ``_spec``: :class:`Design`, :class:`Group`, :class:`Residual` and their checks
- ``_fim``: :func:`fisher_information` → :class:`FisherInformation`
- ``_criteria``: ln det, D-criterion, SE and RSE%, efficiency, Wald power, shrinkage
- ``_optimise``: :func:`optimise_times` → :class:`OptimisedTimes` (D- or ED-optimal sampling
  times) and :func:`expected_ln_det` (the ED criterion over parameter draws)
- ``_trials``: :func:`virtual_trial` (trials × subjects through :func:`ldpk.sweep`, dims
  trial, subject, regimen, time), :func:`population_from_priors`, :func:`prior_draws` (a
  parameter table from the priors, without a fit) and :func:`attainment`
  → :class:`Attainment` (probability of target attainment per trial and regimen),
  :func:`prediction_intervals` (percentiles over subjects, their spread over trials)
- ``_dose``: :func:`select_dose` → :class:`DoseSelection` (the lowest dose reaching a target
  attainment with a stated confidence, per schedule of a family)
- ``_species``: :func:`first_in_human` → :class:`FirstInHuman` (the human dose matching an
  animal exposure, per posterior draw, with and without allometric uncertainty) and
  :func:`bsa_dose` (FDA body-surface-area conversion, :data:`KM_FACTORS`)
- ``_file``: :func:`read_design_file` → :class:`DesignFile` (a YAML design file, checked
  before anything compiles); ``_run``: :func:`run_design` → :class:`DesignResult` (its
  results and tables; :func:`ldpk.report.write_design_report` writes them, ``ldpk design``)

Example (PopED's warfarin design)::

    import ldpk
    from ldpk import design as dz

    model = ldpk.load_model("one_compartment")
    d = dz.Design(
        groups=[dz.Group(n=32, times=[0.5, 1, 2, 6, 24, 36, 72, 120],
                         regimen=[ldpk.Bolus(70, route="oral")])],
        output="cp",
        fixed_effects={"CL": 0.15, "V": 8.0, "KA": 1.0},
        omega2={"CL": 0.07, "V": 0.02, "KA": 0.6},
        residual=dz.Residual(proportional=0.01),     # a variance: y = f(1 + ε), Var ε = 0.01
    )
    fim = dz.fisher_information(model, d)            # reduced; kind="full" for the full FIM
    dz.ln_det(fim), dz.rse_percent(fim)
    best = dz.optimise_times(model, d, windows=(0.5, 120))   # D-optimal times, same k
    best.design.groups[0].times, best.efficiency
"""

from ldpk.design._criteria import (
    RCOND,
    check_invertible,
    covariance,
    d_criterion,
    efficiency,
    ln_det,
    rse_percent,
    shrinkage,
    standard_errors,
    wald_power,
)
from ldpk.design._dose import INCREASING, DoseSelection, select_dose
from ldpk.design._file import DesignFile, read_design_file
from ldpk.design._fim import KINDS, FisherInformation, fisher_information
from ldpk.design._optimise import (
    CRITERIA,
    METHODS,
    OptimisedTimes,
    expected_ln_det,
    optimise_times,
)
from ldpk.design._run import DesignResult, run_design
from ldpk.design._spec import CONVENTIONS, SCALES, Design, Group, Residual
from ldpk.design._species import (
    KM_FACTORS,
    KM_REFERENCE,
    FirstInHuman,
    bsa_dose,
    first_in_human,
)
from ldpk.design._trials import (
    OPERATORS,
    Attainment,
    attainment,
    population_from_priors,
    prediction_intervals,
    prior_draws,
    virtual_trial,
)

__all__ = [
    "CONVENTIONS",
    "CRITERIA",
    "INCREASING",
    "KINDS",
    "KM_FACTORS",
    "KM_REFERENCE",
    "METHODS",
    "OPERATORS",
    "RCOND",
    "SCALES",
    "Attainment",
    "Design",
    "DesignFile",
    "DesignResult",
    "DoseSelection",
    "FirstInHuman",
    "FisherInformation",
    "Group",
    "OptimisedTimes",
    "Residual",
    "attainment",
    "bsa_dose",
    "check_invertible",
    "covariance",
    "d_criterion",
    "efficiency",
    "expected_ln_det",
    "first_in_human",
    "fisher_information",
    "ln_det",
    "optimise_times",
    "population_from_priors",
    "prediction_intervals",
    "prior_draws",
    "read_design_file",
    "rse_percent",
    "run_design",
    "select_dose",
    "shrinkage",
    "standard_errors",
    "virtual_trial",
    "wald_power",
]
