"""Fixtures of the app tests: a tiny sample-data folder with two cases (one with labels, one CT only)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.caseio.nifti import write_nifti
from pipelines.volume import LABELS, Volume

SHAPE = (64, 56, 20)  # x (patient right at high x: RAS), y (anterior at high y), z (superior at high z)
SPACING = (1.5, 1.5, 4.0)


def _phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An abdomen-like phantom in HU: body, liver on the patient's right, one tumour, a vertebra; and its labels."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    ct = np.full(SHAPE, -1000.0, np.float32)
    body = ((x - 32) / 30) ** 2 + ((y - 28) / 24) ** 2 <= 1
    ct[body] = 30.0
    liver = body & (((x - 44) / 16) ** 2 + ((y - 32) / 15) ** 2 + ((z - 10) / 9) ** 2 <= 1)
    ct[liver] = 60.0
    tumour = ((x - 46) / 5) ** 2 + ((y - 34) / 5) ** 2 + ((z - 11) / 2) ** 2 <= 1
    ct[tumour] = 110.0
    spine = ((x - 32) / 5) ** 2 + ((y - 10) / 5) ** 2 <= 1
    ct[spine] = 700.0
    ct += rng.normal(0.0, 8.0, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[liver] = LABELS["liver"]
    labels[tumour] = LABELS["tumour"]
    return ct, labels


def write_sample_dir(root: Path) -> Path:
    """Write ``root/manifest.csv`` with cases ``liver01`` (CT, labels, post-CT, clinical) and ``ctonly``."""
    rng = np.random.default_rng(7)
    affine = np.diag([*SPACING, 1.0])
    ct, labels = _phantom(rng)
    root.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(ct, affine), root / "liver01_ct.nii.gz")
    write_nifti(Volume(labels, affine, "label"), root / "liver01_labels.nii.gz")
    post = ct.copy()
    post[labels == LABELS["tumour"]] = 900.0  # Lipiodol-filled tumour
    post_labels = labels.copy()
    post_labels[labels == LABELS["tumour"]] = LABELS["lipiodol"]
    write_nifti(Volume(post, affine), root / "liver01_post_ct.nii.gz")
    write_nifti(Volume(post_labels, affine, "label"), root / "liver01_post_labels.nii.gz")
    (root / "liver01.json").write_text(json.dumps({"age": 63, "sex": "M", "child_pugh": "A", "bclc": "B",
                                                    "afp": 420.0, "note": "cTACE with Lipiodol and epirubicin."}))
    other, _ = _phantom(np.random.default_rng(8))
    write_nifti(Volume(other, affine), root / "ctonly_ct.nii.gz")
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "title", "ct", "labels", "post_ct", "post_labels", "clinical"])
        w.writerow(["liver01", "Phantom with tumour", "liver01_ct.nii.gz", "liver01_labels.nii.gz",
                    "liver01_post_ct.nii.gz", "liver01_post_labels.nii.gz", "liver01.json"])
        w.writerow(["ctonly", "Phantom CT without masks", "ctonly_ct.nii.gz", "", "", "", ""])
    return root


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    return write_sample_dir(tmp_path_factory.mktemp("samples"))


@pytest.fixture
def app_env(sample_dir, monkeypatch) -> Path:
    """Point the app's configuration at the fixture samples (the environment override the app reads)."""
    monkeypatch.setenv("MEWM_APP__SAMPLE_DATA_DIR", str(sample_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return sample_dir
