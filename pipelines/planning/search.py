"""Plan search: which admissible plan gives the lowest predicted risk for this case?

Two modes over the agents a policy proposed (`pipelines.policy.Proposal`):

- **beam** (the reference search of MeWM, reference-mewm.md §6, with its defects fixed): a drug phase of
  ``drug_horizon`` steps adds one drug per step to each beam; a partial drug set is scored as a complete,
  admissible plan (the drugs plus the protocol's required embolic: Lipiodol for cTACE, drug-eluting beads for
  DEB-TACE), so every score is the risk of a plan that could be given. An embolic phase of ``embolic_horizon - 1``
  steps then adds one embolic per step (the required embolic counts towards the horizon, as in the reference).
  Bland plans (embolics only) start from single embolics when the proposal allows bland embolisation. After every
  step the beams are the ``beams`` best *distinct* plans seen so far (so a step is kept only when it lowers the risk,
  and beams never collapse into copies of one plan). Rules are enforced by building every candidate as a validated
  `Plan`; a candidate that breaks a rule is never scored. All candidates of one step are simulated in ONE batched
  world-model call, and a plan reached twice is scored once (`PlanScorer`).
- **exhaustive**: every admissible plan of the proposal (or a given candidate list) in one batched call.

Ranking: by the mean log-risk over the T simulated samples (lower first), ties by the plan's identity, so a fixed
seed gives an identical ranking.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.action_base import default_action_base
from models.errors import ConfigError, PlanValidationError
from models.plan import Plan, Protocol
from pipelines.case import Case
from pipelines.config import DEFAULT_STEPS
from pipelines.planning.scoring import PlanScore, PlanScorer, plan_id
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel.simulate import PlanSimulation

__all__ = ["MODES", "PlanningResult", "beam_search", "exhaustive_search", "plan_case", "ranked"]

MODES = ("beam", "exhaustive")


@dataclass(eq=False)
class PlanningResult:
    """What `plan_case` returns: the ranked plans of one case and how they were found.

    Attributes:
        case_id: the case planned. proposal: the policy's `Proposal` (``None`` when candidates were given).
        ranked: every scored plan, lowest mean risk first.
        settings: mode, samples, seed, steps, guidance, beams, horizons, survival model and world-model folders.
        denoiser_passes: denoiser calls over the whole search; simulate_calls; simulated_samples: plans × T.
        timings: seconds (``policy``, ``simulate``, ``survival``, ``total``).
        simulations: by plan id (`pipelines.planning.scoring.plan_id`): the simulated crops and labels.
        pre_hu, pre_labels: the pre-treatment crop (HU) and its labels, on the simulations' grid.
    """

    case_id: str
    proposal: Any
    ranked: list[PlanScore]
    settings: dict[str, Any]
    denoiser_passes: int
    simulate_calls: int
    simulated_samples: int
    timings: dict[str, float]
    simulations: dict[str, PlanSimulation] = field(repr=False)
    pre_hu: np.ndarray = field(repr=False)
    pre_labels: np.ndarray = field(repr=False)
    crop: Any = field(default=None, repr=False)  # `CropSample`: the crop grid (affine) of pre_hu and simulations
    requested_evaluations: int = 0  # candidate evaluations the search asked for, repeats included
    imputed: tuple[str, ...] = ()  # covariates missing for this case, replaced by the survival model's training means
    crop_note: str | None = None  # set when the lesion needed a crop larger than the world model's training crop

    def best(self) -> PlanScore:
        return self.ranked[0]

    def simulation(self, score: PlanScore) -> PlanSimulation:
        return self.simulations[score.id]

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON data: settings, proposal, ranked plans, passes and timings."""
        from pipelines.worldmodel.metrics import json_safe

        return json_safe({
            "case_id": self.case_id, "settings": self.settings,
            "proposal": None if self.proposal is None else self.proposal.to_dict(),
            "ranked": [dict(rank=i + 1, **s.to_dict()) for i, s in enumerate(self.ranked)],
            "denoiser_passes": self.denoiser_passes, "simulate_calls": self.simulate_calls,
            "simulated_samples": self.simulated_samples, "requested_evaluations": self.requested_evaluations,
            "imputed_covariates": list(self.imputed), "crop_note": self.crop_note,
            "timings_s": self.timings,
            "notice": "Research use only; not for clinical use. Risks come from models trained on synthetic data.",
        })

    def table(self):
        """The ranked plans as a `pandas.DataFrame` (one row per plan)."""
        import pandas as pd

        rows = []
        for i, s in enumerate(self.ranked):
            row = {"rank": i + 1, "plan": s.plan.canonical(), "protocol": s.plan.protocol.value,
                   "risk_mean": s.risk_mean, "risk_sd": s.risk_sd, "median_survival_months": s.median_months,
                   "rmst_months": s.rmst_months}
            for name, summary in s.volumes.items():
                row[f"{name}_change_ml"] = summary.mean_change_ml
            rows.append(row)
        return pd.DataFrame(rows)


