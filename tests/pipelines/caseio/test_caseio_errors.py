"""Every bad input gets a clear, typed error, and nothing is left half-written."""

from __future__ import annotations

import stat
import warnings
import zipfile

import numpy as np
import pydicom
import pytest
from caseio_helpers import ras_affine

from models.errors import (
    CaseIOError,
    EmptyMaskError,
    GeometryMismatchError,
    GeometryWarning,
    InvalidVoxelsError,
    MultipleSeriesError,
    NotAVolumeError,
    NotCTError,
    UnreadableFileError,
    UnsafeArchiveError,
    UnsupportedFormatError,
    VolumeTooLargeError,
)
from pipelines.caseio import extract_zip, load_case, load_uploaded_case, load_volume, write_dicom_series, write_volume
from pipelines.volume import Volume


def _edit_series(folder, **changes):
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(f)


# ------------------------------------------------------------------------------------------ unreadable / format
@pytest.mark.parametrize("name,match", [("ct.nii.gz", "Cannot read NIfTI file ct.nii.gz"),
                                        ("ct.nrrd", "Cannot read ct.nrrd as nrrd"),
                                        ("ct.mha", "Cannot read ct.mha as metaimage"),
                                        ("ct.zip", "ct.zip is not a readable .zip archive")])
def test_corrupt_file(tmp_path, cfg, name, match):
    (tmp_path / name).write_bytes(b"this is not an image" * 10)
    with pytest.raises(UnreadableFileError, match=match):
        load_volume(tmp_path / name, config=cfg)


def test_truncated_dicom_slice(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "s", seed=1)
    f = tmp_path / "s" / "CT0005.dcm"
    f.write_bytes(f.read_bytes()[:-300])
    with pytest.raises(UnreadableFileError, match="CT0005.dcm"):
        load_volume(tmp_path / "s", config=cfg)


def test_missing_file(tmp_path, cfg):
    with pytest.raises(UnreadableFileError, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz", config=cfg)


def test_unsupported_suffix(tmp_path, cfg):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(UnsupportedFormatError, match=r"scan.png: unsupported file type. Supported: .nii.gz, .nii"):
        load_volume(tmp_path / "scan.png", config=cfg)


def test_folder_without_dicom(tmp_path, cfg):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README.txt").write_text("hello")
    with pytest.raises(UnreadableFileError, match="No DICOM image files found in d"):
        load_volume(tmp_path / "d", config=cfg)


# ------------------------------------------------------------------------------------------ not a CT volume
def test_mr_modality(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "s", seed=1)
    _edit_series(tmp_path / "s", Modality="MR")
    with pytest.raises(NotCTError, match="modality 'MR'"):
        load_volume(tmp_path / "s", config=cfg)


def test_intensities_not_hu(tmp_path, cfg, ct_volume):
    raw = np.random.default_rng(0).uniform(0, 10000, ct_volume.shape).astype(np.float32)
    write_volume(ct_volume.with_array(raw), tmp_path / "mr.nii.gz")
    with pytest.raises(NotCTError, match="does not look like a CT in Hounsfield units"):
        load_volume(tmp_path / "mr.nii.gz", config=cfg)


def test_single_fill_value_outside_field_of_view_is_tolerated(tmp_path, cfg, ct_volume):
    arr = ct_volume.array.copy()
    arr[:3] = -3024.0  # scanner fill value outside the reconstruction circle
    write_volume(ct_volume.with_array(arr), tmp_path / "ct.nii.gz")
    assert load_volume(tmp_path / "ct.nii.gz", config=cfg).array.min() == -3024.0


def test_single_dicom_slice_folder(tmp_path, cfg, ct_volume):
    one = Volume(ct_volume.array[:, :, :1].copy(), ras_affine(), "scalar", "ct")
    write_dicom_series(one, tmp_path / "s", seed=1)
    with pytest.raises(NotAVolumeError, match=r"has 1 slice\(s\); a CT volume needs at least 8"):
        load_volume(tmp_path / "s", config=cfg)


def test_single_dicom_file(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "s", seed=1)
    with pytest.raises(NotAVolumeError, match="single DICOM file, i.e. one 2D slice"):
        load_volume(tmp_path / "s" / "CT0001.dcm", config=cfg)


def test_2d_nifti(tmp_path, cfg):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((24, 20), np.float32), np.eye(4)), tmp_path / "slice.nii.gz")
    with pytest.raises(NotAVolumeError, match="a 3D volume"):
        load_volume(tmp_path / "slice.nii.gz", config=cfg)


def test_non_uniform_slice_gaps(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "s", seed=1)
    (tmp_path / "s" / "CT0006.dcm").unlink()  # a missing slice
    with pytest.raises(CaseIOError, match="non-uniform slice gaps"):
        load_volume(tmp_path / "s", config=cfg)


