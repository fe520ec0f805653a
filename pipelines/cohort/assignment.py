"""Observational treatment assignment: what a guideline-minded team would choose, confounded with prognosis.

``P(plan j | patient) = (1 - ε) softmax(u_j / τ) + ε / M`` over the ``M`` plans of the cohort's plan space, with
preference score ``u_j`` (all terms 0/1 indicators of the plan ``j`` times patient features; `PREFERENCES`):

- practice habits: +0.4 per agent among Raltitrexed, Lobaplatin, Gelatin Sponge (the most frequent agents of the
  reference notes);
- liver reserve: Child-Pugh B or ascites → +1.2 bland, +0.6 DEB-TACE, -0.8 per drug beyond the first;
- burden: max diameter > 50 mm → +0.6 for two or more drugs, +0.5 for a permanent embolic (PVA, beads);
  max diameter < 30 mm → +1.0 for Absolute Alcohol;
- vascular invasion → +1.2 for NBCA;
- AFP > 400 ng/mL → +0.5 for a platinum agent; arterial enhancement > 70 HU → +0.4 for an anthracycline.

The ε floor makes every plan possible for every patient (positivity), so off-policy evaluation is well posed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipelines.cohort.patient import Patient
from pipelines.cohort.response import DRUG_EFFECTS, plan_parts

__all__ = ["DEFAULT_TEMPERATURE", "DEFAULT_EPSILON", "preference_scores", "assignment_probabilities", "assign_plan"]

DEFAULT_TEMPERATURE = 1.0
DEFAULT_EPSILON = 0.25
_HABITS = ("Raltitrexed", "Lobaplatin", "Gelatin Sponge")


def _score(patient: Patient, plan: Any) -> float:
    drugs, embolics, protocol, _ = plan_parts(plan)
    cov = patient.covariates
    classes = {DRUG_EFFECTS[d][0] for d in drugs if d in DRUG_EFFECTS}
    u = 0.4 * sum(a in _HABITS for a in drugs + embolics)
    if cov.child_pugh != "A" or patient.ascites > 0:
        u += 1.2 * (protocol == "bland") + 0.6 * (protocol == "DEB-TACE") - 0.8 * max(0, len(drugs) - 1)
    if cov.max_diameter_mm > 50:
        u += 0.6 * (len(drugs) >= 2) + 0.5 * any(e == "PVA" or "bead" in e.lower() for e in embolics)
    if cov.max_diameter_mm < 30:
        u += 1.0 * ("Absolute Alcohol" in embolics)
    if cov.vascular_invasion:
        u += 1.2 * ("NBCA" in embolics)
    if cov.afp > 400:
        u += 0.5 * ("platinum" in classes)
    if patient.enhancement_hu > 70:
        u += 0.4 * ("anthracycline" in classes)
    return float(u)


def preference_scores(patient: Patient, plans: Sequence[Any]) -> np.ndarray:
    """``(M,)`` preference scores ``u_j``."""
    return np.array([_score(patient, p) for p in plans])


def assignment_probabilities(patient: Patient, plans: Sequence[Any], temperature: float = DEFAULT_TEMPERATURE,
                             epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """``(M,)`` probabilities of each plan being administered; each is at least ``epsilon / M``."""
    if not temperature > 0:
        raise ValueError(f"assignment temperature must be > 0, got {temperature!r}.")
    if not 0 < epsilon <= 1:
        raise ValueError(f"assignment epsilon must be in (0, 1], got {epsilon!r}: it keeps every plan possible.")
    if len(plans) == 0:
        raise ValueError("assignment needs at least one plan in the plan space.")
    u = preference_scores(patient, plans) / temperature
    soft = np.exp(u - u.max())
    soft /= soft.sum()
    return (1.0 - epsilon) * soft + epsilon / len(plans)


def assign_plan(patient: Patient, plans: Sequence[Any], rng: np.random.Generator,
                temperature: float = DEFAULT_TEMPERATURE, epsilon: float = DEFAULT_EPSILON) -> int:
    """Index of the administered plan, drawn from `assignment_probabilities`."""
    prob = assignment_probabilities(patient, plans, temperature, epsilon)
    return int(rng.choice(len(plans), p=prob))
