"""Grid geometry: LPS↔RAS, SimpleITK conversion, reorientation to RAS, resampling, and same-grid checks.

Conventions (see `pipelines.volume`): a `Volume` array is ``[i, j, k]`` and its affine maps voxels to RAS mm.
SimpleITK and DICOM use LPS world coordinates and SimpleITK arrays are ``[z, y, x]``; the conversion between the
two conventions happens here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from models.errors import GeometryMismatchError, GeometryWarning
from pipelines.config import IOConfig
from pipelines.volume import Volume

__all__ = [
    "LPS_TO_RAS",
    "lps_affine_to_ras",
    "ras_affine_to_lps",
    "sitk_to_volume",
    "volume_to_sitk",
    "to_ras",
    "resample",
    "resample_like",
    "check_same_grid",
]

# Flipping x and y maps LPS to RAS and back (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Origin/direction differences above the configured tolerance but below these are only a GeometryWarning.
LOOSE_ORIGIN_FRACTION_OF_VOXEL = 0.5  # origin may differ by up to half the smallest voxel side
LOOSE_DIRECTION_TOL = 1e-2  # direction cosines may differ by up to 0.01 (about 0.6 degrees)


def lps_affine_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """``4x4`` voxel→LPS affine to voxel→RAS."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def ras_affine_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """``4x4`` voxel→RAS affine to voxel→LPS."""
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)


def sitk_to_volume(image, kind: str = "scalar", name: str = "image") -> Volume:
    """A 3D scalar SimpleITK image (LPS, array ``[z, y, x]``) as a `Volume` (RAS, array ``[i, j, k]``).

    The array is returned as it is stored (no dtype conversion); callers convert to float32 HU or uint8 labels.
    """
    import SimpleITK as sitk

    # SimpleITK arrays are [z, y, x] while spacing/origin/direction are (x, y, z): transpose once, here.
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing  # column c scaled by spacing[c]
    affine_lps[:3, 3] = image.GetOrigin()
    return Volume(array, lps_affine_to_ras(affine_lps), kind, name)


def volume_to_sitk(volume: Volume, dtype: np.dtype | type | None = None):
    """A `Volume` as a SimpleITK image (LPS geometry, array transposed to ``[z, y, x]``)."""
    import SimpleITK as sitk

    array = volume.array if dtype is None else volume.array.astype(dtype)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    affine_lps = ras_affine_to_lps(volume.affine)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in affine_lps[:3, 3]])
    image.SetDirection([float(d) for d in (affine_lps[:3, :3] / spacing).ravel()])
    return image


def _with_source(volume: Volume, array: np.ndarray, affine: np.ndarray, **source_changes) -> Volume:
    meta = dict(volume.meta)
    source = meta.get("source")
    if source is not None and source_changes:
        meta["source"] = dataclasses.replace(source, **source_changes)
    return Volume(array, affine, volume.kind, volume.name, meta)


def to_ras(volume: Volume) -> Volume:
    """Reorder and flip array axes so that i, j, k point (as nearly as possible) to R, A, S. No interpolation.

    The affine is updated so every voxel keeps its world position. The original axis codes are recorded in
    ``volume.meta["source"].reoriented_from`` when a `SourceInfo` is attached. Oblique grids stay oblique: each
    axis goes to its closest RAS axis.
    """
    import nibabel.orientations as nio

    codes = volume.orientation
    if codes == "RAS":
        return volume
    current = nio.io_orientation(volume.affine)
    transform = nio.ornt_transform(current, nio.axcodes2ornt("RAS"))
    array = np.ascontiguousarray(nio.apply_orientation(volume.array, transform))
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.shape)
    return _with_source(volume, array, affine, reoriented_from=codes)


def resample(volume: Volume, spacing: tuple[float, float, float] | np.ndarray) -> Volume:
    """Resample onto a grid with the same origin and direction and the given ``spacing`` (mm along i, j, k).

    Scalar volumes use linear interpolation, label volumes nearest neighbour. The extent is kept: the new size is
    ``round(shape * old_spacing / spacing)``. Voxels outside the input get -1024 HU (air) or label 0.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"resample: spacing must be three positive numbers in mm, got {spacing.tolist()}.")
    size = np.maximum(1, np.round(np.asarray(volume.shape) * volume.spacing / spacing)).astype(int)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.direction * spacing
    target = Volume(np.zeros(tuple(size), dtype=np.uint8), affine, "label", "grid")
    return resample_like(volume, target)


