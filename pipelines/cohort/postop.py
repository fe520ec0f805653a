"""The post-TACE CT and labels on the pre-treatment grid (registered by construction), portal-venous phase.

From the plan's `Response` (kill ``K``, viable ratio ``r``, Lipiodol fraction ``L``):

1. Old viable tumour voxels are ranked by ``depth + 0.5 · n(x)`` (depth = distance to the tumour surface relative to
   its maximum; ``n`` a smooth random field): the top ``K`` fraction die (the core first, a viable rim survives).
2. Of the dead voxels, the fraction ``L / K`` with the highest smooth "retention" field hold Lipiodol (label 4,
   ``300 + 2200 u^1.5`` HU, ``u`` in [0, 1]); the rest become necrosis (label 3, 20 HU).
3. Surviving tumour grows into the liver when ``r > 1 - K``: the ``(r - (1 - K)) · V`` liver voxels nearest the tumour
   (distance plus noise) become viable tumour (label 2), so growth can leave the old mask.
4. Viable tumour in portal phase washes out: ``liver_portal - 20 + texture``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from pipelines.cohort.anatomy import Anatomy, liver_hu, render_ct, smooth_noise
from pipelines.cohort.lesions import NECROSIS_HU
from pipelines.cohort.patient import Patient
from pipelines.cohort.response import Response
from pipelines.volume import LABELS

__all__ = ["render_post", "LIPIODOL_HU_RANGE", "WASHOUT_DELTA_HU"]

LIPIODOL_HU_RANGE = (300.0, 2500.0)
WASHOUT_DELTA_HU = -20.0


def _bbox(mask: np.ndarray, margin: int, shape) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - margin), min(s, int(i.max()) + margin + 1)) for i, s in zip(idx, shape))


def render_post(patient: Patient, anatomy: Anatomy, pre_labels: np.ndarray, response: Response,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(post_hu, post_labels)``, both ``(X, Y, Z)``; HU without image noise (added by the caller)."""
    T = LABELS
    hu = render_ct(anatomy, "portal", rng)
    labels = pre_labels.copy()
    tumour = pre_labels == T["tumour"]
    n_viable = int(tumour.sum())
    base = liver_hu(anatomy.cirrhosis, "portal")
    if n_viable:
        margin = int(np.ceil(30.0 / anatomy.spacing.min()))
        sl = _bbox(pre_labels >= T["tumour"], margin, pre_labels.shape)
        sub_lab = labels[sl]
        old = (pre_labels[sl] >= T["tumour"])
        viable = tumour[sl]
        # 1. which viable voxels die
        depth = distance_transform_edt(old, sampling=anatomy.spacing)
        depth = depth / max(float(depth.max()), 1e-6)
        score = depth + 0.5 * smooth_noise(rng, old.shape, 1.2)
        n_dead = int(round(response.kill * n_viable))
        order = np.argsort(-np.where(viable, score, -np.inf), axis=None, kind="stable")
        dead = np.zeros(old.shape, dtype=bool)
        dead.flat[order[:n_dead]] = True
        # 2. Lipiodol among the dead
        lip = np.zeros_like(dead)
        n_lip = int(round(response.lipiodol_fraction * n_viable))
        retention = smooth_noise(rng, old.shape, 1.0)
        if n_lip:
            order_l = np.argsort(-np.where(dead, retention, -np.inf), axis=None, kind="stable")
            lip.flat[order_l[:n_lip]] = True
        sub_lab[dead] = T["necrosis"]
        sub_lab[lip] = T["lipiodol"]
        # 3. growth outside the old mask, into the liver
        n_grow = int(round((response.viable_ratio - (1.0 - response.kill)) * n_viable))
        if n_grow > 0:
            dist = distance_transform_edt(~old, sampling=anatomy.spacing)
            cand = sub_lab == T["liver"]
            grow_score = dist + 3.0 * anatomy.spacing.min() * smooth_noise(rng, old.shape, 1.5)
            order_g = np.argsort(np.where(cand, grow_score, np.inf), axis=None, kind="stable")
            n_grow = min(n_grow, int(cand.sum()))
            grow = np.zeros_like(dead)
            grow.flat[order_g[:n_grow]] = True
            sub_lab[grow] = T["tumour"]
        # 4. HU of the treated region
        sub_hu = hu[sl]
        tex = smooth_noise(rng, old.shape, 0.8) * patient.texture_sd_hu
        u = np.clip(0.5 + 0.3 * retention, 0.0, 1.0)
        lo, hi = LIPIODOL_HU_RANGE
        sub_hu[:] = np.where(sub_lab == T["tumour"], base + WASHOUT_DELTA_HU + tex, sub_hu)
        sub_hu[:] = np.where(sub_lab == T["necrosis"], NECROSIS_HU + 0.2 * tex, sub_hu)
        sub_hu[:] = np.where(sub_lab == T["lipiodol"], lo + (hi - lo) * u**1.5, sub_hu)
    # pre-existing necrosis outside the box is impossible (the box covers the whole old tumour)
    return hu, labels
