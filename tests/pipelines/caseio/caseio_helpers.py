"""Helpers shared by the case I/O tests (a uniquely named module, so `import` never picks another conftest)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pipelines.volume import LABELS

SHAPE = (24, 20, 12)
SPACING = (0.8, 0.9, 2.5)
ORIGIN_RAS = (-10.0, 20.0, 30.0)


def ras_affine(spacing=SPACING, origin=ORIGIN_RAS) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def make_labels() -> np.ndarray:
    """A liver box with two separate tumours: a 5x5x3 block and a 3x3x2 block (plus one 2-voxel speck)."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[2:20, 2:17, 1:11] = LABELS["liver"]
    lab[4:9, 4:9, 3:6] = LABELS["tumour"]  # 75 voxels, 4.0 x 4.5 mm in-plane
    lab[14:17, 11:14, 7:9] = LABELS["tumour"]  # 18 voxels
    lab[18, 15, 2:4] = LABELS["tumour"]  # a 2-voxel speck: ignored as a lesion
    return lab


def make_ct(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer HU: air outside, soft tissue, liver ~60, tumour ~100, noise."""
    ct = np.full(SHAPE, -1000.0, dtype=np.float32)
    ct[1:23, 1:19, :] = 40.0
    ct[labels == LABELS["liver"]] = 60.0
    ct[labels == LABELS["tumour"]] = 100.0
    ct += np.round(rng.normal(0, 10, SHAPE)).astype(np.float32)
    return ct



def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return out