def ranked(scores: Iterable[PlanScore]) -> list[PlanScore]:
    """Lowest mean risk first; ties broken by the plan's identity (deterministic)."""
    return sorted(scores, key=lambda s: (s.risk_mean, s.id))


def _staged(progress: ProgressFn | None, stage: int, stages: int, label: str) -> ProgressFn | None:
    """Map one simulate call's progress onto its share of the whole search (per mille)."""
    if progress is None:
        return None

    def report(done: int, total: int, message: str = "") -> None:
        frac = (stage + done / max(total, 1)) / stages
        progress(min(999, int(1000 * frac)), 1000, f"{label}: {message}" if message else label)

    return report


def _make(drugs: Sequence[str], embolics: Sequence[str], protocol: Protocol) -> Plan | None:
    """The validated plan, or ``None`` when it breaks a rule (such candidates are never scored)."""
    try:
        return Plan.from_agents([*drugs, *embolics], protocol=protocol)
    except PlanValidationError:
        return None


def _top_distinct(scores: Iterable[PlanScore], k: int) -> list[PlanScore]:
    out: dict[str, PlanScore] = {}
    for s in ranked(scores):
        if s.id not in out:
            out[s.id] = s
        if len(out) == k:
            break
    return list(out.values())


def beam_search(scorer: PlanScorer, drugs: Sequence[str], embolics: Sequence[str], protocols: Sequence[Protocol | str],
                *, beams: int = 5, drug_horizon: int = 2, embolic_horizon: int = 2,
                progress: ProgressFn | None = None) -> list[PlanScore]:
    """The beam search of the module doc; returns every scored plan, ranked.

    Raises:
        ConfigError: beams < 1, drug_horizon < 0 or embolic_horizon < 1.
        PlanValidationError: no admissible plan can be built from the proposed agents and protocols.
    """
    if beams < 1 or drug_horizon < 0 or embolic_horizon < 1:
        raise ConfigError(f"Beam search needs beams >= 1, drug_horizon >= 0 and embolic_horizon >= 1; got "
                          f"{beams}, {drug_horizon}, {embolic_horizon}.")
    ab = default_action_base()
    protocols = [Protocol.from_name(p) for p in protocols]
    drugs = [ab.agent(d).name for d in drugs]
    embolics = [ab.agent(e).name for e in embolics]
    required = {p: tuple(ab.protocols[p.value].requires_agents) for p in protocols}
    drug_protocols = [p for p in protocols if ab.protocols[p.value].max_drugs != 0]
    stages = drug_horizon + (embolic_horizon - 1) + (Protocol.BLAND in protocols)
    stage = 0
    beam: list[PlanScore] = []

    def step(candidates: list[Plan], label: str) -> None:
        nonlocal beam, stage
        if candidates:
            scored = scorer.score(candidates, progress=_staged(progress, stage, stages, label))
            beam = _top_distinct([*beam, *scored], beams)
        stage += 1

    if Protocol.BLAND in protocols:  # bland embolisation: single embolics to start from
        step([p for e in embolics if (p := _make([], [e], Protocol.BLAND)) is not None], "bland embolics")
    frontier: list[tuple[tuple[str, ...], Protocol]] = [((), p) for p in drug_protocols]
    for h in range(drug_horizon):
        candidates = []
        for have, proto in frontier:
            for d in drugs:
                if d in have:
                    continue
                plan = _make([*have, d], required[proto], proto)
                if plan is not None:
                    candidates.append(plan)
        step(candidates, f"drug step {h + 1}/{drug_horizon}")
        frontier = [(s.plan.drugs, s.plan.protocol) for s in beam
                    if s.plan.protocol != Protocol.BLAND and len(s.plan.drugs) == h + 1]
        # beams whose drug set did not grow keep their place but are not expanded again from a shorter set
    for h in range(embolic_horizon - 1):
        candidates = []
        for s in beam:
            if len(s.plan.embolics) >= embolic_horizon:
                continue
            for e in embolics:
                if e not in s.plan.embolics:
                    plan = _make(s.plan.drugs, [*s.plan.embolics, e], s.plan.protocol)
                    if plan is not None:
                        candidates.append(plan)
        step(candidates, f"embolic step {h + 1}/{embolic_horizon - 1}")
    if not scorer.scores:
        raise PlanValidationError(
            f"No admissible plan can be built from drugs {drugs or 'none'}, embolics {embolics or 'none'} and "
            f"protocols {[p.value for p in protocols]}; the proposal needs e.g. Lipiodol with a drug (cTACE).",
            rule="search")
    if progress is not None:
        progress(1000, 1000, "search done")
    return ranked(scorer.scores.values())


