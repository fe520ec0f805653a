"""Evaluation metrics of the world model, as plain functions on arrays (no models, no files).

Used by `pipelines.worldmodel.evaluate`. Conventions:

- Dice of two empty masks is undefined and returned as ``nan`` (never counted as a perfect 1.0); `mean_finite`
  averages the defined values and says how many there were.
- Spearman's rank correlation of a constant series is undefined and returned as ``nan`` (e.g. the "post = pre"
  baseline predicts no change for every plan).
- `action_sensitivity` compares plan *means* with single samples, which is conservative: a model that ignored the
  plan would score about ``1 / sqrt(T)`` (< 1), not 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from pipelines.volume import LABELS

__all__ = ["DICE_STRUCTURES", "SensitivityResult", "MeanResult", "dice", "dice_per_structure", "spearman",
           "action_sensitivity", "hu_mean_sd", "mean_finite", "label_volume_ml", "viable_volume_ml", "json_safe"]

# structure name -> the labels it merges (`pipelines.volume.LABELS`)
DICE_STRUCTURES: dict[str, tuple[int, ...]] = {
    "liver": (LABELS["liver"], LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]),  # the organ, LiTS-style
    "parenchyma": (LABELS["liver"],),
    "viable_tumour": (LABELS["tumour"],),
    "necrosis": (LABELS["necrosis"],),
    "lipiodol": (LABELS["lipiodol"],),
    "tumour": (LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]),  # labels 2-4 merged
}


@dataclass(frozen=True)
class SensitivityResult:
    """Action sensitivity of one set of samples.

    Attributes:
        between_plans: mean pairwise L2 distance between the plan means (over the region's voxels).
        within_plan: mean pairwise L2 distance between samples of the same plan, averaged over plans.
        ratio: ``between_plans / within_plan`` (``nan`` when both are 0, ``inf`` when only ``within_plan`` is).
    """

    between_plans: float
    within_plan: float
    ratio: float


@dataclass(frozen=True)
class MeanResult:
    """Mean of the defined (finite) values of a series, and how many of ``n_total`` were defined."""

    mean: float
    n: int
    n_total: int


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """``2 |P ∩ T| / (|P| + |T|)`` of two boolean masks of the same shape; ``nan`` when both are empty."""
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"dice: masks of different shapes {pred.shape} and {true.shape}.")
    total = int(pred.sum()) + int(true.sum())
    return float("nan") if total == 0 else 2.0 * float(np.logical_and(pred, true).sum()) / total


def dice_per_structure(pred_labels: np.ndarray, true_labels: np.ndarray,
                       structures: Mapping[str, tuple[int, ...]] = DICE_STRUCTURES) -> dict[str, float]:
    """Dice of each structure (a set of merged labels) between two label maps of the same shape."""
    return {name: dice(np.isin(pred_labels, labs), np.isin(true_labels, labs)) for name, labs in structures.items()}


def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    """Spearman's rank correlation of two equal-length series; ``nan`` if either is constant or shorter than 3."""
    x, y = np.asarray(list(x), dtype=np.float64), np.asarray(list(y), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"spearman: series of different lengths {x.shape} and {y.shape}.")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def action_sensitivity(outputs: np.ndarray, region: np.ndarray | None = None) -> SensitivityResult:
    """Distance between plans vs between samples of one plan (reference-mewm.md §9: the reference ignored its plan).

    Args:
        outputs: ``(P, T, *S)`` P plans × T samples of an image (e.g. windowed crops ``(P, T, X, Y, Z)``),
            P >= 2 and T >= 2.
        region: boolean ``S``-shaped mask of the voxels compared (the change region); ``None`` = all voxels.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim < 3 or outputs.shape[0] < 2 or outputs.shape[1] < 2:
        raise ValueError(f"action_sensitivity expects (P >= 2 plans, T >= 2 samples, ...) outputs, got "
                         f"{outputs.shape}.")
    flat = outputs.reshape(outputs.shape[0], outputs.shape[1], -1)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != outputs.shape[2:]:
            raise ValueError(f"action_sensitivity: region shape {region.shape} differs from the images' "
                             f"{outputs.shape[2:]}.")
        flat = flat[:, :, region.ravel()]
    means = flat.mean(axis=1)
    between = float(np.mean([np.linalg.norm(means[p] - means[q]) for p, q in combinations(range(len(means)), 2)]))
    within = float(np.mean([np.mean([np.linalg.norm(s[a] - s[b]) for a, b in combinations(range(len(s)), 2)])
                            for s in flat]))
    if within == 0.0:
        ratio = float("nan") if between == 0.0 else float("inf")
    else:
        ratio = between / within
    return SensitivityResult(between_plans=between, within_plan=within, ratio=ratio)


def hu_mean_sd(hu: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``hu`` over the boolean ``region`` (same shape, at least one voxel)."""
    values = np.asarray(hu, dtype=np.float64)[np.asarray(region, dtype=bool)]
    if values.size == 0:
        raise ValueError("hu_mean_sd: the region is empty.")
    return float(values.mean()), float(values.std())


def label_volume_ml(labels: np.ndarray, label: int, voxel_ml: float) -> float:
    """Volume (ml) of the voxels carrying ``label``."""
    return float((np.asarray(labels) == label).sum()) * float(voxel_ml)


def viable_volume_ml(labels: np.ndarray, voxel_ml: float) -> float:
    """Viable-tumour volume (label 2) in ml."""
    return label_volume_ml(labels, LABELS["tumour"], voxel_ml)


def mean_finite(values: Iterable[float]) -> MeanResult:
    """Mean of the finite values (``nan`` if there are none)."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    return MeanResult(mean=float(np.mean(finite)) if finite else float("nan"), n=len(finite), n_total=len(values))


BOOTSTRAP_SAMPLES = 1000


def bootstrap_interval(groups: Sequence, statistic: Callable[[list], float], seed: int = 0,
                       samples: int = BOOTSTRAP_SAMPLES) -> list[float | None]:
    """95% percentile interval of ``statistic`` over ``groups`` resampled with replacement, ``samples`` times.

    Resample the independent units (patients), so the rows of one patient stay together. Resamples whose
    statistic is undefined are dropped; ``[None, None]`` if none is defined.
    """
    rng = np.random.default_rng(seed)
    values = [statistic([groups[j] for j in rng.integers(0, len(groups), len(groups))]) for _ in range(samples)]
    values = [v for v in values if math.isfinite(v)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [None, None]


def json_safe(value):
    """``value`` with numpy scalars/arrays made plain and non-finite floats made ``None`` (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value
