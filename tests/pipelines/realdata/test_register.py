"""`mewm register` on the imported synthetic cohort: alignment, propagated liver, pseudo-labels, QA, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.errors import ManifestError, RegistrationError
from pipelines.caseio.nifti import read_nifti
from pipelines.manifest import load_manifest_case, read_manifest
from pipelines.realdata.registration import register_ct
from pipelines.volume import Volume


def test_every_followup_is_registered_with_qa(registered):
    cohort, summary = registered
    assert summary["counts"]["registered"] == 5 and summary["counts"]["failed"] == 0
    for row in summary["cases"]:
        # model-free QA: the follow-up's HU agree with the baseline's around the liver after, not before
        assert row["liver_hu_correlation_after"] > 0.8 > row["liver_hu_correlation_before"]
        assert row["liver_hu_correlation_after"] > row["liver_hu_correlation_before"] + 0.1
        assert row["metric_final"] < row["metric_before"] - 0.2  # Mattes MI on the whole image: lower is better
        # the fixture's follow-up is the baseline moved by (+12, -12, +4) mm in LPS (z: half an 8 mm slice)
        assert row["translation_mm"][:2] == pytest.approx([12, -12], abs=2.5)
        assert abs(row["translation_mm"][2] - 4) <= 4.5
    md = (cohort / "registration.md").read_text()
    assert "pseudo-labels" in md and "not for clinical use" in md


def test_registered_cases_load_with_pseudo_labels_marked(registered):
    cohort, _ = registered
    records = {r.case_id: r for r in read_manifest(cohort)}
    assert all(r.post_ct and r.post_labels.endswith("post_labels_pseudo.nii.gz") for r in records.values())
    case = load_manifest_case(records["HCC_001"])  # post pair checked on the baseline grid by load_case
    assert case.post_ct.shape == case.ct.shape
    # outside the tumour-centred crop (16³ voxels of 5 mm: ±40 mm, plus one 8 mm CT voxel) the post labels are the
    # propagated baseline labels
    ijk = np.indices(case.ct.shape).reshape(3, -1).astype(float)
    centre = np.argwhere(case.tumour_mask()).mean(axis=0)
    offset_mm = np.abs((ijk - centre[:, None]) * case.ct.spacing[:, None]).max(axis=0).reshape(case.ct.shape)
    far = offset_mm > 48
    assert np.array_equal(case.post_labels.array[far], case.labels.array[far])
    assert (case.post_labels.array[far] == 1).sum() > 50  # the liver is among them
    info = json.loads((cohort / "cases" / "HCC_001" / "clinical.json").read_text())
    assert info["registered"] is True and info["post_labels_source"].startswith("pseudo-labels")
    assert "not expert masks" in info["post_labels_source"]


def test_rerun_keeps_registered_cases(registered, tiny_weights, rd_config):
    from pipelines.realdata.register import register_cohort

    cohort, _ = registered
    again = register_cohort(cohort, weights_dir=tiny_weights, config=rd_config, progress=False)
    assert again["counts"]["kept"] == 5 and again["counts"]["registered"] == 0
    assert len(read_manifest(cohort / "manifest_with_plan.csv")) == 4  # HCC_009 has no regimen


def test_register_refuses_a_folder_without_import_records(tmp_path, tiny_weights):
    from pipelines.realdata.register import register_cohort

    with pytest.raises(ManifestError, match="no import records"):
        register_cohort(tmp_path, weights_dir=tiny_weights, progress=False)


def test_register_ct_recovers_a_known_shift_and_is_seeded(imported):
    ct = read_nifti(imported[0] / "cases" / "HCC_002" / "ct.nii.gz")
    moved = Volume(ct.array, ct.affine.copy(), "scalar", "moved")
    moved.affine[:3, 3] += [8.0, 0.0, 0.0]  # the same image, 8 mm to the right (RAS)
    a = register_ct(ct, moved, stages=("rigid",), iterations=60, seed=1)
    b = register_ct(ct, moved, stages=("rigid",), iterations=60, seed=1)
    assert a.translation_mm == pytest.approx([-8.0, 0.0, 0.0], abs=1.5)  # LPS: x flips
    assert a.translation_mm == pytest.approx(b.translation_mm, abs=1e-6)  # same seed: same transform
    with pytest.raises(RegistrationError, match="start with 'rigid'"):
        register_ct(ct, moved, stages=("affine",))


def test_deformable_stage_runs_after_the_affine(imported):
    from pipelines.caseio.readers import load_volume

    folder = imported[0] / "cases" / "HCC_001"
    ct = load_volume(folder / "ct.nii.gz", kind="scalar")
    followup = load_volume(folder / "followup_ct.nii.gz", kind="scalar")
    reg = register_ct(ct, followup, stages=("rigid", "affine", "deformable"), iterations=20)
    assert reg.stages == ["rigid", "affine", "deformable"]
    assert reg.metric_after["deformable"] < reg.metric_before
    assert reg.resample(followup, ct).shape == ct.shape
