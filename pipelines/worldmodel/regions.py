"""`change_region`: where the dynamics model may change the image.

The tumour (viable tumour, necrosis, Lipiodol: labels 2, 3, 4) dilated by ``margin_mm`` with a spherical structuring
element in millimetres, then intersected with the liver (labels >= 1). Growth beyond the old mask is allowed up to
the margin; outside the region the pre-treatment voxels are kept exactly. One implementation, used by training,
sampling and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.errors import EmptyMaskError
from pipelines.volume import LABELS

__all__ = ["DEFAULT_CHANGE_MARGIN_MM", "TUMOUR_LABELS", "change_region", "latent_masks", "ball"]

DEFAULT_CHANGE_MARGIN_MM = 10.0
TUMOUR_LABELS = (LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"])


@lru_cache(maxsize=16)
def ball(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Boolean structuring element: voxels whose centre lies within ``radius_mm`` of the centre voxel, in mm.

    Returns:
        ``(2 rx + 1, 2 ry + 1, 2 rz + 1)`` array with ``r = floor(radius_mm / spacing)`` per axis (read-only).
    """
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)], indexing="ij")
    out = sum(g ** 2 for g in grids) <= radius_mm ** 2 + 1e-9
    out.setflags(write=False)
    return out


def change_region(labels: np.ndarray, margin_mm: float = DEFAULT_CHANGE_MARGIN_MM,
                  spacing_mm: float | Sequence[float] = 2.0) -> np.ndarray:
    """The tumour dilated by ``margin_mm`` (a ball in mm), intersected with the liver.

    Args:
        labels: ``(X, Y, Z)`` integer labels (`pipelines.volume.LABELS`); a leading channel of 1 is accepted.
        margin_mm: dilation radius in mm (>= 0; 0 gives the tumour itself).
        spacing_mm: voxel size in mm, one number (isotropic) or ``(x, y, z)``.

    Returns:
        boolean ``(X, Y, Z)`` mask; contains every tumour voxel and only liver voxels.

    Raises:
        EmptyMaskError: the labels have no tumour voxels (there is nothing the treatment could change).
        ValueError: a negative margin, a non-positive spacing, or labels that are not 3D.
    """
    # 1. check inputs
    labels = np.asarray(labels)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 3:
        raise ValueError(f"change_region expects (X, Y, Z) labels, got shape {labels.shape}.")
    spacing = (float(spacing_mm),) * 3 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"change_region: spacing_mm must be a positive number or three, got {spacing_mm!r}.")
    if not margin_mm >= 0:
        raise ValueError(f"change_region: margin_mm must be >= 0, got {margin_mm!r}.")
    tumour = np.isin(labels, TUMOUR_LABELS)
    if not tumour.any():
        raise EmptyMaskError(f"change_region: the labels have no tumour voxels (labels {TUMOUR_LABELS}); values "
                             f"present: {np.unique(labels).tolist()}. Segment the tumour first.")

    # 2. dilate by a ball in mm, keep the liver
    grown = ndimage.binary_dilation(tumour, structure=ball(float(margin_mm), spacing)) if margin_mm > 0 else tumour
    return grown & (labels >= LABELS["liver"])


def latent_masks(labels: np.ndarray, downsampling: int, spacing_mm: float | Sequence[float] = 2.0,
                 margin_mm: float = DEFAULT_CHANGE_MARGIN_MM) -> torch.Tensor:
    """The dynamics model's mask channels at latent resolution: tumour and `change_region`, as the fraction of each
    ``downsampling``³ block of crop voxels they cover (average pooling).

    Args:
        labels: ``(X, Y, Z)`` crop labels; each size divisible by ``downsampling``.
        downsampling: the autoencoder's spatial reduction (``CropAutoencoder.downsampling``).
        spacing_mm, margin_mm: as `change_region`.

    Returns:
        float32 ``(2, X / f, Y / f, Z / f)`` in [0, 1]: channel 0 the tumour, channel 1 the change region.
    """
    labels = np.asarray(labels)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if downsampling < 1 or any(s % downsampling for s in labels.shape):
        raise ValueError(f"latent_masks: labels of shape {labels.shape} cannot be pooled by {downsampling}; each "
                         "size must be a multiple of the autoencoder's downsampling.")
    region = change_region(labels, margin_mm, spacing_mm)
    masks = torch.from_numpy(np.stack([np.isin(labels, TUMOUR_LABELS), region]).astype(np.float32))
    return F.avg_pool3d(masks[None], downsampling)[0]
