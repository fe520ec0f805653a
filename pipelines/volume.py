"""`Volume`: a 3D array that carries its geometry.

Conventions (one place, used everywhere):
- ``array`` is indexed ``[i, j, k]`` (x, y, z voxel order, like nibabel and MONAI), **not** SimpleITK's ``[z, y, x]``.
- ``affine`` maps voxel indices ``(i, j, k, 1)`` to RAS world coordinates in millimetres (nibabel convention).
  SimpleITK/DICOM use LPS; the readers convert once, on load, and the writers convert back.
- ``spacing``, ``origin``, ``direction`` and ``orientation`` are derived from ``affine``, never stored copies.
- ``kind`` says how to resample: ``"scalar"`` (CT in HU, linear) or ``"label"`` (masks, nearest neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["Volume", "LABELS", "LABEL_NAMES"]

# The one label convention of MeWM Workbench (extends the reference's 0 background / 1 liver / 2 tumour).
LABELS = {"background": 0, "liver": 1, "tumour": 2, "necrosis": 3, "lipiodol": 4}
LABEL_NAMES = {v: k for k, v in LABELS.items()}


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image with its voxel-to-RAS affine.

    Args:
        array: ``(X, Y, Z)`` voxels; float32 Hounsfield units for ``kind="scalar"``, integer labels for ``"label"``.
        affine: ``4x4`` voxel-to-RAS (mm) matrix.
        kind: ``"scalar"`` or ``"label"``; decides the interpolation when resampling.
        name: a short name for messages (``"CT"``, ``"tumour mask"``); never a patient identifier.
    """

    array: np.ndarray
    affine: np.ndarray
    kind: Literal["scalar", "label"] = "scalar"
    name: str = "image"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume expects a 3D array, got shape {self.array.shape} for {self.name!r}.")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"Volume expects a 4x4 affine, got shape {aff.shape} for {self.name!r}.")
        if self.kind not in ("scalar", "label"):
            raise ValueError(f"Volume kind must be 'scalar' or 'label', got {self.kind!r}.")
        object.__setattr__(self, "affine", aff)

    # ---------------------------------------------------------------------------------------- derived geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS world position (mm) of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"`` (the world direction each array axis points to)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def with_array(self, array: np.ndarray, kind: str | None = None, name: str | None = None) -> "Volume":
        """A new volume on the same grid (the shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"with_array: shape {array.shape} differs from {self.array.shape} of {self.name!r}.")
        return Volume(array, self.affine, kind or self.kind, name or self.name, dict(self.meta))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.2f}" for s in self.spacing)
        return (
            f"Volume({self.name!r}, kind={self.kind}, shape={self.shape}, spacing=({sp}) mm, "
            f"orientation={self.orientation}, dtype={self.array.dtype}, {self.array.nbytes / 2**20:.1f} MiB)"
        )
