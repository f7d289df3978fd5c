"""Species physiology tables: provenance, internal consistency, published numbers, API."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ldpk.errors import DataError
from ldpk.model import physiology as ph

SPECIES = ph.species_names()


def _all_values(sp: ph.Species):
    yield "body_weight", sp.body_weight
    yield "blood_volume", sp.blood_volume
    yield "cardiac_output", sp.cardiac_output
    for organ, fields in sp.organs.items():
        for name, value in fields.items():
            yield f"{organ}.{name}", value


def _systemic(sp: ph.Species) -> list[str]:
    """Organs whose venous blood returns to the vena cava (the flow balance), rest included."""
    excluded = {"lung", *ph.PORTAL_ORGANS}
    return [o for o, f in sp.organs.items() if "flow_fraction" in f and o not in excluded]


def test_species_names():
    assert SPECIES == ["mouse", "rat", "dog", "human"]


# --- provenance ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECIES)
def test_every_value_has_unit_and_known_reference(name):
    sp = ph.species(name)
    for path, v in _all_values(sp):
        assert isinstance(v, ph.Value), path
        assert isinstance(v.value, float) and math.isfinite(v.value), path
        assert v.unit.strip(), f"{name} {path}: no unit"
        assert v.reference in sp.references, f"{name} {path}: {v.reference!r} not in references"
    for key, citation in sp.references.items():
        assert len(citation) > 40, key  # a full citation, not a placeholder


@pytest.mark.parametrize("name", SPECIES)
def test_derived_and_illustrative_values_explain_themselves(name):
    sp = ph.species(name)
    for path, v in _all_values(sp):
        if v.reference == "ldpk" or v.illustrative:
            assert len(v.note) > 20, f"{name} {path}: derived/illustrative without a note"
        if v.illustrative:
            assert "Illustrative" in v.note or "not checked" in v.note or "rest" in path, path


@pytest.mark.parametrize("name", SPECIES)
def test_units(name):
    sp = ph.species(name)
    assert sp.body_weight.unit == "kg"
    assert sp.blood_volume.unit == "mL"
    assert sp.cardiac_output.unit == "mL/min"
    for organ, fields in sp.organs.items():
        assert fields["weight"].unit == "g", organ
        if "flow_fraction" in fields:
            assert fields["flow_fraction"].unit == ph.FRACTION_UNIT, organ
    assert sp.organs["blood"]["volume"] is not None


@pytest.mark.parametrize("name", SPECIES)
def test_required_organs_present(name):
    sp = ph.species(name)
    assert tuple(sp.organs) == ph.ORGANS
    for organ in ph.ORGANS:
        if organ != "blood":
            assert "flow_fraction" in sp.organs[organ], organ


@pytest.mark.parametrize("name", SPECIES)
def test_reference_body_weight_is_stated(name):
    sp = ph.species(name)
    assert "Reference body weight" in sp.body_weight.note
    expected = {"mouse": 0.025, "rat": 0.25, "dog": 10.0, "human": 70.0}[name]
    assert sp.body_weight.value == expected


# --- internal consistency -------------------------------------------------------------


@pytest.mark.parametrize("name", SPECIES)
def test_systemic_flow_fractions_sum_to_one(name):
    sp = ph.species(name)
    total = math.fsum(sp.organs[o]["flow_fraction"].value for o in _systemic(sp))
    assert total == pytest.approx(1.0, abs=1e-9)
    assert sp.organs["rest"]["flow_fraction"].value >= 0
    assert sp.organs["lung"]["flow_fraction"].value == 1.0
    assert "pulmonary" in sp.organs["lung"]["flow_fraction"].note.lower()


@pytest.mark.parametrize("name", SPECIES)
def test_spleen_flow_is_inside_liver_total(name):
    sp = ph.species(name)
    assert "spleen" in ph.PORTAL_ORGANS
    assert sp.organs["spleen"]["flow_fraction"].value < sp.organs["liver"]["flow_fraction"].value
    assert "portal" in sp.organs["spleen"]["flow_fraction"].note


@pytest.mark.parametrize("name", SPECIES)
def test_weights_below_body_weight_and_sum_to_it(name):
    sp = ph.species(name)
    bw_g = sp.body_weight.value * 1000.0
    for organ, fields in sp.organs.items():
        if organ != "rest":
            assert 0 < fields["weight"].value < bw_g, organ
    assert sp.organs["rest"]["weight"].value >= 0
    total = math.fsum(f["weight"].value for f in sp.organs.values())
    assert total == pytest.approx(bw_g, rel=1e-12)


@pytest.mark.parametrize("name", SPECIES)
def test_blood_organ_matches_blood_volume(name):
    sp = ph.species(name)
    assert sp.organs["blood"]["volume"] == sp.blood_volume
    assert sp.organs["blood"]["weight"].value == pytest.approx(sp.blood_volume.value)


# --- published numbers ------------------------------------------------------------------


def test_brown1997_organ_weights():
    # Brown et al. 1997, Table 4 (mouse), Table 5 (rat), Table 7 (human): % of body weight.
    mouse, rat, human = (ph.species(n) for n in ("mouse", "rat", "human"))
    assert mouse.organs["liver"]["weight"].value == pytest.approx(5.49 / 100 * 25.0)
    assert mouse.organs["kidney"]["weight"].value == pytest.approx(1.67 / 100 * 25.0)
    assert mouse.organs["muscle"]["weight"].value == pytest.approx(38.4 / 100 * 25.0)
    assert rat.organs["liver"]["weight"].value == pytest.approx(3.66 / 100 * 250.0)
    assert rat.organs["brain"]["weight"].value == pytest.approx(0.57 / 100 * 250.0)
    assert human.organs["liver"]["weight"].value == pytest.approx(2.57 / 100 * 70000.0)
    assert human.organs["lung"]["weight"].value == pytest.approx(0.76 / 100 * 70000.0)
    assert human.organs["kidney"]["weight"].value == pytest.approx(0.44 / 100 * 70000.0)
    assert "Table 4" in mouse.organs["liver"]["weight"].note
    assert "Table 7" in human.organs["liver"]["weight"].note


def test_brown1997_blood_flows():
    # Brown et al. 1997, Table 23: % of cardiac output.
    mouse, rat, human = (ph.species(n) for n in ("mouse", "rat", "human"))
    assert human.organs["liver"]["flow_fraction"].value == pytest.approx(0.227)
    assert human.organs["kidney"]["flow_fraction"].value == pytest.approx(0.175)
    assert human.organs["brain"]["flow_fraction"].value == pytest.approx(0.114)
    assert mouse.organs["liver"]["flow_fraction"].value == pytest.approx(0.161)
    assert mouse.organs["kidney"]["flow_fraction"].value == pytest.approx(0.091)
    assert rat.organs["muscle"]["flow_fraction"].value == pytest.approx(0.278)
    for sp in (mouse, rat, human):
        assert sp.organs["liver"]["flow_fraction"].reference == "brown1997"


def test_icrp89_and_other_sources():
    human = ph.species("human")
    # ICRP 89 Table 2.8: active marrow 1170 g; Table 2.40: red marrow 3 % of cardiac output;
    # Table 2.39: cardiac output 6.5 L/min (adult male).
    assert human.organs["bone_marrow"]["weight"].value == 1170.0
    assert human.organs["bone_marrow"]["flow_fraction"].value == pytest.approx(0.03)
    assert human.cardiac_output.value == 6500.0
    # Brown et al. 1997 Table 21: blood 4.9 % (mouse) and 7.9 % (human) of body weight.
    assert ph.species("mouse").blood_volume.value == pytest.approx(0.049 * 25.0)
    assert human.blood_volume.value == pytest.approx(0.079 * 70000.0)
    # Brown et al. 1997 p. 440 / 441: Q_C = 0.275 (mouse), 0.235 (rat) L/min x BW^0.75.
    assert ph.species("mouse").cardiac_output.value == pytest.approx(275.0 * 0.025**0.75)
    assert ph.species("rat").cardiac_output.value == pytest.approx(235.0 * 0.25**0.75)
    # Diehl et al. 2001 Table 5: rat blood 64 mL/kg. Davies & Morris 1993 Table III: mouse
    # spleen 1.1 % of cardiac output.
    assert ph.species("rat").blood_volume.value == pytest.approx(64.0 * 0.25)
    assert ph.species("mouse").organs["spleen"]["flow_fraction"].reference == "davies1993"


def test_dog_published_numbers():
    """Dog values against the published numbers, as found in stored copies of the papers'
    tables (the module stores the numbers as printed, so rel=1e-12 where it is the same
    number; the cross-source comparison at the end has its own tolerance).

    - Brown et al. 1997 Table 6 (dog organ weights, % of body weight): liver 3.29, kidney
      0.55, muscle 45.65, lung 0.82, heart 0.78, brain 0.78, spleen 0.27, bone 8.10; Table
      21: blood 8.2 % of body weight. Found in httk (USEPA/CompTox-ExpoCast-httk,
      Tissue-PercentBW.txt, dog column; the same values / tissue density in
      datatables/Tissue-Volumes-Flows.txt, reference "ILSI-RSI 1994", the report published
      as Brown et al. 1997). Liver, kidney, muscle and blood also in dog oxytetracycline
      PBPK models (R, Berkeley Madonna) citing "Brown et al., 1997, Table 6" and "Table 21":
      VLC = 0.0329, VKC = 0.0055, VMC = 0.4565, VbloodC = 0.082.
    - Davies & Morris 1993, 10 kg dog: cardiac output 1200 mL/min; liver 309 (hepatic artery
      79 + gut 230), kidney 216, brain 45, heart 54, muscle 250 mL/min. Found in httk
      datatables/Tissue-Flows.txt (dog column); Basic-Physiology.txt gives cardiac output
      213.4 mL/min/kg^0.75 and body weight 10 kg (httk documents physiology.data as values
      from Davies & Morris 1993); the liver flow also as 30.9 mL/min/kg (dog, 10 kg) in an
      IVIVE module citing Davies & Morris.
    - Cross-source: the dog PBPK models above cite Brown et al. 1997 Table 26 for liver
      29.7 %, kidney 17.3 % and muscle 21.7 % of cardiac output. These are other studies'
      means, not the same numbers: the Davies & Morris fractions must agree within 5
      percentage points (abs=0.05).
    """
    dog = ph.species("dog")
    bw_g = 10_000.0
    brown_table6 = {
        "liver": 3.29,
        "kidney": 0.55,
        "muscle": 45.65,
        "lung": 0.82,
        "heart": 0.78,
        "brain": 0.78,
        "spleen": 0.27,
    }
    for organ, pct in brown_table6.items():
        w = dog.organs[organ]["weight"]
        assert w.value == pytest.approx(pct / 100 * bw_g, rel=1e-12), organ
        assert w.reference == "brown1997" and "Table 6" in w.note, organ
    assert dog.blood_volume.value == pytest.approx(0.082 * bw_g, rel=1e-12)
    assert "Table 21" in dog.blood_volume.note
    # bone 8.10 % (Table 6) enters only the illustrative marrow mass
    marrow = dog.organs["bone_marrow"]["weight"]
    assert marrow.value == pytest.approx(8.10 / 100 * bw_g * 1170 / 10500, rel=1e-12)

    assert dog.body_weight.value == 10.0
    assert dog.cardiac_output.value == 1200.0 and dog.cardiac_output.reference == "davies1993"
    assert dog.cardiac_output.value == pytest.approx(213.4 * 10**0.75, rel=1e-3)  # httk
    davies_ml_min = {"liver": 309.0, "kidney": 216.0, "brain": 45.0, "heart": 54.0, "muscle": 250.0}
    for organ, flow in davies_ml_min.items():
        assert ph.lookup("dog", f"{organ}.flow").value == pytest.approx(flow, rel=1e-12)
        assert dog.organs[organ]["flow_fraction"].reference == "davies1993", organ
    assert ph.lookup("beagle", "liver.flow").value / 10.0 == pytest.approx(30.9, rel=1e-12)
    assert "79" in dog.organs["liver"]["flow_fraction"].note

    brown_table26 = {"liver": 0.297, "kidney": 0.173, "muscle": 0.217}
    for organ, frac in brown_table26.items():
        assert dog.organs[organ]["flow_fraction"].value == pytest.approx(frac, abs=0.05)
    assert {"brown1997", "davies1993"} <= set(dog.references)


def test_illustrative_entries_are_flagged():
    for name in ("mouse", "rat", "dog"):
        sp = ph.species(name)
        assert sp.organs["bone_marrow"]["weight"].illustrative
        assert sp.organs["bone_marrow"]["flow_fraction"].illustrative
        assert sp.organs["rest"]["flow_fraction"].illustrative  # depends on the marrow flow
    dog = ph.species("dog")
    # the dog's spleen flow is the human fraction of Davies & Morris 1993, transferred
    assert dog.organs["spleen"]["flow_fraction"].illustrative
    assert "human" in dog.organs["spleen"]["flow_fraction"].note
    for organ in ("heart", "liver", "kidney", "brain", "muscle"):
        assert not dog.organs[organ]["weight"].illustrative, organ
        assert not dog.organs[organ]["flow_fraction"].illustrative, organ
    assert not any(v.illustrative for v in (dog.cardiac_output, dog.blood_volume))
    human = ph.species("human")
    assert not any(v.illustrative for _, v in _all_values(human))
    table = ph.table("mouse").set_index("organ")
    assert table.loc["bone_marrow", "illustrative"]
    assert not table.loc["liver", "illustrative"]


# --- API --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("mouse", "mouse"),
        ("Mice", "mouse"),
        (" RAT ", "rat"),
        ("dog", "dog"),
        ("Dogs", "dog"),
        ("beagle", "dog"),
        ("Beagles", "dog"),
        ("canine", "dog"),
        ("man", "human"),
        ("HUMAN", "human"),
    ],
)
def test_aliases(alias, canonical):
    assert ph.species(alias).name == canonical


def test_unknown_species_lists_valid_names():
    with pytest.raises(DataError, match=r"unknown species 'hamster'.*mouse, rat, dog, human"):
        ph.species("hamster")
    with pytest.raises(DataError, match="valid species"):
        ph.lookup("pig", "liver.weight")
    for untabulated in ("monkey", "rhesus", "cynomolgus", "minipig"):
        with pytest.raises(DataError, match="valid species"):
            ph.species(untabulated)
    with pytest.raises(DataError):
        ph.species(3)  # type: ignore[arg-type]


def test_species_returns_copies():
    sp = ph.species("mouse")
    sp.organs["liver"]["weight"] = ph.Value(0.0, "g", "ldpk")
    assert ph.species("mouse").organs["liver"]["weight"].value == pytest.approx(1.3725)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.body_weight.value = 1.0  # type: ignore[misc]


def test_lookup_paths():
    human = ph.species("human")
    assert ph.lookup("human", "body_weight") == human.body_weight
    assert ph.lookup("man", "cardiac_output").value == 6500.0
    assert ph.lookup("human", "blood_volume") == human.blood_volume
    assert ph.lookup("human", "liver.weight") == human.organs["liver"]["weight"]
    assert ph.lookup("human", "Liver.Flow_Fraction").value == pytest.approx(0.227)
    flow = ph.lookup("human", "liver.flow")
    assert flow.unit == "mL/min"
    assert flow.value == pytest.approx(0.227 * 6500.0)
    assert flow.reference == "ldpk" and "cardiac output" in flow.note
    assert ph.lookup("human", "lung.flow").value == pytest.approx(6500.0)
    vol = ph.lookup("mice", "liver.volume")
    assert vol.unit == "mL" and vol.value == pytest.approx(5.49 / 100 * 25.0)
    assert "1.0 g/mL" in vol.note
    assert ph.lookup("rat", "blood.volume") == ph.species("rat").blood_volume
    assert ph.lookup("rat", "bone_marrow.flow").illustrative


@pytest.mark.parametrize("path", ["liver", "liver.size", "pancreas.weight", "", "liver.weight.x"])
def test_lookup_unknown_path_lists_organs_and_fields(path):
    with pytest.raises(DataError) as err:
        ph.lookup("rat", path)
    msg = str(err.value)
    assert "bone_marrow" in msg and "flow_fraction" in msg and "body_weight" in msg


def test_lookup_blood_has_no_flow():
    with pytest.raises(DataError, match="blood has no flow"):
        ph.lookup("mouse", "blood.flow")


def test_table():
    df = ph.table("human")
    assert list(df.columns)[:5] == [
        "organ",
        "weight_g",
        "flow_fraction",
        "flow_mL_min",
        "reference",
    ]
    assert list(df["organ"]) == list(ph.ORGANS)
    row = df.set_index("organ").loc["liver"]
    assert row["weight_g"] == pytest.approx(1799.0)
    assert row["flow_mL_min"] == pytest.approx(0.227 * 6500.0)
    assert row["reference"] == "brown1997"
    assert math.isnan(df.set_index("organ").loc["blood", "flow_fraction"])


# --- scale_to ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECIES)
def test_scale_to_identity(name):
    ref = ph.species(name)
    same = ph.scale_to(name, ref.body_weight.value)
    assert same.cardiac_output.value == pytest.approx(ref.cardiac_output.value)
    for organ in ph.ORGANS:
        assert same.organs[organ]["weight"].value == pytest.approx(
            ref.organs[organ]["weight"].value
        )


def test_scale_to_rules():
    ref = ph.species("mouse")
    big = ph.scale_to("mouse", 0.05)  # twice the reference weight
    assert big.body_weight.value == 0.05 and big.body_weight.unit == "kg"
    assert big.organs["liver"]["weight"].value == pytest.approx(
        2 * ref.organs["liver"]["weight"].value
    )
    assert big.blood_volume.value == pytest.approx(2 * ref.blood_volume.value)
    assert big.cardiac_output.value == pytest.approx(2**0.75 * ref.cardiac_output.value)
    assert "0.75" in big.cardiac_output.note
    assert {"west1997", "lindstedt2002"} <= set(big.references)
    for organ in ph.ORGANS:
        if "flow_fraction" in ref.organs[organ]:
            assert big.organs[organ]["flow_fraction"] == ref.organs[organ]["flow_fraction"]
    # still consistent
    total_w = math.fsum(f["weight"].value for f in big.organs.values())
    assert total_w == pytest.approx(50.0, rel=1e-12)
    total_q = math.fsum(big.organs[o]["flow_fraction"].value for o in _systemic(big))
    assert total_q == pytest.approx(1.0, abs=1e-9)
    for path, v in _all_values(big):
        assert v.reference in big.references, path
    # the scaled table works with lookup and table, and flows follow BW^0.75
    assert ph.lookup(big, "liver.flow").value == pytest.approx(
        2**0.75 * ph.lookup("mouse", "liver.flow").value
    )
    assert len(ph.table(big)) == len(ph.ORGANS)
    # marrow stays illustrative after scaling
    assert big.organs["bone_marrow"]["weight"].illustrative


def test_scale_human_to_child_weight():
    child = ph.scale_to("man", 20.0)
    assert child.name == "human"
    assert child.organs["brain"]["weight"].value == pytest.approx(2.0 / 100 * 20000.0)
    assert child.cardiac_output.value == pytest.approx(6500.0 * (20.0 / 70.0) ** 0.75)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "heavy", None])
def test_scale_to_rejects_bad_weight(bad):
    with pytest.raises(DataError, match="body_weight_kg"):
        ph.scale_to("rat", bad)
