"""`Plan`: building, rules, parsing keywords and procedure notes, canonical text, enumeration, keyword metrics."""

import json

import pytest

from models.errors import PlanValidationError, UnknownAgentError
from models.plan import Dose, Plan, Protocol, enumerate_plans, infer_protocol, keyword_metrics

NOTE_RALTITREXED = (
    "Raltitrexed 4 mg was infused into the tumor-feeding artery; 5 ml ultra-liquid Lipiodol and 5 mg Epirubicin "
    "were mixed into an emulsion and injected slowly; Gelatin Sponge particles (350-560 um) were used to embolize "
    "the feeding arteries; tumor-feeding arteries were occluded on the final angiography."
)
NOTE_LOBAPLATIN = (
    "Selective catheterization of the right hepatic artery was performed. Lobaplatin 20 mg was infused; "
    "then 30 mg Lobaplatin and 10 mg Adasone were emulsified with 10 ml Lipiodol and injected; "
    "PVA particles (300-500 um) were added until stasis."
)
NOTE_DEB = (
    "Superselective catheterization with a microcatheter; 1 vial of DC Beads (100-300 um) loaded with 75 mg "
    "doxorubicin was delivered; gelfoam was not required. Post-embolization angiography confirmed stasis."
)
NOTE_ALCOHOL = (
    "Oxaliplatin 150 mg was infused over 30 minutes; THP 20mg mixed with 8 mL Lipiodol was injected; "
    "absolute ethanol 3 ml was then injected into the tumor; a 5 ml saline flush followed."
)


# ------------------------------------------------------------------------------------------------ building
def test_from_agents_canonical_order_and_properties():
    plan = Plan.from_agents(["lipiodol", "THP", "Gelfoam", "Lobaplatin"], doses={"THP": "20 mg", "Lipiodol": 10})
    assert plan.agents == ("Lobaplatin", "Pirarubicin", "Lipiodol", "Gelatin Sponge")
    assert plan.drugs == ("Lobaplatin", "Pirarubicin")
    assert plan.embolics == ("Lipiodol", "Gelatin Sponge")
    assert plan.drug_classes == ("platinum", "anthracycline")
    assert plan.protocol is Protocol.CTACE
    assert plan.doses == {"Pirarubicin": Dose(20, "mg"), "Lipiodol": Dose(10, "ml")}
    assert str(plan) == "Lobaplatin; Pirarubicin 20 mg; Lipiodol 10 ml; Gelatin Sponge"


def test_order_does_not_matter_and_key_ignores_doses():
    a = Plan.from_agents(["Lipiodol", "Epirubicin", "Lobaplatin"])
    b = Plan.from_agents(["Lobaplatin", "epirubicin", "Lipiodol", "EPI"])  # alias duplicate merges
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = Plan.from_agents(["Lobaplatin", "Epirubicin", "Lipiodol"], doses={"Epirubicin": 30})
    assert c != a and c.key() == a.key()


@pytest.mark.parametrize(
    "agents, protocol",
    [
        (["Epirubicin", "Lipiodol"], Protocol.CTACE),
        (["Doxorubicin", "LC Beads"], Protocol.DEB_TACE),
        (["Raltitrexed", "Epirubicin", "DC Beads", "Gelatin Sponge"], Protocol.DEB_TACE),
        (["Gelatin Sponge"], Protocol.BLAND),
        (["Lipiodol", "Gelatin Sponge"], Protocol.BLAND),
    ],
)
def test_protocol_inference(agents, protocol):
    assert infer_protocol(agents) is protocol
    assert Plan.from_agents(agents).protocol is protocol


def test_explicit_protocol_name_is_case_insensitive():
    assert Plan.from_agents(["Epirubicin", "Lipiodol"], protocol="ctace").protocol is Protocol.CTACE
    with pytest.raises(PlanValidationError, match="Unknown protocol 'TAE'; choose one of 'cTACE'"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], protocol="TAE")


# ------------------------------------------------------------------------------------------------ rules
def test_rule1_catches_nedaplatin():
    with pytest.raises(PlanValidationError, match=r"Rule 1 \(at most one platinum agent\): Cisplatin and Nedaplatin "
                                                  r"are both platinum agents") as info:
        Plan.from_agents(["Nedaplatin", "Cisplatin", "Lipiodol"])
    assert info.value.rule.startswith("R1")


