"""The effect of a TACE plan on a virtual patient: tumour kill, toxicity, and the post-TACE quantities.

Defined for ANY valid `models.plan.Plan` (any agents of the Action Base, any doses, any protocol), not only the
cohort's catalogue. Deterministic given the patient: the randomness of the world lives in the patient (hidden
biology) and in the survival draw, so the oracle's expected survival is exact.

Equations (``docs/DATA_CARD_cohort.md`` §4):

- dose factor ``f_d = clip(0.7 + 0.6 (dose - dose_min) / (dose_max - dose_min), 0.5, 1.4)`` (1.0 without a dose);
- drug delivery ``δ``: cTACE ``0.55 + 0.6 v`` (emulsion follows arterial supply); DEB-TACE ``1.15`` for the
  anthracycline loaded on the beads, ``0.7`` for other (infused) drugs; no Lipiodol and no beads: ``0.6``;
- drug kill ``e_d = potency_d · f_d · s_class(d) · δ``; ``K_drug = 1 - Π(1 - e_d)``;
- embolic kill ``k_e`` (table `EMBOLIC_EFFECTS`, some depend on the patient); ``K_emb = 1 - Π(1 - k_e)``;
- total kill ``K = (1 - (1 - K_drug)(1 - K_emb)) · (1 - 0.35 clip((D_max - 40)/60, 0, 1)) · (1 - 0.12 (n - 1))``;
- toxicity ``T = Σ tox_d f_d σ_d + Σ tox_e`` (``σ_d = 0.5`` for bead-loaded drugs, else 1);
  liver vulnerability ``w = 0.25 + 2.5 clip((CP - 5)/4, 0, 1) + 0.4 ascites``; harm ``H = T · w``;
- viable-tumour volume ratio at follow-up ``r = (1 - K) exp(0.7 p (1 - K))`` (> 1 means growth);
- Lipiodol-laden fraction of the old tumour ``L = K ρ`` (only with Lipiodol; ``ρ`` = Lipiodol retention), necrosis
  ``N = K - L``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.errors import PlanValidationError
from pipelines.cohort.patient import Patient

__all__ = ["DRUG_EFFECTS", "EMBOLIC_EFFECTS", "Response", "plan_response", "plan_parts", "dose_factor"]

# drug -> (simulator class, potency, systemic toxicity)
DRUG_EFFECTS: dict[str, tuple[str, float, float]] = {
    "Raltitrexed": ("antimetabolite", 0.55, 0.10),
    "Lobaplatin": ("platinum", 0.50, 0.16),
    "Oxaliplatin": ("platinum", 0.48, 0.18),
    "Cisplatin": ("platinum", 0.52, 0.24),
    "Nedaplatin": ("platinum", 0.46, 0.16),
    "Epirubicin": ("anthracycline", 0.52, 0.14),
    "Idarubicin": ("anthracycline", 0.56, 0.20),
    "Pirarubicin": ("anthracycline", 0.48, 0.12),
    "Doxorubicin": ("anthracycline", 0.54, 0.22),
    "Mitomycin": ("antibiotic", 0.50, 0.16),
    "Hydroxycamptothecin": ("topoisomerase", 0.50, 0.12),
}
# embolic -> (base kill, toxicity); patient-dependent terms are added in `_embolic_kill`
EMBOLIC_EFFECTS: dict[str, tuple[float, float]] = {
    "Lipiodol": (0.10, 0.04),  # + 0.35 v
    "Gelatin Sponge": (0.15, 0.02),
    "PVA": (0.24, 0.08),
    "beads": (0.22, 0.06),
    "Absolute Alcohol": (0.0, 0.22),  # + 0.70 exp(-D_max / 30 mm)
    "NBCA": (0.12, 0.12),  # + 0.40 if vascular invasion
}
KILL_CAP = 0.97


@dataclass(frozen=True)
class Response:
    """What a plan does to a patient (all fractions of the pre-treatment tumour volume)."""

    kill: float  # K in [0, KILL_CAP]
    toxicity: float  # T
    harm: float  # H = T * w
    viable_ratio: float  # viable-tumour volume after / before
    necrosis_fraction: float  # N
    lipiodol_fraction: float  # L
    has_lipiodol: bool


def _name(agent: Any) -> str:
    return str(getattr(agent, "name", agent))


def _is_beads(name: str) -> bool:
    return "bead" in name.lower()


def plan_parts(plan: Any) -> tuple[list[str], list[str], str, dict[str, float]]:
    """``(drugs, embolics, protocol, doses)`` of a `Plan` as plain names/values."""
    drugs = [_name(a) for a in plan.drugs]
    embolics = [_name(a) for a in plan.embolics]
    protocol = str(plan.protocol) if getattr(plan, "protocol", None) is not None else ""
    doses = {str(k): float(getattr(v, "value", v)) for k, v in (getattr(plan, "doses", None) or {}).items()}
    return drugs, embolics, protocol, doses


def dose_factor(agent: str, dose: float | None) -> float:
    """``clip(0.7 + 0.6 (dose - min)/(max - min), 0.5, 1.4)`` with the Action Base's range; 1.0 without a dose."""
    if dose is None:
        return 1.0
    from models.action_base import default_action_base

    a = default_action_base().agent(agent)
    lo, hi = getattr(a, "dose_min", None), getattr(a, "dose_max", None)
    if lo is None or hi is None or hi <= lo:
        return 1.0
    return float(np.clip(0.7 + 0.6 * (dose - lo) / (hi - lo), 0.5, 1.4))


