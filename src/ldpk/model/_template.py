"""The commented model-file template that ``ldpk new`` writes (a valid model: it loads and
passes ``ldpk check`` as written)."""

from __future__ import annotations

import re

_TEMPLATE = """\
# ldpk model file: {name}
# Written by `ldpk new`. Every entry below is valid as written; edit it, then run
#   ldpk check {name}.yaml      (validates it and says which kernel solves it)
#   ldpk show {name}.yaml       (lists the parameters with units, priors and variability)
#   ldpk simulate {name}.yaml --plot {name}.png
# Expressions are Python syntax over parameters, compartments (amounts), derived values,
# covariates and `t` (time): + - * / ** and exp log sqrt min max where hill. Nothing is eval'ed.

name: {name}
description: >
  Template: cells given intravenously, trapped in the lungs at first pass, redistributed to
  the liver, and cleared. Replace this text with what your model describes.
time_unit: h              # unit of every time in the model and its data (h, min, d)
amount_unit: cells        # what a dose counts: cells, particles, mitochondria, mg, MBq ...

compartments:             # state variables: amounts (in amount_unit), not concentrations
  blood: {{unit: cells, description: circulating cells}}
  lung:  {{unit: cells, description: cells trapped in the pulmonary capillaries}}
  liver: {{unit: cells, description: cells taken up by the liver}}

parameters:
  # value: the typical value, in `unit`. prior: used by `ldpk fit` (lognormal: loc and scale
  # of log(value)). iiv: between-subject SD of log(value) (about the CV), or leave it out.
  # A parameter with neither a prior nor `fixed: true` in the fit config is held at its value.
  k_lung:
    value: 2.0
    unit: 1/h
    description: rate constant of lung trapping from blood (illustrative)
    prior: {{dist: lognormal, loc: 0.693, scale: 1.0}}
    iiv: 0.3
  k_release:
    value: 0.1
    unit: 1/h
    description: rate constant of release from the lung back to blood (illustrative)
    prior: {{dist: lognormal, loc: -2.303, scale: 1.0}}
  k_liver:
    value: 0.5
    unit: 1/h
    description: rate constant of hepatic uptake from blood (illustrative)
    prior: {{dist: lognormal, loc: -0.693, scale: 1.0}}
  k_death:
    value: 0.05
    unit: 1/h
    description: rate constant of clearance of cells in the liver (illustrative)
    prior: {{dist: lognormal, loc: -2.996, scale: 1.0}}
  V_blood:
    value: 0.002
    unit: L
    description: blood volume (illustrative, a 25 g mouse)

flows:
  # k: a first-order rate constant (1/time; the model stays linear and is solved exactly).
  # rate: an amount per time of any expression, e.g. `rate: Vmax * blood / (Km + blood)`
  # (one rate: makes the model nonlinear, solved by an ODE solver). No `to:`: elimination.
  - {{from: blood, to: lung, k: k_lung, description: first-pass trapping}}
  - {{from: lung, to: blood, k: k_release, description: release from the lung}}
  - {{from: blood, to: liver, k: k_liver, description: hepatic uptake}}
  - {{from: liver, k: k_death, description: clearance of dead cells}}

routes:                   # where a dose goes; optional lag, bioavailability, rate, duration
  iv: {{target: blood, description: intravenous bolus or infusion}}
# default_route: iv       # with several routes: where a data-file dose without CMT or ROUTE goes

outputs:                  # what is measured; names must differ from compartments/parameters
  blood_conc: {{expr: blood / V_blood, unit: cells/L, description: cells per litre of blood}}
  lung_fraction: {{expr: lung / (blood + lung + liver), unit: '1', description: fraction of surviving cells in the lung}}

references:
  - "Template written by ldpk; cite the sources of the structure and of every default value."
notes: >
  All values are illustrative placeholders.

example:                  # the regimen `ldpk simulate` uses without --dose
  doses:
    - {{type: bolus, amount: 1000000, route: iv, time: 0}}
  times: {{start: 0, stop: 48, step: 0.5}}
"""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def model_template(name: str) -> str:
    """The text of a commented, valid model file named ``name`` (a Python identifier)."""
    from ldpk.errors import ModelError

    if not _NAME.match(name):
        raise ModelError(
            f"model name {name!r}: use letters, digits and underscores, starting with a "
            "letter (it becomes the model's `name:`)"
        )
    return _TEMPLATE.format(name=name)
