"""Bad model files and fit configs (issue #22, "Ready for real users"), one class per section:
colliding and reserved names, constant expressions that fail, runaway nesting and cycles,
hostile or oddly encoded YAML/TOML files, lookalike Unicode characters, and fit-config checks.
Every refusal is a ModelError (DataError for data) whose message names the file and the entry;
a refused file is left as it was."""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import ldpk
from ldpk.errors import DataError, ModelError
from ldpk.model import _expr, _load
from ldpk.population import (
    UnestimatedParameterWarning,
    check_fit_inputs,
    fit_spec,
    read_config,
    unestimated_parameters,
)
from tests.test_model_validation import MODEL_YAML  # the same small model file

BASE = {
    "name": "base",
    "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
    "parameters": {
        "CL": {
            "value": 2.0,
            "unit": "L/h",
            "prior": {"dist": "lognormal", "loc": 0.7, "scale": 0.5},
        },  # fmt: skip
        "V": {"value": 10.0, "unit": "L"},
        "KA": {"value": 1.0, "unit": "1/h"},
    },
    "flows": [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "CL / V"}],
    "routes": {"oral": {"target": "depot"}, "iv": {"target": "central"}},
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
}


def spec(**changes):
    s = copy.deepcopy(BASE)
    s.update(changes)
    return s


def refused(s, *fragments, source="m.yaml", error=ModelError):
    """build_model refuses ``s`` with a message naming the source and every fragment."""
    with pytest.raises(error) as info:
        ldpk.build_model(s, source=source)
    return _check(str(info.value), source, fragments)


def _check(msg, source, fragments):
    assert source in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    assert "np.float64(" not in msg and "np.int64(" not in msg, msg
    assert "\n" not in msg.strip(), msg  # one paragraph
    return msg


def file_refused(tmp_path, text, *fragments, name="bad.yaml", data=None, load=ldpk.load_model):
    """load_model (or ``load``) refuses the file with a message naming it and the fragments;
    the file is unchanged."""
    path = tmp_path / name
    if data is None:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(data)
    before = path.read_bytes()
    with pytest.raises(ModelError) as info:
        load(path)
    assert path.read_bytes() == before  # nothing written over the input
    return _check(str(info.value), str(path), fragments)


# ---- 1. names: reserved, invalid, colliding --------------------------------------------------
RESERVED = ["time", "TIME", "Time", "ID", "id", "t", "set", "set0", "regimen", "status", "subject", "draw", "chain"]  # fmt: skip


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize("section", ["compartments", "parameters", "outputs"])
def test_reserved_names_are_refused_in_python(name, section):
    s = spec()
    entry = {"compartments": {"unit": "mg"}, "parameters": {"value": 1.0, "unit": "1"},
             "outputs": {"expr": "central", "unit": "mg"}}[section]  # fmt: skip
    s[section] = {**s[section], name: entry}
    msg = refused(s, f"{section}.{name}", "reserved")
    assert "rename" in msg


@pytest.mark.parametrize("name", ["time", "ID", "t", "status"])
def test_reserved_names_are_refused_in_files(tmp_path, name):
    text = MODEL_YAML.replace("  central: {unit: mg}\n", f"  central: {{unit: mg}}\n  {name}: {{unit: mg}}\n")  # fmt: skip
    file_refused(tmp_path, text, f"compartments.{name}", "reserved")


def test_reserved_names_are_refused_from_the_dataclasses():
    """A Model built directly (no build_model) is validated the same way."""
    from ldpk.model import Compartment, Model, Parameter

    with pytest.raises(ModelError, match=r"compartments\.TIME.*reserved"):
        Model(name="x", compartments=(Compartment("TIME", "mg"),), parameters=(Parameter("k", 1.0, "1/h"),), flows=())  # fmt: skip


