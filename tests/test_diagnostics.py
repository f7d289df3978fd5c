"""convergence_warnings() on synthetic NUTS output with known properties: independent normal
draws (R-hat about 1, ESS about the number of draws) give no warning; each defect (chains
that disagree, divergences, saturated trees, too few draws) gives its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from ldpk.diagnostics import convergence_warnings
from ldpk.inference import FitOptions


@dataclass
class _Model:
    parameter_names: tuple[str, ...] = ("CL", "V", "KA")


@dataclass
class _Fit:
    posterior: object
    method: str = "nuts"
    options: FitOptions = field(default_factory=FitOptions)
    model: _Model = field(default_factory=_Model)


def _fit(draws=500, shift=0.0, diverging=0, depth=3, seed=0, shifted=(0,), subjects=False):
    import arviz as az

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, draws))
    x[list(shifted)] += shift
    stats = {
        "diverging": np.arange(4 * draws).reshape(4, draws) < diverging,
        "tree_depth": np.full((4, draws), depth),
        "energy": rng.standard_normal((4, draws)),
    }
    posterior = {"CL": x}
    dims, coords = {}, {}
    if subjects:  # a subject effect: subject "B" shifted, "A" and "C" not
        eta = rng.standard_normal((4, draws, 3))
        eta[..., 1] += x - rng.standard_normal((4, draws))
        posterior = {"eta_CL": eta}
        dims, coords = {"eta_CL": ["subject"]}, {"subject": ["A", "B", "C"]}
    return _Fit(
        az.from_dict({"posterior": posterior, "sample_stats": stats}, dims=dims, coords=coords)
    )


def test_independent_draws_give_no_warning():
    assert convergence_warnings(_fit()) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"shift": 3.0}, "R-hat"),
        ({"diverging": 3}, "3 divergent transitions"),
        ({"depth": 10}, "maximum tree depth (10)"),
        ({"draws": 60}, "ESS"),
    ],
)
def test_each_defect_is_named(kwargs, needle):
    warnings = convergence_warnings(_fit(**kwargs))
    assert any(needle in w for w in warnings), warnings


def test_chains_in_two_modes_are_named_with_the_subject():
    """Chains 1 and 3 shifted by 12 SDs: two groups, named, with the subject whose effect
    splits them; a shift of 3 SDs in one chain is only an R-hat warning."""
    warnings = convergence_warnings(_fit(shift=12.0, shifted=(1, 3), subjects=True))
    modes = [w for w in warnings if "different modes" in w]
    assert len(modes) == 1, warnings
    assert "chains 0, 2 and chains 1, 3" in modes[0] and "eta_CL[subject B]" in modes[0]
    assert not any("different modes" in w for w in convergence_warnings(_fit(shift=3.0)))


def test_the_flip_flop_hint_is_only_for_models_with_an_absorption_rate():
    """The R-hat warning names ka/k flip-flop as a possible second mode only when the model
    has an absorption rate KA (not, e.g., for CAR-T kinetics)."""
    oral = [w for w in convergence_warnings(_fit(shift=3.0)) if "R-hat" in w]
    assert len(oral) == 1 and "flip-flop" in oral[0]
    fit = _fit(shift=3.0)
    fit.model = _Model(("RHO", "TMAX", "ALPHA"))
    other = [w for w in convergence_warnings(fit) if "R-hat" in w]
    assert len(other) == 1 and "flip-flop" not in other[0]
    assert other[0].endswith("check for several modes.")
