"""The committed sample cases: small, loadable by the app's loader, and reproducible by their documented command."""

import filecmp
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import SAMPLE_DATA_DIR
from pipelines.samples import list_sample_cases, load_sample_case, sample_dicom_dir

COMMAND = ["cohort", "generate", "--n", "5", "--seed", "29", "--dicom", "1", "--size", "128", "104", "64", "--quiet"]


def _files(root: Path) -> set[Path]:
    """Every file under ``root`` except the hand-written top-level README and ``.cache/`` (crop caches that the
    training commands write beside a manifest, e.g. after ``mewm train survival --manifest sample_data``)."""
    files = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    return {p for p in files if p.parts[0] != ".cache"} - {Path("README.md")}


def test_sample_data_is_small():
    total = sum(p.stat().st_size for p in SAMPLE_DATA_DIR.rglob("*") if p.is_file())
    assert total < 20 * 2**20, f"sample_data is {total / 2**20:.1f} MB; keep it well under 20 MB"


def test_every_sample_case_opens_with_masks_and_post_ct():
    infos = list_sample_cases(SAMPLE_DATA_DIR)
    assert len(infos) == 5
    protocols = set()
    for info in infos:
        case = load_sample_case(info.case_id, SAMPLE_DATA_DIR)
        assert case.has_tumour_mask
        assert case.post_ct is not None and case.post_ct.shape == case.ct.shape
        assert case.plan is not None and case.note and case.outcome is not None
        protocols.add(str(case.plan.protocol))
    assert protocols == {"bland", "cTACE", "DEB-TACE"}
    assert [i.case_id for i in infos if i.has_dicom] == ["VC00000"]


def test_dicom_copy_matches_the_nifti_ct():
    from pipelines.caseio import load_volume

    dicom = load_volume(sample_dicom_dir("VC00000", SAMPLE_DATA_DIR))
    nifti = load_sample_case("VC00000", SAMPLE_DATA_DIR).ct
    assert dicom.shape == nifti.shape
    assert abs(dicom.spacing - nifti.spacing).max() < 1e-3
    assert abs(dicom.origin - nifti.origin).max() < 1e-2
    assert abs(dicom.array - nifti.array).max() <= 1.0  # int16 storage in both


def test_sample_data_is_reproduced_by_its_documented_command(tmp_path):
    out = tmp_path / "samples"
    assert main([*COMMAND, "--out", str(out)]) == 0
    regenerated = _files(out)
    assert regenerated == _files(SAMPLE_DATA_DIR)
    names = sorted(str(p) for p in regenerated)
    match, mismatch, errors = filecmp.cmpfiles(SAMPLE_DATA_DIR, out, names, shallow=False)
    assert not mismatch and not errors, f"differ from the documented command's output: {mismatch + errors}"