@pytest.mark.parametrize(
    "changes,entry,other",
    [
        ({"outputs": {"central": "central / V"}}, "outputs.central", "compartments.central"),
        ({"outputs": {"Central": "central / V"}}, "outputs.Central", "compartments.central"),
        ({"outputs": {"v": "central / V"}}, "outputs.v", "parameters.V"),
        ({"derived": {"cl": "CL * 2"}}, "derived.cl", "parameters.CL"),
        ({"covariates": {"Depot": {"unit": "kg"}}}, "covariates.Depot", "compartments.depot"),
    ],
)
def test_names_of_different_kinds_collide_ignoring_case(changes, entry, other):
    msg = refused(spec(**changes), entry, other, "used twice", "rename")
    if entry.split(".")[1] != other.split(".")[1]:
        assert "ignoring letter case" in msg


def test_two_outputs_differing_in_case_collide():
    refused(spec(outputs={"cp": "central / V", "CP": "central"}), "outputs.CP", "outputs.cp")


def test_compartment_and_output_collision_in_a_file(tmp_path):
    text = MODEL_YAML.replace("  cp: {expr: central / V, unit: mg/L}", "  Central: {expr: central / V, unit: mg/L}")  # fmt: skip
    file_refused(tmp_path, text, "outputs.Central", "compartments.central", "used twice")


def test_output_named_like_a_compartment_amount_variable():
    refused(spec(outputs={"amount_central": "central"}), "outputs.amount_central", "to_xarray")


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("lambda", "not a valid identifier"),
        ("2cpt", "not a valid identifier"),
        ("exp", "function exp()"),
        ("pi", "constant pi"),
        (3, "not text"),
        ("µ", "U+00B5"),  # the micro sign: expressions would read it as Greek mu
    ],
)
def test_invalid_parameter_names(name, fragment):
    s = spec()
    s["parameters"] = {**s["parameters"], name: {"value": 1.0, "unit": "1"}}
    refused(s, "parameters", fragment)


def test_builtin_models_have_no_colliding_names():
    """Every built-in model still loads under the name rules (issue #22)."""
    for name in ldpk.builtin_models():
        assert ldpk.load_model(name).name


# ---- 2. constant expressions, nesting, cycles, lengths ---------------------------------------
FAILING = {
    "1/0": "divides by zero",
    "CL * (1 / 0)": "divides by zero",
    "10**10**10": "overflows",
    "exp(1000)": "overflows",
    "log(-1)": "undefined",
    "sqrt(-4) + CL": "undefined",
    "1e400": "beyond the float64 range",
    "1" + "0" * 400: "beyond the float64 range",
}


@pytest.mark.parametrize("source", list(FAILING))
def test_failing_constant_expressions_are_refused_at_build_time(source):
    t0 = time.perf_counter()
    flows = [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": source}]
    refused(spec(flows=flows), "flows[1].k", FAILING[source])
    assert time.perf_counter() - t0 < 5.0  # never computes 10**10**10 as an integer


@pytest.mark.parametrize(
    "changes,entry",
    [
        ({"outputs": {"cp": "central / V * exp(1000)"}}, "outputs.cp"),
        ({"routes": {"oral": {"target": "depot", "lag": "log(0)"}}}, "routes.oral.lag"),
        (
            {"compartments": {"depot": {"initial": "1/0"}, "central": {}}},
            "compartments.depot.initial",
        ),  # fmt: skip
        ({"derived": {"K10": "CL / V + 0**-1"}}, "derived.K10"),
    ],
)
def test_failing_constants_in_every_kind_of_entry(changes, entry):
    refused(spec(**changes), entry, "constant part")


def test_failing_constant_in_a_file(tmp_path):
    file_refused(tmp_path, MODEL_YAML.replace("CL / V}", "CL / V / (1 - 1)}"), "flows[0].k", "divides by")  # fmt: skip


def test_valid_constants_still_fold_to_their_values():
    e = _expr.compile_expr("2 ** 10 + log10(1000) + exp(0) - sqrt(4)", {}, "x")
    assert e.is_constant and e.constant_value() == 1024.0 + 3.0 + 1.0 - 2.0


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("value", "1e400", "not a finite number"),
        ("value", float("nan"), "not a finite number"),
        ("value", float("inf"), "not a finite number"),
        ("value", 10**400, "integer of about 401 digits"),
        ("value", np.float64("nan"), "not a finite number"),
        ("iiv", -0.3, "negative"),
    ],
)
def test_parameter_values_must_be_finite(field, value, fragment):
    s = spec()
    s["parameters"]["V"] = {"value": 10.0, "unit": "L", field: value}
    refused(s, f"parameters.V.{field}", fragment)


