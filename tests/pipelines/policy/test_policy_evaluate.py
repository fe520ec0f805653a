"""`evaluate_policy` / `mewm eval policy` on a tiny virtual cohort with its oracle."""

from __future__ import annotations

import json

import pytest

from models.plan import Plan
from pipelines.cli import main
from pipelines.policy import Proposal
from pipelines.policy.evaluate import evaluate_policy


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from pipelines.cohort.generate import generate_cohort

    out = tmp_path_factory.mktemp("policy_cohort") / "c"
    generate_cohort(n=3, seed=11, out=out, size=(48, 40, 24), progress=False)
    return out


class OraclePlanPolicy:
    """A policy that proposes exactly the oracle's best plan (cheats on purpose: the scorer must say so)."""

    name = "cheat"

    def __init__(self, cohort):
        from pipelines.cohort.plan_space import read_plan_space
        from pipelines.planning.evaluate import read_oracle

        oracle, space = read_oracle(cohort), read_plan_space(cohort)
        self.best = {cid: max(space, key=lambda p: surv[p.canonical()]) for cid, surv in oracle.items()}

    def propose(self, case) -> Proposal:
        best: Plan = self.best[case.case_id]
        return Proposal(drugs=best.drugs, embolics=best.embolics, protocols=(best.protocol,), preferred=best,
                        rationale="oracle", backend="cheat", model="oracle")


def test_guideline_report_is_consistent(cohort, tmp_path):
    out = tmp_path / "r.json"
    report = evaluate_policy(cohort, patients=2, out=out, progress=False)
    assert json.loads(out.read_text())["scored"] == report["scored"] == 2 and not report["failed"]
    s = report["summary"]
    assert 0 <= s["preferred"]["f1"] <= 1 and s["preferred"]["regret_months"] >= 0
    assert 0 <= s["candidates"]["best_covered"] <= 1 and s["candidates"]["mean_count"] >= 1
    for row in report["per_patient"]:
        assert row["n_candidates_in_space"] <= row["n_candidates"]
        if row["best_covered"]:
            assert row["best_candidate_regret_months"] == pytest.approx(0.0)


def test_a_perfect_policy_scores_perfectly(cohort):
    cheat = OraclePlanPolicy(cohort)
    s = evaluate_policy(cohort, cheat, progress=False)["summary"]
    assert s["preferred"]["f1"] == 1.0 and s["preferred"]["exact"] == 1.0
    assert s["preferred"]["regret_months"] == pytest.approx(0.0)
    # the 3-drug catalogue regimen is beyond the 2-drug search horizon, so it cannot be a candidate
    reachable = [len(b.drugs) <= 2 for b in cheat.best.values()]
    assert s["candidates"]["best_covered"] == pytest.approx(sum(reachable) / len(reachable))
    assert s["random_plan"]["regret_months"] > 0


def test_cli(cohort, capsys):
    assert main(["eval", "policy", "--cohort", str(cohort), "--patients", "1", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["scored"] == 1
