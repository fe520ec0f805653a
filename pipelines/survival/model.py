"""What every survival model gives (`RiskPrediction`), what it is (`SurvivalModel`), and how one is loaded.

Both kinds share the curve machinery: a model produces unbounded log-risks η (log relative hazard, higher = worse);
the Breslow estimate of the baseline cumulative hazard ``H0(t)`` of its training cohort turns each η into a
survival curve ``S(t | η) = exp(−H0(t) e^η)`` (proportional hazards), from which the median survival (first time
``S <= 0.5``, ``inf`` when the curve stays above 0.5 within the horizon) and the restricted mean survival time
``RMST = ∫_0^τ S(t) dt`` (exact for the step function) follow. `BreslowBaseline` holds ``H0`` at the training
cohort's event times and is stored as JSON lists, never pickled.

`load_survival_model(directory)` reads ``config.json`` and dispatches on its ``kind`` (``"survival_cox"`` →
`pipelines.survival.cox.CoxSurvivalModel`, ``"survival_deep"`` → `pipelines.survival.deep.DeepSurvivalModel`).
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CheckpointNotFoundError, ModelOutputError
from pipelines.case import Covariates

__all__ = ["HORIZON_MONTHS", "GRID_STEP_MONTHS", "KINDS", "RiskPrediction", "SurvivalModel", "BreslowBaseline",
           "prediction_from_log_risk", "check_predict_inputs", "kaplan_meier", "warn_imputed", "train_command",
           "load_survival_model"]

HORIZON_MONTHS = 60.0       # τ of the RMST, the cohort oracle's horizon
GRID_STEP_MONTHS = 0.5      # the times at which curves are reported
KINDS = {"cox": "survival_cox", "deep": "survival_deep"}  # model kind → checkpoint kind in config.json


@dataclass(frozen=True)
class RiskPrediction:
    """The survival model's answer for T outcomes of one patient (e.g. T simulated samples of one plan).

    Attributes:
        log_risk: ``(T,)`` unbounded log relative hazard, higher = worse.
        times: ``(K,)`` months, from 0 to the horizon.
        survival: ``(T, K)`` S(t) per sample.
        median_months: ``(T,)`` predicted median survival (``inf`` when S never drops to 0.5 within the horizon).
        rmst_months: ``(T,)`` restricted mean survival to ``times[-1]``.
        imputed: covariates that were missing and replaced by the training mean (empty when none).
    """

    log_risk: np.ndarray
    times: np.ndarray
    survival: np.ndarray
    median_months: np.ndarray
    rmst_months: np.ndarray
    imputed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"log_risk": self.log_risk.tolist(), "times": self.times.tolist(), "survival": self.survival.tolist(),
                "median_months": [None if not np.isfinite(m) else float(m) for m in self.median_months],
                "rmst_months": self.rmst_months.tolist(), "imputed": list(self.imputed)}


@typing.runtime_checkable
class SurvivalModel(typing.Protocol):
    """A loaded survival model (``kind`` ``"cox"`` or ``"deep"``)."""

    kind: str
    directory: Path

    def predict(self, pre_hu: np.ndarray, pre_labels: np.ndarray, post_hu: np.ndarray, post_labels: np.ndarray,
                covariates: Covariates | None, voxel_ml: float, plan: Any | None = None) -> RiskPrediction:
        """``pre_*``: ``(X, Y, Z)`` crop; ``post_*``: ``(T, X, Y, Z)`` crops (HU and uint8 labels); ``plan``: the
        `models.plan.Plan` that produced the post crops (used by models with plan features; else imputed, flagged)."""
        ...


@dataclass(frozen=True)
class BreslowBaseline:
    """Breslow's baseline cumulative hazard: ``H0(t) = Σ_{t_i <= t} d_i / Σ_{k: T_k >= t_i} e^{η_k}``.

    Attributes:
        event_times: ``(J,)`` distinct event times of the training cohort (months, increasing).
        cumulative_hazard: ``(J,)`` ``H0`` just after each of them (``H0 = 0`` before the first).
    """

    event_times: np.ndarray
    cumulative_hazard: np.ndarray

    @classmethod
    def fit(cls, log_risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> "BreslowBaseline":
        log_risk, time = np.asarray(log_risk, np.float64), np.asarray(time, np.float64)
        event = np.asarray(event).astype(bool)
        if not (log_risk.shape == time.shape == event.shape) or log_risk.ndim != 1:
            raise ValueError("BreslowBaseline.fit expects 1D log_risk, time and event of one length.")
        if not event.any():
            raise ValueError("BreslowBaseline.fit needs at least one observed event.")
        w = np.exp(log_risk)
        times = np.unique(time[event])
        hazard = np.array([event[time == t].sum() / w[time >= t].sum() for t in times])
        return cls(times, np.cumsum(hazard))

    def at(self, t: np.ndarray) -> np.ndarray:
        """``H0`` at the times ``t`` (a right-continuous step function)."""
        idx = np.searchsorted(self.event_times, np.asarray(t, np.float64), side="right")
        return np.concatenate([[0.0], self.cumulative_hazard])[idx]

    def to_dict(self) -> dict[str, list[float]]:
        return {"event_times": [float(v) for v in self.event_times],
                "cumulative_hazard": [float(v) for v in self.cumulative_hazard]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BreslowBaseline":
        times, hazard = np.asarray(d["event_times"], np.float64), np.asarray(d["cumulative_hazard"], np.float64)
        if times.ndim != 1 or times.shape != hazard.shape or len(times) == 0 or np.any(np.diff(times) <= 0):
            raise ValueError("a Breslow baseline needs increasing event_times and cumulative_hazard of one length")
        return cls(times, hazard)


def prediction_from_log_risk(log_risk: np.ndarray, baseline: BreslowBaseline, imputed: tuple[str, ...] = (),
                             horizon: float = HORIZON_MONTHS, step: float = GRID_STEP_MONTHS) -> RiskPrediction:
    """Curves, medians and RMSTs of ``(T,)`` log-risks under a proportional-hazards ``baseline``."""
    log_risk = np.asarray(log_risk, np.float64).reshape(-1)
    if not np.all(np.isfinite(log_risk)):
        raise ModelOutputError(f"The survival model returned non-finite log-risks {log_risk.tolist()}.")
    times = np.arange(0.0, horizon + step / 2, step)
    # exact RMST of the step function: integrate between its jumps, not only on the reporting grid
    knots = np.unique(np.concatenate([[0.0], baseline.event_times[baseline.event_times < horizon], [horizon]]))
    h_knots = baseline.at(knots[:-1])                                   # H0 on [knots[i], knots[i+1])
    survival = np.exp(-baseline.at(times)[None, :] * np.exp(log_risk)[:, None])
    s_knots = np.exp(-h_knots[None, :] * np.exp(log_risk)[:, None])
    rmst = (s_knots * np.diff(knots)[None, :]).sum(1)
    below = s_knots <= 0.5
    median = np.where(below.any(1), knots[:-1][np.argmax(below, axis=1)], np.inf)
    return RiskPrediction(log_risk=log_risk, times=times, survival=survival, median_months=median, rmst_months=rmst,
                          imputed=tuple(imputed))


def check_predict_inputs(pre_hu: np.ndarray, pre_labels: np.ndarray, post_hu: np.ndarray,
                         post_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check the crops given to ``SurvivalModel.predict``; a single ``(X, Y, Z)`` post crop becomes ``T = 1``.

    Returns:
        ``post_hu`` and ``post_labels`` as ``(T, X, Y, Z)`` arrays.

    Raises:
        GeometryMismatchError: the crops do not share one shape. InvalidVoxelsError: NaN or infinite HU.
    """
    from models.errors import GeometryMismatchError, InvalidVoxelsError

    pre_hu, pre_labels = np.asarray(pre_hu), np.asarray(pre_labels)
    post_hu, post_labels = np.asarray(post_hu), np.asarray(post_labels)
    if post_hu.ndim == 3:
        post_hu = post_hu[None]
    if post_labels.ndim == 3:
        post_labels = post_labels[None]
    if (pre_hu.ndim != 3 or pre_labels.shape != pre_hu.shape or post_hu.ndim != 4
            or post_hu.shape[1:] != pre_hu.shape or post_labels.shape != post_hu.shape or len(post_hu) == 0):
        raise GeometryMismatchError(f"Survival prediction needs pre crops (X, Y, Z) and post crops (T, X, Y, Z) of one "
                                    f"grid; got pre {pre_hu.shape}/{pre_labels.shape}, post {post_hu.shape}/"
                                    f"{post_labels.shape}.")
    if not (np.all(np.isfinite(pre_hu)) and np.all(np.isfinite(post_hu))):
        raise InvalidVoxelsError("A crop given to the survival model holds NaN or infinite HU values.")
    return post_hu, post_labels


