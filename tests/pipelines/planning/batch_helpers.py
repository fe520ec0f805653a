"""Helpers of the batch-scoring tests: a tiny cohort on disk (NIfTI + manifest.csv, optionally with bad cases)
and a model loader that workers import by name (tiny world model + the transparent `ViableVolumeSurvival`)."""

from __future__ import annotations

from pathlib import Path

from planning_helpers import ViableVolumeSurvival, make_case, write_tiny_weights  # noqa: F401

from pipelines.caseio.nifti import write_nifti
from pipelines.manifest import ManifestRecord, write_manifest
from pipelines.planning.batch import ScoringModels

# `score_manifest(loader=TINY_LOADER)`: importable in spawned pool processes and Ray actors (they get sys.path).
TINY_LOADER = "batch_helpers:load_tiny_models"
CANDIDATES = ["Epirubicin; Lipiodol", "Lobaplatin; Lipiodol; Gelatin Sponge", "PVA"]
FAST = {"samples": 2, "steps": 2, "candidates": CANDIDATES}
LOADS: list[str] = []  # one entry per model load in this process (models load once per worker, never per case)


def load_tiny_models(settings: dict) -> ScoringModels:
    """The world model of ``settings["weights_dir"]`` (tiny weights written by the test), the test survival
    model, and (without fixed candidates) the configured policy, as `load_scoring_models` loads it."""
    from pipelines.config import PolicyConfig
    from pipelines.policy import load_policy
    from pipelines.worldmodel.weights import load_world_model

    LOADS.append(settings["weights_dir"])
    policy = None if settings.get("candidates") else load_policy(PolicyConfig(**settings["policy"]))
    return ScoringModels(world=load_world_model(settings["weights_dir"]), survival=ViableVolumeSurvival(),
                         policy=policy)


def write_cohort(root: Path, n: int = 3, corrupt: bool = False, no_tumour: bool = False,
                 missing: bool = False) -> Path:
    """``root/manifest.csv`` with ``n`` phantom cases (tumour radius 9, 11, 13 ... mm), plus ``bad_ct`` (a CT
    file of garbage bytes), ``missing`` (a CT file that does not exist) and/or ``no_tumour`` (a liver mask without
    tumour) when asked. Returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        case = make_case(f"c{i}", tumour_radius_mm=9.0 + 2 * i)
        write_nifti(case.ct, root / f"c{i}_ct.nii.gz")
        write_nifti(case.labels, root / f"c{i}_labels.nii.gz")
        records.append(ManifestRecord(case_id=f"c{i}", ct=f"c{i}_ct.nii.gz", labels=f"c{i}_labels.nii.gz"))
    if corrupt:
        (root / "bad_ct.nii.gz").write_bytes(b"this is not a NIfTI file" * 50)
        write_nifti(make_case("bad").labels, root / "bad_labels.nii.gz")
        records.insert(1, ManifestRecord(case_id="bad_ct", ct="bad_ct.nii.gz", labels="bad_labels.nii.gz"))
    if missing:
        records.append(ManifestRecord(case_id="missing", ct="missing_ct.nii.gz"))
    if no_tumour:
        case = make_case("no_tumour", tumour_radius_mm=None)
        write_nifti(case.ct, root / "nt_ct.nii.gz")
        write_nifti(case.labels, root / "nt_labels.nii.gz")
        records.append(ManifestRecord(case_id="no_tumour", ct="nt_ct.nii.gz", labels="nt_labels.nii.gz"))
    return write_manifest(records, root / "manifest.csv")