def _embolic_kill(name: str, patient: Patient) -> tuple[float, float]:
    key = "beads" if _is_beads(name) else name
    if key not in EMBOLIC_EFFECTS:
        raise PlanValidationError(
            f"The virtual cohort has no effect model for embolic {name!r}; known: {', '.join(EMBOLIC_EFFECTS)}. "
            "Add it to pipelines/cohort/response.py EMBOLIC_EFFECTS (and the data card) to simulate it.")
    kill, tox = EMBOLIC_EFFECTS[key]
    bio = patient.biology
    if key == "Lipiodol":
        kill += 0.35 * bio.vascularity
    elif key == "Absolute Alcohol":
        kill += 0.70 * float(np.exp(-patient.max_diameter_mm / 30.0))
    elif key == "NBCA":
        kill += 0.40 * float(bool(patient.covariates.vascular_invasion))
    return kill, tox


def plan_response(patient: Patient, plan: Any) -> Response:
    """The deterministic response of ``patient`` to ``plan`` (see the module docstring for the equations)."""
    drugs, embolics, protocol, doses = plan_parts(plan)
    bio = patient.biology
    has_lip = "Lipiodol" in embolics
    has_beads = any(_is_beads(e) for e in embolics)
    # 1. drugs
    loaded = None
    if has_beads:
        loaded = next((d for d in drugs if d in DRUG_EFFECTS and DRUG_EFFECTS[d][0] == "anthracycline"), None)
    survive_drug, tox = 1.0, 0.0
    for d in drugs:
        if d not in DRUG_EFFECTS:
            raise PlanValidationError(
                f"The virtual cohort has no effect model for drug {d!r}; known: {', '.join(DRUG_EFFECTS)}. "
                "Add it to pipelines/cohort/response.py DRUG_EFFECTS (and the data card) to simulate it.")
        cls, potency, dtox = DRUG_EFFECTS[d]
        f = dose_factor(d, doses.get(d))
        if protocol == "DEB-TACE" or has_beads:
            delivery, systemic = (1.15, 0.5) if d == loaded else (0.7, 1.0)
        elif has_lip:
            delivery, systemic = 0.55 + 0.6 * bio.vascularity, 1.0
        else:
            delivery, systemic = 0.6, 1.0
        e = min(0.95, potency * f * bio.sensitivity[cls] * delivery)
        survive_drug *= 1.0 - e
        tox += dtox * f * systemic
    # 2. embolics
    survive_emb = 1.0
    for e in embolics:
        k, etox = _embolic_kill(e, patient)
        survive_emb *= 1.0 - min(0.95, k)
        tox += etox
    # 3. total kill, toxicity, harm
    n = len(patient.lesions)
    kill = (1.0 - survive_drug * survive_emb)
    kill *= (1.0 - 0.35 * float(np.clip((patient.max_diameter_mm - 40.0) / 60.0, 0.0, 1.0))) * (1.0 - 0.12 * (n - 1))
    kill = float(np.clip(kill, 0.0, KILL_CAP))
    cp = patient.covariates.child_pugh_score
    w = 0.25 + 2.5 * float(np.clip((cp - 5) / 4.0, 0.0, 1.0)) + 0.4 * patient.ascites
    # 4. post-TACE quantities
    ratio = (1.0 - kill) * float(np.exp(0.7 * bio.proliferation * (1.0 - kill)))
    lip = kill * bio.lipiodol_retention if has_lip else 0.0
    return Response(kill=kill, toxicity=float(tox), harm=float(tox * w), viable_ratio=float(ratio),
                    necrosis_fraction=float(kill - lip), lipiodol_fraction=float(lip), has_lipiodol=has_lip)
