"""De-identification on import, on pydicom's bundled test files (never downloaded)."""

from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pipelines.caseio import Deidentifier, case_summary, installation_salt, load_case, write_dicom_series
from pipelines.caseio.deid import REMOVED_KEYWORDS
from pipelines.cli import main

N_SLICES = 8


def _ct_small():
    return pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))


def _phi_values(ds) -> list[str]:
    """Identifying values of CT_small.dcm (and its UIDs), as they appear in the original file."""
    values = [str(ds.PatientName), ds.PatientID, ds.InstitutionName, ds.StudyID, ds.StudyInstanceUID,
              ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID, ds.StudyDate, "GE_GENESIS_FF"]
    values += [item.PatientID for item in ds.OtherPatientIDsSequence]
    return [v for v in values if v]


@pytest.fixture
def ct_small_series(tmp_path):
    """CT_small.dcm copied into a series of 8 slices 5 mm apart, with all its identifying attributes kept."""
    folder = tmp_path / "patient"
    folder.mkdir()
    for k in range(N_SLICES):
        ds = _ct_small()
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.699997 + 5 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"IM{k:03d}")  # no suffix, as scanners name them
    return folder


def test_no_phi_survives_loading_summary_cli_or_export(ct_small_series, cfg, tmp_path, capsys, caplog,
                                                       monkeypatch):
    phi = _phi_values(_ct_small())
    assert any(p.encode() in (ct_small_series / "IM000").read_bytes() for p in phi)  # the input does carry PHI
    caplog.set_level(logging.DEBUG)
    case = load_case(ct_small_series, config=cfg)
    assert case.ct.shape == (128, 128, N_SLICES) and case.source.deidentified
    assert case.case_id.startswith("ANON-")
    summary = json.dumps(case_summary(case).to_dict())
    loaded = " ".join([summary, repr(case), repr(case.source), repr(case.ct.meta), case.case_id])
    monkeypatch.setenv("MEWM_APP__DATA_DIR", cfg.app.data_dir)
    assert main(["case", "info", str(ct_small_series)]) == 0
    assert main(["case", "info", str(ct_small_series), "--json"]) == 0
    cli_out = capsys.readouterr()
    write_dicom_series(case.ct, tmp_path / "export", patient_id=case.case_id, seed=0)
    written = b"".join(f.read_bytes() for f in (tmp_path / "export").iterdir())
    for value in phi:
        assert value not in loaded and value not in cli_out.out + cli_out.err and value not in caplog.text
        assert value.encode() not in written


def test_deidentified_dataset_has_no_phi_tags(ct_small_series, tmp_path):
    ds = pydicom.dcmread(ct_small_series / "IM000")
    original = _phi_values(ds)
    deid = Deidentifier(salt=b"k" * 32)
    deid(ds)
    for keyword in REMOVED_KEYWORDS:
        assert keyword not in ds, keyword
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert str(ds.PatientName) == ds.PatientID == deid.pseudonym("1CT1")
    assert ds.StudyDate == "20040101" and ds.PatientIdentityRemoved == "YES"
    assert str(ds.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.2"  # class UIDs are kept
    ds.save_as(tmp_path / "out.dcm")
    data = (tmp_path / "out.dcm").read_bytes()
    for value in original:
        assert value.encode() not in data
    report = deid.report
    assert report.n_datasets == 1 and {"InstitutionName", "OtherPatientIDsSequence"} <= report.removed
    assert report.n_private_removed > 100 and report.n_uids_remapped >= 5
    assert "1CT1" not in report.summary() and "JFK" not in report.summary()


def test_uids_remapped_consistently_across_files(ct_small_series):
    a, b = (pydicom.dcmread(ct_small_series / f"IM00{k}") for k in (0, 1))
    before = {kw: (str(a[kw].value), str(b[kw].value)) for kw in
              ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")}
    deid = Deidentifier(salt=b"s" * 32)
    deid(a)
    deid(b)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert a[kw].value == b[kw].value != before[kw][0]  # shared UIDs stay shared
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert all(str(ds.SOPInstanceUID).startswith("2.25.") and len(ds.SOPInstanceUID) <= 64 for ds in (a, b))
    # the same key maps the same way in another import; another key does not
    again = Deidentifier(salt=b"s" * 32)(pydicom.dcmread(ct_small_series / "IM000"))
    other = Deidentifier(salt=b"t" * 32)(pydicom.dcmread(ct_small_series / "IM000"))
    assert again.SeriesInstanceUID == a.SeriesInstanceUID != other.SeriesInstanceUID


def test_mr_small_is_deidentified_too():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    name, pid = str(ds.PatientName), ds.PatientID
    present = [kw for kw in REMOVED_KEYWORDS if kw in ds]
    assert "InstitutionName" in present
    Deidentifier()(ds)
    assert name not in str(ds) and pid not in str(ds)
    assert not [kw for kw in present if kw in ds]


def test_installation_salt_is_private_and_stable(tmp_path):
    first = installation_salt(tmp_path / "data")
    assert installation_salt(tmp_path / "data") == first and len(first) == 32
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "deid_salt.bin").st_mode)
    assert mode == 0o600
    assert installation_salt(tmp_path / "other") != first


def test_pixels_and_geometry_survive_deidentification(ct_small_series, cfg):
    case = load_case(ct_small_series, config=cfg)
    raw = _ct_small().pixel_array.astype(np.float32) - 1024.0
    np.testing.assert_array_equal(case.ct.array[:, :, 0], raw.T[::-1, ::-1])  # [i, j] = [column, row], flipped to RAS
    np.testing.assert_allclose(case.ct.spacing, [0.661468, 0.661468, 5.0], atol=1e-5)
    # LPS (-158.1, -179.0, -75.7) is RAS (158.1, 179.0, -75.7); the loader flips i and j to reach RAS
    assert case.ct.orientation == "RAS" and case.source.reoriented_from == "LPS"
    corner = case.ct.affine @ [127, 127, 0, 1]
    np.testing.assert_allclose(corner[:3], [158.135803, 179.035797, -75.699997], atol=1e-4)
