"""The properties that make the virtual cohort a fair benchmark, on 300 patients, without rendering volumes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipelines.cohort.assignment import assign_plan, assignment_probabilities
from pipelines.cohort.oracle import expected_survival
from pipelines.cohort.response import DRUG_EFFECTS, plan_response
from pipelines.cohort.survival import rmst


def test_optimal_plan_varies_across_patients(oracle, plan_space):
    counts = Counter(oracle.argmax(axis=1).tolist())
    assert max(counts.values()) <= len(oracle) / 3, counts.most_common(3)
    assert len(counts) >= 5


def test_plans_matter(oracle):
    gap = oracle.max(axis=1) - oracle.min(axis=1)
    assert np.median(gap) >= 6.0
    assert np.all(oracle > 0) and np.all(oracle <= 60.0)


def test_every_plan_is_assigned_and_positive(patients, plan_space):
    rng = np.random.default_rng(0)
    probs = np.array([assignment_probabilities(p, plan_space) for p in patients])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.min() >= 0.25 / len(plan_space) - 1e-12
    assigned = Counter(assign_plan(p, plan_space, rng) for p in patients)
    assert set(assigned) == set(range(len(plan_space)))
    # the generator's own assignment of the same 300 patients (seed 0) also covers the whole plan space
    from pipelines.cohort.simulate import case_seeds, simulate_case

    cohort = [simulate_case(ss, i, plan_space) for i, ss in enumerate(case_seeds(0, len(patients)))]
    assert [c.patient.covariates for c in cohort[:5]] == [p.covariates for p in patients[:5]]
    assert {c.plan_index for c in cohort} == set(range(len(plan_space)))


def test_assignment_is_confounded(patients, plan_space):
    bland = np.array([str(p.protocol) == "bland" for p in plan_space])
    probs = np.array([assignment_probabilities(p, plan_space) for p in patients])
    cp_b = np.array([p.covariates.child_pugh == "B" for p in patients])
    assert cp_b.sum() >= 20
    assert probs[cp_b][:, bland].sum(1).mean() > 2 * probs[~cp_b][:, bland].sum(1).mean()


def test_assignment_rejects_bad_options(patients, plan_space):
    with pytest.raises(ValueError, match="epsilon"):
        assignment_probabilities(patients[0], plan_space, epsilon=0.0)
    with pytest.raises(ValueError, match="temperature"):
        assignment_probabilities(patients[0], plan_space, temperature=0.0)


def _classes(plan) -> str:
    return "+".join(sorted({DRUG_EFFECTS[d][0] for d in plan.drugs})) or "none"


def test_best_drug_classes_are_learnable_from_visible_features(patients, oracle, plan_space):
    """Least squares on covariates + image-visible lesion features beats the majority rate clearly."""
    y = np.array([_classes(plan_space[j]) for j in oracle.argmax(axis=1)])
    X = np.array([list(p.visible_features().values()) for p in patients])
    train, test = slice(0, 200), slice(200, None)
    X = (X - X[train].mean(0)) / X[train].std(0)
    X = np.c_[np.ones(len(X)), X]
    classes = sorted(set(y))
    Y = (y[:, None] == np.array(classes)[None, :]).astype(float)
    W, *_ = np.linalg.lstsq(X[train], Y[train], rcond=None)
    pred = np.array(classes)[(X[test] @ W).argmax(1)]
    majority = Counter(y[test]).most_common(1)[0][1] / len(y[test])
    assert (pred == y[test]).mean() >= majority + 0.15


def test_sensitivities_are_learnable_but_not_trivial(patients):
    """Visible features explain much of each drug-class sensitivity, but hidden noise keeps R² well below 1."""
    X = np.array([list(p.visible_features().values()) for p in patients])
    X = np.c_[np.ones(len(X)), (X - X.mean(0)) / X.std(0)]
    for cls in ("anthracycline", "platinum", "antimetabolite"):
        s = np.array([p.biology.sensitivity[cls] for p in patients])
        logit = np.log(s / (1 - s))
        w, *_ = np.linalg.lstsq(X, logit, rcond=None)
        r2 = 1 - np.var(logit - X @ w) / np.var(logit)
        assert 0.3 < r2 < 0.95, (cls, r2)


def test_oracle_is_exact_rmst_and_works_for_any_plan(patients):
    from models.plan import Plan

    # RMST by quadrature equals the closed form
    eta = 0.3
    t = np.linspace(0, 60, 200001)
    from pipelines.cohort.survival import WEIBULL_SCALE_MONTHS as lam, WEIBULL_SHAPE as k

    s = np.exp(-((t / lam) ** k) * np.exp(eta))
    assert rmst(eta) == pytest.approx(np.trapezoid(s, t), rel=1e-6)
    # a plan outside the catalogue, with doses
    plan = Plan.from_agents(["Nedaplatin", "Idarubicin", "Lipiodol", "NBCA"], doses={"Idarubicin": 10})
    v = expected_survival(patients[0], plan)
    assert 0 < v <= 60


def test_response_depends_on_plan_and_dose(patients):
    from models.plan import Plan

    p = patients[0]
    low = plan_response(p, Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": 10}))
    high = plan_response(p, Plan.from_agents(["Epirubicin", "Lipiodol"], doses={"Epirubicin": 50}))
    bland = plan_response(p, Plan.from_agents(["Gelatin Sponge"]))
    assert high.kill > low.kill > bland.kill
    assert bland.lipiodol_fraction == 0.0 and low.lipiodol_fraction > 0
    assert high.toxicity > low.toxicity


def test_poor_liver_function_makes_aggressive_plans_harmful(patients, plan_space):
    from models.plan import Plan

    aggressive = Plan.from_agents(["Cisplatin", "Doxorubicin", "Mitomycin", "Lipiodol"])
    cp_a = [p for p in patients if p.covariates.child_pugh_score == 5]
    cp_b = [p for p in patients if p.covariates.child_pugh_score >= 8]
    assert cp_a and cp_b
    assert np.mean([plan_response(p, aggressive).harm for p in cp_b]) > 3 * np.mean(
        [plan_response(p, aggressive).harm for p in cp_a])