def test_rule1_three_platinums():
    with pytest.raises(PlanValidationError, match="Lobaplatin, Oxaliplatin and Cisplatin are all platinum"):
        Plan.from_agents(["Cisplatin", "Oxaliplatin", "Lobaplatin", "Lipiodol"])


def test_rule2_thp_is_pirarubicin():
    with pytest.raises(PlanValidationError, match=r"Rule 2 \(at most one anthracycline\): Epirubicin and Pirarubicin"):
        Plan.from_agents(["THP", "Epirubicin", "Lipiodol"])
    # THP and Pirarubicin are one agent, so naming both is not a conflict
    assert Plan.from_agents(["THP", "Pirarubicin", "Lipiodol"]).drugs == ("Pirarubicin",)


@pytest.mark.parametrize("pair", [["Absolute Alcohol", "PVA"], ["PVA", "Gelatin Sponge"]])
def test_rule3_embolic_conflicts(pair):
    with pytest.raises(PlanValidationError, match=r"Rule 3 \(embolic conflicts\): .* may not be combined") as info:
        Plan.from_agents(pair)
    assert info.value.rule.startswith("R3")
    assert all(name in str(info.value) for name in pair)


def test_rule3_nbca_has_no_conflicts():
    assert Plan.from_agents(["NBCA", "PVA"]).protocol is Protocol.BLAND


def test_rule4_protocols():
    with pytest.raises(PlanValidationError, match=r"Rule 4 \(protocol cTACE.*requires Lipiodol"):
        Plan.from_agents(["Epirubicin", "Gelatin Sponge"], protocol="cTACE")
    with pytest.raises(PlanValidationError, match=r"Rule 4 \(protocol DEB-TACE.*Lipiodol is not part of DEB-TACE"):
        Plan.from_agents(["Doxorubicin", "DC Beads", "Lipiodol"])
    with pytest.raises(PlanValidationError, match=r"Rule 4 \(protocol DEB-TACE.*requires an anthracycline drug"):
        Plan.from_agents(["Raltitrexed", "LC Beads"])
    with pytest.raises(PlanValidationError, match=r"Rule 4 \(protocol bland.*needs no drugs"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], protocol="bland")
    with pytest.raises(PlanValidationError, match=r"Rule 4 \(protocol cTACE.*needs at least 1 drug"):
        Plan.from_agents(["Lipiodol"], protocol="cTACE")
    with pytest.raises(PlanValidationError, match=r"cannot infer the protocol of Raltitrexed and Gelatin Sponge"):
        Plan.from_agents(["Raltitrexed", "Gelatin Sponge"])


def test_rule5_needs_an_embolic():
    with pytest.raises(PlanValidationError, match=r"Rule 5 \(at least one embolic agent\): the plan Raltitrexed and "
                                                  r"Epirubicin has no embolic agent"):
        Plan.from_agents(["Epirubicin", "Raltitrexed"])


