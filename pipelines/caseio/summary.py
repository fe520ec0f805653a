"""`case_summary`: what a clinician checks first — grid, HU range, liver volume, lesions and their sizes.

Lesions are 3D connected components (26-connectivity) of the tumour mask (viable tumour, necrosis and Lipiodol),
ignoring components smaller than ``min_lesion_voxels``. The maximum axial diameter is measured edge to edge in each
axial plane, in world millimetres (voxel corners, so a single voxel measures its diagonal), and the largest over
the lesion's slices is kept; the equivalent diameter is that of a sphere of the lesion's volume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.case import Case
from pipelines.volume import Volume

__all__ = ["LesionSummary", "CaseSummary", "case_summary", "find_lesions", "max_axial_diameter_mm"]

MIN_LESION_VOXELS = 5


@dataclass
class LesionSummary:
    """One lesion. Volumes in ml, lengths in mm, centroid in RAS mm."""

    index: int
    n_voxels: int
    volume_ml: float
    max_axial_diameter_mm: float
    equivalent_diameter_mm: float
    centroid_ras_mm: tuple[float, float, float]


@dataclass
class CaseSummary:
    """Everything `mewm case info` and the app's case panel show. ``to_dict()`` is JSON-serialisable."""

    case_id: str
    format: str
    modality: str
    deidentified: bool
    series_description: str | None
    reoriented_from: str | None
    rescale_applied: bool
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_ras_mm: tuple[float, float, float]
    orientation: str
    hu_min: float
    hu_p1: float
    hu_p99: float
    hu_max: float
    has_labels: bool
    liver_volume_ml: float | None
    n_tumours: int
    tumour_volume_ml: float | None
    lesions: list[LesionSummary] = field(default_factory=list)
    has_post_ct: bool = False
    covariates: dict[str, Any] = field(default_factory=dict)
    plan: str | None = None
    note: str | None = None
    outcome: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_lesions(mask: np.ndarray, min_voxels: int = MIN_LESION_VOXELS) -> list[np.ndarray]:
    """Boolean masks of the 26-connected components of ``mask`` with at least ``min_voxels`` voxels, largest first."""
    from scipy import ndimage

    labelled, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    keep = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    return [labelled == i for i in keep]


def _axial_axis(volume: Volume) -> int:
    """The array axis closest to the world S (superior) direction: axial planes are perpendicular to it."""
    return int(np.argmax(np.abs(volume.direction[2, :])))


def max_axial_diameter_mm(lesion: np.ndarray, grid: Volume) -> float:
    """Largest edge-to-edge in-plane distance (mm) over the axial slices of ``lesion`` (boolean, on ``grid``)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    axis = _axial_axis(grid)
    a, b = [ax for ax in range(3) if ax != axis]
    # orthonormal basis (u, v) of the axial plane in world coordinates
    u = grid.direction[:, a]
    n = np.cross(grid.direction[:, a], grid.direction[:, b])
    v = np.cross(n / np.linalg.norm(n), u)
    corners = np.array([[di, dj] for di in (-0.5, 0.5) for dj in (-0.5, 0.5)])
    best = 0.0
    for s in np.flatnonzero(lesion.any(axis=(a, b))):
        plane = np.take(lesion, s, axis=axis)
        edge = plane & ~ndimage.binary_erosion(plane)
        idx2 = (np.argwhere(edge)[:, None, :] + corners[None]).reshape(-1, 2)
        idx3 = np.zeros((len(idx2), 3))
        idx3[:, a], idx3[:, b] = idx2[:, 0], idx2[:, 1]
        world = idx3 @ grid.affine[:3, :3].T  # the slice offset and translation cancel in distances
        pts = np.stack([world @ u, world @ v], axis=1)
        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):
            pass  # collinear points (a one-voxel-wide lesion): measure all corners
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        best = max(best, float(d.max()))
    return best


def _lesion_summary(index: int, lesion: np.ndarray, grid: Volume) -> LesionSummary:
    n = int(lesion.sum())
    volume_ml = n * grid.voxel_volume_ml
    centroid = grid.affine[:3, :3] @ np.argwhere(lesion).mean(axis=0) + grid.affine[:3, 3]
    return LesionSummary(index=index, n_voxels=n, volume_ml=round(volume_ml, 3),
                         max_axial_diameter_mm=round(max_axial_diameter_mm(lesion, grid), 2),
                         equivalent_diameter_mm=round(float((6.0 * volume_ml * 1000.0 / np.pi) ** (1 / 3)), 2),
                         centroid_ras_mm=tuple(round(float(c), 2) for c in centroid))


def case_summary(case: Case, min_lesion_voxels: int = MIN_LESION_VOXELS) -> CaseSummary:
    """Summarise ``case`` (see the module docstring for how lesions are counted and measured)."""
    ct = case.ct
    p1, p99 = (float(v) for v in np.percentile(ct.array, [1, 99]))
    lesions: list[LesionSummary] = []
    liver_ml = tumour_ml = None
    if case.labels is not None:
        liver_ml = round(float(case.liver_mask().sum()) * ct.voxel_volume_ml, 3)
        tumour = case.tumour_mask()
        tumour_ml = round(float(tumour.sum()) * ct.voxel_volume_ml, 3)
        components = find_lesions(tumour, min_lesion_voxels)
        lesions = [_lesion_summary(i + 1, m, case.labels) for i, m in enumerate(components)]
    source = case.source
    return CaseSummary(
        case_id=case.case_id,
        format=source.format if source else "unknown",
        modality=source.modality if source else "unknown",
        deidentified=bool(source and source.deidentified),
        series_description=source.series_description if source else None,
        reoriented_from=source.reoriented_from if source else None,
        rescale_applied=bool(source and source.rescale_applied),
        shape=ct.shape,
        spacing_mm=tuple(round(float(s), 4) for s in ct.spacing),
        origin_ras_mm=tuple(round(float(o), 3) for o in ct.origin),
        orientation=ct.orientation,
        hu_min=float(ct.array.min()), hu_p1=round(p1, 1), hu_p99=round(p99, 1), hu_max=float(ct.array.max()),
        has_labels=case.labels is not None,
        liver_volume_ml=liver_ml,
        n_tumours=len(lesions),
        tumour_volume_ml=tumour_ml,
        lesions=lesions,
        has_post_ct=case.post_ct is not None,
        covariates=case.covariates.to_dict(),
        plan=None if case.plan is None else str(case.plan),
        note=case.note,
        outcome=None if case.outcome is None else dataclasses.asdict(case.outcome),
        notes=list(source.notes) if source else [],
    )
