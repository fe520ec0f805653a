"""The measured outcome features of a treated tumour: ONE implementation, used by training, evaluation and planning.

`outcome_features(pre_labels, post_labels, voxel_ml, covariates)` turns a pre-treatment and a post-treatment label
map of the same tumour-centred crop (`pipelines.volume.LABELS`: 0 background, 1 liver, 2 viable tumour, 3 necrosis,
4 Lipiodol) and the patient's clinical covariates into a flat ``{name: value}`` dict (`FEATURES` order):

image features (what the treatment did, measured on the crop):
    log_pre_tumour_ml   ln(1 + pre-treatment tumour volume, ml), tumour = labels 2, 3, 4
    viable_ratio        post / pre viable-tumour volume (clipped to [0, 3]): ~ 1 - kill, > 1 for growth
    log_viable_ratio    ln((post viable + 0.5 ml) / (pre viable + 0.5 ml))
    necrosis_fraction   post necrosis / post tumour volume (labels 3 / 2, 3, 4)
    lipiodol_coverage   share of the pre-treatment tumour voxels that hold Lipiodol afterwards
clinical covariates (`pipelines.case.Covariates`):
    age, child_pugh_score, log10_afp (AFP ng/mL, floored at 1), ecog, vascular_invasion (0/1), n_lesions,
    log_bilirubin (µmol/L), albumin (g/L), log_max_diameter (mm)

plan features (`plan_features`, optional; what the treatment could cost a fragile liver, which no image shows):
    plan_n_drugs, plan_n_embolics   agents of the plan
    plan_drugs_x_cp, plan_embolics_x_cp   the same times (Child-Pugh score - 5): more agents in a worse liver

A covariate the case lacks is ``nan`` here; the models replace it by the training mean (`impute`) and report its
name, so a prediction made with imputed values is always flagged (never silently filled in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.errors import EmptyMaskError, GeometryMismatchError
from pipelines.case import Covariates
from pipelines.volume import LABELS

__all__ = ["IMAGE_FEATURES", "COVARIATE_FEATURES", "FEATURES", "PLAN_FEATURES", "VIABLE_EPS_ML", "image_features",
           "covariate_features", "outcome_features", "plan_features", "impute"]

IMAGE_FEATURES: tuple[str, ...] = ("log_pre_tumour_ml", "viable_ratio", "log_viable_ratio", "necrosis_fraction",
                                   "lipiodol_coverage")
COVARIATE_FEATURES: tuple[str, ...] = ("age", "child_pugh_score", "log10_afp", "ecog", "vascular_invasion",
                                       "n_lesions", "log_bilirubin", "albumin", "log_max_diameter")
FEATURES: tuple[str, ...] = IMAGE_FEATURES + COVARIATE_FEATURES
PLAN_FEATURES: tuple[str, ...] = ("plan_n_drugs", "plan_n_embolics", "plan_drugs_x_cp", "plan_embolics_x_cp")
# Added to both viable volumes of the log ratio, so a complete response (0 ml) stays finite.
VIABLE_EPS_ML = 0.5
_TUMOUR = (LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"])


def image_features(pre_labels: np.ndarray, post_labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """The `IMAGE_FEATURES` of one (pre, post) pair of ``(X, Y, Z)`` label crops on the same grid.

    Raises:
        GeometryMismatchError: the two label maps differ in shape. EmptyMaskError: no pre-treatment tumour.
        ValueError: ``voxel_ml`` is not a positive finite number.
    """
    pre, post = np.asarray(pre_labels), np.asarray(post_labels)
    if pre.shape != post.shape or pre.ndim != 3:
        raise GeometryMismatchError(f"outcome_features needs pre and post label crops of one 3D shape; got "
                                    f"{pre.shape} and {post.shape}.")
    if not (isinstance(voxel_ml, (int, float, np.floating)) and math.isfinite(voxel_ml) and voxel_ml > 0):
        raise ValueError(f"outcome_features: voxel_ml must be a positive number, got {voxel_ml!r}.")
    pre_tumour = np.isin(pre, _TUMOUR)
    n_pre = int(pre_tumour.sum())
    if n_pre == 0:
        raise EmptyMaskError("The pre-treatment crop has no tumour (labels 2, 3, 4), so there is no treatment "
                             "response to measure. Check the case's tumour mask.")
    pre_viable = float((pre == LABELS["tumour"]).sum()) * voxel_ml
    post_viable = float((post == LABELS["tumour"]).sum()) * voxel_ml
    post_necrosis = float((post == LABELS["necrosis"]).sum()) * voxel_ml
    post_tumour = float(np.isin(post, _TUMOUR).sum()) * voxel_ml
    lipiodol_in_tumour = int((pre_tumour & (post == LABELS["lipiodol"])).sum())
    return {
        "log_pre_tumour_ml": math.log1p(n_pre * voxel_ml),
        "viable_ratio": min(3.0, post_viable / pre_viable) if pre_viable > 0 else (0.0 if post_viable == 0 else 3.0),
        "log_viable_ratio": math.log((post_viable + VIABLE_EPS_ML) / (pre_viable + VIABLE_EPS_ML)),
        "necrosis_fraction": post_necrosis / post_tumour if post_tumour > 0 else 0.0,
        "lipiodol_coverage": lipiodol_in_tumour / n_pre,
    }


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _log(value: Any, floor: float) -> float:
    return float("nan") if value is None else math.log(max(float(value), floor))


def covariate_features(covariates: Covariates | Mapping[str, Any] | None) -> dict[str, float]:
    """The `COVARIATE_FEATURES` of a patient; ``nan`` for each covariate that is missing."""
    if covariates is None:
        cov = Covariates()
    elif isinstance(covariates, Covariates):
        cov = covariates
    elif isinstance(covariates, Mapping):
        cov = Covariates.from_dict(dict(covariates))
    else:
        raise TypeError(f"covariates must be a Covariates, a dict or None, got {type(covariates).__name__}.")
    return {
        "age": _number(cov.age),
        "child_pugh_score": _number(cov.child_pugh_score),
        "log10_afp": float("nan") if cov.afp is None else math.log10(max(float(cov.afp), 1.0)),
        "ecog": _number(cov.ecog),
        "vascular_invasion": _number(None if cov.vascular_invasion is None else int(bool(cov.vascular_invasion))),
        "n_lesions": _number(cov.n_lesions),
        "log_bilirubin": _log(cov.bilirubin, 1.0),
        "albumin": _number(cov.albumin),
        "log_max_diameter": _log(cov.max_diameter_mm, 1.0),
    }


def outcome_features(pre_labels: np.ndarray, post_labels: np.ndarray, voxel_ml: float,
                     covariates: Covariates | Mapping[str, Any] | None) -> dict[str, float]:
    """Image features of the (pre, post) label crops and the covariate features, in `FEATURES` order.

    Args:
        pre_labels, post_labels: ``(X, Y, Z)`` label crops on one grid (`pipelines.volume.LABELS`).
        voxel_ml: the volume of one crop voxel in ml (2 mm voxels: 0.008).
        covariates: `Covariates`, a dict of its fields, or ``None``; missing values become ``nan``.
    """
    return {**image_features(pre_labels, post_labels, voxel_ml), **covariate_features(covariates)}


def plan_features(plan: Any | None, covariates: Covariates | Mapping[str, Any] | None) -> dict[str, float]:
    """The `PLAN_FEATURES` of a `models.plan.Plan` for a patient (all ``nan`` without a plan; the interactions
    ``nan`` without a Child-Pugh score)."""
    if plan is None:
        return {name: float("nan") for name in PLAN_FEATURES}
    drugs, embolics = float(len(plan.drugs)), float(len(plan.embolics))
    cp = covariate_features(covariates)["child_pugh_score"] - 5.0
    return {"plan_n_drugs": drugs, "plan_n_embolics": embolics, "plan_drugs_x_cp": drugs * cp,
            "plan_embolics_x_cp": embolics * cp}


def impute(features: Mapping[str, float], names: Sequence[str],
           means: Mapping[str, float]) -> tuple[np.ndarray, list[str]]:
    """The ``names`` values of ``features`` as a float64 vector, non-finite ones replaced by the training ``means``.

    Returns:
        (vector, the names that were imputed). An image feature is never imputed: it raises instead.
    """
    values, imputed = [], []
    for name in names:
        v = float(features.get(name, float("nan")))
        if not math.isfinite(v):
            if name not in COVARIATE_FEATURES and name not in PLAN_FEATURES:
                raise ValueError(f"The image feature {name!r} is {v}; it cannot be imputed.")
            v = float(means[name])
            imputed.append(name)
        values.append(v)
    return np.asarray(values, dtype=np.float64), imputed
