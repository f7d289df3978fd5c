"""Model definitions: build_model / load_model errors name the entry, say what is wrong and
list what is valid; check_model reports; a Model is a pytree usable under jax.jit."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import ldpk

BASE = {
    "name": "base",
    "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
    "parameters": {
        "CL": {"value": 2.0, "unit": "L/h"},
        "V": {"value": 10.0, "unit": "L"},
        "KA": {"value": 1.0, "unit": "1/h"},
    },
    "flows": [
        {"from": "depot", "to": "central", "k": "KA"},
        {"from": "central", "k": "CL / V"},
    ],
    "routes": {"oral": {"target": "depot"}, "iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    "references": ["Gibaldi M, Perrier D. Pharmacokinetics. 2nd ed. 1982."],
}


def spec(**changes):
    s = copy.deepcopy(BASE)
    s.update(changes)
    return s


def error(s, source="<python>"):
    with pytest.raises(ldpk.ModelError) as info:
        ldpk.build_model(s, source=source)
    return str(info.value)


def test_base_spec_is_valid():
    m = ldpk.build_model(spec())
    assert m.compartment_names == ("depot", "central")
    assert m.is_linear


def test_unknown_name_in_flow_lists_valid_names():
    flows = [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "CL / VV"}]
    msg = error(spec(flows=flows), source="m.yaml")
    assert "m.yaml" in msg and "flows[1].k" in msg
    assert "unknown name 'VV'" in msg
    for name in ("CL", "V", "KA"):
        assert name in msg.split("valid names")[1]


def test_flow_to_missing_compartment():
    flows = [*BASE["flows"], {"from": "central", "to": "periph", "k": "KA"}]
    msg = error(spec(flows=flows))
    assert "flows[2].to" in msg and "'periph'" in msg and "does not exist" in msg
    assert "compartments: depot, central" in msg


def test_flow_from_missing_compartment():
    msg = error(spec(flows=[{"from": "gut", "to": "central", "k": "KA"}]))
    assert "flows[0].from" in msg and "'gut'" in msg and "depot, central" in msg


def test_parameter_without_unit():
    params = copy.deepcopy(BASE["parameters"])
    del params["V"]["unit"]
    msg = error(spec(parameters=params))
    assert "parameters.V has no unit" in msg
    assert "unit: '1'" in msg  # the fix for dimensionless parameters


def test_parameter_without_value_and_non_numeric_value():
    params = copy.deepcopy(BASE["parameters"])
    del params["V"]["value"]
    assert "parameters.V needs `value:`" in error(spec(parameters=params))
    params["V"]["value"] = "ten"
    assert "parameters.V.value: expected a number, got 'ten'" in error(spec(parameters=params))


def test_cycle_in_derived_quantities_is_shown():
    derived = {"A": "B * 2", "B": "C + 1", "C": "A / CL"}
    msg = error(spec(derived=derived))
    assert "cycle" in msg
    # the cycle itself, in order, starting and ending at the same name
    assert "A -> B -> C -> A" in msg


def test_self_reference_in_derived_is_refused():
    # The message says the definition refers to itself (issue #22), not just "unknown name".
    msg = error(spec(derived={"A": "A * 2"}))
    assert "derived.A" in msg and "refers to A itself" in msg


def test_unknown_top_level_key():
    s = spec()
    s["flow"] = s.pop("flows")
    msg = error(s)
    assert "unknown top-level entry ['flow']" in msg
    assert "flows" in msg.split("valid:")[1]


def test_unknown_field_in_entry():
    comps = {"depot": {"unit": "mg"}, "central": {"unit": "mg", "volume": 3}}
    msg = error(spec(compartments=comps))
    assert "compartments.central has unknown field(s) ['volume']" in msg
    assert "initial" in msg  # lists the valid fields


def test_k_flow_using_a_state_says_use_rate():
    flows = [
        {"from": "depot", "to": "central", "k": "KA"},
        {"from": "central", "k": "0.1 * central"},
    ]
    msg = error(spec(flows=flows))
    assert "flows[1].k" in msg
    assert "rate:" in msg


def test_k_flow_using_a_state_is_refused():
    """Whatever the wording, a state-dependent `k:` is refused and names the entry."""
    flows = [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "0.1 * t"}]
    msg = error(spec(flows=flows))
    assert "flows[1].k" in msg and "'t'" in msg


def test_k_flow_using_a_state_via_dataclasses_says_use_rate():
    """Model built from the dataclasses: validate() explains the fix."""
    from ldpk.model import Compartment, Flow, Model, Parameter, compile_expr

    k = compile_expr("0.1 * central", {"central"}, "k")
    with pytest.raises(ldpk.ModelError, match=r"flows\[0\]\.k uses \['central'\].*use `rate:`"):
        Model(
            name="x",
            compartments=(Compartment("central", "mg"),),
            parameters=(Parameter("CL", 1.0, "L/h"),),
            flows=(Flow("central", None, k=k),),
        )


def test_route_to_missing_compartment():
    routes = {"oral": {"target": "gut"}}
    msg = error(spec(routes=routes))
    assert "routes.oral.target is 'gut'" in msg
    assert "compartments: depot, central" in msg


def test_route_without_target_and_route_expression_using_state():
    assert "routes.oral needs `target:`" in error(spec(routes={"oral": {"lag": 1}}))
    msg = error(spec(routes={"oral": {"target": "depot", "lag": "central / 10"}}))
    assert "routes.oral.lag" in msg and "unknown name 'central'" in msg


def test_names_must_be_unique_and_t_is_reserved():
    params = copy.deepcopy(BASE["parameters"])
    params["central"] = {"value": 1.0, "unit": "1"}
    assert "'central' is used twice" in error(spec(parameters=params))
    params = copy.deepcopy(BASE["parameters"])
    params["t"] = {"value": 1.0, "unit": "h"}
    assert "reserved" in error(spec(parameters=params))


def test_exactly_one_of_k_and_rate():
    msg = error(spec(flows=[{"from": "central", "k": "CL / V", "rate": "CL * central / V"}]))
    assert "exactly one of `k:` and `rate:`" in msg
    msg = error(spec(flows=[{"to": "central", "k": "KA"}]))
    assert "without a source" in msg and "rate:" in msg


# ---- files -----------------------------------------------------------------------------------
MODEL_YAML = """\
name: filemodel
compartments:
  central: {unit: mg}
