"""`default_route:` (issue "doses without CMT go to the model's default route when it has one,
else one error"): a model file may name the route of a data-file dose that gives neither CMT nor
ROUTE. Both readers (NONMEM-style tables and biodistribution tables) use it; without it a model
with several routes still gets the one aggregated error, which now mentions the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml

import ldpk
from ldpk.data import read_biodistribution, read_data, read_table, records_from_table
from ldpk.errors import DataError, ModelError
from ldpk.model._model import structure
from ldpk.model._template import model_template
from ldpk.report import describe_model

SPEC = {
    "name": "two_routes",
    "time_unit": "h",
    "amount_unit": "mg",
    "compartments": {"depot": {"unit": "mg"}, "central": {"unit": "mg"}},
    "parameters": {
        "KA": {"value": 1.0, "unit": "1/h"},
        "KE": {"value": 0.2, "unit": "1/h"},
        "V": {"value": 10.0, "unit": "L"},
        "F": {"value": 0.5, "unit": "1"},
    },
    "flows": [{"from": "depot", "to": "central", "k": "KA"}, {"from": "central", "k": "KE"}],
    # iv is declared first, so a default of oral is not the first route by accident.
    "routes": {
        "iv": {"target": "central"},
        "oral": {"target": "depot", "bioavailability": "F"},
    },
    "outputs": {"cp": {"expr": "central / V", "unit": "mg/L"}},
    "default_route": "oral",
}
IV, ORAL = 0, 1  # indices in the route table (declared routes first)


def spec(**changes):
    out = {**SPEC, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture(scope="module")
def with_default():
    return ldpk.build_model(spec())


@pytest.fixture(scope="module")
def without_default():
    return ldpk.build_model(spec(default_route=None))


def write(tmp_path: Path, text: str, name: str = "study.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


NO_TARGET = "ID,TIME,AMT,DV\n1,0,100,.\n1,1,0,5\n2,0,100,.\n2,1,0,4\n"


def dose_routes(records) -> list[int]:
    return [int(r) for r, e in zip(records.route, records.evid, strict=True) if e in (1, 4)]


# ---- the model field -----------------------------------------------------------------------
def test_field_is_read_and_defaults_to_none(with_default, without_default):
    assert with_default.default_route == "oral"
    assert without_default.default_route is None
    assert ldpk.build_model(spec(default_route="  iv ")).default_route == "iv"
    # Python construction: the field exists on the dataclass too.
    m = dataclasses.replace(without_default, default_route="iv")
    assert m.default_route == "iv"


@pytest.mark.parametrize("bad", ["nasal", "Oral", "depot"])
def test_unknown_default_route_refused_at_build(bad):
    with pytest.raises(ModelError) as exc:
        ldpk.build_model(spec(default_route=bad), source="m.yaml")
    msg = str(exc.value)
    assert msg.startswith("m.yaml: default_route is ")
    assert repr(bad) in msg and "not a route of the model" in msg
    assert "routes: iv, oral" in msg


@pytest.mark.parametrize("bad", [3, "", ["iv"], {"iv": 1}, True])
def test_default_route_that_is_not_a_name_refused(bad):
    with pytest.raises(ModelError, match=r"m\.yaml: default_route is .*give the name of one"):
        ldpk.build_model(spec(default_route=bad), source="m.yaml")


def test_default_route_without_routes_refused():
    with pytest.raises(ModelError, match=r"default_route is 'iv'.*routes: \(none\)"):
        ldpk.build_model(spec(routes=None, default_route="iv"))


def test_python_construction_validated(without_default):
    with pytest.raises(ModelError, match="default_route is 'im'.*routes: iv, oral"):
        dataclasses.replace(without_default, default_route="im")


def test_model_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec(default_route="ivv")))
    with pytest.raises(ModelError) as exc:
        ldpk.load_model(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: default_route is 'ivv'")
    assert "'iv'" in msg and "routes: iv, oral" in msg  # the close name, then the valid ones
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec()))
    assert ldpk.load_model(good).default_route == "oral"


# ---- pytree, equality, copies --------------------------------------------------------------
def test_pytree_round_trip_keeps_it_static(with_default, without_default):
    leaves, treedef = jax.tree_util.tree_flatten(with_default)
    assert len(leaves) == len(with_default.parameters)  # values only: the route is structure
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back.default_route == "oral"
    assert back == with_default and hash(back) == hash(with_default)
    assert structure(with_default).default_route == "oral"
    # Models that differ only in the default route differ in structure (a different treedef).
    assert with_default != without_default
    assert structure(with_default) != structure(without_default)
    assert jax.tree_util.tree_structure(with_default) != jax.tree_util.tree_structure(
        without_default
    )
    # Through jit and vmap: the route survives as static structure.
    out = jax.jit(lambda m: m)(with_default)
    assert out.default_route == "oral"
    stacked = jax.tree_util.tree_map(lambda v: jnp.stack([jnp.asarray(v)] * 3), with_default)
    assert jax.vmap(lambda m: m.parameters[0].value * 2)(stacked).shape == (3,)
    assert stacked.default_route == "oral"


def test_copies_carry_it(with_default):
    assert with_default.with_values(KA=2.0).default_route == "oral"
    assert dataclasses.replace(with_default, name="other").default_route == "oral"


# ---- NONMEM-style tables ----------------------------------------------------------------------
def test_dose_without_cmt_goes_to_default_route(with_default, tmp_path):
    path = write(tmp_path, NO_TARGET)
    ds = read_data(with_default, path)
    assert [dose_routes(r) for r in ds.records] == [[ORAL], [ORAL]]
    recs = records_from_table(with_default, read_table(path), where=str(path))
    assert [dose_routes(r) for r in recs.values()] == [[ORAL], [ORAL]]
    # The route applies: oral bioavailability F = 0.5 halves the exposure of an iv dose.
    t = np.linspace(0.0, 48.0, 97)
    oral = ldpk.simulate(with_default, None, [ldpk.Bolus(100.0, route="oral")], t)
    iv = ldpk.simulate(with_default, None, [ldpk.Bolus(100.0, route="iv")], t)
    assert float(np.max(oral["cp"])) < 0.5 * float(np.max(iv["cp"]))


def test_without_default_one_aggregated_error(without_default, tmp_path):
    path = write(tmp_path, NO_TARGET)
    with pytest.raises(DataError) as fit_exc:
        read_data(without_default, path)
    with pytest.raises(DataError) as sim_exc:
        records_from_table(without_default, read_table(path), where=str(path))
    msg = str(fit_exc.value)
    assert msg == str(sim_exc.value)
    lines = msg.splitlines()
    assert len(lines) == 2, msg
    assert "2 problems in the data" in lines[0]
    assert lines[1].strip().startswith("rows 1, 3 (2 rows), column CMT: missing on a dose row")
    assert "default_route" in lines[1] and "routes: iv, oral" in lines[1]


def test_many_rows_without_default_still_one_line(without_default, tmp_path):
    n = 250
    df = pd.DataFrame({"ID": np.arange(1, n + 1), "TIME": 0.0, "EVID": 1, "AMT": 1.0, "DV": "."})
    with pytest.raises(DataError) as exc:
        read_data(without_default, df)
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert f"({n} rows), column CMT" in lines[1] and "default_route: NAME" in lines[1]


def test_explicit_cmt_or_route_wins(with_default, tmp_path):
    path = write(
        tmp_path,
        "ID,TIME,AMT,CMT,ROUTE,DV\n"
        "1,0,100,.,iv,.\n"  # ROUTE iv
        "1,1,100,2,.,.\n"  # CMT 2 = central: the declared route into it, iv
        "1,2,100,central,.,.\n"  # CMT by name
        "1,3,100,.,.,.\n"  # neither: the default, oral
        "1,4,0,.,.,5\n",
    )
    ds = read_data(with_default, path)
    assert dose_routes(ds.records[0]) == [IV, IV, IV, ORAL]
    recs = records_from_table(with_default, read_table(path), where=str(path))
    assert dose_routes(recs[1]) == [IV, IV, IV, ORAL]


def test_one_route_model_unchanged(tmp_path):
    one = ldpk.build_model(spec(routes={"iv": {"target": "central"}}, default_route=None))
    assert one.default_route is None
    ds = read_data(one, write(tmp_path, NO_TARGET))
    assert [dose_routes(r) for r in ds.records] == [[IV], [IV]]


# ---- biodistribution tables -------------------------------------------------------------------
def bio_frame(**extra) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": [1, 1, 2, 2], "TIME": [1.0, 2.0, 1.0, 2.0], "ORGAN": ["plasma"] * 4,
            "VALUE": [1.0, 0.5, 2.0, 1.0], "UNIT": ["mg/L"] * 4, "DOSE": [100.0] * 4, **extra,
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def bio_models():
    outputs = {"plasma_conc": {"expr": "central / V", "unit": "mg/L"}}
    return (
        ldpk.build_model(spec(outputs=outputs)),
        ldpk.build_model(spec(outputs=outputs, default_route=None)),
    )


def test_biodistribution_uses_default_route(bio_models):
    with_default, _ = bio_models
    ds = read_biodistribution(with_default, bio_frame(), time_unit="h")
    assert [dose_routes(r) for r in ds.records] == [[ORAL], [ORAL]]
    # route= and a ROUTE column win over the default; a blank ROUTE cell takes the default.
    ds = read_biodistribution(with_default, bio_frame(), time_unit="h", route="iv")
    assert [dose_routes(r) for r in ds.records] == [[IV], [IV]]
    ds = read_biodistribution(
        with_default, bio_frame(ROUTE=["iv", "iv", None, None]), time_unit="h"
    )
    assert [dose_routes(r) for r in ds.records] == [[IV], [ORAL]]


def test_biodistribution_without_default_errors_mention_it(bio_models):
    _, without = bio_models
    with pytest.raises(DataError) as exc:
        read_biodistribution(without, bio_frame(), time_unit="h")
    msg = str(exc.value)
    assert "column ROUTE: missing; add a ROUTE column or pass route=; routes of two_routes: iv, oral" in msg  # fmt: skip
    assert "default_route" in msg
    # A ROUTE column blank for several animals: one line for all of them.
    frame = pd.concat([bio_frame(ROUTE=[None] * 4), bio_frame(ROUTE=[None] * 4).assign(ID=[3, 3, 4, 4])])  # fmt: skip
    with pytest.raises(DataError) as exc:
        read_biodistribution(without, frame.reset_index(drop=True), time_unit="h")
    lines = str(exc.value).splitlines()
    route_lines = [line for line in lines if "column ROUTE" in line]
    assert len(route_lines) == 1, lines
    assert "(4 rows), column ROUTE: missing for these animals" in route_lines[0]
    assert "default_route" in route_lines[0]


# ---- show, template, built-in models ----------------------------------------------------------
def test_describe_model_shows_it(with_default, without_default):
    text = describe_model(with_default)
    assert "  default route: oral" in text
    assert "default route" not in describe_model(without_default)


def test_template_documents_it_and_uncommented_it_loads(tmp_path):
    text = model_template("mine")
    assert "\n# default_route: iv" in text
    assert ldpk.build_model(yaml.safe_load(text)).default_route is None
    on = text.replace("\n# default_route: iv", "\ndefault_route: iv")
    assert ldpk.build_model(yaml.safe_load(on)).default_route == "iv"


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("ev_iv", "iv"),
        ("ev_iv_saturable", "iv"),
        ("mitochondria_iv", "iv"),
        ("msc_pbpk", "iv"),
        ("one_compartment", None),  # iv or oral (ADVAN1/2): no obvious default
        ("two_compartment", None),
        ("mitochondria_atp_pkpd", None),
        ("cart_cellular_kinetics", None),  # one route
    ],
)
def test_builtin_defaults(name, default):
    m = ldpk.load_model(name)
    assert m.default_route == default
    if default is not None:
        assert f"default route: {default}" in describe_model(m)


def test_python_doses_without_route_go_to_the_default_route():
    """A Bolus without route on a model with several routes and a default_route is given
    to that route, as in data files (dosing.resolve_route)."""
    from ldpk.dosing import resolve_route

    model = ldpk.load_model("ev_iv")
    assert len(model.route_names) > 1 and model.default_route == "iv"
    assert resolve_route(model, None, None, "dose") == model.route_names.index("iv")
    two = ldpk.load_model("one_compartment")  # no default: still one clear error
    with pytest.raises(ldpk.DataError, match="needs a route or CMT.*default_route"):
        resolve_route(two, None, None, "dose")
