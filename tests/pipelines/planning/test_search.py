"""Plan search on tiny random world models: rules enforced, batching and caching, determinism, ranking."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ConfigError, PlanValidationError
from models.plan import Plan, Protocol
from pipelines.planning.scoring import PlanScorer, plan_id
from pipelines.planning.search import beam_search, exhaustive_search, plan_case, ranked
from pipelines.worldmodel.weights import load_world_model

from planning_helpers import ViableVolumeSurvival, make_case, write_tiny_weights

FAST = {"samples": 2, "steps": 2}
DRUGS = ["Epirubicin", "Lobaplatin", "Oxaliplatin", "Raltitrexed"]
EMBOLICS = ["Lipiodol", "Gelatin Sponge", "PVA"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return load_world_model(write_tiny_weights(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def case():
    return make_case()


def scorer(world, case, **kw):
    return PlanScorer(case=case, world=world, survival=ViableVolumeSurvival(), **{**FAST, **kw})


def test_scorer_batches_new_plans_in_one_call_and_caches(world, case):
    s = scorer(world, case)
    plans = [Plan.parse("Epirubicin; Lipiodol"), Plan.parse("Gelatin Sponge"), Plan.parse("Epirubicin; Lipiodol")]
    scores = s.score(plans)
    assert s.simulate_calls == 1 and s.simulated_samples == 2 * 2
    assert scores[0] is scores[2] and len(s.scores) == 2
    s.score([Plan.parse("Gelatin Sponge")])  # already scored: no new simulation
    assert s.simulate_calls == 1
    for sc in scores:
        assert sc.log_risk.shape == (2,) and np.isclose(sc.risk_mean, sc.log_risk.mean())
        assert sc.survival_mean.shape == sc.survival_times.shape


def test_a_plans_score_does_not_depend_on_its_batch(world, case):
    """Same seed → same noise for every plan, so scoring alone or with others gives the same risks."""
    alone = scorer(world, case).score([Plan.parse("Lobaplatin; Lipiodol")])[0]
    together = scorer(world, case).score([Plan.parse("PVA"), Plan.parse("Lobaplatin; Lipiodol")])[1]
    np.testing.assert_allclose(alone.log_risk, together.log_risk, rtol=1e-5, atol=1e-6)


def test_beam_search_enforces_rules_and_horizons(world, case):
    s = scorer(world, case)
    # 8 beams hold all 7 plans of the first two steps (3 bland, 4 single drugs), so every step has unseen candidates
    # whatever the tiny random model's scores (with 3 beams the bland plans can fill the beam and end the drug phase)
    scores = beam_search(s, DRUGS, EMBOLICS, ["cTACE", "bland"], beams=8, drug_horizon=2, embolic_horizon=2)
    assert scores == ranked(scores) and len({x.id for x in scores}) == len(scores)
    for x in scores:
        x.plan.validate()  # every scored plan is admissible
        assert len(x.plan.drugs) <= 2 and len(x.plan.embolics) <= 2
        assert not {"Lobaplatin", "Oxaliplatin"} <= set(x.plan.drugs)  # R1: one platinum
        assert not {"PVA", "Gelatin Sponge"} <= set(x.plan.embolics)  # R3
        assert x.plan.protocol in (Protocol.CTACE, Protocol.BLAND)
    # drug phase (2 steps) + embolic phase (1 step) + bland seeds: one batched simulate call per step
    assert s.simulate_calls == 4
    assert any(len(x.plan.drugs) == 2 for x in scores) and any(x.plan.protocol == Protocol.BLAND for x in scores)


def test_beam_search_is_deterministic_and_ranks_by_mean_risk(world, case):
    a = beam_search(scorer(world, case), DRUGS, EMBOLICS, ["cTACE"], beams=2)
    b = beam_search(scorer(world, case), DRUGS, EMBOLICS, ["cTACE"], beams=2)
    assert [x.id for x in a] == [x.id for x in b]
    np.testing.assert_array_equal([x.risk_mean for x in a], [x.risk_mean for x in b])
    assert all(a[i].risk_mean <= a[i + 1].risk_mean for i in range(len(a) - 1))


def test_beam_search_best_equals_exhaustive_best_when_beams_cover_everything(world, case):
    """With enough beams the beam search scores every reachable plan, so it finds the exhaustive optimum."""
    drugs, embolics = ["Epirubicin", "Lobaplatin"], ["Lipiodol", "Gelatin Sponge"]
    beam = beam_search(scorer(world, case), drugs, embolics, ["cTACE"], beams=50)
    every = [p for p in (Plan.parse(t) for t in ("Epirubicin; Lipiodol", "Lobaplatin; Lipiodol",
                                                 "Epirubicin; Lobaplatin; Lipiodol",
                                                 "Epirubicin; Lipiodol; Gelatin Sponge",
                                                 "Lobaplatin; Lipiodol; Gelatin Sponge",
                                                 "Epirubicin; Lobaplatin; Lipiodol; Gelatin Sponge"))]
    exhaustive = exhaustive_search(scorer(world, case), every)
    assert {x.id for x in beam} == {x.id for x in exhaustive}
    assert beam[0].id == exhaustive[0].id


def test_beam_search_errors(world, case):
    with pytest.raises(ConfigError):
        beam_search(scorer(world, case), DRUGS, EMBOLICS, ["cTACE"], beams=0)
    with pytest.raises(PlanValidationError, match="No admissible plan"):
        beam_search(scorer(world, case), [], ["Lipiodol"], ["cTACE"])  # cTACE needs a drug


class _FixedProposal:
    drugs, embolics, protocols = ("Epirubicin", "Raltitrexed"), ("Lipiodol", "Gelatin Sponge"), (Protocol.CTACE,)

    def candidate_plans(self, max_drugs=2, max_embolics=2):
        return [Plan.parse("Epirubicin; Lipiodol"), Plan.parse("Raltitrexed; Lipiodol; Gelatin Sponge")]

    def to_dict(self):
        return {"drugs": list(self.drugs)}


def test_plan_case_modes_and_result(world, case):
    seen = []
    result = plan_case(case, world, ViableVolumeSurvival(), _FixedProposal(), mode="beam", beams=2,
                       progress=lambda d, t, m: seen.append((d, t)), **FAST)
    assert result.best() is result.ranked[0] and result.settings["mode"] == "beam"
    assert seen and seen[-1] == (1000, 1000) and all(d <= t for d, t in seen)
    assert result.denoiser_passes > 0 and result.simulated_samples == len(result.ranked) * 2
    assert set(result.simulations) == {x.id for x in result.ranked}
    table = result.table()
    assert list(table["rank"]) == list(range(1, len(result.ranked) + 1))
    d = result.to_dict()
    assert d["ranked"][0]["plan"] == result.best().plan.canonical() and "Research use only" in d["notice"]
    ex = plan_case(case, world, ViableVolumeSurvival(), _FixedProposal(), mode="exhaustive", **FAST)
    assert {x.id for x in ex.ranked} == {plan_id(p) for p in _FixedProposal().candidate_plans()}
    given = plan_case(case, world, ViableVolumeSurvival(), candidates=["PVA", "Epirubicin; Lipiodol"], **FAST)
    assert given.settings["mode"] == "exhaustive" and given.proposal is None and len(given.ranked) == 2
    with pytest.raises(ConfigError, match="search mode"):
        plan_case(case, world, ViableVolumeSurvival(), _FixedProposal(), mode="greedy")


def test_write_planning_files_and_report(world, case, tmp_path):
    import json

    import pandas as pd

    from models.errors import ConfigError as _ConfigError
    from pipelines.caseio.nifti import read_nifti
    from pipelines.planning.files import DISCLAIMER, planning_table_text, write_planning

    result = plan_case(case, world, ViableVolumeSurvival(), candidates=["PVA", "Epirubicin; Lipiodol",
                                                                        "Lobaplatin; Lipiodol"], **FAST)
    out = write_planning(result, tmp_path / "plan", write_top=2, info={"case": "phantom"})
    data = json.loads((out / "planning.json").read_text())
    assert [r["plan"] for r in data["ranked"]] == [s.plan.canonical() for s in result.ranked]
    assert len(data["ranked"][0]["files"]) == 2 and "files" not in data["ranked"][2]
    crop = read_nifti(out / data["ranked"][0]["files"][1]["crop_ct"])
    np.testing.assert_allclose(crop.array, result.simulation(result.ranked[0]).crops_hu[1], atol=1e-3)
    table = pd.read_csv(out / "plans.csv")
    assert list(table["plan"]) == [s.plan.canonical() for s in result.ranked]
    report = (out / "report.html").read_text()
    assert "Research use only" in report and report.count("data:image/png;base64,") == 1 + 1 + 3
    assert (out / "survival.png").stat().st_size > 1000
    text = planning_table_text(result)
    assert result.ranked[0].plan.canonical() in text and DISCLAIMER in text
    with pytest.raises(_ConfigError, match="not empty"):
        write_planning(result, out)
