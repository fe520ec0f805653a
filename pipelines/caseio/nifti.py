"""NIfTI read/write (nibabel). NIfTI affines are already voxel→RAS, so no axis flips are needed here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from models.errors import UnreadableFileError
from pipelines.volume import Volume

__all__ = ["read_nifti", "write_nifti", "atomic_path"]


def read_nifti(path: str | os.PathLike, kind: str = "scalar", name: str | None = None) -> Volume:
    """Read a .nii/.nii.gz file as a `Volume` (array in file voxel order, affine voxel→RAS)."""
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for corrupt files; narrow to one typed error
        raise UnreadableFileError(f"Cannot read NIfTI file {path.name}: {e}") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        from models.errors import NotAVolumeError

        raise NotAVolumeError(f"{path.name} has shape {data.shape}; a 3D volume (X, Y, Z) is needed.")
    if kind == "label":
        arr = np.asarray(data)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.allclose(arr, np.round(arr)):
                from models.errors import InvalidVoxelsError

                raise InvalidVoxelsError(f"{path.name} is a label image but holds non-integer or non-finite values.")
            arr = np.round(arr)
        arr = arr.astype(np.uint8)
    else:
        arr = np.asarray(data, dtype=np.float32)
    return Volume(arr, img.affine, kind, name or path.name.split(".")[0])


def atomic_path(path: Path):
    """A temporary path beside ``path`` with the same suffixes; rename it onto ``path`` when complete."""
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_nifti(volume: Volume, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
    """Write ``volume`` to ``path`` (.nii or .nii.gz) atomically: a crash never leaves a half-written file.

    ``dtype``: storage type; default uint8 for labels, float32 for scalars. ``np.int16`` stores CT in HU compactly
    (values are rounded and clipped to the int16 range).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer) and volume.kind == "scalar":
        info = np.iinfo(dtype)
        data = np.clip(np.round(volume.array), info.min, info.max).astype(dtype)
    elif dtype is not None:
        data = volume.array.astype(dtype)
    elif volume.kind == "label":
        data = volume.array.astype(np.uint8)
    else:
        data = volume.array.astype(np.float32)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    tmp = atomic_path(path)
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
