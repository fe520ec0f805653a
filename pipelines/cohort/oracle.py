"""The oracle: the exact expected survival (RMST to 60 months) of any plan for any virtual patient.

It reads the patient's hidden biology, so its output goes to ``oracle/`` and models must never read it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipelines.cohort.patient import Patient
from pipelines.cohort.response import plan_response
from pipelines.cohort.survival import log_hazard, rmst

__all__ = ["RMST_HORIZON_MONTHS", "expected_survival", "oracle_matrix"]

RMST_HORIZON_MONTHS = 60.0


def expected_survival(patient: Patient, plan: Any, tau: float = RMST_HORIZON_MONTHS) -> float:
    """Restricted mean survival time (months, to ``tau``) of ``patient`` treated with ``plan``; exact, no sampling."""
    return float(rmst(log_hazard(patient, plan_response(patient, plan)), tau))


def oracle_matrix(patients: Sequence[Patient], plans: Sequence[Any], tau: float = RMST_HORIZON_MONTHS) -> np.ndarray:
    """``(n_patients, n_plans)`` expected survival in months."""
    out = np.empty((len(patients), len(plans)))
    for i, pt in enumerate(patients):
        out[i] = [expected_survival(pt, pl, tau) for pl in plans]
    return out
