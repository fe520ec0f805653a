"""outcome_features on tiny label maps (hand-counted voxels), covariates, and imputation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.errors import EmptyMaskError, GeometryMismatchError
from pipelines.case import Covariates
from pipelines.survival.features import COVARIATE_FEATURES, FEATURES, covariate_features, impute, outcome_features

COVARIATES = Covariates(age=62, afp=1000.0, albumin=38.0, bilirubin=20.0, child_pugh_score=6, ecog=1,
                        vascular_invasion=True, n_lesions=2, max_diameter_mm=50.0)


def _maps():
    """A 4x4x2 crop: pre has 8 viable + 2 necrosis voxels; post has 2 viable, 3 necrosis, 4 Lipiodol (3 of them
    inside the old tumour) and 1 viable voxel of growth outside it."""
    pre = np.ones((4, 4, 2), np.uint8)
    pre.reshape(-1)[:8] = 2
    pre.reshape(-1)[8:10] = 3
    post = np.ones((4, 4, 2), np.uint8)
    post.reshape(-1)[:1] = 2
    post.reshape(-1)[1:4] = 3
    post.reshape(-1)[4:7] = 4
    post.reshape(-1)[12] = 4   # Lipiodol outside the old tumour
    post.reshape(-1)[13] = 2   # growth
    return pre, post


def test_image_features_on_a_tiny_label_map():
    pre, post = _maps()
    f = outcome_features(pre, post, 0.5, COVARIATES)
    assert list(f) == list(FEATURES)
    # pre tumour 10 voxels = 5 ml; viable 8 -> 2 voxels = 4 ml -> 1 ml; post tumour 2 + 3 + 4 = 9 voxels
    assert f["log_pre_tumour_ml"] == pytest.approx(math.log1p(5.0))
    assert f["viable_ratio"] == pytest.approx(1.0 / 4.0)
    assert f["log_viable_ratio"] == pytest.approx(math.log((1.0 + 0.5) / (4.0 + 0.5)))
    assert f["necrosis_fraction"] == pytest.approx(3 / 9)
    assert f["lipiodol_coverage"] == pytest.approx(3 / 10)


def test_covariate_features_are_transformed_as_documented():
    f = covariate_features(COVARIATES)
    assert f["log10_afp"] == pytest.approx(3.0)
    assert f["log_bilirubin"] == pytest.approx(math.log(20.0))
    assert f["log_max_diameter"] == pytest.approx(math.log(50.0))
    assert f["vascular_invasion"] == 1.0 and f["child_pugh_score"] == 6.0
    assert covariate_features(COVARIATES.to_dict()) == f  # a dict works too


def test_missing_covariates_are_nan_then_imputed_and_named():
    pre, post = _maps()
    f = outcome_features(pre, post, 0.5, {"age": 70, "afp": 0.2})
    assert math.isnan(f["albumin"]) and f["log10_afp"] == 0.0  # AFP floored at 1 ng/mL
    means = {n: float(i) for i, n in enumerate(FEATURES)}
    x, imputed = impute(f, FEATURES, means)
    assert np.all(np.isfinite(x))
    assert set(imputed) == set(COVARIATE_FEATURES) - {"age", "log10_afp"}
    assert x[FEATURES.index("albumin")] == means["albumin"]
    assert all(math.isnan(v) for k, v in outcome_features(pre, post, 0.5, None).items() if k in COVARIATE_FEATURES)


def test_image_features_are_never_imputed():
    with pytest.raises(ValueError, match="cannot be imputed"):
        impute({"viable_ratio": float("nan")}, ["viable_ratio"], {"viable_ratio": 1.0})


def test_complete_response_and_pure_growth_stay_finite():
    pre, post = _maps()
    cr = np.where(np.isin(pre, (2, 3)), 3, 1).astype(np.uint8)
    f = outcome_features(pre, cr, 0.5, None)
    assert f["viable_ratio"] == 0.0 and math.isfinite(f["log_viable_ratio"]) and f["necrosis_fraction"] == 1.0
    grown = np.full_like(pre, 2)
    assert outcome_features(pre, grown, 0.5, None)["viable_ratio"] == 3.0  # clipped


def test_bad_inputs_raise_typed_errors():
    pre, post = _maps()
    with pytest.raises(EmptyMaskError):
        outcome_features(np.ones_like(pre), post, 0.5, None)
    with pytest.raises(GeometryMismatchError):
        outcome_features(pre, post[:2], 0.5, None)
    with pytest.raises(ValueError, match="voxel_ml"):
        outcome_features(pre, post, 0.0, None)
    with pytest.raises(TypeError):
        outcome_features(pre, post, 0.5, [1, 2])


def test_plan_features_count_agents_and_scale_with_liver_dysfunction():
    from models.plan import Plan
    from pipelines.survival.features import PLAN_FEATURES, plan_features

    plan = Plan.parse("Lobaplatin; Epirubicin; Lipiodol")
    f = plan_features(plan, {"child_pugh_score": 8})
    assert list(f) == list(PLAN_FEATURES)
    assert (f["plan_n_drugs"], f["plan_n_embolics"], f["plan_drugs_x_cp"], f["plan_embolics_x_cp"]) == (2, 1, 6, 3)
    assert all(math.isnan(v) for v in plan_features(None, COVARIATES).values())
    assert math.isnan(plan_features(plan, None)["plan_drugs_x_cp"]) and plan_features(plan, None)["plan_n_drugs"] == 2
    x, imputed = impute(plan_features(None, None), PLAN_FEATURES, dict.fromkeys(PLAN_FEATURES, 1.0))
    assert imputed == list(PLAN_FEATURES) and x.tolist() == [1.0] * 4
