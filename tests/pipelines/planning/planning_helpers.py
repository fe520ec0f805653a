"""Helpers of the planning tests: tiny world models (shared with the world-model tests) and a transparent survival
model whose risk is a known function of the simulated outcome, so search results can be checked by hand."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worldmodel"))
from simulate_helpers import make_case, write_tiny_weights  # noqa: E402,F401

from pipelines.volume import LABELS  # noqa: E402


@dataclass(frozen=True)
class Prediction:
    log_risk: np.ndarray
    times: np.ndarray
    survival: np.ndarray
    median_months: np.ndarray
    rmst_months: np.ndarray


class ViableVolumeSurvival:
    """log-risk = viable tumour (ml) in the simulated crop / 10 − Lipiodol (ml) / 20; exponential survival curves.

    A stand-in for the trained survival models in search tests: its output depends only on the simulated labels,
    so a ranking can be recomputed from the simulations by hand.
    """

    kind = "test-viable-volume"
    directory = Path("tests")

    def predict(self, pre_hu, pre_labels, post_hu, post_labels, covariates, voxel_ml, plan=None):
        viable = (post_labels == LABELS["tumour"]).reshape(len(post_labels), -1).sum(1) * voxel_ml
        lipiodol = (post_labels == LABELS["lipiodol"]).reshape(len(post_labels), -1).sum(1) * voxel_ml
        log_risk = viable / 10.0 - lipiodol / 20.0
        times = np.linspace(0.0, 60.0, 61)
        hazard = 0.03 * np.exp(log_risk)[:, None]
        survival = np.exp(-hazard * times[None, :])
        median = np.log(2.0) / hazard[:, 0]
        rmst = (1 - np.exp(-hazard[:, 0] * 60.0)) / hazard[:, 0]
        return Prediction(log_risk, times, survival, median, rmst)
