"""DICOM CT series: read a folder (de-identified on import) into a `Volume`, and write a `Volume` as a CT series.

Reading, step by step (`read_dicom_series`):
1. read every file's header (no pixels), skipping files that are not DICOM images, and de-identify it at once;
2. group by SeriesInstanceUID; several series → `MultipleSeriesError` unless ``series=`` picks one;
3. check modality (CT), frames, slice count, consistent orientation/size/spacing and the voxel limit;
4. sort slices by ImagePositionPatient along the slice normal and check that the gaps are uniform;
5. read the pixels, apply RescaleSlope/RescaleIntercept (per slice) and build the voxel→RAS affine.

DICOM geometry is LPS; pixel arrays are ``[row, column]``. The volume is indexed ``[i=column, j=row, k=slice]``.
"""

from __future__ import annotations

import os
import shutil
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import (
    CaseIOError,
    MultipleSeriesError,
    NotAVolumeError,
    NotCTError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from pipelines.case import SourceInfo
from pipelines.caseio.checks import check_file_size, check_voxel_count
from pipelines.caseio.deid import Deidentifier
from pipelines.caseio.geometry import lps_affine_to_ras, ras_affine_to_lps
from pipelines.config import IOConfig
from pipelines.volume import Volume

__all__ = ["SeriesListing", "scan_dicom_folder", "read_dicom_series", "write_dicom_series"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DICOMDIR_STORAGE = "1.2.840.10008.1.3.10"
AIR_HU = -1024.0


@dataclass
class SeriesListing:
    """One series found in a folder: its (de-identified) headers and paths, in file order."""

    uid: str
    headers: list  # pydicom Datasets without pixel data
    paths: list[Path]

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", "") or "")

    @property
    def modality(self) -> str:
        return str(self.headers[0].get("Modality", "") or "")

    def as_dict(self) -> dict:
        return {"uid": self.uid, "description": self.description, "modality": self.modality,
                "n_slices": len(self.paths)}


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def scan_dicom_folder(folder: str | os.PathLike, deidentify: Deidentifier, config: IOConfig) -> list[SeriesListing]:
    """Read and de-identify the header of every DICOM image under ``folder``; group them by series.

    Non-DICOM files (READMEs, DICOMDIR indexes, hidden files) and DICOM objects without pixels (reports, RT
    structures) are skipped. A DICOM file that is truncated or corrupt raises `UnreadableFileError`.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    groups: dict[str, SeriesListing] = {}
    files = _dicom_files(folder)
    for path in files:
        check_file_size(path, config, "DICOM file")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue  # not a DICOM file
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UnreadableFileError(f"DICOM file {path.name} is corrupt or truncated ({type(e).__name__}: {e}). "
                                      f"Re-export the series.") from e
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_STORAGE:
            continue
        if "Rows" not in ds or "SeriesInstanceUID" not in ds:
            continue  # not an image (report, structure set, presentation state)
        deidentify(ds)
        uid = str(ds.SeriesInstanceUID)
        groups.setdefault(uid, SeriesListing(uid, [], [])).headers.append(ds)
        groups[uid].paths.append(path)
    if not groups:
        raise UnreadableFileError(f"No DICOM image files found in {folder.name} ({len(files)} file(s) looked at). "
                                  f"Upload the folder (or .zip) that holds the CT slices.")
    return sorted(groups.values(), key=lambda s: (-len(s.paths), s.description, s.uid))


def _choose_series(listings: list[SeriesListing], series: str | None, where: str) -> SeriesListing:
    table = [s.as_dict() for s in listings]
    lines = "\n".join(f"  - {d['uid']}  {d['modality'] or '?'}  {d['n_slices']} slice(s)  "
                      f"{d['description'] or '(no description)'}" for d in table)
    if series is not None:
        for s in listings:
            if s.uid == series:
                return s
        raise MultipleSeriesError(f"Series {series!r} is not in {where}; it holds:\n{lines}\n"
                                  f"Pass one of these UIDs as series= (CLI: --series UID).", table)
    if len(listings) > 1:
        raise MultipleSeriesError(f"{where} holds {len(listings)} series:\n{lines}\n"
                                  f"Choose one with series=UID (CLI: --series UID).", table)
    return listings[0]


def _floats(ds, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise CaseIOError(f"DICOM file {path.name} lacks a valid {keyword}; the slices cannot be placed in space. "
                          f"Re-export the series with full geometry.")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def read_dicom_series(folder: str | os.PathLike, *, series: str | None = None, config: IOConfig | None = None,
                      deidentify: Deidentifier | None = None, name: str | None = None,
                      source_format: str = "dicom-folder") -> Volume:
    """Read one CT series from a folder (searched recursively) as a `Volume` in HU with a voxel→RAS affine.

    Args:
        series: the (de-identified) SeriesInstanceUID to read when the folder holds several; the error listing the
            series shows these UIDs, and they are stable on one installation when ``deidentify`` uses the
            installation salt.
        deidentify: the `Deidentifier` of this import (a fresh random-key one when ``None``).
        source_format: recorded in ``meta["source"].format`` (``"dicom-zip"`` when called for an archive).

    Returns:
        ``(X, Y, Z)`` float32 HU volume; ``meta["source"]`` a `SourceInfo`, ``meta["deid"]`` the `DeidReport`,
        ``meta["patient_pseudonym"]`` the pseudonymous patient ID.
    """
    import pydicom

    # 1. headers, de-identified at once; 2. choose the series
    config = config or IOConfig()
    deidentify = deidentify or Deidentifier()
    folder = Path(folder)
    chosen = _choose_series(scan_dicom_folder(folder, deidentify, config), series, f"DICOM folder {folder.name}")
    headers, paths = chosen.headers, chosen.paths
    where = f"series {chosen.description or chosen.uid} in {folder.name}"

    # 3. modality, frames, slice count, consistent geometry, size limit
    if chosen.modality != "CT":
        raise NotCTError(f"The {where} has modality {chosen.modality or 'unset'!r}; MeWM Workbench needs a CT "
                         f"(modality 'CT') in Hounsfield units. Choose the CT series of the study.")
    frames = int(headers[0].get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedFormatError(f"The {where} is an enhanced multi-frame CT ({frames} frames in one file); "
                                     f"export it as a classic series with one file per slice.")
    if len(paths) < config.min_slices:
        raise NotAVolumeError(f"The {where} has {len(paths)} slice(s); a CT volume needs at least "
                              f"{config.min_slices} (io.min_slices). Upload the whole series, not single images.")
    orient = _floats(headers[0], "ImageOrientationPatient", 6, paths[0])
    pixel_spacing = _floats(headers[0], "PixelSpacing", 2, paths[0])
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    for ds, path in zip(headers, paths):
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise CaseIOError(f"Slice {path.name} of the {where} is {ds.Rows}x{ds.Columns} pixels but the first "
                              f"slice is {rows}x{cols}; all slices of a series must have the same size.")
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, path), orient, atol=config.direction_tol):
            raise CaseIOError(f"Slice {path.name} of the {where} has a different ImageOrientationPatient; the "
                              f"series mixes orientations (e.g. a scout). Choose or export a single axial series.")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, path), pixel_spacing, atol=config.spacing_tol_mm):
            raise CaseIOError(f"Slice {path.name} of the {where} has a different PixelSpacing from the first slice.")
    check_voxel_count((cols, rows, len(paths)), config, f"The {where}")

    # 4. sort along the slice normal; uniform gaps
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3, p) for ds, p in zip(headers, paths)])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    paths = [paths[i] for i in order]
    gaps = np.diff(positions @ normal)
    median_gap = float(np.median(gaps))
    if median_gap < 1e-3 or np.max(np.abs(gaps - median_gap)) > max(0.01 * median_gap, config.spacing_tol_mm):
        raise CaseIOError(
            f"The {where} has non-uniform slice gaps (from {gaps.min():.3f} to {gaps.max():.3f} mm, median "
            f"{median_gap:.3f} mm): slices are missing, duplicated, or from several acquisitions. Re-export the "
            f"complete series, or resample it to uniform spacing first.")

    # 5. pixels in HU, affine
    volume = np.empty((cols, rows, len(paths)), dtype=np.float32)
    rescaled = False
    n_padding = 0
    for k, path in enumerate(paths):
        try:
            ds = deidentify(pydicom.dcmread(path), record=False)
            pixels = ds.pixel_array
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise UnreadableFileError(f"Cannot decode the pixels of {path.name} in the {where} "
                                      f"({type(e).__name__}: {e}). If it is compressed, export it uncompressed.") from e
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        rescaled = rescaled or "RescaleSlope" in ds or "RescaleIntercept" in ds
        hu = pixels.astype(np.float32) * slope + intercept
        padding = ds.get("PixelPaddingValue")
        if padding is not None:
            pad = pixels == padding
            n_padding += int(pad.sum())
            hu[pad] = AIR_HU
        volume[:, :, k] = hu.T  # pixel_array is [row, column] = [j, i]

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * pixel_spacing[1]  # along a row: column index i, column spacing
    affine_lps[:3, 1] = col_dir * pixel_spacing[0]  # down a column: row index j, row spacing
    affine_lps[:3, 2] = (positions[-1] - positions[0]) / (len(paths) - 1)
    affine_lps[:3, 3] = positions[0]
    notes = [deidentify.report.summary()]
    if n_padding:
        notes.append(f"{n_padding:,} padding voxels (outside the scan field) set to {AIR_HU:g} HU")
    source = SourceInfo(format=source_format, modality="CT", deidentified=True,
                        series_description=chosen.description or None, rescale_applied=rescaled, notes=notes)
    meta = {"source": source, "deid": deidentify.report, "patient_pseudonym": str(headers[0].get("PatientID", ""))}
    return Volume(volume, lps_affine_to_ras(affine_lps), "scalar", name or "CT", meta)


def _uid_maker(uid_root: str | None, seed: int | None):
    from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

    prefix = uid_root or PYDICOM_ROOT_UID
    if not prefix.endswith("."):
        prefix += "."

    def make(*parts) -> str:
        if seed is None:
            return generate_uid(prefix=prefix)
        return generate_uid(prefix=prefix, entropy_srcs=[str(seed), *map(str, parts)])

    return make


def write_dicom_series(volume: Volume, folder: str | os.PathLike, *, patient_id: str = "ANON",
                       series_description: str = "MeWM Workbench export", series_number: int = 1,
                       study_uid: str | None = None, seed: int | None = None, uid_root: str | None = None) -> Path:
    """Write a scalar `Volume` (HU) as a classic CT series (one file per k slice) into the new folder ``folder``.

    Voxels are stored as int16 with RescaleSlope 1 and RescaleIntercept 0, so HU are kept to the nearest integer.
    Writing is atomic: files go to a hidden sibling folder that is renamed to ``folder`` when complete.

    Args:
        folder: must not exist, or be an empty folder.
        patient_id: PatientID and PatientName written (never pass a real identifier here).
        study_uid: StudyInstanceUID to share with other series of the same study; generated if ``None``.
        seed: makes the generated UIDs reproducible (same seed and inputs, same UIDs); random when ``None``.
        uid_root: organisation UID root for generated UIDs (default: pydicom's root).

    Raises:
        CaseIOError: a label volume, HU outside the int16 range, a sheared grid, or a non-empty ``folder``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    # 1. check inputs
    folder = Path(folder)
    if volume.kind != "scalar":
        raise CaseIOError(f"write_dicom_series writes CT images; {volume.name!r} is a label volume. "
                          f"Save masks with write_nifti.")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CaseIOError(f"Cannot write a DICOM series into {folder}: it exists and is not an empty folder.")
    hu = np.round(volume.array.astype(np.float64))
    if not np.all(np.isfinite(hu)) or hu.min() < -32768 or hu.max() > 32767:
        raise CaseIOError(f"{volume.name!r} has values outside the int16 range (or non-finite); clip it to HU first.")
    affine = ras_affine_to_lps(volume.affine)
    spacing = volume.spacing
    row_dir, col_dir = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    slice_dir = affine[:3, 2] / spacing[2]
    if abs(row_dir @ col_dir) > 1e-4 or abs(abs(slice_dir @ np.cross(row_dir, col_dir)) - 1) > 1e-4:
        raise CaseIOError(f"{volume.name!r} has a sheared grid (slices not perpendicular to the image plane); "
                          f"resample it to an orthogonal grid before writing DICOM.")
    stored = hu.astype(np.int16)

    # 2. shared attributes
    make_uid = _uid_maker(uid_root, seed)
    study_uid = study_uid or make_uid("study")
    series_uid, frame_uid = make_uid("series", series_number), make_uid("frame", series_number)
    nx, ny, nz = volume.shape

    # 3. one file per slice, into a hidden sibling folder, then rename
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        for k in range(nz):
            sop_uid = make_uid("sop", series_number, k)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.Modality, ds.ImageType = "CT", ["DERIVED", "SECONDARY", "AXIAL"]
            ds.PatientName, ds.PatientID = patient_id, patient_id
            ds.PatientIdentityRemoved = "YES"
            ds.Manufacturer = "MeWM Workbench"
            ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = series_description, series_number, k + 1
            ds.ImageOrientationPatient = [f"{v:.8g}" for v in (*row_dir, *col_dir)]
            ds.ImagePositionPatient = [f"{v:.8g}" for v in (affine[:3, 3] + k * affine[:3, 2])]
            ds.PixelSpacing = [f"{spacing[1]:.8g}", f"{spacing[0]:.8g}"]  # row spacing, column spacing
            ds.SliceThickness = ds.SpacingBetweenSlices = f"{spacing[2]:.8g}"
            ds.Rows, ds.Columns = ny, nx
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            pydicom.dcmwrite(tmp / f"CT{k + 1:04d}.dcm", ds, enforce_file_format=True)
        if folder.exists():
            folder.rmdir()
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