def test_numpy_numbers_are_accepted_as_values():
    s = spec()
    s["parameters"]["V"] = {"value": np.int64(10), "unit": "L", "iiv": np.float32(0.25)}
    assert ldpk.build_model(s).parameter("V").value == 10.0


@pytest.mark.parametrize(
    "source,fragment",
    [
        ("(" * 5000 + "CL" + ")" * 5000, "characters long"),
        ("(" * 1000 + "CL" + ")" * 1000, "nested"),
        (" + ".join(["CL"] * 600), "nested"),
        ("-" * 1900 + "CL", "nested"),
        ("CL" * 3000, "characters long"),
    ],
)
def test_deep_or_long_expressions_are_refused_without_recursion_error(source, fragment):
    flows = [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": source}]
    msg = refused(spec(flows=flows), "flows[1].k", fragment)
    assert str(_expr.MAX_EXPRESSION_LENGTH) in msg or str(_expr.MAX_EXPRESSION_DEPTH) in msg


def test_self_reference_and_long_cycles_of_derived_quantities():
    refused(spec(derived={"A": "A * 2"}), "derived.A", "refers to A itself")
    ring = {f"D{i}": f"D{i + 1} + 1" for i in range(3000)} | {"D3000": "D0 * CL"}
    msg = refused(spec(derived=ring), "derived.", "cycle", "break the cycle")
    assert len(msg) < 2000
    chain = {f"D{i}": f"D{i + 1} + 1" for i in range(3000)} | {"D3000": "CL"}
    assert len(ldpk.build_model(spec(derived=chain)).derived) == 3001  # long, not cyclic: fine


# ---- 3. files: size, aliases, nesting, syntax, encodings -------------------------------------
def test_file_larger_than_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_load, "MAX_FILE_BYTES", 100)
    msg = file_refused(tmp_path, MODEL_YAML, "MAX_FILE_BYTES", "at most 100")
    assert "raise it" in msg


LAUGHS = "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


def test_billion_laughs_is_bounded(tmp_path):
    t0 = time.perf_counter()
    text = MODEL_YAML + "notes: &n [" + ", ".join(["*l8"] * 10) + "]\n"
    text = text.replace("name: filemodel\n", "name: filemodel\nexample:\n" + "".join("  " + line + "\n" for line in LAUGHS.splitlines()))  # fmt: skip
    file_refused(tmp_path, text, "MAX_YAML_NODES", "line ")
    assert time.perf_counter() - t0 < 10.0


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    file_refused(tmp_path, MODEL_YAML + "notes: &a [1, *a]\n", "recursive")
    file_refused(tmp_path, MODEL_YAML + "notes: " + "[" * 5000 + "]" * 5000 + "\n", "MAX_YAML_DEPTH")  # fmt: skip


def test_syntax_errors_name_file_and_line(tmp_path):
    file_refused(tmp_path, MODEL_YAML.replace("V: {value: 10.0, unit: L}", "V: {value: 10.0, unit: L"), "not valid YAML", "line ")  # fmt: skip
    file_refused(tmp_path, "name: x\n\tcompartments: {}\n", "line 2", "not valid YAML")
    file_refused(tmp_path, "? [a, b]\n: 1\n", "line 1", "key")
    file_refused(tmp_path, "a: " + "1" * 5000 + "\n", "not valid YAML")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_unicode_encodings_are_read(tmp_path, encoding):
    """UTF-8 with a byte-order mark, UTF-16 and UTF-32 (with one) and UTF-16 without one."""
    path = tmp_path / "enc.yaml"
    path.write_bytes(MODEL_YAML.replace("name: filemodel", "name: filemodel\ndescription: 5 µg").encode(encoding))  # fmt: skip
    m = ldpk.load_model(path)
    assert m.name == "filemodel" and m.description == "5 µg"


def test_undecodable_file_names_the_encoding(tmp_path):
    data = MODEL_YAML.replace("name: filemodel", "name: filemodel\ndescription: 5 µg café").encode("latin-1")  # fmt: skip
    file_refused(tmp_path, None, "not valid UTF-8", "save it as UTF-8", data=data)


