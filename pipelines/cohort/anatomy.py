"""Synthetic abdominal anatomy on a fixed field of view: a tissue map, then Hounsfield units per contrast phase.

The field of view is fixed at ``FOV_MM`` = 320 x 256 x 200 mm (x right, y anterior, z superior; RAS, centred on 0);
``size`` sets the number of voxels, so spacing = FOV / size (the default 160 x 128 x 80 grid gives 2.0 x 2.0 x 2.5 mm;
a small 64 x 56 x 32 sample grid gives 5.0 x 4.6 x 6.25 mm). Tissues and their HU (``TISSUE_HU``) are documented in
the data card. Liver shape follows cirrhosis severity ``c``: right-lobe atrophy ``x (1 - 0.3 c)``, caudate
hypertrophy ``x (1 + 0.6 c)``, surface nodularity amplitude ``0.03 + 0.25 c``, splenomegaly ``x (1 + 0.4 c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["FOV_MM", "DEFAULT_SIZE", "TISSUES", "TISSUE_HU", "Anatomy", "grid_affine", "smooth_noise",
           "build_anatomy", "render_ct", "liver_hu", "add_image_noise"]

FOV_MM = np.array([320.0, 256.0, 200.0])
DEFAULT_SIZE = (160, 128, 80)
TISSUES = {"air": 0, "fat": 1, "muscle": 2, "liver": 3, "spleen": 4, "kidney": 5, "cortical_bone": 6,
           "cancellous_bone": 7, "aorta": 8, "hepatic_vessel": 9, "ivc": 10, "fluid": 11}
# tissue -> (arterial HU, portal-venous HU); liver is adjusted for cirrhosis in `render_ct`
TISSUE_HU = {
    "air": (-1000.0, -1000.0), "fat": (-100.0, -100.0), "muscle": (50.0, 55.0), "liver": (72.0, 108.0),
    "spleen": (125.0, 115.0), "kidney": (180.0, 160.0), "cortical_bone": (1000.0, 1000.0),
    "cancellous_bone": (350.0, 350.0), "aorta": (300.0, 160.0), "hepatic_vessel": (120.0, 175.0),
    "ivc": (80.0, 140.0), "fluid": (10.0, 10.0),
}
LOBE_SEMI_MM = (68.0, 72.0, 62.0)  # right-lobe semi-axes at cirrhosis 0 (shrink by 30% * c)
LOBE_JITTER = (0.92, 1.08)  # per-axis uniform jitter of the lobe size
LIVER_CIRRHOSIS_DROP_HU = (10.0, 20.0)  # arterial, portal: liver HU = base - drop * c
PHASES = ("arterial", "portal")


@dataclass
class Anatomy:
    """A tissue map with its grid.

    Attributes:
        tissue: ``(X, Y, Z)`` uint8 tissue ids (`TISSUES`).
        affine: ``4x4`` voxel→RAS (mm).
        cirrhosis: ``c`` used for the liver shape and attenuation.
        lobe_centre, lobe_semi: right-lobe ellipsoid (mm), the frame lesions are placed in.
    """

    tissue: np.ndarray
    affine: np.ndarray
    cirrhosis: float
    lobe_centre: np.ndarray
    lobe_semi: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.abs(np.diag(self.affine)[:3])

    @property
    def liver(self) -> np.ndarray:
        return (self.tissue == TISSUES["liver"]) | (self.tissue == TISSUES["hepatic_vessel"])

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable world coordinates (mm) ``x (X,1,1)``, ``y (1,Y,1)``, ``z (1,1,Z)``."""
        return _coords(self.tissue.shape, self.affine)


def grid_affine(size: tuple[int, int, int]) -> np.ndarray:
    """RAS affine of a ``size`` grid covering `FOV_MM`, centred on the origin."""
    size_arr = np.asarray(size, dtype=float)
    if size_arr.shape != (3,) or np.any(size_arr < 8):
        raise ValueError(f"cohort grid size must be three integers >= 8, got {size!r}.")
    spacing = FOV_MM / size_arr
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -FOV_MM / 2 + spacing / 2
    return aff