# ------------------------------------------------------------------------------------------ several series
def test_two_series_in_one_folder(tmp_path, cfg, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "study" / "a", seed=1, series_description="arterial")
    write_dicom_series(ct_volume.with_array(ct_volume.array + 20), tmp_path / "study" / "b", seed=2,
                       series_number=2, series_description="portal venous")
    with pytest.raises(MultipleSeriesError, match="holds 2 series") as err:
        load_volume(tmp_path / "study", config=cfg)
    listed = {s["description"]: s for s in err.value.series}
    assert set(listed) == {"arterial", "portal venous"}
    assert all(s["n_slices"] == 12 and s["modality"] == "CT" for s in listed.values())
    assert listed["arterial"]["uid"] in str(err.value) and listed["portal venous"]["uid"] in str(err.value)
    # the listed (de-identified) UID picks the series, also in a later call on this installation
    venous = load_volume(tmp_path / "study", series=listed["portal venous"]["uid"], config=cfg)
    np.testing.assert_array_equal(venous.array, ct_volume.array + 20)
    assert venous.meta["source"].series_description == "portal venous"
    with pytest.raises(MultipleSeriesError, match="'1.2.3' is not in"):
        load_volume(tmp_path / "study", series="1.2.3", config=cfg)


# ------------------------------------------------------------------------------------------ masks and geometry
def test_mask_shape_mismatch(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(Volume(labels_volume.array[:, :, :10].copy(), ras_affine(), "label"), tmp_path / "mask.nii.gz")
    with pytest.raises(GeometryMismatchError, match=r"mask.nii.gz has size \(24, 20, 10\) but the CT ct.nii.gz "
                                                    r"has size \(24, 20, 12\).*nearest-neighbour"):
        load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "mask.nii.gz", config=cfg)


def test_mask_spacing_mismatch(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(Volume(labels_volume.array, ras_affine(spacing=(0.8, 0.9, 3.0)), "label"), tmp_path / "m.nii.gz")
    with pytest.raises(GeometryMismatchError, match=r"spacing \(0.8, 0.9, 3\) mm but the CT ct.nii.gz has "
                                                    r"\(0.8, 0.9, 2.5\) mm"):
        load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "m.nii.gz", config=cfg)


def test_mask_origin_small_shift_warns_large_shift_fails(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(Volume(labels_volume.array, ras_affine(origin=(-9.9, 20, 30)), "label"), tmp_path / "near.nii.gz")
    write_volume(Volume(labels_volume.array, ras_affine(origin=(-5, 20, 30)), "label"), tmp_path / "far.nii.gz")
    with pytest.warns(GeometryWarning, match="differ slightly in origin"):
        case = load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "near.nii.gz", config=cfg)
    assert any("differ slightly" in n for n in case.source.notes)
    with pytest.raises(GeometryMismatchError, match=r"origin \(-5, 20, 30\) mm"):
        load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "far.nii.gz", config=cfg)


def test_empty_tumour_mask(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    liver_only = np.where(labels_volume.array == 2, 1, labels_volume.array).astype(np.uint8)
    write_volume(labels_volume.with_array(liver_only), tmp_path / "lab.nii.gz")
    with pytest.raises(EmptyMaskError, match="lab.nii.gz is empty"):
        load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "lab.nii.gz", require_tumour=True, config=cfg)
    case = load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "lab.nii.gz", config=cfg)
    assert not case.has_tumour_mask and any("no tumour voxels" in n for n in case.source.notes)


