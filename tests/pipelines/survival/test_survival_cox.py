"""The cox survival model: Breslow baseline and curves, fit on a tiny cohort, JSON save/load round trip, predict
shapes, imputation flags, errors naming the train command; and the embedded weights' sense of direction."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from models.errors import CheckpointNotFoundError, GeometryMismatchError, ImputationWarning
from models.plan import Plan
from pipelines.case import Covariates
from pipelines.survival.cox import WEIGHTS_FILE, CoxSurvivalModel, fit_cox
from pipelines.survival.data import load_survival_data
from pipelines.survival.model import BreslowBaseline, RiskPrediction, load_survival_model, prediction_from_log_risk

from survival_helpers import TINY_CROP, tiny_cohort, treated_pair

EMBEDDED = Path(__file__).resolve().parents[3] / "models" / "weights" / "survival_cox"
FULL = Covariates(age=60, afp=100.0, albumin=38.0, bilirubin=15.0, child_pugh_score=5, ecog=0,
                  vascular_invasion=False, n_lesions=1, max_diameter_mm=40.0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    data = load_survival_data(tiny_cohort(tmp_path_factory), crop=TINY_CROP, post_labels="true", progress=False)
    model, _ = fit_cox(data)
    return data, model


def test_breslow_baseline_by_hand():
    # times 1 (death), 2 (death), 2 (censored), 3 (death); risks e^0, e^0, e^ln2, e^0
    base = BreslowBaseline.fit(np.log([1.0, 1.0, 2.0, 1.0]), np.array([1.0, 2.0, 2.0, 3.0]),
                               np.array([1, 1, 0, 1]))
    assert base.event_times.tolist() == [1.0, 2.0, 3.0]
    assert base.cumulative_hazard == pytest.approx([1 / 5, 1 / 5 + 1 / 4, 1 / 5 + 1 / 4 + 1])
    assert base.at(np.array([0.5, 1.0, 2.5, 9.0])) == pytest.approx([0.0, 0.2, 0.45, 1.45])
    assert BreslowBaseline.from_dict(base.to_dict()).cumulative_hazard.tolist() == base.cumulative_hazard.tolist()


def test_curves_medians_and_exact_rmst():
    base = BreslowBaseline(np.array([10.0]), np.array([np.log(4.0)]))  # S = 1 until 10, then 1/4 (η = 0)
    pred = prediction_from_log_risk(np.array([0.0, -3.0]), base)
    assert pred.survival.shape == (2, len(pred.times)) and pred.times[0] == 0 and pred.times[-1] == 60
    assert pred.median_months[0] == 10.0 and np.isinf(pred.median_months[1])  # low risk never reaches 0.5
    assert pred.rmst_months[0] == pytest.approx(10 + 50 * 0.25)
    assert pred.rmst_months[1] > pred.rmst_months[0]
    assert json.dumps(pred.to_dict())  # strict-JSON friendly (inf median → null)


def test_fit_predict_shapes_and_sense(fitted):
    data, model = fitted
    d = data.crops(0)
    pre_hu, post_hu = d["pre"] * 100, np.stack([d["post"] * 100] * 3)
    post_labels = np.stack([d["post_labels"], d["pre_labels"], d["post_labels"]])
    pred = model.predict(pre_hu, d["pre_labels"], post_hu, post_labels, data.covariates[0], data.voxel_ml,
                         plan=data.plans[0])
    assert model.uses_plan and isinstance(pred, RiskPrediction) and pred.log_risk.shape == (3,) and pred.survival.shape[0] == 3
    assert pred.log_risk[0] == pytest.approx(pred.log_risk[2]) and pred.imputed == ()
    assert np.all(np.diff(pred.survival, axis=1) <= 1e-12)  # survival curves never rise
    order = np.argsort(pred.log_risk)
    assert np.all(np.diff(pred.rmst_months[order]) <= 1e-9)  # higher risk, shorter RMST
    single = model.predict(pre_hu, d["pre_labels"], post_hu[0], post_labels[0], data.covariates[0], data.voxel_ml,
                           plan=data.plans[0])
    assert single.log_risk.shape == (1,) and single.log_risk[0] == pytest.approx(pred.log_risk[0])
    with pytest.raises(GeometryMismatchError):
        model.predict(pre_hu, d["pre_labels"], post_hu[:, :4], post_labels, None, data.voxel_ml)


def test_save_load_round_trip_is_json_and_identical(fitted, tmp_path):
    data, model = fitted
    model.save(tmp_path / "cox")
    assert sorted(p.name for p in (tmp_path / "cox").iterdir()) == ["config.json", WEIGHTS_FILE]
    loaded = load_survival_model(tmp_path / "cox")
    assert isinstance(loaded, CoxSurvivalModel) and loaded.kind == "cox" and loaded.directory == tmp_path / "cox"
    d = data.crops(1)
    args = (d["pre"], d["pre_labels"], d["post"][None], d["post_labels"][None], data.covariates[1], data.voxel_ml)
    a, b = model.predict(*args, plan=data.plans[1]), loaded.predict(*args, plan=data.plans[1])
    assert a.log_risk == pytest.approx(b.log_risk, abs=1e-12) and np.allclose(a.survival, b.survival)


def test_missing_covariates_are_imputed_and_flagged(fitted):
    data, model = fitted
    d = data.crops(0)
    with pytest.warns(ImputationWarning, match="albumin"):
        pred = model.predict(d["pre"], d["pre_labels"], d["post"], d["post_labels"], Covariates(age=50),
                             data.voxel_ml, plan=data.plans[0])
    assert "albumin" in pred.imputed and "age" not in pred.imputed and "plan_n_drugs" not in pred.imputed
    with pytest.warns(ImputationWarning, match="plan_n_drugs"):  # no plan: its features are imputed, flagged
        pred = model.predict(d["pre"], d["pre_labels"], d["post"], d["post_labels"], data.covariates[0],
                             data.voxel_ml)
    assert set(pred.imputed) == {"plan_n_drugs", "plan_n_embolics", "plan_drugs_x_cp", "plan_embolics_x_cp"}


def test_missing_or_incompatible_weights_name_the_train_command(fitted, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm train survival --kind cox --manifest M --out"):
        load_survival_model(tmp_path / "nothing")
    _, model = fitted
    model.save(tmp_path / "cox")
    (tmp_path / "cox" / WEIGHTS_FILE).write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match="incomplete or incompatible.*mewm train survival"):
        load_survival_model(tmp_path / "cox")
    (tmp_path / "cox" / "config.json").write_text(json.dumps({"kind": "dynamics"}))
    with pytest.raises(CheckpointNotFoundError, match="not a survival model"):
        load_survival_model(tmp_path / "cox")


def test_embedded_cox_weights_rank_shrinkage_below_growth():
    model = load_survival_model(EMBEDDED)
    assert model.kind == "cox" and (EMBEDDED / "MODEL_CARD.md").is_file()
    plan = Plan.parse("Epirubicin; Lipiodol; Gelatin Sponge")
    shrink_pre, shrink_post = treated_pair(viable_radius=2.0, treated=True)
    grow_pre, grow_post = treated_pair(viable_radius=8.0, treated=False)
    hu = np.zeros(shrink_pre.shape, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full covariates and the plan: nothing imputed, no warning
        shrink = model.predict(hu, shrink_pre, hu, shrink_post, FULL, 0.008, plan=plan)
        grow = model.predict(hu, grow_pre, hu, grow_post, FULL, 0.008, plan=plan)
    assert shrink.log_risk[0] < grow.log_risk[0]
    assert shrink.rmst_months[0] > grow.rmst_months[0]
    assert 0 < grow.rmst_months[0] < shrink.rmst_months[0] <= 60
    sicker = Covariates(**{**FULL.to_dict(), "child_pugh_score": 9})
    assert model.predict(hu, shrink_pre, hu, shrink_post, sicker, 0.008, plan=plan).log_risk[0] > shrink.log_risk[0]


def test_embedded_cox_weights_see_the_harm_of_more_agents_in_a_fragile_liver():
    """Same image, Child-Pugh B: two drugs and two embolics cost more than one drug and one embolic."""
    model = load_survival_model(EMBEDDED)
    pre, post = treated_pair(viable_radius=2.0, treated=True)
    hu = np.zeros(pre.shape, np.float32)
    sicker = Covariates(**{**FULL.to_dict(), "child_pugh_score": 9})
    heavy = model.predict(hu, pre, hu, post, sicker, 0.008, plan=Plan.parse("Lobaplatin; Epirubicin; Lipiodol; PVA"))
    light = model.predict(hu, pre, hu, post, sicker, 0.008, plan=Plan.parse("Epirubicin; Lipiodol"))
    assert heavy.log_risk[0] > light.log_risk[0]


def test_counterfactual_plan_ranking_scores_every_plan_against_the_oracle(fitted):
    from pipelines.survival.plan_ranking import counterfactual_plan_ranking

    data, model = fitted
    r = counterfactual_plan_ranking(model, data.cache.manifest.parent, patients=1, crop=TINY_CROP,
                                    post_labels="true")
    assert r["patients"] == 1 and r["plans"] == 32 and len(r["rows"]) == 1
    row = r["rows"][0]
    assert -1 <= row["spearman"] <= 1 and row["regret_months"] >= 0 and row["random_regret_months"] > 0
    assert row["top1"] == (row["predicted_best"] == row["oracle_best"]) and (row["top3"] or not row["top1"])


def test_features_without_information_are_left_out_and_named(fitted):
    import dataclasses

    from pipelines.survival.data import SurvivalDataWarning

    data, _ = fitted
    without = dataclasses.replace(data, covariates=[Covariates.from_dict({**c.to_dict(), "albumin": None})
                                                    for c in data.covariates])
    with pytest.warns(SurvivalDataWarning, match="albumin .no training case has a value"):
        model, _ = fit_cox(without)
    assert "albumin" not in model.features and "albumin" in model.config["left_out"]
    d = data.crops(0)
    pred = model.predict(d["pre"], d["pre_labels"], d["post"], d["post_labels"], data.covariates[0], data.voxel_ml,
                         plan=data.plans[0])
    assert "albumin" not in pred.imputed and np.isfinite(pred.log_risk).all()
