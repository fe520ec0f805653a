"""`ClinicalEncoder`: the patient's labs and staging numbers as one conditioning token of the dynamics model.

Why: in HCC the CT does not show everything that decides how a tumour answers TACE. Proliferation shows in the AFP,
not in the image; the number of lesions and vascular invasion may lie outside a tumour-centred crop. On the virtual
cohort an ideal sampler that sees only the CT separates plans by about 1.8 times its seed spread, and about 2.35
times with these numbers (``scripts/outcome_sensitivity_ceiling.py``).

Each field is a fixed, documented transform of a `pipelines.case.Covariates` value (`CLINICAL_FIELDS`) and a
"present" flag, so a missing value is explicit (value 0, flag 0), never imputed silently; the model is trained with
the whole token randomly blanked (all flags 0), so it also knows what to do when a case has no labs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["CLINICAL_FIELDS", "ClinicalEncoder", "clinical_values"]


def _log10_afp(v: float) -> float:  # ng/mL; 2 ≈ 100 ng/mL, one decade = 0.67
    return (math.log10(max(float(v), 0.1)) - 2.0) / 1.5


def _lesions(v: float) -> float:
    return float(v) - 1.5


def _diameter(v: float) -> float:  # mm; log scale around 40 mm
    return (math.log(max(float(v), 1.0)) - math.log(40.0)) / 0.5


def _flag(v: Any) -> float:
    return float(bool(v)) - 0.5


# covariate name -> transform to a value of order 1
CLINICAL_FIELDS: dict[str, Callable[[Any], float]] = {
    "afp": _log10_afp,
    "n_lesions": _lesions,
    "max_diameter_mm": _diameter,
    "vascular_invasion": _flag,
}


def _get(covariates: Any, name: str) -> Any:
    if covariates is None:
        return None
    if isinstance(covariates, Mapping):
        return covariates.get(name)
    return getattr(covariates, name, None)


def clinical_values(covariates: Any, fields: Sequence[str]) -> tuple[list[float], list[float]]:
    """``(values, present)`` of ``fields`` for one patient: a mapping or an object with those attributes (e.g.
    `Covariates`), or ``None`` (nothing known). A missing or non-finite value gives value 0 and present 0."""
    values, present = [], []
    for name in fields:
        raw = _get(covariates, name)
        try:
            v = CLINICAL_FIELDS[name](raw) if raw is not None else float("nan")
        except (TypeError, ValueError):
            v = float("nan")
        ok = math.isfinite(v)
        values.append(v if ok else 0.0)
        present.append(1.0 if ok else 0.0)
    return values, present


class ClinicalEncoder(nn.Module):
    """Covariates of B patients → one token ``(B, 1, dim)`` (an MLP of the transformed values and their flags).

    Args:
        fields: names of `CLINICAL_FIELDS`, in order.
        dim: token width (the dynamics model's ``plan_dim``).
    """

    def __init__(self, fields: Sequence[str], dim: int) -> None:
        super().__init__()
        unknown = [f for f in fields if f not in CLINICAL_FIELDS]
        if unknown or not fields:
            raise ValueError(f"ClinicalEncoder: fields must be a non-empty subset of {list(CLINICAL_FIELDS)}, got "
                             f"{list(fields)}.")
        self.fields = [str(f) for f in fields]
        self.net = nn.Sequential(nn.Linear(2 * len(self.fields), dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, covariates: Sequence[Any]) -> torch.Tensor:
        """``(B, 2F)`` float: transformed values then present flags, one row per patient (``None`` = unknown)."""
        rows = [sum(clinical_values(c, self.fields), []) for c in covariates]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 2 * len(self.fields))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)[:, None, :]