def resample_like(volume: Volume, reference: Volume) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (linear for scalar, nearest neighbour for label volumes)."""
    import SimpleITK as sitk

    label = volume.kind == "label"
    src = volume_to_sitk(volume, None if label else np.float32)
    ref = volume_to_sitk(reference.with_array(np.zeros(reference.shape, dtype=np.uint8)))
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                        0.0 if label else -1024.0, src.GetPixelID())
    result = sitk_to_volume(out, volume.kind, volume.name)
    return Volume(result.array, reference.affine, volume.kind, volume.name, dict(volume.meta))


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + ")"


def check_same_grid(image: Volume, other: Volume, names: tuple[str, str] | None = None,
                    config: IOConfig | None = None) -> None:
    """Check that ``other`` (a mask or post-treatment image) lies on ``image``'s grid.

    Different shape, or spacing beyond ``config.spacing_tol_mm``, raises `GeometryMismatchError`. Origin and
    direction beyond ``origin_tol_mm``/``direction_tol`` but within a looser tolerance (half a voxel; 0.01 in the
    direction cosines) give a `GeometryWarning`; beyond that they raise too. Both volumes should already be in
    the same orientation (the loader brings both to RAS first).

    Args:
        names: how to call the two volumes in messages (file names); defaults to their ``name``.
    """
    tol = config or IOConfig()
    a, b = names or (image.name, other.name)
    nn_fix = (f"resample {b} onto the grid of {a} with nearest-neighbour interpolation (e.g. SimpleITK Resample "
              f"with {a} as reference), or export both from the same study")
    if image.shape != other.shape:
        raise GeometryMismatchError(
            f"{b} has size {other.shape} but {a} has size {image.shape}; they must share one voxel grid. "
            f"Fix: {nn_fix}.")
    if not np.allclose(image.spacing, other.spacing, rtol=0, atol=tol.spacing_tol_mm):
        raise GeometryMismatchError(
            f"{b} has spacing {_fmt(other.spacing)} mm but {a} has {_fmt(image.spacing)} mm "
            f"(tolerance {tol.spacing_tol_mm} mm). Fix: {nn_fix}.")
    origin_diff = float(np.max(np.abs(image.origin - other.origin)))
    origin_loose = max(tol.origin_tol_mm, LOOSE_ORIGIN_FRACTION_OF_VOXEL * float(np.min(image.spacing)))
    direction_diff = float(np.max(np.abs(image.direction - other.direction)))
    direction_loose = max(tol.direction_tol, LOOSE_DIRECTION_TOL)
    if origin_diff > origin_loose:
        raise GeometryMismatchError(
            f"{b} has origin {_fmt(other.origin)} mm but {a} has {_fmt(image.origin)} mm (RAS), "
            f"{origin_diff:.3g} mm apart (limit {origin_loose:.3g} mm). Fix: {nn_fix}.")
    if direction_diff > direction_loose:
        raise GeometryMismatchError(
            f"{b} has direction {_fmt(other.direction)} but {a} has {_fmt(image.direction)} "
            f"(largest cosine difference {direction_diff:.3g}, limit {direction_loose:.3g}). Fix: {nn_fix}.")
    if origin_diff > tol.origin_tol_mm or direction_diff > tol.direction_tol:
        warnings.warn(
            f"{b} and {a} differ slightly in origin ({origin_diff:.3g} mm) or direction ({direction_diff:.3g}); "
            f"treating {b} as lying on the grid of {a}.", GeometryWarning, stacklevel=2)
