"""Parameter tables for sweeps (ldpk.paramsets): grids, samples, the distribution grammar."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ldpk.errors import DataError
from ldpk.paramsets import (
    Distribution,
    ParameterTable,
    grid,
    parse_assignment,
    parse_distribution,
    sample,
)

U = np.array([0.1, 0.5, 0.9])

# --------------------------------------------------------------------------- grid


def test_grid_order_size_and_provenance_match_itertools_product():
    values = {"CL": [1.0, 2.0, 3.0], "V": 10.0, "KA": [0.5, 1.5], "F": [0.2, 0.4, 0.6, 0.8]}
    t = grid(**values)
    lists = [v if isinstance(v, list) else [v] for v in values.values()]
    expected = np.array(list(itertools.product(*lists)))
    assert t.n == 3 * 1 * 2 * 4 == len(expected)
    assert len(t) == 4 and list(t) == ["CL", "V", "KA", "F"]
    for j, name in enumerate(t):
        assert t[name].dtype == np.float64 and t[name].ndim == 1
        np.testing.assert_array_equal(t[name], expected[:, j])
    prov = t.provenance
    assert prov["method"] == "grid" and prov["seed"] is None
    assert prov["grid"] == {"CL": [1.0, 2.0, 3.0], "V": [10.0], "KA": [0.5, 1.5], "F": [0.2, 0.4, 0.6, 0.8]}  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"CL": []}, "CL: no values"),
        ({"CL": [1.0, np.inf]}, "CL: value at index 1 is not finite"),
        ({"CL": [1.0, "a"]}, "CL: value at index 1 is not a number"),
        ({"CL": [[1.0, 2.0]]}, "1-D sequence"),
        ({"A": range(1000), "B": range(1000), "C": range(1001)}, "1,001,000,000 parameter sets"),
        ({}, "at least one parameter"),
    ],
)
def test_grid_errors(kwargs, text):
    with pytest.raises(DataError, match=text) as e:
        grid(**kwargs)
    if "C" in kwargs:
        assert "ldpk.sample" in str(e.value)


# --------------------------------------------------------------------------- sample

UNIFORMS = {"a": "uniform(0, 1)", "b": "uniform(0, 1)", "c": "uniform(0, 1)"}


def test_sample_is_reproducible_and_seed_dependent():
    dists = {"CL": "lognormal(5, 0.3)", "V": "normal(50, 5)", "F": 0.8}
    for method in ("sobol", "lhs", "random"):
        a, b = sample(dists, 100, method, seed=7), sample(dists, 100, method, seed=7)
        c = sample(dists, 100, method, seed=8)
        for k in ("CL", "V"):
            assert a[k].tobytes() == b[k].tobytes()
            assert not np.array_equal(a[k], c[k])
        assert a.provenance == {
            "method": method,
            "seed": 7,
            "distributions": {
                "CL": "lognormal(median=5, sigma=0.3)",
                "V": "normal(mean=50, sd=5)",
                "F": "constant(value=0.8)",
            },
            "grid": {},
        }


def test_random_method_is_numpy_default_rng():
    t = sample({"a": "uniform(0, 1)", "k": 3.0, "b": "normal(1, 2)"}, 50, "random", seed=11)
    u = np.random.default_rng(11).random((50, 2))
    np.testing.assert_array_equal(t["a"], u[:, 0])
    np.testing.assert_allclose(t["b"], 1 + 2 * stats.norm.ppf(u[:, 1]), rtol=1e-12)
    np.testing.assert_array_equal(t["k"], np.full(50, 3.0))


def _one_per_bin(x: np.ndarray) -> bool:
    n = len(x)
    return np.array_equal(np.sort(np.floor(x * n).astype(int)), np.arange(n))


@pytest.mark.parametrize("method", ["sobol", "lhs"])
@pytest.mark.parametrize("n", [64, 1024])
def test_sobol_and_lhs_are_stratified_in_every_column(method, n):
    t = sample(UNIFORMS, n, method, seed=3)
    for k in UNIFORMS:
        x = t[k]
        assert abs(x.mean() - 0.5) < 1 / n
        assert _one_per_bin(x), (k, method)
    # the columns are not copies of one another
    assert not np.array_equal(t["a"], t["b"])


def test_sobol_accepts_n_that_is_not_a_power_of_two_without_warning(recwarn):
    t = sample(UNIFORMS, 100, "sobol", seed=0)
    assert t.n == 100 and all(t[k].min() > 0 and t[k].max() < 1 for k in t)
    assert not [w for w in recwarn if "balance" in str(w.message)]


def test_lognormal_sample_has_the_requested_median_and_log_sd():
    t = sample({"CL": "lognormal(median=5, sigma=0.3)"}, 4096, "sobol", seed=0)
    assert abs(np.median(t["CL"]) / 5 - 1) < 0.01
    assert abs(np.std(np.log(t["CL"])) / 0.3 - 1) < 0.02


def test_unbounded_distributions_stay_finite_and_clip_is_tiny():
    t = sample({"x": "normal(0, 1)"}, 8, "random", seed=0)
    assert np.isfinite(t["x"]).all()
    # the largest |x| a clipped u can give
    assert stats.norm.ppf(1 - 1e-12) < 7.1


def test_scipy_frozen_distribution_and_constants_broadcast():
    frozen = stats.gamma(2.0, scale=3.0)
    t = sample({"K": 4, "G": frozen, "W": Distribution("constant", (("value", 70),))}, 32, "lhs", seed=5)  # fmt: skip
    np.testing.assert_array_equal(t["K"], np.full(32, 4.0))
    np.testing.assert_array_equal(t["W"], np.full(32, 70.0))
    # G is the only non-constant: its u is column 0 of the LHS draw
    from scipy.stats import qmc

    u = qmc.LatinHypercube(1, rng=np.random.default_rng(5)).random(32)[:, 0]
    np.testing.assert_allclose(t["G"], frozen.ppf(u), rtol=1e-12)
    assert t.provenance["distributions"]["G"] == "scipy.stats.gamma(2.0, scale=3.0)"
    # only constants: no random dimension, n rows
    c = sample({"K": 1.5}, 3)
    np.testing.assert_array_equal(c["K"], [1.5, 1.5, 1.5])


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"n": 0}, "n=0"),
        ({"n": 2.0}, "n=2.0"),
        ({"n": True}, "n=True"),
        ({"n": 4, "method": "halton"}, "unknown method 'halton'; valid ones: sobol, lhs, random"),
        ({"n": 4, "seed": 1.5}, "seed"),
    ],
)
def test_sample_argument_errors(kwargs, text):
    with pytest.raises(DataError, match=text):
        sample({"CL": "lognormal(5, 0.3)"}, **kwargs)


def test_sample_distribution_errors_name_the_parameter():
    with pytest.raises(
        DataError, match=r"^sample: parameter CL: invalid lognormal: median must be > 0"
    ):
        sample({"CL": "lognormal(0, 0.3)"}, 4)
    with pytest.raises(DataError, match="parameter V: expected a distribution"):
        sample({"V": [1, 2]}, 4)
    with pytest.raises(DataError, match="at least one parameter"):
        sample({}, 4)


# --------------------------------------------------------------------------- distributions

SCIPY_EQUIVALENTS = [
    ("uniform(2, 5)", stats.uniform(loc=2, scale=3)),
    ("loguniform(0.1, 100)", stats.loguniform(0.1, 100)),
    ("normal(mean=-1, sd=0.5)", stats.norm(-1, 0.5)),
    ("lognormal(median=5, sigma=0.3)", stats.lognorm(0.3, scale=5)),
    ("truncnormal(1, 2, 0, 3)", stats.truncnorm(-0.5, 1.0, loc=1, scale=2)),
    ("triangular(low=1, mode=2, high=5)", stats.triang(0.25, loc=1, scale=4)),
]


@pytest.mark.parametrize(("text", "frozen"), SCIPY_EQUIVALENTS)
def test_ppf_equals_scipy(text, frozen):
    d = parse_distribution(text)
    np.testing.assert_allclose(d.ppf(U), frozen.ppf(U), rtol=1e-12)
    # canonical text reads back to the same distribution
    assert parse_distribution(str(d)).args == d.args
    assert d.text == text


def test_ppf_against_closed_forms():
    u = U
    np.testing.assert_allclose(parse_distribution("uniform(2, 5)").ppf(u), 2 + 3 * u, rtol=1e-12)
    np.testing.assert_allclose(
        parse_distribution("loguniform(0.1, 100)").ppf(u), 0.1 * 1000**u, rtol=1e-12
    )
    z = np.array([-1.2815515655446004, 0.0, 1.2815515655446004])  # standard normal quantiles
    np.testing.assert_allclose(parse_distribution("lognormal(5, 0.3)").ppf(u), 5 * np.exp(0.3 * z), rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(parse_distribution("normal(10, 2)").ppf(u), 10 + 2 * z, rtol=1e-12)
    # triangular(0, 1, 4): F(x) = x^2/4 for x <= 1, so u=0.1 -> sqrt(0.4); above: 4 - sqrt(12(1-u))
    tri = parse_distribution("triangular(0, 1, 4)").ppf(u)
    np.testing.assert_allclose(tri, [math.sqrt(0.4), 4 - math.sqrt(6), 4 - math.sqrt(1.2)], rtol=1e-12)  # fmt: skip
    np.testing.assert_array_equal(parse_distribution("constant(7)").ppf(u), [7.0, 7.0, 7.0])


def test_positional_and_keyword_arguments_agree():
    a = parse_distribution("truncnormal(1, 2, 0, 3)")
    b = parse_distribution("truncnormal(1, 2, high=3, low=0)")
    assert a.args == b.args == (("mean", 1.0), ("sd", 2.0), ("low", 0.0), ("high", 3.0))
    assert str(a) == str(b) == "truncnormal(mean=1, sd=2, low=0, high=3)"
    assert parse_distribution(" normal(-1e-3, +2) ").params == {"mean": -0.001, "sd": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gamma(1, 2)", "unknown distribution 'gamma'.*lognormal\\(median, sigma\\)"),
        ("lognormal(5)", "lognormal takes 2 arguments, got 1.*lognormal\\(median, sigma\\)"),
        (
            "lognormal(5, 0.3, 1)",
            "lognormal takes 2 arguments, got 3.*lognormal\\(median, sigma\\)",
        ),
        ("lognormal(5, sd=0.3)", "lognormal has no argument 'sd'.*lognormal\\(median, sigma\\)"),
        ("lognormal(5, median=4)", "median is given twice"),
        ("lognormal(five, 0.3)", "median must be a number, got five.*lognormal\\(median, sigma\\)"),
        ("lognormal('5', 0.3)", "median must be a number"),
        ("lognormal(5, 1+1)", "sigma must be a number"),
        ("lognormal(0, 0.3)", "median must be > 0"),
        ("lognormal(5, 0)", "sigma must be > 0"),
        ("normal(0, -1)", "sd must be > 0.*normal\\(mean, sd\\)"),
        ("truncnormal(0, 1, 2, 2)", "low must be < high.*truncnormal\\(mean, sd, low, high\\)"),
        ("uniform(3, 1)", "low must be < high"),
        ("loguniform(0, 1)", "low must be > 0"),
        (
            "triangular(0, 2, 1)",
            "mode must lie in \\[low, high\\].*triangular\\(low, mode, high\\)",
        ),
        ("normal(1e400, 1)", "mean must be a finite number"),
        ("lognormal", "cannot read distribution"),
        ("lognormal(5, 0.3", "cannot read distribution"),
        ("", "cannot read distribution"),
    ],
)
def test_parse_distribution_errors(text, message):
    with pytest.raises(DataError, match=message) as e:
        parse_distribution(text, where="--sample CL")
    assert str(e.value).startswith("--sample CL: ")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "__import__('os')",
        "normal(__import__('os').getpid(), 1)",
        "normal(*[0, 1])",
        "normal(**{'mean': 0, 'sd': 1})",
        "(lambda: 0)()",
        "os.system('x')",
    ],
)
def test_code_is_refused_not_evaluated(text, monkeypatch):
    import builtins

    def boom(*args, **kwargs):
        raise AssertionError("evaluated")

    monkeypatch.setattr(builtins, "__import__", boom)
    with pytest.raises(DataError):
        parse_distribution(text)


def test_distribution_checks_direct_construction():
    with pytest.raises(DataError, match="sd must be > 0"):
        Distribution("normal", (("mean", 0.0), ("sd", 0.0)))
    with pytest.raises(DataError, match="unknown distribution"):
        Distribution("cauchy", (("loc", 0.0),))


# --------------------------------------------------------------------------- CLI assignments


def test_parse_assignment_sample_and_grid():
    name, d = parse_assignment("CL=lognormal(5, 0.3)", "sample")
    assert name == "CL"
    assert d == Distribution("lognormal", (("median", 5.0), ("sigma", 0.3)), "lognormal(5, 0.3)")
    name, v = parse_assignment(" DOSE = 1e6, 1e7,1e8 ", "grid")
    assert name == "DOSE"
    np.testing.assert_array_equal(v, [1e6, 1e7, 1e8])
    np.testing.assert_array_equal(parse_assignment("X=5", "grid")[1], [5.0])
    np.testing.assert_allclose(parse_assignment("X=linspace(1, 10, 5)", "grid")[1], [1, 3.25, 5.5, 7.75, 10], rtol=1e-15)  # fmt: skip
    # logspace by end values: 1e6 .. 1e9, 4 points = decades
    np.testing.assert_allclose(parse_assignment("X=logspace(1e6, 1e9, 4)", "grid")[1], [1e6, 1e7, 1e8, 1e9], rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("CL", "sample", "--sample 'CL': missing '='.*NAME=distribution"),
        ("1CL=normal(0, 1)", "sample", "'1CL' is not a valid parameter name"),
        ("CL=", "sample", "no value after '='"),
        ("CL=lognormal(5)", "sample", "^--sample CL: lognormal takes 2 arguments"),
        ("DOSE", "grid", "--grid 'DOSE': missing '='.*NAME=v1,v2"),
        ("my dose=1", "grid", "'my dose' is not a valid parameter name"),
        ("DOSE=", "grid", "no value after '='"),
        ("DOSE=1,,3", "grid", "value 2 is empty in '1,,3'.*NAME=v1,v2"),
        ("DOSE=1,x", "grid", "'x' is not a number in '1,x'"),
        ("DOSE=1,nan", "grid", "'nan' is not a finite number"),
        ("DOSE=logspace(0, 3, 4)", "grid", "end values \\(not exponents\\)"),
        ("DOSE=linspace(1, 2, 0)", "grid", "num must be an integer"),
        (
            "DOSE=linspace(1, 2)",
            "grid",
            "linspace takes 3 arguments.*linspace\\(start, stop, num\\)",
        ),
        ("DOSE=arange(1, 2)", "grid", "is not a number"),
        ("DOSE=1", "sweep", "kind must be 'sample' or 'grid'"),
    ],
)
def test_parse_assignment_errors(text, kind, message):
    with pytest.raises(DataError, match=message):
        parse_assignment(text, kind)


# --------------------------------------------------------------------------- ParameterTable


def test_from_mapping_broadcasts_and_flattens():
    t = ParameterTable.from_mapping({"CL": [[1.0], [2.0]], "V": [10, 20, 30], "F": 0.5})
    cl, v, f = np.broadcast_arrays(np.array([[1.0], [2.0]]), np.array([10, 20, 30]), 0.5)
    assert t.n == 6 and len(t) == 3
    np.testing.assert_array_equal(t["CL"], cl.ravel())
    np.testing.assert_array_equal(t["V"], v.ravel())
    np.testing.assert_array_equal(t["F"], f.ravel())
    assert all(t[k].dtype == np.float64 for k in t)
    assert t.provenance == {"method": "table", "seed": None, "distributions": {}, "grid": {}}
    assert repr(t) == "ParameterTable(n=6, names=['CL', 'V', 'F'], method='table')"
    one = ParameterTable.from_mapping({"a": 1, "b": 2.5})
    assert one.n == 1 and one["b"].tolist() == [2.5]


def test_table_is_immutable():
    source = np.array([1.0, 2.0])
    t = ParameterTable.from_mapping({"a": source})
    source[0] = 99.0
    assert t["a"][0] == 1.0  # copied
    with pytest.raises(ValueError):
        t["a"][0] = 5.0
    with pytest.raises(TypeError):
        t["b"] = np.zeros(2)  # type: ignore[index]
    prov = t.provenance
    prov["method"] = "changed"
    assert t.provenance["method"] == "table"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"CL": [1, 2, 3], "V": [1, 2]}, r"do not broadcast together: CL \(3,\), V \(2,\)"),
        ({"CL": [1.0, "fast"]}, "parameter CL: value at index 1 is not a number"),
        ({"CL": [1.0, None]}, "parameter CL: value at index 1 is not a number"),
        (
            {"CL": [[1.0, 2.0], [3.0, np.nan]]},
            r"parameter CL: value at index \(1, 1\) is not finite",
        ),
        ({"V": [1.0, 2.0, -np.inf]}, "parameter V: value at index 2 is not finite"),
        ({"CL": [1 + 2j]}, "parameter CL: value at index 0 is not a number"),
        ({"CL": [[1.0], [2.0, 3.0]]}, "parameter CL: values are not a regular array"),
        ({}, "at least one parameter"),
    ],
)
def test_from_mapping_errors(values, message):
    with pytest.raises(DataError, match=message):
        ParameterTable.from_mapping(values)


def test_subset_and_concat():
    t = grid(A=[1.0, 2.0, 3.0], B=[10.0, 20.0])
    s = t.subset(slice(1, 5, 2))
    np.testing.assert_array_equal(s["A"], [1.0, 2.0])
    np.testing.assert_array_equal(s["B"], [20.0, 20.0])
    assert s.n == 2 and s.provenance == t.provenance
    np.testing.assert_array_equal(t.subset(np.array([5, 0, -1]))["A"], [3.0, 1.0, 3.0])
    np.testing.assert_array_equal(t.subset(t["B"] > 15)["A"], [1.0, 2.0, 3.0])
    assert t.subset([]).n == 0
    with pytest.raises(DataError, match="out of range"):
        t.subset([6])
    with pytest.raises(DataError, match="boolean row mask needs length 6"):
        t.subset(np.array([True, False]))

    other = ParameterTable.from_mapping({"B": [7.0], "A": [8.0]})
    c = ParameterTable.concat([t, other])
    assert c.n == 7 and c.names == ("A", "B")
    np.testing.assert_array_equal(c["A"], np.r_[t["A"], 8.0])
    np.testing.assert_array_equal(c["B"], np.r_[t["B"], 7.0])
    assert c.provenance["method"] == "table"
    assert [p["method"] for p in c.provenance["parts"]] == ["grid", "table"]
    assert ParameterTable.concat([t.subset(slice(0, 3)), t.subset(slice(3, None))]) == t
    with pytest.raises(DataError, match=r"missing \['B'\], extra \['C'\]"):
        ParameterTable.concat([t, ParameterTable.from_mapping({"A": 1, "C": 2})])


def test_to_pandas():
    t = grid(A=[1.0, 2.0], B=[3.0, 4.0, 5.0])
    df = t.to_pandas()
    assert list(df.columns) == ["A", "B"] and len(df) == 6
    np.testing.assert_array_equal(df["B"].to_numpy(), t["B"])
    df.loc[0, "A"] = 100.0  # a copy: the table is unchanged
    assert t["A"][0] == 1.0