parameters:
  CL: {value: 2.0, unit: L/h}
  V: {value: 10.0, unit: L}
flows:
  - {from: central, k: CL / V}
routes:
  iv: central
outputs:
  cp: {expr: central / V, unit: mg/L}
"""


def test_duplicate_yaml_keys(tmp_path: Path):
    text = MODEL_YAML.replace(
        "  V: {value: 10.0, unit: L}\n",
        "  V: {value: 10.0, unit: L}\n  CL: {value: 3.0, unit: L/h}\n",
    )
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ldpk.ModelError) as info:
        ldpk.load_model(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "'CL' appears twice" in msg
    assert "line 7" in msg  # the second CL


def test_load_model_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(MODEL_YAML.replace("CL / V", "CL / VV"))
    with pytest.raises(ldpk.ModelError, match=r"bad\.yaml: flows\[0\]\.k.*unknown name 'VV'"):
        ldpk.load_model(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ldpk.ModelError, match="not valid YAML"):
        ldpk.load_model(path)
    with pytest.raises(ldpk.ModelError, match="no such model file"):
        ldpk.load_model(tmp_path / "missing.yaml")


def test_check_model_linear_and_notes(tmp_path: Path):
    path = tmp_path / "lin.yaml"
    path.write_text(MODEL_YAML)
    rep = ldpk.check_model(path)
    assert rep.linear is True
    assert any("references" in n for n in rep.notes)  # no references: noted
    assert "linear" in rep.text()

    nl = (
        MODEL_YAML.replace(
            "  - {from: central, k: CL / V}",
            "  - {from: central, rate: 'CL * central / V / (1 + central / 100)'}",
        )
        + "references:\n  - a reference\n"
    )
    path2 = tmp_path / "nl.yaml"
    path2.write_text(nl)
    rep2 = ldpk.check_model(path2)
    assert rep2.linear is False
    assert not any("references" in n for n in rep2.notes)
    assert "nonlinear" in rep2.text()


def test_check_model_notes_sink_compartment(tmp_path: Path):
    text = textwrap.dedent(
        """\
        name: sink
        compartments:
          central: {unit: mg}
          eliminated: {unit: mg}
        parameters:
          k: {value: 0.1, unit: 1/h}
        flows:
          - {from: central, to: eliminated, k: k}
        references: [x]
        """
    )
    path = tmp_path / "sink.yaml"
    path.write_text(text)
    rep = ldpk.check_model(path)
    assert any("eliminated" in n and "no outflow" in n for n in rep.notes)
    assert any("no outputs" in n for n in rep.notes)


def test_example_model_file_loads():
    path = Path(__file__).parent / "models" / "nmtest_advan2.yaml"
    rep = ldpk.check_model(path)
    assert rep.linear
    assert rep.model.route_names == ("central",)
    assert rep.model.covariate_names == ("lagt", "bioav", "rat2", "dur2")


# ---- pytree ----------------------------------------------------------------------------------
def test_model_is_a_pytree_of_parameter_values():
    m = ldpk.build_model(spec())
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert leaves == [2.0, 10.0, 1.0]
    m2 = jax.tree_util.tree_unflatten(treedef, [3.0, 20.0, 0.5])
    assert [p.value for p in m2.parameters] == [3.0, 20.0, 0.5]
    assert m2.compartment_names == m.compartment_names
    doubled = jax.tree_util.tree_map(lambda v: 2 * v, m)
    assert [p.value for p in doubled.parameters] == [4.0, 20.0, 2.0]


def test_jit_over_the_model():
    m = ldpk.build_model(spec())
    times = np.linspace(0.0, 24.0, 25)
    regimen = [ldpk.Bolus(100.0, route="iv")]

    @jax.jit
    def cp(model):
        return ldpk.simulate(model, None, regimen, times, check=False)["cp"]

    out = np.asarray(cp(m))
    k = 2.0 / 10.0
    np.testing.assert_allclose(out, 10.0 * np.exp(-k * times), rtol=1e-9)  # closed form
    out2 = np.asarray(cp(m.with_values(CL=4.0)))  # same structure: no retrace needed
    np.testing.assert_allclose(out2, 10.0 * np.exp(-0.4 * times), rtol=1e-9)
    # gradient with respect to the model's parameter values (a pytree cotangent)
    g = jax.grad(lambda mm: cp(mm).sum())(m)
    dcl = g.parameter("CL").value
    expected = np.sum(10.0 * np.exp(-k * times) * (-times / 10.0))
    np.testing.assert_allclose(float(dcl), expected, rtol=1e-8)
