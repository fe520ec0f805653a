"""The one reader registry: file type (suffix, folder, zip) → reader → `Volume` in RAS with its `SourceInfo`.

`load_volume` is what every caller uses (the case loader, the app, the cohort manifest reader): it picks the
reader, checks sizes before voxels are read where the format allows, refuses NaN/inf, and brings the volume to RAS.
`write_volume` is its counterpart for NIfTI, NRRD and MetaImage files (DICOM series: `write_dicom_series`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.errors import NotAVolumeError, UnreadableFileError, UnsupportedFormatError
from pipelines.case import SourceInfo
from pipelines.caseio.archive import extract_zip
from pipelines.caseio.checks import (
    as_label_array,
    as_scalar_array,
    check_file_size,
    check_finite,
    check_hu_plausible,
    check_voxel_count,
)
from pipelines.caseio.deid import Deidentifier, installation_salt
from pipelines.caseio.dicom import read_dicom_series
from pipelines.caseio.geometry import sitk_to_volume, to_ras, volume_to_sitk
from pipelines.caseio.nifti import atomic_path, read_nifti, write_nifti
from pipelines.config import Config, resolve_config
from pipelines.volume import Volume

__all__ = ["Reader", "READERS", "SUPPORTED", "reader_for", "load_volume", "write_volume", "default_deidentifier"]


@dataclass(frozen=True)
class Reader:
    """One entry of the registry. ``read(path, kind, name, series, config, deidentify) -> Volume``."""

    format: str
    suffixes: tuple[str, ...]
    read: Callable[..., Volume]
    description: str


def _file_source(fmt: str, kind: str) -> SourceInfo:
    if kind == "label":
        return SourceInfo(format=fmt, modality="label image")
    return SourceInfo(format=fmt, modality="CT", notes=[f"{fmt} files do not record the modality: CT assumed, "
                                                         f"intensities checked to be plausible HU"])


def _read_nifti(path: Path, kind: str, name: str, series, config: Config, deidentify) -> Volume:
    import nibabel as nib

    try:
        header_shape = nib.load(str(path)).shape  # header only: voxels are not read yet
    except Exception as e:  # nibabel raises many types for corrupt files; narrow to one typed error
        raise UnreadableFileError(f"Cannot read NIfTI file {path.name}: {str(e).replace(str(path), path.name)}") \
            from e
    check_voxel_count(header_shape[:3], config.io, path.name)
    vol = read_nifti(path, kind=kind, name=name)
    array = as_scalar_array(vol.array) if kind == "scalar" else np.array(vol.array, copy=True)  # never a memmap
    return Volume(array, vol.affine, kind, name, {"source": _file_source("nifti", kind)})


def _read_sitk(fmt: str):
    def read(path: Path, kind: str, name: str, series, config: Config, deidentify) -> Volume:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()  # header only
        except RuntimeError as e:
            raise UnreadableFileError(f"Cannot read {path.name} as {fmt}: {str(e).strip().splitlines()[-1]}") from e
        size = reader.GetSize()
        if reader.GetDimension() != 3:
            raise NotAVolumeError(f"{path.name} has size {size}; a 3D volume (X, Y, Z) is needed, not a 2D image.")
        if reader.GetNumberOfComponents() != 1:
            raise UnsupportedFormatError(f"{path.name} has {reader.GetNumberOfComponents()} components per voxel "
                                         f"(colour or vector image); a single-channel CT or mask is needed.")
        check_voxel_count(size, config.io, path.name)
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise UnreadableFileError(f"Cannot read the voxels of {path.name}: {str(e).strip().splitlines()[-1]}") \
                from e
        vol = sitk_to_volume(image, kind, name)
        array = as_scalar_array(vol.array) if kind == "scalar" else as_label_array(vol.array, path.name)
        return Volume(array, vol.affine, kind, name, {"source": _file_source(fmt, kind)})

    return read


def _read_dicom_folder(path: Path, kind: str, name: str, series, config: Config, deidentify) -> Volume:
    _only_scalar(kind, path, "a DICOM series")
    return read_dicom_series(path, series=series, config=config.io, deidentify=deidentify, name=name)


def _read_dicom_zip(path: Path, kind: str, name: str, series, config: Config, deidentify) -> Volume:
    _only_scalar(kind, path, "a DICOM archive")
    with tempfile.TemporaryDirectory(prefix="mewm-zip-") as tmp:
        folder = extract_zip(path, Path(tmp) / "x", config.io)
        return read_dicom_series(folder, series=series, config=config.io, deidentify=deidentify, name=name,
                                 source_format="dicom-zip")


def _read_dicom_file(path: Path, kind: str, name: str, series, config: Config, deidentify) -> Volume:
    raise NotAVolumeError(f"{path.name} is a single DICOM file, i.e. one 2D slice; a CT volume is needed. "
                          f"Pass the folder that holds the whole series, or a .zip of it.")


def _only_scalar(kind: str, path: Path, what: str) -> None:
    if kind != "scalar":
        raise UnsupportedFormatError(f"{path.name} is {what}; masks are read from NIfTI, NRRD or MetaImage label "
                                     f"images (DICOM SEG is not supported yet).")


READERS: tuple[Reader, ...] = (
    Reader("nifti", (".nii.gz", ".nii"), _read_nifti, "NIfTI"),
    Reader("nrrd", (".nrrd", ".nhdr"), _read_sitk("nrrd"), "NRRD"),
    Reader("metaimage", (".mha", ".mhd"), _read_sitk("metaimage"), "MetaImage"),
    Reader("dicom-zip", (".zip",), _read_dicom_zip, ".zip of a DICOM series"),
    Reader("dicom-file", (".dcm", ".dicom", ".ima"), _read_dicom_file, "single DICOM file (refused: one slice)"),
)
DICOM_FOLDER = Reader("dicom-folder", (), _read_dicom_folder, "folder of a DICOM series")
SUPPORTED = ", ".join([s for r in READERS[:-1] for s in r.suffixes] + ["a DICOM series folder"])


def reader_for(path: str | os.PathLike) -> Reader:
    """The registry entry for ``path`` (a folder is a DICOM series); unknown suffix → `UnsupportedFormatError`."""
    path = Path(path)
    if path.is_dir():
        return DICOM_FOLDER
    lower = path.name.lower()
    for reader in READERS:
        if lower.endswith(reader.suffixes):
            return reader
    raise UnsupportedFormatError(f"{path.name}: unsupported file type. Supported: {SUPPORTED}.")


def default_deidentifier(config: Config) -> Deidentifier:
    """A `Deidentifier` keyed with this installation's salt (in ``config.app.data_dir``), for stable pseudonyms."""
    return Deidentifier(installation_salt(config.app.data_dir))