def _coords(shape, affine):
    ax = [affine[d, 3] + affine[d, d] * np.arange(shape[d]) for d in range(3)]
    return ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float | tuple) -> np.ndarray:
    """Gaussian random field with unit standard deviation, correlation length ``sigma_vox`` voxels (float32)."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, truncate=2.5)
    sd = float(field.std())
    return field / sd if sd > 0 else field


def _ellipsoid(x, y, z, centre, semi):
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2


def _tube(tissue, x, y, z, p0, p1, radius, value, spacing, inside=None):
    """Paint a cylinder from ``p0`` to ``p1`` (mm) of ``radius`` mm, restricted to its bounding box."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
    sl = []
    for d, axis in enumerate((x.ravel(), y.ravel(), z.ravel())):
        idx = np.nonzero((axis >= lo[d]) & (axis <= hi[d]))[0]
        if idx.size == 0:
            return
        sl.append(slice(idx[0], idx[-1] + 1))
    xs, ys, zs = x[sl[0]], y[:, sl[1]], z[:, :, sl[2]]
    seg = p1 - p0
    t = np.clip(((xs - p0[0]) * seg[0] + (ys - p0[1]) * seg[1] + (zs - p0[2]) * seg[2]) / float(seg @ seg), 0, 1)
    d2 = (xs - p0[0] - t * seg[0]) ** 2 + (ys - p0[1] - t * seg[1]) ** 2 + (zs - p0[2] - t * seg[2]) ** 2
    m = d2 <= radius**2
    sub = tissue[sl[0], sl[1], sl[2]]
    if inside is not None:
        m &= inside[sl[0], sl[1], sl[2]]
    sub[m] = value


def build_anatomy(cirrhosis: float, rng: np.random.Generator, size: tuple[int, int, int] = DEFAULT_SIZE) -> Anatomy:
    """The tissue map of one patient. ``cirrhosis`` in [0, 1]; all variation comes from ``rng``."""
    affine = grid_affine(size)
    shape = tuple(int(s) for s in size)
    x, y, z = _coords(shape, affine)
    spacing = np.diag(affine)[:3]
    c = float(cirrhosis)
    T = TISSUES
    tissue = np.zeros(shape, dtype=np.uint8)
    # 1. body wall: skin/subcutaneous fat, muscle ring, visceral fat
    bx, by = 145.0 * rng.uniform(0.93, 1.03), 105.0 * rng.uniform(0.92, 1.05)
    r = np.sqrt((x / bx) ** 2 + (y / by) ** 2) + 0 * z
    fat_thick = rng.uniform(0.07, 0.16)
    tissue[r <= 1.0] = T["fat"]
    tissue[(r <= 1.0 - fat_thick) & (r > 0.93 - fat_thick)] = T["muscle"]
    # paraspinal muscles
    for sx in (-1, 1):
        tissue[(_ellipsoid(x, y, 0 * z, (sx * 32.0, -78.0, 0.0), (24.0, 17.0, 1e9)) <= 1) & (r <= 1)] = T["muscle"]
    # 2. ribs (lateral/anterior arcs every ~26 mm) and spine
    ring = (r > 0.9 - fat_thick) & (r <= 0.94 - fat_thick) & (y > -70)
    for zk in np.arange(-90.0, 100.0, 26.0) + rng.uniform(-6, 6):
        tissue[ring & (np.abs(z - zk) <= 5.0)] = T["cortical_bone"]
    vert = np.sqrt(x**2 + (y + 62.0) ** 2) + 0 * z
    tissue[vert <= 20.0] = T["cortical_bone"]
    tissue[vert <= 16.5] = T["cancellous_bone"]
    canal = np.sqrt(x**2 + (y + 88.0) ** 2) + 0 * z
    tissue[(canal <= 13.0) & (canal > 8.0)] = T["cortical_bone"]
    tissue[canal <= 8.0] = T["fluid"]
    # 3. kidneys and spleen
    tissue[_ellipsoid(x, y, z, (68.0, -52.0, -45.0), (24.0, 28.0, 50.0)) <= 1] = T["kidney"]
    tissue[_ellipsoid(x, y, z, (-66.0, -52.0, -30.0), (24.0, 28.0, 50.0)) <= 1] = T["kidney"]
    sp = 1.0 + 0.4 * c
    tissue[_ellipsoid(x, y, z, (-88.0, -30.0, 35.0), (30.0 * sp, 48.0 * sp, 50.0 * sp)) <= 1] = T["spleen"]
    # 4. liver: right lobe, left lobe, caudate; cirrhotic shape; nodular surface
    jitter = rng.uniform(*LOBE_JITTER, size=3)
    lobe_c = np.array([58.0, 5.0, 30.0]) + rng.normal(0, 3.0, size=3)
    lobe_s = np.asarray(LOBE_SEMI_MM) * jitter * (1.0 - 0.3 * c)
    f = np.minimum.reduce([
        _ellipsoid(x, y, z, lobe_c, lobe_s),
        _ellipsoid(x, y, z, (-22.0, 32.0, 45.0), np.array([50.0, 32.0, 38.0]) * jitter),
        _ellipsoid(x, y, z, (14.0, -22.0, 35.0), np.array([18.0, 16.0, 28.0]) * (1.0 + 0.6 * c)),
    ])
    sigma = np.maximum(6.0 / spacing, 0.6)
    f = np.sqrt(f) + (0.03 + 0.25 * c) * smooth_noise(rng, shape, tuple(sigma)) * 0.35
    liver = (f <= 1.0) & (r <= 0.9 - fat_thick)
    tissue[liver] = T["liver"]
    # 5. vessels: aorta, IVC, portal/hepatic branches fanning from the hilum (inside the liver only)
    aorta = np.sqrt((x + 14.0) ** 2 + (y + 38.0) ** 2) + 0 * z
    tissue[aorta <= 11.0] = T["aorta"]
    ivc = np.sqrt((x - 18.0) ** 2 + (y + 34.0) ** 2) + 0 * z
    tissue[(ivc <= 11.0) & (tissue != T["aorta"])] = T["ivc"]
    hilum = np.array([22.0, -10.0, 25.0])
    for _ in range(int(rng.integers(5, 8))):
        end = lobe_c + rng.uniform(-0.9, 0.9, size=3) * lobe_s
        _tube(tissue, x, y, z, hilum, end, rng.uniform(2.5, 5.5), T["hepatic_vessel"], spacing, inside=liver)
    return Anatomy(tissue=tissue, affine=affine, cirrhosis=c, lobe_centre=lobe_c, lobe_semi=lobe_s)


