"""The ``cox`` survival model: lifelines' `CoxPHFitter` on the measured outcome features, stored as JSON.

Fitting (`fit_cox`): the `pipelines.survival.features.FEATURES` of every training case, plus the `PLAN_FEATURES` of
its administered plan when every case has one (the cohort's hazard rises with the plan's toxicity in a fragile liver,
which no image shows; without them a plan search could not see that harm), are standardised (training
mean and standard deviation; a covariate missing in training is filled with the mean of the others first), then
`CoxPHFitter(penalizer=COX_PENALIZER, l1_ratio=0)` (a ridge penalty ``½ λ ‖β‖²`` that keeps correlated features
such as the two viable-volume ratios from blowing up; Efron ties) is fitted on them. Its coefficients, the
standardisation and the Breslow baseline of the training cohort (`BreslowBaseline`) are all that prediction needs,
so the model is saved as two JSON files (``config.json``, ``cox.json``), never pickled, and loading needs no
lifelines at all.

Prediction (`CoxSurvivalModel.predict`): ``η = Σ_f β_f (x_f − mean_f) / scale_f`` per post-treatment sample, then
curves, medians and RMST by `prediction_from_log_risk`. Missing covariates (and the plan features when ``plan`` is
not given) are filled with the training means and flagged (``RiskPrediction.imputed`` and an `ImputationWarning`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CheckpointNotFoundError
from pipelines.case import Covariates
from pipelines.survival.data import SurvivalData
from pipelines.survival.features import FEATURES, PLAN_FEATURES, impute, outcome_features, plan_features
from pipelines.survival.model import (KINDS, BreslowBaseline, RiskPrediction, check_predict_inputs, kaplan_meier,
                                      prediction_from_log_risk, train_command, warn_imputed)

__all__ = ["COX_PENALIZER", "FORMAT_VERSION", "WEIGHTS_FILE", "CoxSurvivalModel", "feature_table", "fit_cox",
           "default_features", "standardised_design", "cross_validated_c_index"]

COX_PENALIZER = 0.1
FORMAT_VERSION = 1
WEIGHTS_FILE = "cox.json"


def feature_table(data: SurvivalData, names: Sequence[str] = FEATURES) -> np.ndarray:
    """``(N, F)`` outcome (and, when named, administered-plan) features of every case of ``data`` (``nan`` for
    missing covariates)."""
    rows = []
    for i in range(len(data)):
        pre_labels = data.cache.load(data.indices[i])["pre_labels"]
        f = outcome_features(pre_labels, data.post_labels[i], data.voxel_ml, data.covariates[i])
        if any(n in PLAN_FEATURES for n in names):
            f.update(plan_features(data.plans[i] if data.plans else None, data.covariates[i]))
        rows.append([f[n] for n in names])
    return np.asarray(rows, dtype=np.float64)


@dataclass
class CoxSurvivalModel:
    """A fitted Cox model on outcome features (see the module doc). ``kind`` is ``"cox"``.

    Attributes:
        features: feature names, in the order of ``coefficients``.
        coefficients: ``(F,)`` log hazard ratio per standard deviation of each feature.
        means, scales: the standardisation (feature name → training mean / sd); ``means`` also imputes.
        baseline: Breslow baseline cumulative hazard of the training cohort.
        config: ``penalizer``, ``ties``, ``post_labels`` ...; ``extra``: data summary, training KM, command.
        directory: where it was loaded from or saved to (``None`` before saving).
    """

    features: tuple[str, ...]
    coefficients: np.ndarray
    means: dict[str, float]
    scales: dict[str, float]
    baseline: BreslowBaseline
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None
    kind: str = "cox"

    # ------------------------------------------------------------------------------------------- prediction
    def log_risk(self, features: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, list[str]]:
        """``(T,)`` log-risks of ``T`` feature dicts and the covariates imputed (in any of them)."""
        rows, imputed = [], []
        for f in features:
            x, missing = impute(f, self.features, self.means)
            rows.append(x)
            imputed += [m for m in missing if m not in imputed]
        x = np.stack(rows)
        mean = np.array([self.means[n] for n in self.features])
        scale = np.array([self.scales[n] for n in self.features])
        return ((x - mean) / scale) @ self.coefficients, imputed

    @property
    def uses_plan(self) -> bool:
        """The model has plan features: pass ``plan=`` to `predict` (else they are imputed and flagged)."""
        return any(f in PLAN_FEATURES for f in self.features)

    def predict(self, pre_hu: np.ndarray, pre_labels: np.ndarray, post_hu: np.ndarray, post_labels: np.ndarray,
                covariates: Covariates | None, voxel_ml: float, plan: Any | None = None) -> RiskPrediction:
        """Risk, curves, medians and RMST of each of the ``T`` post-treatment samples (`SurvivalModel.predict`).

        ``plan``: the `models.plan.Plan` that produced the post-treatment crops; a model with plan features
        imputes them (training means, flagged in ``imputed``) without it.
        """
        post_hu, post_labels = check_predict_inputs(pre_hu, pre_labels, post_hu, post_labels)
        extra = plan_features(plan, covariates) if self.uses_plan else {}
        feats = [{**outcome_features(pre_labels, post, voxel_ml, covariates), **extra} for post in post_labels]
        log_risk, imputed = self.log_risk(feats)
        warn_imputed(imputed, self.means)
        return prediction_from_log_risk(log_risk, self.baseline, tuple(imputed))

    def hazard_ratios(self) -> dict[str, float]:
        """exp(β) per standard deviation of each feature (for the card)."""
        return {n: float(np.exp(b)) for n, b in zip(self.features, self.coefficients)}

    # ------------------------------------------------------------------------------------------- files
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``cox.json`` into ``directory`` (other files there are kept)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"kind": KINDS["cox"], "format_version": FORMAT_VERSION,
                  "config": {"features": list(self.features), **self.config}, "extra": self.extra}
        weights = {"coefficients": {n: float(b) for n, b in zip(self.features, self.coefficients)},
                   "means": self.means, "scales": self.scales, "baseline": self.baseline.to_dict()}
        for name, obj in (("config.json", config), (WEIGHTS_FILE, weights)):
            tmp = directory / f".{name}.tmp"
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
            os.replace(tmp, directory / name)
        self.directory = directory
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CoxSurvivalModel":
        """Read a saved model. Raises `CheckpointNotFoundError` (naming the train command) when it is missing or
        incompatible."""
        directory = Path(directory).expanduser()
        command = train_command("cox", directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
            weights = json.loads((directory / WEIGHTS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointNotFoundError(f"No readable cox survival model in {directory} (config.json and "
                                          f"{WEIGHTS_FILE} are needed: {e}). Make one with `{command}`.") from e
        if meta.get("kind") != KINDS["cox"] or meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointNotFoundError(f"{directory} holds a {meta.get('kind')!r} model of format "
                                          f"{meta.get('format_version')!r}, not a {KINDS['cox']!r} model of format "
                                          f"{FORMAT_VERSION}. Re-make it with `{command}`.")
        try:
            config = dict(meta["config"])
            features = tuple(config.pop("features"))
            unknown = [f for f in features if f not in FEATURES + PLAN_FEATURES]
            if unknown:
                raise ValueError(f"unknown features {unknown}")
            coefficients = np.array([float(weights["coefficients"][f]) for f in features])
            means = {f: float(weights["means"][f]) for f in features}
            scales = {f: float(weights["scales"][f]) for f in features}
            if not all(np.isfinite(v) for v in [*coefficients, *means.values(), *scales.values()]) or \
                    min(scales.values()) <= 0:
                raise ValueError("non-finite coefficients, means or scales")
            baseline = BreslowBaseline.from_dict(weights["baseline"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointNotFoundError(f"The cox survival model in {directory} is incomplete or incompatible "
                                          f"({e}). Re-make it with `{command}`.") from e
        return cls(features=features, coefficients=coefficients, means=means, scales=scales, baseline=baseline,
                   config=config, extra=dict(meta.get("extra") or {}), directory=directory)


def default_features(data: SurvivalData) -> tuple[str, ...]:
    """`FEATURES` plus `PLAN_FEATURES` when every case has its administered plan."""
    with_plans = bool(data.plans) and all(p is not None for p in data.plans)
    return FEATURES + PLAN_FEATURES if with_plans else FEATURES


def standardised_design(data: SurvivalData, features: Sequence[str] | None = None
                        ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """The standardised feature matrix of ``data`` that `fit_cox` fits on.

    Missing values are filled with the training mean; a feature is left out (and named, with a
    `SurvivalDataWarning`) when no training case has a value for it (e.g. a real cohort without albumin) or when
    every case has the same value (nothing to learn from it).

    Returns:
        (kept features, ``(N, F)`` standardised values, means, scales, ``{left-out feature: reason}``).

    Raises:
        ConfigError: no feature is left.
    """
    import warnings

    from models.errors import ConfigError
    from pipelines.survival.data import SurvivalDataWarning

    features = tuple(features) if features is not None else default_features(data)
    x = feature_table(data, features)
    finite = np.isfinite(x)
    dropped: dict[str, str] = {}
    with np.errstate(invalid="ignore"):
        means = np.array([x[finite[:, j], j].mean() if finite[:, j].any() else np.nan for j in range(len(features))])
    x = np.where(finite, x, means[None, :])
    scales = x.std(axis=0)
    for j, f in enumerate(features):
        if not finite[:, j].any():
            dropped[f] = "no training case has a value"
        elif not scales[j] > 1e-12:
            dropped[f] = "every training case has the same value"
    if dropped:
        warnings.warn("Survival features left out: " + "; ".join(f"{f} ({why})" for f, why in dropped.items()) + ".",
                      SurvivalDataWarning, stacklevel=3)
    keep = [j for j, f in enumerate(features) if f not in dropped]
    if not keep:
        raise ConfigError("No survival feature varies across the training cases; the cohort is too small or lacks "
                          "its covariates.")
    kept = tuple(features[j] for j in keep)
    z = (x[:, keep] - means[keep]) / scales[keep]
    return kept, z, means[keep], scales[keep], dropped


def fit_cox(data: SurvivalData, *, penalizer: float = COX_PENALIZER,
            features: Sequence[str] | None = None) -> tuple[CoxSurvivalModel, Any]:
    """Fit the Cox model on ``data`` (see the module doc); ``features`` default `default_features`, less those
    `standardised_design` leaves out (recorded in ``config["left_out"]``).

    Returns:
        (the model, not yet saved; the fitted lifelines `CoxPHFitter`, for its summary).
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    from models.errors import ConfigError

    if not penalizer >= 0:
        raise ConfigError(f"The Cox penalizer must be >= 0, got {penalizer!r}.")
    features, z, means, scales, dropped = standardised_design(data, features)
    df = pd.DataFrame(z, columns=list(features))
    df["time"], df["event"] = data.time, data.event.astype(int)
    cph = CoxPHFitter(penalizer=penalizer, l1_ratio=0.0).fit(df, duration_col="time", event_col="event")
    beta = cph.params_.loc[list(features)].to_numpy(dtype=np.float64)
    log_risk = z @ beta
    model = CoxSurvivalModel(
        features=features, coefficients=beta, means={f: float(m) for f, m in zip(features, means)},
        scales={f: float(s) for f, s in zip(features, scales)},
        baseline=BreslowBaseline.fit(log_risk, data.time, data.event),
        config={"penalizer": float(penalizer), "l1_ratio": 0.0, "ties": "efron", "post_labels": data.post_source,
                "left_out": dropped},
        extra={"data": data.summary(), "training_km": kaplan_meier(data.time, data.event),
               "training_log_likelihood": float(cph.log_likelihood_),
               "training_c_index": float(cph.concordance_index_)})
    return model, cph


def cross_validated_c_index(data: SurvivalData, *, penalizer: float = COX_PENALIZER, folds: int = 5,
                            seed: int = 0, features: Sequence[str] | None = None) -> float | None:
    """Mean held-out C-index of `fit_cox`'s recipe over ``folds`` folds of ``data`` (lifelines'
    `k_fold_cross_validation`; standardisation on all cases, which does not change a Cox ranking), or ``None`` when
    there are too few cases (< 5 per fold)."""
    import warnings

    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.utils import k_fold_cross_validation

    if len(data) < 5 * folds:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit_cox already reported the left-out features
        features, z, _, _, _ = standardised_design(data, features)
    df = pd.DataFrame(z, columns=list(features))
    df["time"], df["event"] = data.time, data.event.astype(int)
    scores = k_fold_cross_validation(CoxPHFitter(penalizer=penalizer, l1_ratio=0.0), df, duration_col="time",
                                     event_col="event", k=folds, scoring_method="concordance_index", seed=seed)
    return float(np.mean(scores))
