"""Write → read round trips keep shape, spacing, origin, direction and HU; other orientations come out RAS."""

from __future__ import annotations

import numpy as np
import pytest
from caseio_helpers import ORIGIN_RAS, SPACING, ras_affine, zip_folder

from pipelines.caseio import load_volume, resample, resample_like, to_ras, write_dicom_series, write_volume
from pipelines.volume import Volume


def assert_same_geometry(a: Volume, b: Volume) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


@pytest.mark.parametrize("suffix,fmt", [(".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"),
                                        (".mha", "metaimage")])
def test_file_round_trip(tmp_path, cfg, ct_volume, labels_volume, suffix, fmt):
    write_volume(ct_volume, tmp_path / f"ct{suffix}")
    write_volume(labels_volume, tmp_path / f"lab{suffix}")
    ct = load_volume(tmp_path / f"ct{suffix}", config=cfg)
    lab = load_volume(tmp_path / f"lab{suffix}", kind="label", config=cfg)
    assert_same_geometry(ct, ct_volume)
    np.testing.assert_array_equal(ct.array, ct_volume.array)
    assert ct.array.dtype == np.float32 and lab.array.dtype == np.uint8
    np.testing.assert_array_equal(lab.array, labels_volume.array)
    assert ct.meta["source"].format == fmt and ct.orientation == "RAS"


def test_dicom_folder_round_trip(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "series", seed=3)
    assert len(list((tmp_path / "series").glob("*.dcm"))) == ct_volume.shape[2]
    ct = load_volume(tmp_path / "series", config=cfg)
    assert_same_geometry(ct, ct_volume)
    np.testing.assert_array_equal(ct.array, ct_volume.array)
    src = ct.meta["source"]
    assert (src.format, src.modality, src.deidentified, src.rescale_applied) == ("dicom-folder", "CT", True, True)


def test_dicom_hu_rescale_is_applied(tmp_path, cfg, ct_volume):
    """Stored values with a non-trivial slope/intercept come back in HU."""
    import pydicom

    write_dicom_series(ct_volume, tmp_path / "s", seed=1)
    for f in (tmp_path / "s").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.int32)
        ds.PixelData = ((hu + 1024) // 2).astype(np.int16).tobytes()  # stored = (HU + 1024) / 2, rounded down
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1024"
        ds.save_as(f)
    ct = load_volume(tmp_path / "s", config=cfg)
    expected = ((ct_volume.array.astype(np.int32) + 1024) // 2) * 2 - 1024
    np.testing.assert_array_equal(ct.array, expected)


def test_dicom_zip_round_trip(tmp_path, cfg, ct_volume, private_tmp):
    write_dicom_series(ct_volume, tmp_path / "series" / "nested", seed=3)
    zipped = zip_folder(tmp_path / "series", tmp_path / "upload.zip")
    ct = load_volume(zipped, config=cfg)
    assert_same_geometry(ct, ct_volume)
    np.testing.assert_array_equal(ct.array, ct_volume.array)
    assert ct.meta["source"].format == "dicom-zip"
    assert list(private_tmp.iterdir()) == []  # the extraction folder is gone


def test_dicom_write_is_reproducible_with_seed(tmp_path, ct_volume):
    import pydicom

    write_dicom_series(ct_volume, tmp_path / "a", seed=5)
    write_dicom_series(ct_volume, tmp_path / "b", seed=5)
    write_dicom_series(ct_volume, tmp_path / "c", seed=6)
    uid = {k: pydicom.dcmread(tmp_path / k / "CT0001.dcm").SeriesInstanceUID for k in "abc"}
    assert uid["a"] == uid["b"] != uid["c"]


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_lps_input_comes_out_ras(tmp_path, cfg, ct_volume, suffix):
    lps = np.diag([-0.8, -0.9, 2.5, 1.0])
    lps[:3, 3] = [5.0, 6.0, 7.0]
    write_volume(Volume(ct_volume.array, lps, "scalar", "ct"), tmp_path / f"lps{suffix}")
    ct = load_volume(tmp_path / f"lps{suffix}", config=cfg)
    assert ct.orientation == "RAS" and ct.meta["source"].reoriented_from == "LPS"
    np.testing.assert_array_equal(ct.array, ct_volume.array[::-1, ::-1, :])
    # every voxel keeps its world position: old voxel (0, 0, 0) is new voxel (X-1, Y-1, 0)
    np.testing.assert_allclose(ct.affine @ [23, 19, 0, 1], lps @ [0, 0, 0, 1], atol=1e-6)


def test_to_ras_permutes_axes_without_interpolation(ct_volume):
    # array axes stored as (S, R, A)
    aff = np.zeros((4, 4))
    aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 2.5, 0.8, 0.9, 1.0
    sra = Volume(ct_volume.array.transpose(2, 0, 1).copy(), aff, "scalar", "sra")
    assert sra.orientation == "SRA"
    ras = to_ras(sra)
    assert ras.orientation == "RAS"
    np.testing.assert_array_equal(ras.array, ct_volume.array)
    np.testing.assert_allclose(ras.spacing, SPACING)


def test_resample_scalar_linear_and_label_nearest(ct_volume, labels_volume):
    fine = resample(labels_volume, (0.4, 0.45, 1.25))
    assert fine.shape == (48, 40, 24)
    assert set(np.unique(fine.array)) <= set(np.unique(labels_volume.array))
    np.testing.assert_allclose(fine.origin, ORIGIN_RAS)
    back = resample_like(fine, labels_volume)
    np.testing.assert_array_equal(back.array, labels_volume.array)
    smooth = resample(ct_volume, (1.6, 1.8, 5.0))
    assert smooth.shape == (12, 10, 6) and smooth.array.dtype == np.float32
    # linear: values stay inside the input range and a constant region stays constant
    assert ct_volume.array.min() <= smooth.array.min() and smooth.array.max() <= ct_volume.array.max()
    flat = resample(ct_volume.with_array(np.full(ct_volume.shape, 50.0, np.float32)), (1.6, 1.8, 5.0))
    np.testing.assert_allclose(flat.array, 50.0)
    np.testing.assert_allclose(flat.affine[:3, :3], ras_affine((1.6, 1.8, 5.0))[:3, :3])