def liver_hu(cirrhosis: float, phase: str) -> float:
    """Mean liver parenchyma HU for ``phase`` (``"arterial"`` or ``"portal"``): base minus cirrhosis drop."""
    i = _phase_index(phase)
    return TISSUE_HU["liver"][i] - LIVER_CIRRHOSIS_DROP_HU[i] * cirrhosis


def _phase_index(phase: str) -> int:
    if phase not in PHASES:
        raise ValueError(f"contrast phase must be one of {PHASES}, got {phase!r}.")
    return PHASES.index(phase)


def render_ct(anatomy: Anatomy, phase: str, rng: np.random.Generator) -> np.ndarray:
    """``(X, Y, Z)`` float32 HU of the tissue map in ``phase``, with liver texture (SD 3 + 8c HU); no image noise."""
    i = _phase_index(phase)
    lut = np.zeros(256, dtype=np.float32)
    for name, tid in TISSUES.items():
        lut[tid] = TISSUE_HU[name][i]
    lut[TISSUES["liver"]] = liver_hu(anatomy.cirrhosis, phase)
    hu = lut[anatomy.tissue]
    liver = anatomy.tissue == TISSUES["liver"]
    sigma = np.maximum(4.0 / anatomy.spacing, 0.5)
    hu[liver] += ((3.0 + 8.0 * anatomy.cirrhosis) * smooth_noise(rng, hu.shape, tuple(sigma)))[liver]
    return hu


def add_image_noise(hu: np.ndarray, sd_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Add correlated (σ = 0.7 voxel) Gaussian noise of standard deviation ``sd_hu``; clip to [-1024, 3071]."""
    noisy = hu + sd_hu * smooth_noise(rng, hu.shape, 0.7)
    return np.clip(noisy, -1024.0, 3071.0).astype(np.float32)
