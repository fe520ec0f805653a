"""Scoring candidate plans: simulate every plan T times in one batched world-model call, then score each simulated
outcome with the survival (inverse-dynamics) model.

`PlanScorer` is the one place where plans become risks. It caches scores by `Plan.key()` plus protocol, so a plan
that several beams reach is simulated once; every `score` call simulates only the plans it has not seen, all of
them in ONE `WorldModel.simulate` call (which batches plans × samples). Each call uses the same seed, and
`WorldModel.simulate` gives sample t of every plan the same initial noise, so plans scored in different calls are
compared on equal terms: a plan's score does not depend on which other plans were scored with it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import ImputationWarning
from models.plan import Plan
from pipelines.case import Case
from pipelines.config import DEFAULT_STEPS
from pipelines.progress import ProgressFn
from pipelines.worldmodel.simulate import PlanSimulation, StructureSummary

__all__ = ["PlanScore", "PlanScorer", "plan_id"]


def plan_id(plan: Plan) -> str:
    """A stable identity of a plan's action: its agents and protocol (doses are not searched)."""
    return f"{'; '.join(plan.key())} [{plan.protocol.value}]"


@dataclass(frozen=True, eq=False)
class PlanScore:
    """One candidate plan scored over T simulated outcomes.

    Attributes:
        plan: the validated `Plan`.
        log_risk: ``(T,)`` log relative hazard per simulated sample (higher = worse).
        risk_mean, risk_sd: mean and sample sd of ``log_risk`` (sd is 0 when T = 1).
        median_months: mean over samples of the predicted median survival (``inf`` if beyond the model's horizon).
        rmst_months: mean over samples of the restricted mean survival time to the model's horizon.
        survival_times, survival_mean: the mean predicted survival curve S(t) over the samples.
        volumes: the simulation's structure summaries (viable tumour, necrosis, Lipiodol: mean ± sd ml).
    """

    plan: Plan
    log_risk: np.ndarray
    risk_mean: float
    risk_sd: float
    median_months: float
    rmst_months: float
    survival_times: np.ndarray
    survival_mean: np.ndarray
    volumes: dict[str, StructureSummary]

    @property
    def id(self) -> str:
        return plan_id(self.plan)

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.canonical(), "protocol": self.plan.protocol.value,
                "agents": list(self.plan.key()), "definition": self.plan.to_dict(),
                "log_risk": [float(v) for v in self.log_risk], "risk_mean": self.risk_mean,
                "risk_sd": self.risk_sd, "median_months": self.median_months, "rmst_months": self.rmst_months,
                "volumes_ml": {k: vars(v) for k, v in self.volumes.items()}}


@dataclass
class PlanScorer:
    """Scores plans for one case with a world model and a survival model, caching every plan it has scored.

    Attributes:
        case, world, survival: what is scored and with what (`WorldModel`, a `SurvivalModel`).
        samples, seed, steps, guidance: the sampling settings (`WorldModel.simulate`).
        scores, simulations: by `plan_id`, every plan scored so far.
        denoiser_passes: denoiser calls over all simulate calls; ``simulated_samples``: plans × samples simulated.
        timings: seconds in ``simulate`` and ``survival``.
    """

    case: Case
    world: Any
    survival: Any
    samples: int = 3
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = 2.0
    survival_sees_plan: bool = True  # pass the plan to the survival model (its plan features: e.g. harm to the liver)
    scores: dict[str, PlanScore] = field(default_factory=dict)
    simulations: dict[str, PlanSimulation] = field(default_factory=dict)
    denoiser_passes: int = 0
    simulate_calls: int = 0
    simulated_samples: int = 0
    requested: int = 0  # plan evaluations asked for, repeats included (what a search without a cache would simulate)
    pre_hu: np.ndarray | None = None
    pre_labels: np.ndarray | None = None
    region: np.ndarray | None = None
    crop: Any = None  # the `CropSample` of the simulations (geometry of the crop grid)
    crop_note: str | None = None  # `SimulationResult.crop_note` of the simulations (an enlarged crop)
    imputed: set[str] = field(default_factory=set)  # covariates the survival model had to impute for this case
    timings: dict[str, float] = field(default_factory=lambda: {"simulate": 0.0, "survival": 0.0})

    def score(self, plans: Sequence[Plan], progress: ProgressFn | None = None) -> list[PlanScore]:
        """Scores of ``plans`` in the order given; unseen plans are simulated together in one batched call."""
        self.requested += len(plans)
        new = list({plan_id(p): p for p in plans if plan_id(p) not in self.scores}.values())  # unseen, in order
        if new:
            t0 = time.perf_counter()
            result = self.world.simulate(self.case, new, samples=self.samples, seed=self.seed, steps=self.steps,
                                         guidance=self.guidance, progress=progress)
            self.timings["simulate"] += time.perf_counter() - t0
            self.denoiser_passes += result.denoiser_passes
            self.simulate_calls += 1
            self.simulated_samples += len(new) * self.samples
            if self.pre_hu is None:
                self.pre_hu, self.pre_labels, self.region = result.pre_hu, result.pre_labels, result.region
                self.crop = result.crop
                self.crop_note = result.crop_note
            voxel_ml = float(np.prod(result.crop.spacing)) / 1000.0
            t0 = time.perf_counter()
            for sim in result.plans:
                with warnings.catch_warnings():  # the imputation is reported once, in `imputed`, not per plan
                    warnings.simplefilter("ignore", ImputationWarning)
                    prediction = self.survival.predict(result.pre_hu, result.pre_labels, sim.crops_hu, sim.labels,
                                                       self.case.covariates, voxel_ml,
                                                       **({"plan": sim.plan} if self.survival_sees_plan else {}))
                self.imputed.update(getattr(prediction, "imputed", ()))
                self.scores[plan_id(sim.plan)] = _plan_score(sim, prediction)
                self.simulations[plan_id(sim.plan)] = sim
            self.timings["survival"] += time.perf_counter() - t0
        return [self.scores[plan_id(p)] for p in plans]


def _plan_score(sim: PlanSimulation, prediction: Any) -> PlanScore:
    log_risk = np.asarray(prediction.log_risk, dtype=np.float64)
    if log_risk.shape != (sim.labels.shape[0],) or not np.all(np.isfinite(log_risk)):
        from models.errors import ModelOutputError

        raise ModelOutputError(f"The survival model returned log-risks {log_risk!r} for {sim.plan.canonical()}; "
                               f"expected {sim.labels.shape[0]} finite values.")
    survival = np.asarray(prediction.survival, dtype=np.float64)
    return PlanScore(
        plan=sim.plan, log_risk=log_risk, risk_mean=float(log_risk.mean()),
        risk_sd=float(log_risk.std(ddof=1)) if log_risk.size > 1 else 0.0,
        median_months=float(np.mean(prediction.median_months)), rmst_months=float(np.mean(prediction.rmst_months)),
        survival_times=np.asarray(prediction.times, dtype=np.float64), survival_mean=survival.mean(axis=0),
        volumes=dict(sim.summary))
