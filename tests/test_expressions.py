"""The safe expression compiler: the whitelist refuses everything that is not arithmetic on
named values and whitelisted functions, with messages that say what is wrong and what is
valid; allowed expressions evaluate to what NumPy computes for the same formula."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import ldpk
from ldpk.model import FUNCTIONS, compile_expr

ALLOWED = {"x": "parameter", "y": "parameter", "central": "compartment amount"}
WHERE = "model.yaml: flows[0].rate"


def refused(source, *fragments):
    with pytest.raises(ldpk.ModelError) as info:
        compile_expr(source, ALLOWED, WHERE)
    msg = str(info.value)
    assert WHERE in msg, msg  # names the file and the entry
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# ---- refused ---------------------------------------------------------------------------------
def test_import_call_is_refused_and_functions_are_listed():
    msg = refused("__import__('os')", "'__import__' is not allowed", "valid:")
    for name in ("exp", "log", "hill", "where", "min", "max"):
        assert name in msg


def test_import_system_chain_is_refused():
    # the outer call's callee is an attribute: only plain function calls are allowed
    refused("__import__('os').system('echo hacked')", "only plain function calls")


@pytest.mark.parametrize("source", ["x.real", "().__class__", "x.__class__.__bases__"])
def test_attribute_access_is_refused(source):
    refused(source, "attribute access", "not allowed")


def test_lambda_is_refused():
    refused("(lambda: 1)()", "only plain function calls")
    refused("lambda x: x", "lambda is not allowed")


@pytest.mark.parametrize(
    "source", ["[x for x in (1, 2)]", "(x for x in (1, 2))", "{x for x in (1,)}"]
)
def test_comprehensions_are_refused(source):
    refused(source, "comprehensions are not allowed")


def test_subscript_is_refused():
    refused("x[0]", "indexing", "not allowed")


def test_walrus_is_refused():
    refused("(z := x) + z", "assignment (:=) is not allowed")


@pytest.mark.parametrize(
    "source,name",
    [
        ("eval('1')", "eval"),
        ("open('/etc/passwd')", "open"),
        ("getattr(x, 'real')", "getattr"),
        ("exec('x')", "exec"),
        ("globals()", "globals"),
    ],
)
def test_calls_outside_the_whitelist_are_refused(source, name):
    msg = refused(source, f"function {name!r} is not allowed", "valid:")
    assert "exp" in msg and "hill" in msg


def test_method_call_is_refused():
    refused("x.conjugate()", "only plain function calls such as exp(x) are allowed")


def test_keyword_arguments_are_refused():
    refused("hill(x, y, n=2)", "positional arguments only")
    refused("exp(*(x,))", "positional arguments only")


def test_unknown_name_lists_valid_names():
    msg = refused("x * CLL", "unknown name 'CLL'", "valid names here")
    for name in ("x", "y", "central", "pi", "ln2"):
        assert name in msg


def test_function_used_as_a_value():
    refused("exp + 1", "'exp' is a function")


@pytest.mark.parametrize(
    "source,fragment",
    [
        ("x // y", "not allowed"),
        ("x @ y", "not allowed"),
        ("x << 1", "not allowed"),
        ("~x", "not allowed"),
        ("x in (1, 2)", "not allowed"),
        ("x is y", "not allowed"),
        ("'abc'", "is not a number"),
        ("(x, y)", "not allowed"),
        ("exp(x, y)", "takes 1 arguments, got 2"),
        ("min(x)", "at least 2"),
        ("x +", "not a valid expression"),
        ("", "expected a number or an expression"),
    ],
)
def test_other_refusals(source, fragment):
    refused(source, fragment)


def test_refused_in_a_model_file_entry():
    spec = {
        "name": "bad",
        "compartments": {"central": {"unit": "mg"}},
        "parameters": {"k": {"value": 0.1, "unit": "1/h"}},
        "flows": [{"from": "central", "k": "__import__('os').getcwd()"}],
    }
    with pytest.raises(ldpk.ModelError, match=r"flows\[0\]\.k.*only plain function calls"):
        ldpk.build_model(spec)


# ---- allowed ---------------------------------------------------------------------------------
X = np.array([-1.5, 0.0, 0.4, 2.0, 7.25])
Y = np.array([2.0, 3.0, 0.5, 2.0, 1.5])


def ev(source, **env):
    e = compile_expr(source, ALLOWED, WHERE)
    values = {"x": X, "y": Y, "central": 3.0} | env
    return np.asarray(e({k: jnp.asarray(v) for k, v in values.items()}), dtype=float)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("where(x > 1, x, y)", np.where(X > 1, X, Y)),
        ("min(x, y, 1.0)", np.minimum(np.minimum(X, Y), 1.0)),
        ("max(x, y, central, 0.5)", np.maximum.reduce([X, Y, np.full(5, 3.0), np.full(5, 0.5)])),
        ("x if x > y else -y", np.where(X > Y, X, -Y)),
        ("1 < y <= 2", ((Y > 1) & (Y <= 2)).astype(float)),
        ("0 <= x < y < 3", ((X >= 0) & (X < Y) & (Y < 3)).astype(float)),
        ("y ** 2.5 % 3", np.mod(Y**2.5, 3.0)),
        ("-x ** 2", -(X**2)),
        ("2 ** -y", 2.0**-Y),
        ("x % 2", np.mod(X, 2.0)),
        ("exp(-y) * log(y) + sqrt(y) - abs(x)", np.exp(-Y) * np.log(Y) + np.sqrt(Y) - np.abs(X)),
        ("pow(y, 3) / log10(100)", Y**3 / 2.0),
        ("clip(x, 0, 1) + floor(x) + ceil(x)", np.clip(X, 0, 1) + np.floor(X) + np.ceil(X)),
        ("expit(x) + logit(y / 4)", 1 / (1 + np.exp(-X)) + np.log((Y / 4) / (1 - Y / 4))),
        ("ln2 / y + pi", math.log(2) / Y + math.pi),
        ("(x > 0) and (y > 1) or not (x < 5)", (((X > 0) & (Y > 1)) | ~(X < 5)).astype(float)),
    ],
)
def test_allowed_expressions_evaluate(source, expected):
    np.testing.assert_allclose(ev(source), expected, rtol=1e-14, atol=1e-15)


def test_hill_function():
    # hill(x, x50, n) = x^n / (x50^n + x^n), 0 for x <= 0; n defaults to 1
    xp = np.maximum(X, 0.0)
    np.testing.assert_allclose(ev("hill(x, y, 2.5)"), xp**2.5 / (Y**2.5 + xp**2.5), rtol=1e-14)
    np.testing.assert_allclose(ev("hill(x, y)"), xp / (Y + xp), rtol=1e-14)
    assert ev("hill(x, y)")[0] == 0.0
    assert "hill" in FUNCTIONS


def test_names_and_constants():
    e = compile_expr("x * exp(-y * t0) + pi", {"x": "", "y": "", "t0": ""}, WHERE)
    assert e.names == frozenset({"x", "y", "t0"})
    assert not e.is_constant
    c = compile_expr("2 * ln2 + 1", ALLOWED, WHERE)
    assert c.is_constant and c.names == frozenset()
    assert c.constant_value() == pytest.approx(2 * math.log(2) + 1, rel=1e-15)
    assert compile_expr(3, ALLOWED, WHERE).constant_value() == 3.0
    with pytest.raises(ldpk.ModelError, match="expected a number"):
        compile_expr(True, ALLOWED, WHERE)
