"""Expert DICOM SEG masks (read with highdicom) and contrast-phase calls from aorta vs portal-vein HU.

`read_seg` returns each segment of a SEG as a label `Volume` on the SEG's own grid (world geometry from its plane
positions, never from the referenced files), so masks can be resampled onto whichever acquisition of the series is
chosen, and a SEG whose grid differs from its CT is caught (`same_grid`) and resampled instead of misread.

`classify_phase` tells arterial from portal-venous by HU: in the arterial phase the aorta is far brighter than the
portal vein; in the portal-venous phase the portal vein has caught up (or passed it); without contrast neither
enhances. The thresholds are named constants below.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import PatientImportError
from pipelines.caseio.deid import Deidentifier
from pipelines.volume import Volume

__all__ = ["SEGMENTS", "SegMasks", "read_seg", "PhaseCall", "classify_phase", "same_grid", "mask_on"]

# Segment labels of the collection (matched ignoring case and spaces) → MeWM's names.
SEGMENTS = {"liver": "liver", "mass": "tumour", "portalvein": "portal_vein", "abdominalaorta": "aorta",
            "aorta": "aorta", "necrosis": "necrosis"}
ARTERIAL_MIN_AORTA_EXCESS_HU = 60.0  # aorta this much brighter than the portal vein: arterial phase
CONTRAST_MIN_HU = 100.0  # aorta and portal vein both below this: no contrast


@dataclass
class SegMasks:
    """The segments of one SEG, by MeWM name (``liver``, ``tumour``, ``portal_vein``, ``aorta``, ``necrosis``)."""

    masks: dict[str, Volume]
    labels: dict[str, str]  # MeWM name → the SEG's own segment label
    source_sop_uids: set[str]
    unknown_segments: list[str]


def read_seg(path: str | os.PathLike, deidentify: Deidentifier) -> SegMasks:
    """Read a DICOM SEG (de-identified on read, so its references match the de-identified CT index).

    Raises:
        PatientImportError: ``bad-seg`` when the file is not a readable SEG or a segment has no usable geometry.
    """
    import highdicom as hd
    import pydicom

    from pipelines.caseio.geometry import sitk_to_volume, to_ras

    path = Path(path)
    try:
        ds = deidentify(pydicom.dcmread(path), record=False)
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PatientImportError(f"The DICOM SEG {path.name} cannot be read ({type(e).__name__}: {e}).",
                                 "bad-seg") from e
    masks, labels, unknown = {}, {}, []
    for item in seg.SegmentSequence:
        key = SEGMENTS.get(re.sub(r"[\s_\-]+", "", str(item.SegmentLabel).lower()))
        if key is None:
            unknown.append(str(item.SegmentLabel))
            continue
        try:
            volume = seg.get_volume(segment_numbers=[int(item.SegmentNumber)], combine_segments=True, dtype=np.uint8)
        except (ValueError, RuntimeError) as e:
            raise PatientImportError(f"Segment {item.SegmentLabel!r} of the SEG {path.name} does not form a 3D grid "
                                     f"({e}); re-export the segmentation.", "bad-seg") from e
        if volume is None:  # a segment without a single frame: an empty mask on no grid
            masks[key] = None
        else:
            v = to_ras(sitk_to_volume(volume.to_simpleitk(), "label", f"SEG {item.SegmentLabel}"))
            masks[key] = Volume((v.array > 0).astype(np.uint8), v.affine, "label", v.name)
        labels[key] = str(item.SegmentLabel)
    return SegMasks(masks, labels, {str(u[2]) for u in seg.get_source_image_uids()}, unknown)


def same_grid(a: Volume, b: Volume, tol_mm: float = 1e-2) -> bool:
    """True when the two volumes have the same shape and voxel→world map (so no resampling is needed)."""
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=tol_mm)


def mask_on(mask: Volume | None, grid: Volume) -> np.ndarray:
    """A SEG mask as a boolean array on ``grid`` (nearest neighbour by world position); empty when ``None``."""
    from pipelines.caseio.geometry import resample_like

    if mask is None:
        return np.zeros(grid.shape, dtype=bool)
    if same_grid(mask, grid):
        return mask.array > 0
    return resample_like(mask, grid).array > 0


@dataclass(frozen=True)
class PhaseCall:
    phase: str  # "arterial" | "portal-venous" | "non-contrast" | "unknown"
    aorta_hu: float | None
    portal_hu: float | None

    def to_dict(self) -> dict:
        return {"phase": self.phase, "aorta_hu": _r(self.aorta_hu), "portal_vein_hu": _r(self.portal_hu)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def classify_phase(ct: Volume, aorta: np.ndarray, portal: np.ndarray) -> PhaseCall:
    """The contrast phase of ``ct`` from the median HU inside the aorta and portal-vein masks (on its grid)."""
    if not aorta.any() or not portal.any():
        return PhaseCall("unknown", _median(ct, aorta), _median(ct, portal))
    a, p = _median(ct, aorta), _median(ct, portal)
    if a < CONTRAST_MIN_HU and p < CONTRAST_MIN_HU:
        phase = "non-contrast"
    elif a - p > ARTERIAL_MIN_AORTA_EXCESS_HU:
        phase = "arterial"
    else:
        phase = "portal-venous"
    return PhaseCall(phase, a, p)


def _median(ct: Volume, mask: np.ndarray) -> float | None:
    return float(np.median(ct.array[mask])) if mask.any() else None
