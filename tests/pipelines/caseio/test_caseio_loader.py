"""`load_case`, `load_uploaded_case`, `case_summary` and `mewm case info`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from caseio_helpers import ras_affine, zip_folder

from models.errors import CaseIOError, GeometryMismatchError
from pipelines.caseio import case_summary, load_case, load_uploaded_case, write_dicom_series, write_volume
from pipelines.caseio.summary import find_lesions, max_axial_diameter_mm
from pipelines.cli import main
from pipelines.volume import LABELS, Volume

VOXEL_ML = 0.8 * 0.9 * 2.5 / 1000.0


@pytest.fixture
def files(tmp_path, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(labels_volume, tmp_path / "labels.nii.gz")
    lab = labels_volume.array
    write_volume(labels_volume.with_array((lab > 0).astype(np.uint8)), tmp_path / "liver.nii.gz")
    write_volume(labels_volume.with_array((lab == LABELS["tumour"]).astype(np.uint8)), tmp_path / "tumour.nii.gz")
    return tmp_path


def test_load_case_with_label_map_and_summary(files, cfg, labels_volume):
    case = load_case(files / "ct.nii.gz", labels=files / "labels.nii.gz", config=cfg)
    np.testing.assert_array_equal(case.labels.array, labels_volume.array)
    s = case_summary(case)
    assert s.n_tumours == 2  # the 2-voxel speck is not a lesion
    big, small = s.lesions
    assert (big.n_voxels, small.n_voxels) == (75, 18)
    assert big.volume_ml == pytest.approx(75 * VOXEL_ML, abs=1e-3)
    assert big.max_axial_diameter_mm == pytest.approx(np.hypot(5 * 0.8, 5 * 0.9), abs=0.01)  # edge to edge
    assert small.max_axial_diameter_mm == pytest.approx(np.hypot(3 * 0.8, 3 * 0.9), abs=0.01)
    assert big.equivalent_diameter_mm == pytest.approx((6 * 75 * VOXEL_ML * 1000 / np.pi) ** (1 / 3), abs=0.01)
    assert s.liver_volume_ml == pytest.approx(18 * 15 * 10 * VOXEL_ML, abs=1e-3)
    assert s.tumour_volume_ml == pytest.approx(95 * VOXEL_ML, abs=1e-3)
    assert s.hu_min <= s.hu_p1 <= s.hu_p99 <= s.hu_max and s.orientation == "RAS"
    json.dumps(s.to_dict())  # JSON-serialisable


def test_binary_masks_merge_into_one_label_map(files, cfg, labels_volume):
    case = load_case(files / "ct.nii.gz", liver=files / "liver.nii.gz", tumour=files / "tumour.nii.gz", config=cfg)
    np.testing.assert_array_equal(case.labels.array, labels_volume.array)
    with pytest.raises(CaseIOError, match="either a multi-label map"):
        load_case(files / "ct.nii.gz", labels=files / "labels.nii.gz", liver=files / "liver.nii.gz", config=cfg)


def test_binary_mask_must_be_binary(files, cfg):
    with pytest.raises(CaseIOError, match=r"label values \[2\]"):
        load_case(files / "ct.nii.gz", tumour=files / "labels.nii.gz", config=cfg)


def test_diameter_is_measured_in_world_mm_whatever_the_storage_order(tmp_path, cfg, ct_volume, labels_volume):
    lps = np.diag([-0.8, -0.9, 2.5, 1.0])
    write_volume(Volume(ct_volume.array, lps, "scalar"), tmp_path / "ct.nrrd")
    write_volume(Volume(labels_volume.array, lps, "label"), tmp_path / "lab.nrrd")
    s = case_summary(load_case(tmp_path / "ct.nrrd", labels=tmp_path / "lab.nrrd", config=cfg))
    assert s.lesions[0].max_axial_diameter_mm == pytest.approx(np.hypot(4.0, 4.5), abs=0.01)
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    assert max_axial_diameter_mm(one, Volume(one.astype(np.uint8), ras_affine(), "label")) == \
        pytest.approx(np.hypot(0.8, 0.9))
    assert find_lesions(one, min_voxels=2) == []


def test_clinical_dict_and_json(files, cfg):
    clinical = {"covariates": {"age": 67, "child_pugh": "A", "afp": 420.0}, "plan": "Epirubicin; Lipiodol",
                "note": "Selective TACE of segment 8.", "outcome": {"time_months": 14.5, "event": True}}
    (files / "clinical.json").write_text(json.dumps(clinical))
    for given in (clinical, files / "clinical.json"):
        case = load_case(files / "ct.nii.gz", clinical=given, config=cfg)
        assert case.covariates.age == 67 and case.covariates.child_pugh == "A"
        assert "Epirubicin" in str(case.plan) and case.note.startswith("Selective")
        assert (case.outcome.time_months, case.outcome.event) == (14.5, True)
    with pytest.raises(CaseIOError, match="'outcome' must be"):
        load_case(files / "ct.nii.gz", clinical={"outcome": {"time_months": 3}}, config=cfg)


def test_default_case_id_is_a_stable_pseudonym(files, cfg, tmp_path):
    a = load_case(files / "ct.nii.gz", config=cfg)
    (tmp_path / "smith_john.nii.gz").write_bytes((files / "ct.nii.gz").read_bytes())
    b = load_case(tmp_path / "smith_john.nii.gz", config=cfg)
    assert a.case_id == b.case_id and a.case_id.startswith("case-") and "smith" not in b.case_id
    assert load_case(files / "ct.nii.gz", case_id="VC0001", config=cfg).case_id == "VC0001"


def test_post_treatment_images_are_grid_checked(files, cfg, ct_volume, labels_volume):
    case = load_case(files / "ct.nii.gz", labels=files / "labels.nii.gz", post_ct=files / "ct.nii.gz",
                     post_labels=files / "labels.nii.gz", config=cfg)
    assert case.post_ct.shape == case.ct.shape and case_summary(case).has_post_ct
    write_volume(Volume(ct_volume.array[:20].copy(), ras_affine(), "scalar"), files / "post.nii.gz")
    with pytest.raises(GeometryMismatchError, match="post-treatment CT post.nii.gz has size"):
        load_case(files / "ct.nii.gz", post_ct=files / "post.nii.gz", config=cfg)


def test_uploaded_nifti_with_mask(files, cfg, private_tmp, labels_volume):
    case = load_uploaded_case(("../../ct.nii.gz", (files / "ct.nii.gz").read_bytes()),
                              ("labels.nii.gz", (files / "labels.nii.gz").read_bytes()), config=cfg)
    np.testing.assert_array_equal(case.labels.array, labels_volume.array)
    assert list(private_tmp.iterdir()) == []


def test_uploaded_dicom_zip_and_slice_files(tmp_path, cfg, private_tmp, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "series", seed=2)
    zipped = zip_folder(tmp_path / "series", tmp_path / "series.zip")
    from_zip = load_uploaded_case(("series.zip", zipped.read_bytes()), config=cfg)
    slices = [(f.name, f.read_bytes()) for f in sorted((tmp_path / "series").iterdir())]
    from_files = load_uploaded_case(slices, config=cfg)
    for case in (from_zip, from_files):
        np.testing.assert_array_equal(case.ct.array, ct_volume.array)
        assert case.source.deidentified and case.case_id.startswith("ANON-")
    assert from_zip.case_id == from_files.case_id  # one installation key: one pseudonym per patient
    assert list(private_tmp.iterdir()) == []


def test_cli_case_info_text_json_and_error(files, capsys, cfg, monkeypatch):
    monkeypatch.setenv("MEWM_APP__DATA_DIR", cfg.app.data_dir)
    assert main(["case", "info", str(files / "ct.nii.gz"), "--mask", str(files / "labels.nii.gz")]) == 0
    text = capsys.readouterr().out
    assert "format           nifti" in text and "size             24 x 20 x 12 voxels" in text
    assert "orientation      RAS" in text and "tumours          2" in text and "HU range" in text
    assert "lesion 1: 0.14 ml, max axial diameter 6.0 mm" in text
    assert main(["case", "info", str(files / "ct.nii.gz"), "--liver", str(files / "liver.nii.gz"), "--tumour",
                 str(files / "tumour.nii.gz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_tumours"] == 2 and data["shape"] == [24, 20, 12] and data["deidentified"] is False
    (files / "bad.nii.gz").write_bytes(gzip.compress(b"not nifti"))
    assert main(["case", "info", str(files / "bad.nii.gz")]) == 2
    assert capsys.readouterr().err.startswith("mewm: error: Cannot read NIfTI file bad.nii.gz")
