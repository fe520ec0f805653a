"""Test helpers of the policy tests: a small phantom case with a chosen tumour size and covariates."""

from __future__ import annotations

import numpy as np

from pipelines.case import Case, Covariates
from pipelines.volume import LABELS, Volume

SHAPE = (48, 48, 24)
SPACING = (2.5, 2.5, 5.0)  # a 120 x 120 x 120 mm field


def make_case(tumour_radius_mm: float | None = 12.0, covariates: dict | None = None, case_id: str = "phantom",
              labels: bool = True) -> Case:
    """A liver ellipsoid with one spherical tumour (``None``: liver only); ``labels=False`` drops the masks."""
    rng = np.random.default_rng(3)
    ijk = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    mm = [(g - n / 2) * s for g, n, s in zip(ijk, SHAPE, SPACING)]
    ct = np.full(SHAPE, -900.0, np.float32) + rng.normal(0, 10, SHAPE).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    liver = (mm[0] / 55) ** 2 + (mm[1] / 50) ** 2 + (mm[2] / 55) ** 2 <= 1
    ct[liver] = 60.0
    lab[liver] = LABELS["liver"]
    if tumour_radius_mm is not None:
        tumour = liver & ((mm[0] - 5) ** 2 + mm[1] ** 2 + mm[2] ** 2 <= tumour_radius_mm ** 2)
        ct[tumour] = 110.0
        lab[tumour] = LABELS["tumour"]
    affine = np.diag([*SPACING, 1.0])
    return Case(case_id=case_id, ct=Volume(ct, affine, "scalar", "CT"),
                labels=Volume(lab, affine, "label", "labels") if labels else None,
                covariates=Covariates.from_dict(covariates))


GOOD_LIVER = {"child_pugh": "A", "child_pugh_score": 5, "bilirubin": 12.0, "albumin": 42.0, "ecog": 0,
              "vascular_invasion": False, "bclc": "B", "afp": 20.0}
