"""`Case`: one patient's CT, masks, clinical covariates, and optionally the administered plan and outcome.

A `Case` never holds protected health information: `case_id` is a pseudonym chosen by the loader or the cohort,
and DICOM imports are de-identified before a `Case` is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from pipelines.volume import LABELS, Volume

__all__ = ["Covariates", "Outcome", "SourceInfo", "Case"]


@dataclass
class Covariates:
    """Clinical covariates (the reference clinical CSV's columns). Every field is optional for user cases.

    Units: age in years; AFP in ng/mL; albumin in g/L; bilirubin in µmol/L; ``child_pugh`` is the class letter
    (``"A"``/``"B"``/``"C"``); ``bclc`` the stage letter (``"0"``, ``"A"``, ``"B"``, ``"C"``, ``"D"``).
    """

    age: float | None = None
    sex: str | None = None  # "M" / "F"
    hbv: bool | None = None
    afp: float | None = None
    albumin: float | None = None
    bilirubin: float | None = None
    child_pugh: str | None = None
    child_pugh_score: int | None = None
    bclc: str | None = None
    ecog: int | None = None
    vascular_invasion: bool | None = None
    n_lesions: int | None = None
    max_diameter_mm: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Covariates":
        """Build from a dict, ignoring keys that are not covariates (so a clinical JSON may carry more)."""
        d = d or {}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None and v == v})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Outcome:
    """Overall survival in months from TACE, and whether death was observed (``event=True``) or censored."""

    time_months: float
    event: bool


@dataclass
class SourceInfo:
    """What the loader understood about where a volume came from (shown by `mewm case info` and the app)."""

    format: str  # "nifti", "nrrd", "metaimage", "dicom-folder", "dicom-zip"
    modality: str = "CT"
    deidentified: bool = False
    series_description: str | None = None
    reoriented_from: str | None = None  # original axis codes if the loader brought the image to RAS
    rescale_applied: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Case:
    """One patient.

    ``labels`` is one label image on the CT grid, using `pipelines.volume.LABELS`
    (0 background, 1 liver, 2 viable tumour, 3 necrosis, 4 Lipiodol); it is optional (a CT opens without masks).
    ``post_ct``/``post_labels`` are the post-treatment CT and labels, registered to the pre-treatment grid.
    ``plan`` is the administered plan (a `models.plan.Plan`) and ``note`` its procedure note, when known.
    """

    case_id: str
    ct: Volume
    labels: Volume | None = None
    post_ct: Volume | None = None
    post_labels: Volume | None = None
    covariates: Covariates = field(default_factory=Covariates)
    plan: Any | None = None
    note: str | None = None
    outcome: Outcome | None = None
    source: SourceInfo | None = None

    @property
    def has_tumour_mask(self) -> bool:
        return self.labels is not None and bool(np.any(self.tumour_mask()))

    def liver_mask(self, post: bool = False) -> np.ndarray | None:
        """Boolean liver mask (liver parenchyma plus everything inside it: tumour, necrosis, Lipiodol)."""
        lab = self.post_labels if post else self.labels
        return None if lab is None else lab.array > 0

    def tumour_mask(self, post: bool = False, include_treated: bool = True) -> np.ndarray | None:
        """Boolean tumour mask: viable tumour, plus necrosis and Lipiodol when ``include_treated``."""
        lab = self.post_labels if post else self.labels
        if lab is None:
            return None
        keep = [LABELS["tumour"]] + ([LABELS["necrosis"], LABELS["lipiodol"]] if include_treated else [])
        return np.isin(lab.array, keep)
