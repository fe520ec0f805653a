"""The `guideline` policy and the `Proposal` contract (pipelines/policy/base.py, guideline.py)."""

from __future__ import annotations

import json

import pytest
from policy_helpers import GOOD_LIVER, make_case

from models.errors import ConfigError, PolicyError, UnknownAgentError
from models.plan import Plan, Protocol, enumerate_plans
from pipelines.config import Config, PolicyConfig
from pipelines.policy import Proposal, load_policy
from pipelines.policy.guideline import GuidelinePolicy, case_features


def _propose(**kw) -> Proposal:
    return GuidelinePolicy().propose(make_case(**kw))


def _check_candidates(p: Proposal) -> list[Plan]:
    plans = p.candidate_plans()
    assert plans, "a proposal never yields an empty candidate list"
    allowed = set(p.drugs) | set(p.embolics)
    for plan in plans:
        assert set(plan.agents) <= allowed
        assert plan.protocol in p.protocols
        plan.validate()
    assert p.preferred is not None and p.preferred in plans
    return plans


# ------------------------------------------------------------------------------------------------ rules
def test_good_liver_small_burden_is_single_anthracycline_ctace():
    p = _propose(tumour_radius_mm=10.0, covariates=GOOD_LIVER)
    assert p.backend == "guideline" and p.model == "guideline rules v1" and p.raw_reply is None
    assert p.protocols == (Protocol.CTACE,)
    assert set(p.drugs) == {"Epirubicin", "Doxorubicin"}
    assert set(p.embolics) == {"Lipiodol", "Gelatin Sponge"}
    assert p.preferred == Plan.from_agents(["Epirubicin", "Lipiodol", "Gelatin Sponge"])
    assert "G3" in p.rationale and "G8" in p.rationale and "Child-Pugh A5" in p.rationale
    plans = _check_candidates(p)
    assert all(len(plan.drugs) == 1 for plan in plans)  # two anthracyclines never combine (rule R2)


def test_large_burden_good_liver_adds_platinum_beads_and_pva():
    p = _propose(tumour_radius_mm=32.0, covariates=GOOD_LIVER)
    assert {"Cisplatin", "Lobaplatin", "Mitomycin"} <= set(p.drugs)
    assert {"Drug-eluting Beads", "PVA"} <= set(p.embolics)
    assert p.protocols == (Protocol.CTACE, Protocol.DEB_TACE)
    assert p.details["burden"] == "large" and {"G4", "G6", "G7"} <= set(p.details["rules_fired"])
    assert p.details["features"]["largest_diameter_mm"] >= 50
    plans = _check_candidates(p)
    assert any(set(pl.drugs) == {"Cisplatin", "Epirubicin"} for pl in plans)
    assert not any({"Cisplatin", "Lobaplatin"} <= set(pl.drugs) for pl in plans)  # rule R1
    assert p.preferred.drugs == ("Cisplatin", "Epirubicin")


def test_child_pugh_b_no_combination_deb_and_bland_allowed():
    cov = {**GOOD_LIVER, "child_pugh": "B", "child_pugh_score": 8}
    p = _propose(tumour_radius_mm=32.0, covariates=cov)
    assert not any(d in p.drugs for d in ("Cisplatin", "Lobaplatin", "Mitomycin"))
    assert p.protocols == (Protocol.CTACE, Protocol.DEB_TACE, Protocol.BLAND)
    assert "PVA" not in p.embolics
    plans = _check_candidates(p)
    assert all(len(pl.drugs) <= 1 for pl in plans)
    assert any(pl.protocol is Protocol.BLAND for pl in plans)
    assert p.preferred.protocol is Protocol.DEB_TACE and "G2" in p.rationale


@pytest.mark.parametrize("cov", [{"child_pugh": "C"}, {"bilirubin": 60.0}, {"child_pugh_score": 11}, {"ecog": 3}])
def test_poor_liver_or_performance_is_bland_only(cov):
    p = _propose(covariates={**GOOD_LIVER, **cov} if "child_pugh" in cov else {**GOOD_LIVER, **cov, "child_pugh": None})
    assert p.protocols == (Protocol.BLAND,) and p.drugs == ()
    assert p.preferred == Plan.from_agents(["Gelatin Sponge"], protocol="bland")
    assert "G1" in p.rationale
    assert p.candidate_plans() == [p.preferred]


def test_vascular_invasion_drops_permanent_embolics():
    p = _propose(tumour_radius_mm=32.0, covariates={**GOOD_LIVER, "vascular_invasion": True, "bclc": "C"})
    assert "PVA" not in p.embolics and "Drug-eluting Beads" not in p.embolics
    assert Protocol.DEB_TACE not in p.protocols and "G9" in p.rationale
    _check_candidates(p)


