"""Checks every loaded volume goes through: size limits (before voxels are read), finite voxels, HU plausibility,
label values. Each raises a typed `CaseIOError` naming the file, the values seen and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.errors import InvalidVoxelsError, NotCTError, VolumeTooLargeError
from pipelines.config import IOConfig
from pipelines.volume import LABEL_NAMES, Volume

__all__ = [
    "check_file_size",
    "check_voxel_count",
    "check_finite",
    "check_hu_plausible",
    "check_label_values",
    "as_label_array",
    "as_scalar_array",
]

# A CT in HU may have a few voxels outside the plausible range (metal, padding); more than this fraction is refused.
MAX_IMPLAUSIBLE_HU_FRACTION = 0.01


def check_file_size(path: str | os.PathLike, config: IOConfig, what: str = "file") -> None:
    """Refuse a file (or an uploaded blob written to disk) larger than ``config.max_file_bytes``."""
    path = Path(path)
    size = path.stat().st_size
    if size > config.max_file_bytes:
        raise VolumeTooLargeError(
            f"{what} {path.name} is {size / 2**20:.1f} MiB, over the limit of {config.max_file_bytes / 2**20:.1f} "
            f"MiB (io.max_file_bytes). Crop or downsample it, or raise io.max_file_bytes in the config.")


def check_voxel_count(shape: tuple[int, ...], config: IOConfig, name: str) -> None:
    """Refuse a volume with more than ``config.max_voxels`` voxels; call it with the header's shape before reading."""
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if n > config.max_voxels:
        raise VolumeTooLargeError(
            f"{name} has size {tuple(int(s) for s in shape)} = {n:,} voxels, over the limit of "
            f"{config.max_voxels:,} (io.max_voxels). Crop or downsample it, or raise io.max_voxels in the config.")


def check_finite(volume: Volume) -> None:
    """Refuse NaN or infinite voxels."""
    arr = volume.array
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        if n_bad:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidVoxelsError(
                f"{volume.name} holds {n_bad:,} NaN or infinite voxels (first at voxel {first}). "
                f"Re-export the image without missing values (or fill them, e.g. with -1024 HU for air).")


def check_hu_plausible(volume: Volume, config: IOConfig) -> None:
    """Refuse a CT whose intensities are not Hounsfield units.

    More than 1% of voxels outside ``[config.hu_min_plausible, config.hu_max_plausible]`` means the values are
    raw stored values (rescale slope/intercept not applied), another modality, or a normalised image. Voxels
    equal to the minimum, when it lies below the range, are a scanner's fill value outside the field of view
    and are not counted.
    """
    arr = volume.array
    lo, hi = config.hu_min_plausible, config.hu_max_plausible
    # One fill value below the range (outside the scan field, e.g. -2048 or -3024 HU) is tolerated.
    fill = float(arr.min()) if arr.size else 0.0
    outside = float(np.mean((arr > hi) | ((arr < lo) & (arr != fill))))
    if outside > MAX_IMPLAUSIBLE_HU_FRACTION:
        p1, p99 = (float(v) for v in np.percentile(arr, [1, 99]))
        raise NotCTError(
            f"{volume.name} does not look like a CT in Hounsfield units: {outside:.0%} of voxels lie outside "
            f"[{lo:g}, {hi:g}] HU (1st-99th percentile {p1:.0f} to {p99:.0f}). Check that it is a CT and that the "
            f"rescale slope/intercept were applied when it was exported.")


def check_label_values(volume: Volume, allowed: set[int] | None = None) -> None:
    """Refuse label values outside ``allowed`` (default: the values of `pipelines.volume.LABELS`)."""
    allowed = set(LABEL_NAMES) if allowed is None else allowed
    values = set(int(v) for v in np.unique(volume.array))
    extra = sorted(values - allowed)
    if extra:
        legend = ", ".join(f"{v} {LABEL_NAMES.get(v, '')}".strip() for v in sorted(allowed))
        raise InvalidVoxelsError(
            f"{volume.name} holds label values {extra} that are not allowed here (allowed: {legend}). "
            f"Relabel the mask to this convention.")


def as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """Stored mask voxels as uint8 labels; floats must be finite whole numbers, values must fit 0..255."""
    arr = np.asarray(array)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InvalidVoxelsError(
                f"{name} is a label image but holds non-integer or non-finite values; save masks as integers.")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InvalidVoxelsError(
            f"{name} is a label image but holds values from {arr.min()} to {arr.max()}; labels must be 0..255.")
    return arr.astype(np.uint8)


def as_scalar_array(array: np.ndarray) -> np.ndarray:
    """Stored image voxels as a float32 array that owns its memory (never a view of a memory-mapped file)."""
    return np.array(array, dtype=np.float32, copy=True)