def test_dose_rules():
    with pytest.raises(PlanValidationError, match=r"Epirubicin 500 mg is implausible: the typical range is 10-50 mg"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": "500 mg"})
    # 3x the maximum is still accepted
    assert Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": 150}).doses["Epirubicin"].value == 150
    with pytest.raises(PlanValidationError, match="Epirubicin is dosed in mg, got 5 ml"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": "5 ml"})
    with pytest.raises(PlanValidationError, match="Gelatin Sponge takes no dose"):
        Plan.from_agents(["Gelatin Sponge"], doses={"Gelfoam": "2 ml"})
    with pytest.raises(PlanValidationError, match="positive finite"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": -5})
    with pytest.raises(PlanValidationError, match="not in the plan"):
        Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Cisplatin": 50})
    assert Dose(5, "mL") == Dose(5.0, "ml") and Dose(1, "vials").unit == "vial"


def test_three_drug_regimen_is_valid():
    """Search horizons do not cap administered plans: the HCC-TACE-Seg regimen has three drugs."""
    plan = Plan.from_agents(["Cisplatin", "Doxorubicin", "Mitomycin", "Lipiodol"])
    assert len(plan.drugs) == 3 and plan.protocol is Protocol.CTACE


# ------------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "text, agents",
    [
        ("Lobaplatin; Epirubicin; Lipiodol", ("Lobaplatin", "Epirubicin", "Lipiodol")),
        ("Lobaplatin, Epirubicin, Lipiodol", ("Lobaplatin", "Epirubicin", "Lipiodol")),
        ("THP + LC Beads", ("Pirarubicin", "Drug-eluting Beads")),
        ("cisplatin and ADM and MMC and lipiodol", ("Cisplatin", "Doxorubicin", "Mitomycin", "Lipiodol")),
        ("Gelfoam", ("Gelatin Sponge",)),
        ("Raltitrexed;Lobaplatin;Lipiodol;", ("Raltitrexed", "Lobaplatin", "Lipiodol")),
    ],
)
def test_parse_keywords(text, agents):
    assert Plan.parse(text).agents == agents


def test_parse_keywords_with_doses_before_or_after():
    plan = Plan.parse("50 mg Lobaplatin; Epirubicin 30mg; Lipiodol 10 mL")
    assert plan.doses == {"Lobaplatin": Dose(50, "mg"), "Epirubicin": Dose(30, "mg"), "Lipiodol": Dose(10, "ml")}


def test_parse_keyword_typo_suggests():
    with pytest.raises(UnknownAgentError, match=r"Unknown agent 'Epirubicn'.*Did you mean 'Epirubicin'"):
        Plan.parse("Lobaplatin; Epirubicn; Lipiodol")
    with pytest.raises(UnknownAgentError, match=r"Unknown agent 'Lipidol'.*Did you mean 'Lipiodol'"):
        Plan.parse("THP + Lipidol")


def test_parse_errors():
    with pytest.raises(PlanValidationError, match="the text is empty"):
        Plan.parse("   ")
    with pytest.raises(PlanValidationError, match="No Action Base agent was found in the note"):
        Plan.parse("The patient tolerated the procedure well and was discharged on day three.")
    with pytest.raises(PlanValidationError, match="dose range"):
        Plan.parse("Lobaplatin 20-50 mg; Lipiodol")


def test_parse_reference_style_note():
    plan = Plan.parse(NOTE_RALTITREXED)
    assert plan.agents == ("Raltitrexed", "Epirubicin", "Lipiodol", "Gelatin Sponge")
    assert plan.protocol is Protocol.CTACE
    # "5 ml" goes to Lipiodol (the only ml agent), "5 mg" to Epirubicin; the particle size is not a dose
    assert plan.doses == {"Raltitrexed": Dose(4, "mg"), "Epirubicin": Dose(5, "mg"), "Lipiodol": Dose(5, "ml")}


def test_parse_note_sums_doses_and_maps_brand():
    plan = Plan.parse(NOTE_LOBAPLATIN)
    assert plan.agents == ("Lobaplatin", "Idarubicin", "Lipiodol", "PVA")  # Adasone → Idarubicin
    # 20 mg infused + 30 mg in the emulsion; "10 mg" sits right before Adasone, not after Lobaplatin
    assert plan.doses == {"Lobaplatin": Dose(50, "mg"), "Idarubicin": Dose(10, "mg"), "Lipiodol": Dose(10, "ml")}


def test_parse_deb_note():
    plan = Plan.parse(NOTE_DEB)
    # "gelfoam was not required": negations are not understood, so Gelatin Sponge is (wrongly) listed. Documented.
    assert plan.agents == ("Doxorubicin", "Gelatin Sponge", "Drug-eluting Beads")
    assert plan.protocol is Protocol.DEB_TACE
    assert plan.doses == {"Doxorubicin": Dose(75, "mg"), "Drug-eluting Beads": Dose(1, "vial")}


def test_parse_note_alcohol_and_unattributed_numbers():
    plan = Plan.parse(NOTE_ALCOHOL)
    assert plan.agents == ("Oxaliplatin", "Pirarubicin", "Lipiodol", "Absolute Alcohol")
    # "30 minutes" is not a dose; the saline "5 ml" has no ml agent in its clause and is not attributed
    assert plan.doses == {"Oxaliplatin": Dose(150, "mg"), "Pirarubicin": Dose(20, "mg"),
                          "Lipiodol": Dose(8, "ml"), "Absolute Alcohol": Dose(3, "ml")}


def test_parse_note_polyvinyl_alcohol_is_not_ethanol():
    plan = Plan.parse("Embolization was completed with polyvinyl alcohol particles after the Epirubicin "
                      "Lipiodol emulsion was injected")
    assert plan.agents == ("Epirubicin", "Lipiodol", "PVA")


def test_parse_note_rule_violation_is_reported():
    with pytest.raises(PlanValidationError, match="Cisplatin and Nedaplatin are both platinum"):
        Plan.parse("Nedaplatin 40 mg was infused; cisplatin 50 mg was emulsified with 10 ml Lipiodol")


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("text", [NOTE_RALTITREXED, NOTE_LOBAPLATIN, NOTE_DEB, NOTE_ALCOHOL,
                                  "Lobaplatin 50 mg; Epirubicin 30 mg; Lipiodol 10 ml", "NBCA 1.5 ml; PVA"])
def test_canonical_round_trip(text):
    plan = Plan.parse(text)
    again = Plan.parse(str(plan))
    assert again == plan
    assert str(again) == str(plan)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_to_dict_shape():
    plan = Plan.parse("Lobaplatin 50 mg; Lipiodol")
    assert plan.to_dict() == {"agents": ["Lobaplatin", "Lipiodol"], "protocol": "cTACE",
                              "doses": {"Lobaplatin": {"value": 50.0, "unit": "mg"}}}
    with pytest.raises(PlanValidationError, match="needs an 'agents' list"):
        Plan.from_dict({"agent": ["Lipiodol"]})


# ------------------------------------------------------------------------------------------------ enumeration
def test_enumerate_plans_counts_and_validity():
    plans = enumerate_plans()
    assert len(plans) == 443
    assert len(set(plans)) == len(plans)
    assert len({p.key() for p in plans}) == len(plans)
    by_protocol = {p: sum(pl.protocol is p for pl in plans) for p in Protocol}
    assert by_protocol == {Protocol.CTACE: 270, Protocol.DEB_TACE: 160, Protocol.BLAND: 13}
    for p in plans:
        assert len(p.drugs) <= 2 and 1 <= len(p.embolics) <= 2
        assert p.validate() is p
        assert Plan.parse(str(p)) == p  # the protocol is implied by the agents
    assert plans == enumerate_plans()  # deterministic order, so plan_index is stable


def test_enumerate_plans_options():
    assert len(enumerate_plans(protocols=["bland"])) == 13
    small = enumerate_plans(max_drugs=1, max_embolics=1)
    # cTACE: 11 drugs x Lipiodol; DEB-TACE: 4 anthracyclines x beads; bland: 5 single embolics
    assert len(small) == 11 + 4 + 5
    assert all(p.protocol is not Protocol.BLAND for p in enumerate_plans(protocols=["cTACE", "DEB-TACE"]))
    with pytest.raises(PlanValidationError, match="max_embolics >= 1"):
        enumerate_plans(max_embolics=0)


# ------------------------------------------------------------------------------------------------ metrics
def test_keyword_metrics_hand_examples():
    ref = Plan.parse("Raltitrexed; Lobaplatin; Lipiodol; Gelatin Sponge")
    pred = Plan.parse("Lobaplatin; Epirubicin; Lipiodol")
    m = keyword_metrics(pred, ref)
    # overlap {Lobaplatin, Lipiodol}: P = 2/3, R = 2/4, F1 = 4/7, J = 2/5
    assert m == pytest.approx({"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "jaccard": 0.4})
    assert keyword_metrics(ref, ref) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "jaccard": 1.0}
    disjoint = keyword_metrics(Plan.parse("PVA"), ref)
    assert disjoint == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "jaccard": 0.0}
    # aliases and doses do not change the keyword set
    assert keyword_metrics(Plan.parse("THP 20 mg; lipiodol"), Plan.parse("Pirarubicin; Lipiodol"))["f1"] == 1.0
