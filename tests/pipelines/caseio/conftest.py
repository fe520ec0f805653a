"""Fixtures for the case I/O tests: small programmatic cases (24 x 20 x 12 voxels, integer HU, known lesions)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from caseio_helpers import make_ct, make_labels, ras_affine

from pipelines.config import Config
from pipelines.volume import Volume


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
