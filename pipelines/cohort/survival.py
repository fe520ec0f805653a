"""Overall survival of a virtual patient after TACE: Weibull proportional hazards with independent censoring.

Hazard ``h(t) = (k / λ) (t / λ)^(k-1) exp(η)`` (months), cumulative ``Λ(t) = (t / λ)^k exp(η)``, with
``η = η_patient + η_treatment``:

- ``η_patient = 0.03 (age - 60) + 0.28 (CP - 5) + 0.6 VI + 0.3 ECOG + 0.25 (log10 AFP - 2)
  + 0.3 ln(V_tumour / 30 ml) + 0.15 (n - 1) + 0.8 (p - 0.5)``;
- ``η_treatment = -BETA_KILL · K + BETA_HARM · H`` (`pipelines.cohort.response.Response`).

Sampling: ``T = λ (E exp(-η))^(1/k)`` with ``E ~ Exp(1)``; censoring ``C = min(U(6, 60), Exp(mean 120))`` months,
independent of ``T``; observed ``time = min(T, C)``, ``event = T <= C``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gamma, gammainc

from pipelines.case import Outcome
from pipelines.cohort.patient import Patient
from pipelines.cohort.response import Response

__all__ = ["WEIBULL_SHAPE", "WEIBULL_SCALE_MONTHS", "BETA_KILL", "BETA_HARM", "patient_log_hazard",
           "log_hazard", "sample_outcome", "rmst"]

WEIBULL_SHAPE = 1.3  # k
WEIBULL_SCALE_MONTHS = 30.0  # λ
BETA_KILL = 2.6
BETA_HARM = 1.6
CENSOR_ADMIN_MONTHS = (6.0, 60.0)
CENSOR_DROPOUT_MEAN_MONTHS = 120.0


def patient_log_hazard(patient: Patient) -> float:
    """``η_patient``: the prognosis before treatment."""
    c = patient.covariates
    return float(
        0.03 * (c.age - 60.0) + 0.28 * (c.child_pugh_score - 5) + 0.6 * float(c.vascular_invasion) + 0.3 * c.ecog
        + 0.25 * (np.log10(c.afp) - 2.0) + 0.3 * np.log(patient.tumour_volume_ml / 30.0)
        + 0.15 * (c.n_lesions - 1) + 0.8 * (patient.biology.proliferation - 0.5)
    )


def log_hazard(patient: Patient, response: Response) -> float:
    """``η = η_patient - BETA_KILL · K + BETA_HARM · H``."""
    return patient_log_hazard(patient) - BETA_KILL * response.kill + BETA_HARM * response.harm


def sample_outcome(eta: float, rng: np.random.Generator) -> Outcome:
    """Draw survival (months) and independent censoring for log-hazard ``eta``."""
    t = WEIBULL_SCALE_MONTHS * (rng.exponential(1.0) * np.exp(-eta)) ** (1.0 / WEIBULL_SHAPE)
    c = min(rng.uniform(*CENSOR_ADMIN_MONTHS), rng.exponential(CENSOR_DROPOUT_MEAN_MONTHS))
    time = max(0.1, round(float(min(t, c)), 1))
    return Outcome(time_months=time, event=bool(t <= c))


def rmst(eta: float | np.ndarray, tau: float = 60.0) -> np.ndarray:
    """Restricted mean survival time ``∫_0^τ S(t) dt`` in months, exact for the Weibull PH model.

    With ``a = exp(η) / λ^k``: ``∫_0^τ exp(-a t^k) dt = a^(-1/k) / k · Γ(1/k) · P(1/k, a τ^k)``
    (``P`` the regularised lower incomplete gamma function).
    """
    eta = np.asarray(eta, dtype=np.float64)
    k = WEIBULL_SHAPE
    a = np.exp(eta) / WEIBULL_SCALE_MONTHS**k
    return a ** (-1.0 / k) / k * gamma(1.0 / k) * gammainc(1.0 / k, a * tau**k)
