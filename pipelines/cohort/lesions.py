"""HCC lesions painted into the anatomy: irregular perturbed ellipsoids with enhancement, texture, capsule, necrosis.

Lesion ``i`` of diameter ``D`` (mm) is centred at ``lobe_centre + centre_frac * max(lobe_semi - D/2, 0)`` and covers the
voxels where ``ρ + a · n(x) < 1`` inside the liver, with ``ρ`` the ellipsoidal radius (semi-axes ``D/2 · axes_ratio``)
and ``n`` a unit Gaussian random field (correlation ``D/6``) scaled by the lesion's ``irregularity`` ``a``.
HU (arterial phase): ``liver + enhancement + texture_sd · n'(x)``; capsule rim (``ρ > 0.86``): ``liver - 15``;
necrotic core (``ρ < necrosis_frac``): 20 HU, label 3.
"""

from __future__ import annotations

import numpy as np

from pipelines.cohort.anatomy import Anatomy, liver_hu, smooth_noise
from pipelines.cohort.patient import Lesion, Patient
from pipelines.volume import LABELS

__all__ = ["lesion_field", "paint_lesions", "NECROSIS_HU", "CAPSULE_DELTA_HU"]

NECROSIS_HU = 20.0
CAPSULE_DELTA_HU = -15.0


def lesion_field(lesion: Lesion, anatomy: Anatomy) -> tuple[tuple[slice, ...], np.ndarray]:
    """``(bbox, ρ_perturbed)``: the lesion's bounding box and its perturbed ellipsoidal radius inside it."""
    radius = lesion.diameter_mm / 2.0
    semi = radius * np.asarray(lesion.axes_ratio)
    room = np.maximum(anatomy.lobe_semi - semi.max(), 0.0)
    centre = anatomy.lobe_centre + np.asarray(lesion.centre_frac) * room
    x, y, z = anatomy.coords()
    reach = semi * (1.0 + 2.0 * lesion.irregularity) + anatomy.spacing
    sl = []
    for d, axis in enumerate((x.ravel(), y.ravel(), z.ravel())):
        idx = np.nonzero(np.abs(axis - centre[d]) <= reach[d])[0]
        if idx.size == 0:  # centre outside the grid: use the nearest slice
            idx = np.array([int(np.argmin(np.abs(axis - centre[d])))])
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    xs, ys, zs = x[sl[0]], y[:, sl[1]], z[:, :, sl[2]]
    rho = np.sqrt(((xs - centre[0]) / semi[0]) ** 2 + ((ys - centre[1]) / semi[1]) ** 2
                  + ((zs - centre[2]) / semi[2]) ** 2)
    shape = rho.shape
    rng = np.random.default_rng(lesion.shape_seed)
    sigma = np.maximum(lesion.diameter_mm / 6.0 / anatomy.spacing, 0.5)
    rho = rho + lesion.irregularity * smooth_noise(rng, shape, tuple(sigma)) * np.clip(rho, 0, 1)
    return tuple(sl), rho


def paint_lesions(patient: Patient, anatomy: Anatomy, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint the patient's lesions into arterial-phase ``hu`` (in place); return the ``(X, Y, Z)`` uint8 labels.

    Labels: 1 liver, 2 viable tumour, 3 necrosis (`pipelines.volume.LABELS`).
    """
    labels = np.zeros(hu.shape, dtype=np.uint8)
    liver = anatomy.liver
    labels[liver] = LABELS["liver"]
    base = liver_hu(anatomy.cirrhosis, "arterial")
    for lesion in patient.lesions:
        sl, rho = lesion_field(lesion, anatomy)
        inside = (rho < 1.0) & liver[sl]
        if not inside.any():  # a tiny lesion between voxel centres: keep its central voxel
            centre = np.unravel_index(int(np.argmin(np.where(liver[sl], rho, np.inf))), rho.shape)
            inside[centre] = True
        tex = smooth_noise(rng, rho.shape, 0.8) * patient.texture_sd_hu
        val = base + patient.enhancement_hu + tex
        if lesion.capsule:
            val = np.where(rho > 0.86, base + CAPSULE_DELTA_HU + 0.3 * tex, val)
        core = inside & (rho < lesion.necrosis_frac)
        val = np.where(core, NECROSIS_HU + 0.2 * tex, val)
        sub_hu, sub_lab = hu[sl], labels[sl]
        sub_hu[inside] = val[inside]
        sub_lab[inside] = LABELS["tumour"]
        sub_lab[core] = LABELS["necrosis"]
    return labels
