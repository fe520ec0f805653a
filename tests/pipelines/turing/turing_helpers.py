"""Helpers of the reader-study tests: a tiny cohort (3 phantom cases with a plan and a post-treatment CT), two
folders of tiny NIfTI crops, and a store on a temporary SQLite file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipelines.caseio.nifti import write_nifti
from pipelines.manifest import ManifestRecord, write_manifest
from pipelines.volume import LABELS, Volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worldmodel"))
from simulate_helpers import make_case, write_tiny_weights  # noqa: E402

__all__ = ["write_tiny_cohort", "write_crop_folders", "make_store", "write_tiny_weights", "PLANS"]

PLANS = ("Epirubicin; Lipiodol", "Gelatin Sponge", "Lobaplatin; Epirubicin; Lipiodol")


def write_tiny_cohort(root: Path, n: int = 3, prefix: str = "TC") -> Path:
    """``root/manifest.csv`` with ``n`` phantom cases ``<prefix>00``… (pre CT, labels, a Lipiodol-bright post CT,
    a plan)."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        case = make_case(f"{prefix}{i:02d}", tumour_radius_mm=10.0 + 2 * i)
        tumour = case.labels.array == LABELS["tumour"]
        post = case.ct.array.copy()
        post[tumour] = 700.0
        post_labels = case.labels.array.copy()
        post_labels[tumour] = LABELS["lipiodol"]
        folder = root / "cases" / case.case_id
        folder.mkdir(parents=True)
        write_nifti(case.ct, folder / "ct.nii.gz")
        write_nifti(case.labels, folder / "labels.nii.gz")
        write_nifti(case.ct.with_array(post), folder / "post_ct.nii.gz")
        write_nifti(case.labels.with_array(post_labels), folder / "post_labels.nii.gz")
        rel = f"cases/{case.case_id}"
        records.append(ManifestRecord(case.case_id, f"{rel}/ct.nii.gz", f"{rel}/labels.nii.gz",
                                      f"{rel}/post_ct.nii.gz", f"{rel}/post_labels.nii.gz", plan=PLANS[i % 3]))
    write_manifest(records, root / "manifest.csv")
    return root


def write_crop_folders(root: Path, n_real: int = 4, n_synthetic: int = 4, shape=(16, 16, 12),
                       synthetic_shape=None) -> tuple[Path, Path]:
    """``root/real`` and ``root/synthetic`` with tiny HU crops (noise around 60 HU; synthetic ones smoother)."""
    rng = np.random.default_rng(0)
    out = []
    for truth, n, sd in (("real", n_real, 20.0), ("synthetic", n_synthetic, 2.0)):
        folder = root / truth
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            grid = shape if truth == "real" or synthetic_shape is None else synthetic_shape
            arr = (60.0 + rng.normal(0, sd, grid)).astype(np.float32)
            write_nifti(Volume(arr, np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"{truth}_crop_{i:02d}.nii.gz")
        out.append(folder)
    return out[0], out[1]


def make_store(tmp_path: Path):
    """A `StudyStore` on a fresh SQLite file and images folder under ``tmp_path``."""
    from pipelines.db import get_engine
    from pipelines.turing.store import StudyStore

    return StudyStore(get_engine(f"sqlite:///{tmp_path / 'studies.db'}"), tmp_path / "studies")