def exhaustive_search(scorer: PlanScorer, plans: Sequence[Plan],
                      progress: ProgressFn | None = None) -> list[PlanScore]:
    """Score every plan (one batched simulate call) and rank them."""
    if not plans:
        raise PlanValidationError("Exhaustive search got no candidate plans.", rule="search")
    scorer.score(list(plans), progress=progress)
    return ranked(scorer.scores.values())


def plan_case(case: Case, world: Any, survival: Any, proposal: Any = None, *, mode: str = "beam",
              samples: int = 3, seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float = 2.0, beams: int = 5,
              drug_horizon: int = 2, embolic_horizon: int = 2, candidates: Sequence[Plan | str] | None = None,
              policy: Any = None, survival_sees_plan: bool = True,
              progress: bool | ProgressFn | None = None) -> PlanningResult:
    """Rank plans for ``case``: policy proposal → search → ranked `PlanScore`s.

    Args:
        world: a loaded `WorldModel`; survival: a `SurvivalModel` (`pipelines.survival.load_survival_model`).
        proposal: the policy's `Proposal`; ``None`` asks ``policy`` (a `PolicyBackend`, default the configured
            one) unless ``candidates`` are given (exhaustive search over them, no policy).
        mode: ``"beam"`` or ``"exhaustive"``; the other arguments as in the module doc and `WorldModel.simulate`.
        survival_sees_plan: give the survival model the plan as well as the simulated outcome (default; a model
            with plan features needs it). ``False`` ranks by the simulated outcome alone (an ablation).
    """
    from pipelines.worldmodel.simulate import parse_plans

    start = time.perf_counter()
    if mode not in MODES:
        raise ConfigError(f"Unknown search mode {mode!r}; choose one of {', '.join(MODES)}.")
    progress_fn = resolve_progress(progress, "plan", "‰")
    timings = {"policy": 0.0}
    candidate_plans = parse_plans(list(candidates)) if candidates is not None else None
    if proposal is None and candidate_plans is None:
        t0 = time.perf_counter()
        if policy is None:
            from pipelines.policy import load_policy

            policy = load_policy()
        proposal = policy.propose(case)
        timings["policy"] = time.perf_counter() - t0
    scorer = PlanScorer(case=case, world=world, survival=survival, samples=samples, seed=seed, steps=steps,
                        guidance=guidance, survival_sees_plan=survival_sees_plan)
    if candidate_plans is not None:
        mode = "exhaustive"
        scores = exhaustive_search(scorer, candidate_plans, progress_fn)
    elif mode == "exhaustive":
        scores = exhaustive_search(scorer, proposal.candidate_plans(drug_horizon, embolic_horizon), progress_fn)
    else:
        scores = beam_search(scorer, proposal.drugs, proposal.embolics, proposal.protocols, beams=beams,
                             drug_horizon=drug_horizon, embolic_horizon=embolic_horizon, progress=progress_fn)
    timings.update(scorer.timings)
    timings["total"] = time.perf_counter() - start
    settings = {"mode": mode, "samples": samples, "seed": seed, "steps": steps, "sampler": world.sampler,
                "guidance": guidance,
                "beams": beams, "drug_horizon": drug_horizon, "embolic_horizon": embolic_horizon,
                "candidates": None if candidate_plans is None else len(candidate_plans),
                "survival_sees_plan": survival_sees_plan,
                "survival_model": {"kind": getattr(survival, "kind", None),
                                   "directory": str(getattr(survival, "directory", ""))},
                "world_model": str(getattr(world, "weights_dir", ""))}
    return PlanningResult(case_id=case.case_id, proposal=proposal, ranked=scores, settings=settings,
                          denoiser_passes=scorer.denoiser_passes, simulate_calls=scorer.simulate_calls,
                          simulated_samples=scorer.simulated_samples, timings=timings,
                          requested_evaluations=scorer.requested, imputed=tuple(sorted(scorer.imputed)),
                          simulations=scorer.simulations, pre_hu=scorer.pre_hu, pre_labels=scorer.pre_labels,
                          crop=scorer.crop, crop_note=scorer.crop_note)