def load_volume(path: str | os.PathLike, *, kind: str = "scalar", series: str | None = None,
                config: Config | str | os.PathLike | None = None, name: str | None = None,
                deidentify: Deidentifier | None = None) -> Volume:
    """Read an image or label image from any supported format, checked and in RAS.

    Args:
        path: NIfTI/NRRD/MetaImage file, DICOM series folder, or .zip of a DICOM series.
        kind: ``"scalar"`` (CT in HU, float32) or ``"label"`` (mask, uint8).
        series: SeriesInstanceUID (as listed by `MultipleSeriesError`) when a DICOM folder holds several.
        name: short name used in messages; defaults to the file name (never a DICOM patient attribute).
        deidentify: the `Deidentifier` of this import (defaults to the installation-keyed one).

    Scalar volumes must have at least ``io.min_slices`` voxels along every axis and plausible HU.

    Returns:
        A `Volume` with ``meta["source"]`` a `SourceInfo` (``reoriented_from`` set if axes were reordered).
    """
    # 1. check inputs, pick the reader
    config = resolve_config(config)
    if kind not in ("scalar", "label"):
        raise ValueError(f"load_volume: kind must be 'scalar' or 'label', got {kind!r}.")
    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(f"{path} does not exist. Check the path.")
    reader = reader_for(path)
    name = name or path.name
    if path.is_file():
        check_file_size(path, config.io)
    # 2. read (header checks first, inside the reader)
    deidentify = deidentify or (default_deidentifier(config) if reader.format.startswith("dicom") else None)
    volume = reader.read(path, kind, name, series, config, deidentify)
    # 3. voxel checks, orientation
    check_finite(volume)
    if kind == "scalar":
        if min(volume.shape) < config.io.min_slices:
            raise NotAVolumeError(f"{name} has size {volume.shape}: only {min(volume.shape)} slice(s) along one "
                                  f"axis; a CT volume needs at least {config.io.min_slices} (io.min_slices).")
        check_hu_plausible(volume, config.io)
    source = volume.meta["source"]
    volume.meta["source"] = dataclasses.replace(source, notes=list(source.notes))
    if config.io.reorient_to_ras:
        volume = to_ras(volume)
    return volume


def write_volume(volume: Volume, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
    """Write ``volume`` atomically as NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage (.mha).

    ``dtype``: storage type (default uint8 for labels, float32 for scalars; ``np.int16`` for compact HU).
    """
    path = Path(path)
    fmt = reader_for(path).format if not path.is_dir() else "dicom-folder"
    if fmt == "nifti":
        return write_nifti(volume, path, dtype=dtype)
    if fmt not in ("nrrd", "metaimage") or path.name.lower().endswith((".nhdr", ".mhd")):
        raise UnsupportedFormatError(f"{path.name}: write_volume writes .nii, .nii.gz, .nrrd or .mha files; use "
                                     f"write_dicom_series for DICOM.")
    import SimpleITK as sitk

    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer) and volume.kind == "scalar":
        info = np.iinfo(dtype)
        volume = volume.with_array(np.clip(np.round(volume.array), info.min, info.max))
    dtype = dtype or (np.uint8 if volume.kind == "label" else np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        sitk.WriteImage(volume_to_sitk(volume, dtype), str(tmp), True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
