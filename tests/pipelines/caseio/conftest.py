"""Small programmatic cases for the case I/O tests (24 x 20 x 12 voxels, integer HU, known lesions)."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import Config
from pipelines.volume import LABELS, Volume

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


@pytest.fixture
def cfg(tmp_path) -> Config:
    """Default config with the de-identification key in a private test folder."""
    c = Config()
    c.app.data_dir = str(tmp_path / "mewm-data")
    return c


@pytest.fixture
def labels_array() -> np.ndarray:
    return make_labels()


@pytest.fixture
def ct_volume(labels_array) -> Volume:
    return Volume(make_ct(labels_array, np.random.default_rng(7)), ras_affine(), "scalar", "ct")


@pytest.fixture
def labels_volume(labels_array) -> Volume:
    return Volume(labels_array, ras_affine(), "label", "labels")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Point `tempfile` at an empty folder, so a test can check that nothing was left behind."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return out