def test_no_covariates_uses_imaging_only_and_says_so():
    p = _propose(tumour_radius_mm=32.0, covariates=None)
    assert "G0" in p.rationale and "imaging only" in p.rationale
    assert p.details["liver_reserve"] == "unknown"
    assert not {"Cisplatin", "Lobaplatin"} & set(p.drugs)  # no platinum without known liver function
    assert "from the tumour mask" in p.rationale
    _check_candidates(p)


def test_no_mask_falls_back_to_size_covariates_or_says_unknown():
    p = _propose(labels=False, covariates={**GOOD_LIVER, "n_lesions": 1, "max_diameter_mm": 70.0})
    assert p.details["features"]["burden_source"] == "covariates" and p.details["burden"] == "large"
    q = _propose(labels=False, covariates=None)
    assert "tumour burden unknown" in q.rationale and q.details["burden"] == "unknown"
    _check_candidates(q)


def test_same_case_same_proposal():
    a, b = _propose(covariates=GOOD_LIVER), _propose(covariates=GOOD_LIVER)
    assert a == b and a.rationale == b.rationale
    assert [pl.key() for pl in a.candidate_plans()] == [pl.key() for pl in b.candidate_plans()]


@pytest.mark.parametrize("cov, word", [({"child_pugh": "D"}, "Child-Pugh"), ({"bilirubin": -3}, "bilirubin"),
                                       ({"ecog": 7}, "ecog"), ({"vascular_invasion": "maybe"}, "vascular")])
def test_implausible_covariates_are_typed_errors(cov, word):
    with pytest.raises(PolicyError, match=word):
        case_features(make_case(covariates=cov))


def test_sample_case_end_to_end():
    from pipelines.samples import load_sample_case

    p = load_policy().propose(load_sample_case("VC00003"))  # Child-Pugh B8 in the sample data
    assert p.details["liver_reserve"] == "reduced"
    _check_candidates(p)
    json.dumps(p.to_dict())


# ------------------------------------------------------------------------------------------------ Proposal
def _proposal(**kw) -> Proposal:
    base = dict(drugs=("Epirubicin",), embolics=("Lipiodol",), protocols=("cTACE",), preferred=None,
                rationale="test", backend="guideline", model="m")
    return Proposal(**{**base, **kw})


def test_proposal_canonicalises_aliases_and_orders():
    p = _proposal(drugs=("THP", "ddp", "Pirarubicin"), embolics=("gelfoam", "iodized oil"),
                  protocols=("bland", "ctace"))
    assert p.drugs == ("Cisplatin", "Pirarubicin")
    assert p.embolics == ("Lipiodol", "Gelatin Sponge")
    assert p.protocols == (Protocol.CTACE, Protocol.BLAND)


def test_candidate_plans_are_enumerate_plans_restricted():
    p = _proposal(drugs=("Cisplatin", "Epirubicin"), embolics=("Lipiodol", "Gelatin Sponge", "PVA"),
                  protocols=("cTACE", "bland"))
    want = [pl for pl in enumerate_plans(protocols=["cTACE", "bland"]) if set(pl.agents) <= set(p.drugs + p.embolics)]
    assert p.candidate_plans() == want
    assert not any({"PVA", "Gelatin Sponge"} <= set(pl.agents) for pl in want)  # rule R3
    assert all(len(pl.drugs) <= 1 for pl in p.candidate_plans(max_drugs=1))


@pytest.mark.parametrize("kw, err, word", [
    (dict(drugs=("Aspirin",)), UnknownAgentError, "Aspirin"),
    (dict(drugs=("Lipiodol",)), PolicyError, "embolic"),
    (dict(embolics=()), PolicyError, "embolic"),
    (dict(protocols=()), PolicyError, "protocol"),
    (dict(rationale="  "), PolicyError, "rationale"),
    (dict(preferred=Plan.from_agents(["Cisplatin", "Lipiodol"])), PolicyError, "Cisplatin"),
    (dict(preferred=Plan.from_agents(["Gelatin Sponge"]), embolics=("Lipiodol", "Gelatin Sponge")), PolicyError,
     "bland"),
])
def test_proposal_rejects_invalid_fields(kw, err, word):
    with pytest.raises(err, match=word):
        _proposal(**kw)


def test_candidate_plans_never_empty():
    p = _proposal(drugs=("Mitomycin",), embolics=("Drug-eluting Beads",), protocols=("DEB-TACE",))
    with pytest.raises(PolicyError, match="No admissible plan"):
        p.candidate_plans()


def test_load_policy_dispatch():
    assert load_policy().name == "guideline"
    assert load_policy(Config()).name == "guideline"
    assert load_policy(PolicyConfig(backend="Guideline")).name == "guideline"
    with pytest.raises(ConfigError, match="guideline, openai, hf"):
        load_policy(PolicyConfig(backend="gpt"))
