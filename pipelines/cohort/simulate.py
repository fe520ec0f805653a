"""One virtual case without images: patient, observed plan, note, outcome, oracle row.

Randomness: case ``i`` of a cohort with seed ``S`` uses ``SeedSequence(S).spawn(n)[i]``, split into three streams
(patient + assignment, note + survival, rendering), so results do not depend on the number of workers and the
fairness tests can simulate hundreds of patients without rendering any volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pipelines.case import Outcome
from pipelines.cohort.assignment import assign_plan
from pipelines.cohort.notes import procedure_note, sample_doses
from pipelines.cohort.oracle import expected_survival
from pipelines.cohort.patient import Patient, sample_patient
from pipelines.cohort.response import Response, plan_response
from pipelines.cohort.survival import log_hazard, sample_outcome

__all__ = ["CaseTruth", "case_seeds", "simulate_case", "simulate_patients"]


@dataclass
class CaseTruth:
    """Everything the simulator knows about one case before rendering."""

    case_id: str
    patient: Patient
    plan_index: int
    plan: Any  # the administered `Plan`, with doses
    note: str
    response: Response
    outcome: Outcome
    oracle: np.ndarray  # (M,) expected survival (months) of each plan of the plan space
    render_seed: np.random.SeedSequence


def case_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    """Per-case seed sequences derived from ``(seed, index)``."""
    if n < 1:
        raise ValueError(f"a cohort needs n >= 1 patients, got {n}.")
    return np.random.SeedSequence(int(seed)).spawn(int(n))


def simulate_patients(seed: int, n: int) -> list[Patient]:
    """The first ``n`` patients of the cohort with ``seed`` (the same patients `simulate_case` gives)."""
    return [sample_patient(np.random.default_rng(ss.spawn(3)[0]), i) for i, ss in enumerate(case_seeds(seed, n))]


def simulate_case(ss: np.random.SeedSequence, index: int, plans: Sequence[Any]) -> CaseTruth:
    """Simulate case ``index`` from its seed sequence ``ss`` over the plan space ``plans``."""
    from models.plan import Plan

    s_patient, s_outcome, s_render = ss.spawn(3)
    rng = np.random.default_rng(s_patient)
    patient = sample_patient(rng, index)
    j = assign_plan(patient, plans, rng)
    rng2 = np.random.default_rng(s_outcome)
    chosen = plans[j]
    doses = sample_doses(chosen, rng2)
    plan = Plan.from_agents(chosen.agents, doses=doses, protocol=chosen.protocol)
    note = procedure_note(plan, doses, rng2)
    response = plan_response(patient, plan)
    outcome = sample_outcome(log_hazard(patient, response), rng2)
    oracle = np.array([expected_survival(patient, p) for p in plans])
    return CaseTruth(case_id=f"VC{index:05d}", patient=patient, plan_index=j, plan=plan, note=note,
                     response=response, outcome=outcome, oracle=oracle, render_seed=s_render)
