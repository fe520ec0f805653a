"""The deep survival model's glue: input channels, per-patient batches, seeded training, loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import CheckpointNotFoundError
from pipelines.survival.data import load_survival_data
from pipelines.survival.deep import (DeepSurvivalModel, SurvivalCrops, covariate_standardisation, crop_channels,
                                     train_deep_model)

from survival_helpers import TINY_CROP, tiny_cohort, treated_pair

TINY_NET = {"channels": [4, 8], "hidden": 8}
FAST = {"log_every": 1, "val_every": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_survival_data(tiny_cohort(tmp_path_factory), crop=TINY_CROP, post_labels="true", progress=False)


def test_crop_channels_are_pre_ct_pre_tumour_post_ct_post_viable():
    pre, post = treated_pair(viable_radius=2.0, treated=True)
    ct = np.linspace(-1, 1, pre.size, dtype=np.float32).reshape(pre.shape)
    x = crop_channels(ct, pre, -ct, post)
    assert x.shape == (4, *pre.shape) and x.dtype == np.float32
    assert np.array_equal(x[0], ct) and np.array_equal(x[2], -ct)
    assert x[1].sum() == (pre == 2).sum()                    # pre tumour (labels 2, 3, 4)
    assert 0 < x[3].sum() < x[1].sum() and x[3].sum() == (post == 2).sum()  # post viable tumour only


def test_batches_hold_distinct_patients(data):
    means, scales, unused = covariate_standardisation(data.covariates)
    crops = SurvivalCrops(data, list(range(len(data))), means, scales, unused)
    assert crops.crops.shape == (6, 4, 16, 16, 16) and crops.covariates.shape == (6, 9)
    assert np.allclose(crops.covariates.numpy().mean(0), 0, atol=1e-5)  # standardised
    assert all(crops.covariates[:, j].std() > 0.5 for j, n in enumerate(means) if n not in unused)
    g = torch.Generator().manual_seed(0)
    x, cov, t, e = crops.sample_batch(4, g)
    assert x.shape[0] == 4 and len(set(t.tolist())) == 4  # four different patients (distinct times here)
    x, _, t, _ = crops.sample_batch(50, g)
    assert x.shape[0] == 6  # never more than the patients there are: no patient twice in a risk set


def test_same_seed_same_weights_and_a_usable_model(data, tmp_path):
    cohort = data.cache.manifest.parent
    kwargs = dict(steps=2, batch_size=4, seed=5, post_labels="true", crop=TINY_CROP, progress=False,
                  model_config=TINY_NET, schedule=FAST)
    train_deep_model(cohort, tmp_path / "a", **kwargs)
    train_deep_model(cohort, tmp_path / "b", **kwargs)
    a, b = DeepSurvivalModel.load(tmp_path / "a"), DeepSurvivalModel.load(tmp_path / "b")
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        assert torch.equal(va, vb), k
    d = data.crops(2)
    pred = a.predict(d["pre"] * 387.5 + 212.5, d["pre_labels"], d["post"] * 387.5 + 212.5, d["post_labels"],
                     data.covariates[2], data.voxel_ml)
    assert pred.log_risk.shape == (1,) and np.all(np.diff(pred.survival[0]) <= 1e-12)
    assert a.extra["covariates"]["names"][0] == "age" and "baseline" in a.extra


def test_missing_deep_weights_name_the_deep_command(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm train survival --kind deep"):
        DeepSurvivalModel.load(tmp_path)


def test_embedded_deep_weights_load_and_predict():
    from pathlib import Path

    from pipelines.case import Covariates
    from pipelines.survival.model import load_survival_model

    model = load_survival_model(Path(__file__).resolve().parents[3] / "models" / "weights" / "survival_deep")
    assert model.kind == "deep" and model.network.config["covariate_skip"]
    pre, post = treated_pair(viable_radius=4.0, treated=True, shape=(48, 48, 48))
    hu = np.where(pre > 0, 100.0, -100.0).astype(np.float32)
    well = Covariates(age=55, afp=10.0, albumin=42.0, bilirubin=10.0, child_pugh_score=5, ecog=0,
                      vascular_invasion=False, n_lesions=1, max_diameter_mm=30.0)
    sick = Covariates(**{**well.to_dict(), "child_pugh_score": 9, "afp": 20000.0, "vascular_invasion": True})
    a = model.predict(hu, pre, np.stack([hu, hu]), np.stack([post, pre]), well, 0.008)
    b = model.predict(hu, pre, hu, post, sick, 0.008)
    assert a.log_risk.shape == (2,) and np.isfinite(a.log_risk).all() and a.imputed == ()
    assert b.log_risk[0] > a.log_risk[0]  # worse liver function, AFP and vascular invasion: higher risk


def test_a_covariate_no_training_case_has_is_left_unused(data):
    from pipelines.case import Covariates
    from pipelines.survival.data import SurvivalDataWarning
    from pipelines.survival.deep import _covariate_matrix

    without = [Covariates.from_dict({**c.to_dict(), "albumin": None}) for c in data.covariates]
    with pytest.warns(SurvivalDataWarning, match="albumin"):
        means, scales, unused = covariate_standardisation(without)
    assert "albumin" in unused
    x, imputed = _covariate_matrix([data.covariates[0], without[0]], means, scales, unused)
    column = list(means).index("albumin")
    assert x[:, column].tolist() == [0.0, 0.0] and imputed == []  # ignored even when given; never "imputed"
