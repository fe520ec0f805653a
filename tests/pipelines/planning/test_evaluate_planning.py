"""Planning evaluation: metrics by hand, the pre-treatment Cox baseline, and `mewm eval planning` end to end on a
tiny virtual cohort with tiny world weights and the embedded Cox survival model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from models.plan import Plan
from pipelines.cohort.plan_space import cohort_plan_space
from pipelines.manifest import ManifestRecord
from pipelines.planning.baselines import PreTreatmentCox, nearest_candidate
from pipelines.planning.evaluate import by_crop, pick_metrics, summarise

from planning_helpers import write_tiny_weights

SPACE = cohort_plan_space()


def test_pick_metrics_by_hand():
    best = Plan.parse("Raltitrexed; Lobaplatin; Lipiodol; Gelatin Sponge")
    pick = Plan.parse("Lobaplatin; Lipiodol; PVA")
    survival = {p.canonical(): 20.0 for p in SPACE}
    survival[best.canonical()] = 30.0
    survival[pick.canonical()] = 25.0
    m = pick_metrics(pick, [pick, best], best, survival, SPACE)
    # P = {Lobaplatin, Lipiodol, PVA}, R = {Raltitrexed, Lobaplatin, Lipiodol, Gelatin Sponge}: 2 shared
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert m["jaccard"] == pytest.approx(2 / 5)
    assert m["f1_no_lipiodol"] == pytest.approx(2 * 1 / (2 + 3))  # {Lobaplatin, PVA} vs 3 others: 1 shared
    assert m["regret_months"] == pytest.approx(5.0) and m["exact"] == 0.0 and m["top3_hit"] == 1.0
    assert pick_metrics(best, None, best, survival, SPACE)["top3_hit"] is None


def test_nearest_candidate_and_summary():
    outside = Plan.parse("Lobaplatin; Epirubicin; Lipiodol")  # not in the catalogue
    near = nearest_candidate(outside, SPACE)
    assert near in SPACE and {"Lobaplatin", "Epirubicin"} & set(near.key())
    assert nearest_candidate(SPACE[3], SPACE) == SPACE[3]
    rows = [{"methods": {"random": {"precision": 1, "recall": 1, "f1": f, "jaccard": 1, "f1_no_lipiodol": 1,
                                    "regret_months": r, "exact": 0, "top3_hit": None}}}
            for f, r in ((0.5, 1.0), (1.0, 3.0))]
    s = summarise(rows)["random"]
    assert s["n"] == 2 and s["f1"]["mean"] == pytest.approx(0.75) and s["top3_hit"] is None
    assert s["regret_months"]["median"] == pytest.approx(2.0)
    lo, hi = s["f1"]["ci95"]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0
    for row, flag in zip(rows, (False, True)):
        row["enlarged_crop"] = flag
    groups = by_crop(rows + [{"methods": rows[0]["methods"]}])  # a row from before the flag existed: in neither
    assert groups["training_crop"]["patients"] == groups["enlarged_crop"]["patients"] == 1
    assert groups["enlarged_crop"]["methods"]["random"]["f1"]["mean"] == pytest.approx(1.0)


def _train_records(n: int = 40) -> list[ManifestRecord]:
    """Observational records where Child-Pugh B patients do worse with a platinum (the baseline must learn it)."""
    rng = np.random.default_rng(0)
    plans = [Plan.parse("Epirubicin; Lipiodol"), Plan.parse("Lobaplatin; Epirubicin; Lipiodol; Gelatin Sponge")]
    out = []
    for i in range(n):
        cp = int(rng.integers(5, 9))
        plan = plans[i % 2]
        hazard = 0.03 * np.exp(0.8 * (cp - 5) * ("Lobaplatin" in plan.key()))
        out.append(ManifestRecord(case_id=f"T{i}", ct="x.nii.gz", plan=plan.canonical(),
                                  time_months=float(min(rng.exponential(1 / hazard), 60.0)), event=True,
                                  covariates={"age": 60 + i % 10, "child_pugh_score": cp, "afp": 100.0,
                                              "max_diameter_mm": 40.0 + i, "n_lesions": 1}))
    return out


def test_pre_treatment_cox_ranks_candidates_per_patient():
    cox = PreTreatmentCox().fit(_train_records())
    candidates = [Plan.parse("Epirubicin; Lipiodol"), Plan.parse("Lobaplatin; Epirubicin; Lipiodol; Gelatin Sponge")]
    frail = ManifestRecord(case_id="F", ct="x", covariates={"child_pugh_score": 8, "max_diameter_mm": 50.0})
    ranked = cox.rank(frail, candidates)
    assert ranked[0] == candidates[0]  # no platinum for a Child-Pugh B liver
    assert set(map(Plan.canonical, ranked)) == set(map(Plan.canonical, candidates))


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from pipelines.cohort.generate import generate_cohort

    root = tmp_path_factory.mktemp("evalplan")
    cohort = root / "heldout"
    generate_cohort(n=3, seed=5, out=cohort, size=(48, 48, 32), progress=False)
    train = root / "train.csv"
    fields = ["case_id", "ct", "plan", "time_months", "event", "age", "child_pugh_score", "afp", "max_diameter_mm",
              "n_lesions"]
    with train.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in _train_records():
            w.writerow({"case_id": r.case_id, "ct": r.ct, "plan": r.plan, "time_months": r.time_months,
                        "event": int(r.event), **r.covariates})
    return cohort, train, write_tiny_weights(root / "weights")


def test_eval_planning_cli_end_to_end_and_resume(tiny_setup, tmp_path, capsys):
    from pipelines.cli import main

    cohort, train, weights = tiny_setup
    out = tmp_path / "report.json"
    argv = ["eval", "planning", "--cohort", str(cohort), "--train-manifest", str(train), "--weights", str(weights),
            "--samples", "1", "--steps", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    log = out.with_suffix(".patients.jsonl").read_text().splitlines()
    assert len(log) == 3 and report["patients_scored"] + len(report["patients_skipped"]) == 3
    assert report["patients_scored"] >= 1
    for method in ("world_model", "random", "guideline", "observed", "cox_pretreatment"):
        s = report["methods"][method]
        assert s["n"] == report["patients_scored"] and 0.0 <= s["f1"]["mean"] <= 1.0
        assert s["regret_months"]["mean"] >= 0.0
    assert set(report["metrics"]) == {"world_model_f1", "f1_margin_over_guideline", "f1_margin_over_random"}
    crops = report["by_crop"]  # every scored patient falls in one crop group, whose summary is its own
    assert crops["training_crop"]["patients"] + crops["enlarged_crop"]["patients"] == report["patients_scored"]
    for group in crops.values():
        if group["patients"]:
            assert group["methods"]["world_model"]["n"] == group["patients"]
    # a second run reuses every per-patient row (same settings) and gives the same report
    assert main(argv) == 0
    again = json.loads(out.read_text())
    assert len(out.with_suffix(".patients.jsonl").read_text().splitlines()) == 3
    assert again["methods"] == report["methods"]
    capsys.readouterr()