# ---- 4. lookalike characters -----------------------------------------------------------------
def test_lookalike_letter_in_an_expression_names_the_code_point():
    flows = [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "\u0421L / V"}]
    refused(spec(flows=flows), "flows[1].k", "U+0421", "CYRILLIC", "'CL'", "U+0043")


def test_greek_lookalike_in_a_file(tmp_path):
    text = MODEL_YAML.replace("k: CL / V}", "k: CL / \u039d}").replace("V: {value", "N: {value")
    file_refused(tmp_path, text, "flows[0].k", "U+039D", "GREEK", "'N'")


def test_micro_sign_and_greek_mu_are_one_name():
    """Python reads U+00B5 (micro sign) as U+03BC (Greek mu): a parameter named with the Greek
    letter is found whichever of the two an expression uses."""
    s = spec()
    s["parameters"] = {**s["parameters"], "\u03bc": {"value": 0.1, "unit": "1/h"}}
    s["flows"] = [*s["flows"], {"from": "depot", "k": "\u00b5 * 2"}]
    assert ldpk.build_model(s).flows[-1].k.names == {"\u03bc"}


@pytest.mark.parametrize(
    "text,code",
    [
        ("CL \u2013 V", "U+2013"),
        ("CL\u00a0/ V", "U+00A0"),
        ("CL \u2212 V", "U+2212"),
        ("\u2018CL\u2019", "U+2018"),
        ("CL \u00d7 V", "U+00D7"),
    ],  # fmt: skip
)
def test_lookalike_punctuation_in_an_expression(text, code):
    refused(spec(outputs={"cp": text}), "outputs.cp", code, "looks like")


def test_lookalike_compartment_name_in_a_flow():
    flows = [{"from": "depot", "to": "\u0441entral", "k": "KA"}]
    refused(spec(flows=flows), "flows[0].to", "U+0441", "'central'")


@pytest.mark.parametrize("unit,code", [("\u041cBq", "U+041C"), ("mg\u2013h", "U+2013"), ("\u039cBq", "U+039C")])  # fmt: skip
def test_lookalike_characters_in_units(unit, code):
    s = spec()
    s["parameters"]["V"]["unit"] = unit
    refused(s, "parameters.V.unit", code)


def test_micro_units_are_accepted():
    s = spec()
    s["compartments"] = {"depot": {"unit": "µg"}, "central": {"unit": "μg"}}
    assert ldpk.build_model(s).compartments[0].unit == "µg"


def test_lookalike_parameter_name_in_a_fit_config():
    m = ldpk.build_model(spec())
    with pytest.raises(ModelError) as info:
        fit_spec(m, None, {"parameters": {"\u041aA": {"fixed": 1.0}}}, "fit.yaml")
    _check(str(info.value), "fit.yaml", ("parameters.\u041aA", "U+041A", "'KA'"))


# ---- 3 (configs). fit config files -----------------------------------------------------------
CONFIG_YAML = "parameters:\n  V: {fixed: true}\nfit: {chains: 1}\n"


def test_config_files_in_unicode_encodings_are_read(tmp_path):
    for enc in ("utf-8-sig", "utf-16", "utf-16-le"):
        path = tmp_path / f"cfg-{enc}.yaml"
        path.write_bytes(CONFIG_YAML.encode(enc))
        assert read_config(path)["parameters"] == {"V": {"fixed": True}}
    toml = tmp_path / "cfg.toml"
    toml.write_bytes("[parameters.V]\nfixed = true\n".encode("utf-16"))
    assert read_config(toml)["parameters"] == {"V": {"fixed": True}}


def test_bad_config_files_are_refused(tmp_path, monkeypatch):
    file_refused(tmp_path, None, "not valid UTF-8", name="c.yaml", data="fit: {note: café}\n".encode("latin-1"), load=read_config)  # fmt: skip
    file_refused(tmp_path, "parameters:\n  V: [1, 2\n", "not valid YAML", "line ", name="c.yaml", load=read_config)  # fmt: skip
    file_refused(tmp_path, "[parameters\nV = 1\n", "not valid TOML", "line 1", name="c.toml", load=read_config)  # fmt: skip
    file_refused(tmp_path, LAUGHS + "fit: [" + ", ".join(["*l8"] * 10) + "]\n", "MAX_YAML_NODES", name="c.yaml", load=read_config)  # fmt: skip
    file_refused(tmp_path, "a = " + "[" * 3000 + "]" * 3000 + "\n", "TOML", name="c.toml", load=read_config)  # fmt: skip
    monkeypatch.setattr(_load, "MAX_FILE_BYTES", 10)
    file_refused(tmp_path, CONFIG_YAML, "MAX_FILE_BYTES", name="c.yaml", load=read_config)