def warn_imputed(imputed: tuple[str, ...] | list[str], means: dict[str, float]) -> None:
    """One `ImputationWarning` naming the covariates replaced by their training means."""
    if imputed:
        import warnings

        from models.errors import ImputationWarning

        filled = ", ".join(f"{k} = {means[k]:.3g}" for k in imputed)
        warnings.warn(f"Missing covariates replaced by the training means ({filled}); the risk is an estimate "
                      "under that assumption.", ImputationWarning, stacklevel=3)


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> dict[str, list[float]]:
    """The Kaplan-Meier curve of a cohort as JSON lists ``times`` (0 and the event times) and ``survival``."""
    from lifelines import KaplanMeierFitter

    km = KaplanMeierFitter().fit(np.asarray(time, np.float64), np.asarray(event, bool))
    sf = km.survival_function_.iloc[:, 0]
    return {"times": [float(t) for t in sf.index], "survival": [float(v) for v in sf.values]}


def train_command(kind: str, directory: str | os.PathLike | None = None) -> str:
    """The command that makes a survival model (named in missing-checkpoint errors)."""
    return f"mewm train survival --kind {kind} --manifest M --out {directory or 'DIR'}"


def load_survival_model(directory: str | os.PathLike) -> SurvivalModel:
    """Load the survival model in ``directory`` (``config.json``'s ``kind`` decides which).

    Raises:
        CheckpointNotFoundError: no ``config.json``, unreadable, or not a survival model; the message names
            ``mewm train survival --kind cox --manifest M --out DIR``.
    """
    directory = Path(directory).expanduser()
    cfg = directory / "config.json"
    command = train_command("cox", directory)
    if not cfg.is_file():
        raise CheckpointNotFoundError(f"No survival model in {directory} (no config.json). Make one with "
                                      f"`{command}`.")
    try:
        kind = json.loads(cfg.read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise CheckpointNotFoundError(f"The survival model's {cfg} is not readable JSON ({e}). Re-make it with "
                                      f"`{command}`.") from e
    if kind == KINDS["cox"]:
        from pipelines.survival.cox import CoxSurvivalModel

        return CoxSurvivalModel.load(directory)
    if kind == KINDS["deep"]:
        from pipelines.survival.deep import DeepSurvivalModel

        return DeepSurvivalModel.load(directory)
    raise CheckpointNotFoundError(f"{directory} holds a model of kind {kind!r}, not a survival model "
                                  f"({', '.join(KINDS.values())}). Point to survival weights, or make them with "
                                  f"`{command}`.")