def test_empty_binary_tumour_mask(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(labels_volume.with_array(np.zeros(ct_volume.shape, np.uint8)), tmp_path / "tumour.nii.gz")
    with pytest.raises(EmptyMaskError, match="tumour mask in tumour.nii.gz is empty"):
        load_case(tmp_path / "ct.nii.gz", tumour=tmp_path / "tumour.nii.gz", require_tumour=True, config=cfg)
    with pytest.raises(EmptyMaskError, match="No tumour mask was given"):
        load_case(tmp_path / "ct.nii.gz", require_tumour=True, config=cfg)


def test_bad_label_values(tmp_path, cfg, ct_volume, labels_volume):
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    write_volume(labels_volume.with_array(labels_volume.array * 3), tmp_path / "lab.nii.gz")
    with pytest.raises(InvalidVoxelsError, match=r"label values \[6\]"):
        load_case(tmp_path / "ct.nii.gz", labels=tmp_path / "lab.nii.gz", config=cfg)


def test_nan_voxels(tmp_path, cfg, ct_volume):
    arr = ct_volume.array.copy()
    arr[3, 4, 5] = np.nan
    write_volume(ct_volume.with_array(arr), tmp_path / "ct.nii.gz")
    with pytest.raises(InvalidVoxelsError, match=r"1 NaN or infinite voxels \(first at voxel \(3, 4, 5\)\)"):
        load_volume(tmp_path / "ct.nii.gz", config=cfg)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_over_size_limit(tmp_path, cfg, ct_volume, suffix, monkeypatch):
    write_volume(ct_volume, tmp_path / f"ct{suffix}")
    cfg.io.max_voxels = 5000
    with pytest.raises(VolumeTooLargeError, match=r"5,760 voxels, over the limit of 5,000 \(io.max_voxels\)"):
        load_volume(tmp_path / f"ct{suffix}", config=cfg)


def test_over_file_size_limit(tmp_path, cfg, ct_volume):
    write_volume(ct_volume, tmp_path / "ct.nii")
    cfg.io.max_file_bytes = 1000
    with pytest.raises(VolumeTooLargeError, match="io.max_file_bytes"):
        load_volume(tmp_path / "ct.nii", config=cfg)


# ------------------------------------------------------------------------------------------ unsafe archives
def _zip_with(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("entry", ["../evil", "a/../../evil.dcm", "/etc/evil"])
def test_zip_path_traversal(tmp_path, cfg, entry):
    z = _zip_with(tmp_path / "up.zip", [("ok.dcm", b"x"), (entry, b"x")])
    with pytest.raises(UnsafeArchiveError, match="entry '" + entry.replace(".", r"\.")):
        load_volume(z, config=cfg)
    assert not (tmp_path / "evil").exists()


def test_zip_symlink(tmp_path, cfg):
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "up.zip", "w") as z:
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="'link.dcm' is a symbolic link"):
        load_volume(tmp_path / "up.zip", config=cfg)


def test_zip_bomb_ratio(tmp_path, cfg, private_tmp):
    z = _zip_with(tmp_path / "bomb.zip", [("zeros.dcm", b"\0" * 2_000_000)])
    with pytest.raises(UnsafeArchiveError, match=r"would expand from .* \(\d+x\), over the limit"):
        load_volume(z, config=cfg)
    assert list(private_tmp.iterdir()) == []


def test_zip_too_many_members(tmp_path, cfg):
    cfg.io.max_zip_members = 3
    z = _zip_with(tmp_path / "many.zip", [(f"{i}.dcm", b"x") for i in range(4)])
    with pytest.raises(UnsafeArchiveError, match="4 members, more than the limit of 3"):
        load_volume(z, config=cfg)


def test_zip_member_lying_about_its_size(tmp_path, cfg):
    """A header that declares a small size cannot expand further while extracting."""
    z = _zip_with(tmp_path / "lie.zip", [("a.dcm", b"A" * 10_000)])
    data = bytearray(z.read_bytes())
    # patch the declared uncompressed size (central directory, offset 24 of the entry) to 100 bytes
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    lh = data.find(b"PK\x03\x04")
    data[lh + 22:lh + 26] = (100).to_bytes(4, "little")
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    with pytest.raises((UnsafeArchiveError, UnreadableFileError)):
        extract_zip(tmp_path / "lie.zip", tmp_path / "out", cfg.io)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ nothing half-written
def test_failed_upload_leaves_no_temp_files(cfg, private_tmp, ct_volume, tmp_path):
    with pytest.raises(UnreadableFileError):
        load_uploaded_case(("scan.zip", b"PK\x03\x04 broken"), config=cfg)
    write_volume(ct_volume, tmp_path / "ct.nii.gz")
    with pytest.raises(GeometryMismatchError):
        load_uploaded_case(("ct.nii.gz", (tmp_path / "ct.nii.gz").read_bytes()),
                           ("m.nii.gz", _nifti_bytes(np.zeros((4, 4, 4), np.uint8))), config=cfg)
    assert list(private_tmp.iterdir()) == []


def _nifti_bytes(arr):
    import gzip

    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes())


def test_failed_dicom_write_leaves_nothing(tmp_path, ct_volume, monkeypatch):
    calls = []
    real = pydicom.dcmwrite

    def flaky(path, ds, **kw):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(path, ds, **kw)

    monkeypatch.setattr(pydicom, "dcmwrite", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(ct_volume, tmp_path / "out", seed=1)
    assert list(tmp_path.iterdir()) == []


def test_dicom_write_refuses_labels_and_non_empty_folder(tmp_path, ct_volume, labels_volume):
    with pytest.raises(CaseIOError, match="Save masks with write_nifti"):
        write_dicom_series(labels_volume, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(CaseIOError, match="not an empty folder"):
        write_dicom_series(ct_volume, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_geometry_warning_is_a_warning_category():
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        with pytest.raises(GeometryWarning):
            warnings.warn("x", GeometryWarning)