# ---- 5. fit-config checks --------------------------------------------------------------------
def test_fixed_true_holds_the_model_value_and_bad_fixed_values_are_refused():
    m = ldpk.build_model(spec())
    assert fit_spec(m, None, {"parameters": {"V": {"fixed": True}}}).fixed == {"V": 10.0}
    assert fit_spec(m, None, {"parameters": {"V": {"fixed": 12}}}).fixed == {"V": 12.0}
    with pytest.raises(ModelError) as info:
        fit_spec(m, None, {"parameters": {"V": {"fixed": "ten"}}}, "fit.yaml")
    _check(str(info.value), "fit.yaml", ("parameters.V.fixed", "expected a number"))


def test_parameters_neither_estimated_nor_fixed_are_named_in_a_warning():
    m = ldpk.build_model(spec())
    s = fit_spec(m, None, {})
    assert unestimated_parameters(m, s) == ("V", "KA")
    with pytest.warns(UnestimatedParameterWarning, match=r"V, KA have neither a prior nor `fixed:`") as rec:  # fmt: skip
        assert check_fit_inputs(m, None, s) == ("V", "KA")
    assert m.source in str(rec[0].message) and "V=10" in str(rec[0].message)
    # declared fixed in the config, or by `prior: {dist: fixed}` in the model: no warning
    s2 = spec()
    s2["parameters"]["KA"]["prior"] = {"dist": "fixed"}
    m2 = ldpk.build_model(s2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnestimatedParameterWarning)
        assert check_fit_inputs(m2, None, fit_spec(m2, None, {"parameters": {"V": {"fixed": True}}})) == ()  # fmt: skip


def _dataset(model, dv, blq):
    rows = [{"ID": 1, "TIME": 0.0, "EVID": 1, "AMT": 100.0, "ROUTE": "iv", "DV": np.nan, "BLQ": 0}]  # fmt: skip
    rows += [{"ID": 1, "TIME": float(i + 1), "EVID": 0, "AMT": 0.0, "ROUTE": "", "DV": v, "BLQ": b} for i, (v, b) in enumerate(zip(dv, blq, strict=True))]  # fmt: skip
    return ldpk.read_data(model, pd.DataFrame(rows))


@pytest.mark.parametrize("kind", ["proportional", "lognormal"])
def test_nonpositive_observations_under_proportional_or_lognormal_error(kind):
    m = ldpk.build_model(spec())
    ds = _dataset(m, [5.0, 0.0, -1.0, 2.0], [0, 0, 0, 0])
    s = fit_spec(m, ds, {"error": {"cp": {"model": kind}}, "parameters": {"V": {"fixed": True}, "KA": {"fixed": True}}})  # fmt: skip
    with pytest.raises(DataError) as info:
        check_fit_inputs(m, ds, s)
    msg = _check(str(info.value), ds.source, ("'cp'", kind, "BLQ", "censored"))
    rows = ds.row[[1, 2]].tolist()
    assert f"row {rows[0]} (0)" in msg and f"row {rows[1]} (-1)" in msg
    # the same values censored (below the limit of quantification) are fine, and so is the
    # combined error model
    ds_blq = _dataset(m, [5.0, 0.0, -1.0, 2.0], [0, 1, 1, 0])
    check_fit_inputs(m, ds_blq, fit_spec(m, ds_blq, {"error": {"cp": {"model": kind}}, "parameters": {"V": {"fixed": True}, "KA": {"fixed": True}}}))  # fmt: skip
    check_fit_inputs(m, ds, fit_spec(m, ds, {"parameters": {"V": {"fixed": True}, "KA": {"fixed": True}}}))  # fmt: skip
