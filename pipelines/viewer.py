"""Slice rendering for the Case Viewer: windowing, radiological orientation, label overlays. Pure numpy/scipy.

Display convention (what a radiologist expects on a PACS screen):

- **axial**: looking from the feet; patient right on the image's left, anterior at the top;
- **coronal**: looking from the front; patient right on the image's left, superior at the top;
- **sagittal**: looking from the patient's left; anterior on the image's left, superior at the top.

Slices are taken from a view of the volume in canonical RAS axis order (`_ras_array`: display only, no
resampling), so any axis-aligned orientation on disk (LPS DICOM, flipped NIfTI) displays the same way. Slice
indices count along the RAS axis of the plane: axial ``index`` runs inferior → superior, coronal posterior →
anterior, sagittal left → right.

Voxels are often anisotropic (e.g. 0.7 x 0.7 x 5 mm); `render_slice` resamples the displayed image so every
screen pixel covers the same distance in millimetres, so organs keep their true proportions.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from models.errors import GeometryMismatchError
from pipelines.volume import LABELS, Volume

__all__ = [
    "PLANES",
    "Plane",
    "WindowPreset",
    "WINDOW_PRESETS",
    "OverlayStyle",
    "OVERLAY_STYLES",
    "LegendEntry",
    "RenderedSlice",
    "apply_window",
    "n_slices",
    "extract_slice",
    "slice_spacing",
    "pixel_aspect",
    "render_slice",
    "default_slice",
]

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
# The RAS axis held fixed by each plane (0 = i/x right, 1 = j/y anterior, 2 = k/z superior).
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class WindowPreset:
    """A CT display window: ``width`` and ``level`` (centre) in Hounsfield units."""

    width: float
    level: float
    description: str


WINDOW_PRESETS: dict[str, WindowPreset] = {
    "Liver": WindowPreset(150.0, 60.0, "narrow window for contrast between HCC and liver parenchyma"),
    "Soft tissue": WindowPreset(400.0, 40.0, "abdominal soft tissue"),
    "Bone": WindowPreset(1800.0, 400.0, "bone and calcification"),
    "Lipiodol": WindowPreset(1500.0, 500.0, "post-TACE iodised-oil deposits (several hundred to 3000 HU)"),
}


@dataclass(frozen=True)
class OverlayStyle:
    """How one label is drawn: its legend name, RGB colour, and ``"fill"`` (tinted area) or ``"outline"``."""

    label: int
    name: str
    rgb: tuple[int, int, int]
    style: Literal["fill", "outline"]


# Keyed by the `pipelines.volume.LABELS` names. The liver is outlined so its parenchyma stays readable underneath.
OVERLAY_STYLES: dict[str, OverlayStyle] = {
    "liver": OverlayStyle(LABELS["liver"], "Liver", (60, 200, 90), "outline"),
    "tumour": OverlayStyle(LABELS["tumour"], "Viable tumour", (235, 50, 50), "fill"),
    "necrosis": OverlayStyle(LABELS["necrosis"], "Necrosis", (245, 190, 30), "fill"),
    "lipiodol": OverlayStyle(LABELS["lipiodol"], "Lipiodol", (40, 170, 255), "fill"),
}


@dataclass(frozen=True)
class LegendEntry:
    """One legend row: the structure's name, its colour, and whether it appears on this slice."""

    name: str
    rgb: tuple[int, int, int]
    style: str
    present: bool

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


@dataclass(frozen=True)
class RenderedSlice:
    """A display-ready slice.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, resampled so pixels are square in millimetres.
        legend: one entry per overlaid structure.
        plane, index: which slice (index along the plane's RAS axis, see module docstring).
        pixel_mm: edge length in mm of one (square) display pixel.
    """

    image: np.ndarray
    legend: list[LegendEntry]
    plane: str
    index: int
    pixel_mm: float


# ------------------------------------------------------------------------------------------------------ windowing
def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map Hounsfield units to 8-bit grey: ``level - width/2`` → 0, ``level + width/2`` → 255, linear between.

    Args:
        hu: any-shaped array of finite HU values.
        width: window width in HU (> 0).
        level: window centre in HU.

    Returns:
        uint8 array of the same shape.
    """
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"apply_window: width must be a positive number of HU, got {width!r}.")
    if not math.isfinite(level):
        raise ValueError(f"apply_window: level must be a finite number of HU, got {level!r}.")
    hu = np.asarray(hu, dtype=np.float32)
    if not np.all(np.isfinite(hu)):
        raise ValueError("apply_window: the image holds NaN or infinite values; load it through pipelines.caseio, "
                         "which rejects such volumes.")
    low = level - width / 2.0
    scaled = (hu - np.float32(low)) * np.float32(255.0 / width)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- orientation
def _check_plane(plane: str) -> str:
    if plane not in _PLANE_AXIS:
        hint = difflib.get_close_matches(str(plane), PLANES, n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"Unknown plane {plane!r}; expected one of {', '.join(PLANES)}.{extra}")
    return plane


def _ras_permutation(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each RAS axis: which array axis runs along it, and whether that array axis runs backwards."""
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)  # row per array axis: (world axis, +1/-1)
    axes = [0, 0, 0]
    flips = [False, False, False]
    for array_axis, (world_axis, sign) in enumerate(ornt):
        axes[int(world_axis)] = array_axis
        flips[int(world_axis)] = bool(sign < 0)
    return tuple(axes), tuple(flips)  # type: ignore[return-value]


def _ras_array(volume: Volume) -> np.ndarray:
    """A view of the volume's array as a view in canonical RAS axis order (``[x right, y anterior, z superior]``).

    Oblique volumes are mapped to the nearest axis-aligned orientation (display only; no resampling).
    """
    axes, flips = _ras_permutation(volume.affine)
    arr = np.transpose(volume.array, axes)
    for ax, flip in enumerate(flips):
        if flip:
            arr = np.flip(arr, axis=ax)
    return arr


def _ras_spacing(volume: Volume) -> np.ndarray:
    axes, _ = _ras_permutation(volume.affine)
    return volume.spacing[list(axes)]


def n_slices(volume: Volume, plane: str) -> int:
    """How many slices the volume has in ``plane``."""
    return int(_ras_array(volume).shape[_PLANE_AXIS[_check_plane(plane)]])


def extract_slice(volume: Volume, plane: str, index: int) -> np.ndarray:
    """One 2D slice in radiological display orientation (see the module docstring).

    Args:
        volume: any axis-aligned `Volume`.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice number along the plane's RAS axis, ``0 <= index < n_slices(volume, plane)``.

    Returns:
        ``(rows, cols)`` array (a copy) with the volume's dtype; row 0 is the top of the displayed image.
        Rows/columns are: axial (A→P, R→L), coronal (S→I, R→L), sagittal (S→I, A→P).
    """
    axis = _PLANE_AXIS[_check_plane(plane)]
    ras = _ras_array(volume)
    n = ras.shape[axis]
    if not 0 <= int(index) < n:
        raise IndexError(f"{plane} slice {index} is out of range for {volume.name!r}: valid 0..{n - 1}.")
    plane_2d = np.take(ras, int(index), axis=axis)  # remaining axes keep RAS order, e.g. axial (x, y)
    # Rows run along the second remaining axis (y or z) from high to low (anterior/superior at the top);
    # columns along the first (x or y) from high to low (patient right, or anterior, on the image's left).
    return np.ascontiguousarray(plane_2d.T[::-1, ::-1])


def slice_spacing(volume: Volume, plane: str) -> tuple[float, float]:
    """``(row_mm, col_mm)``: the distance between adjacent rows and adjacent columns of `extract_slice` output."""
    sp = _ras_spacing(volume)
    keep = [a for a in range(3) if a != _PLANE_AXIS[_check_plane(plane)]]
    return float(sp[keep[1]]), float(sp[keep[0]])


def pixel_aspect(volume: Volume, plane: str) -> float:
    """Height/width of one `extract_slice` pixel in mm (1.0 when isotropic; 5.0 for a 5 mm coronal row on 1 mm)."""
    row_mm, col_mm = slice_spacing(volume, plane)
    return row_mm / col_mm


# ------------------------------------------------------------------------------------------------------ rendering
def _resolve_show(show: Iterable[str]) -> list[OverlayStyle]:
    styles = []
    for name in show:
        if name not in OVERLAY_STYLES:
            hint = difflib.get_close_matches(str(name), list(OVERLAY_STYLES), n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(f"Unknown structure {name!r} in show; known: {', '.join(OVERLAY_STYLES)}.{extra}")
        styles.append(OVERLAY_STYLES[name])
    return styles


def _display_shape(
    shape: tuple[int, int], row_mm: float, col_mm: float, min_display_px: int
) -> tuple[tuple[int, int], float]:
    """Output shape with square pixels of ``pixel_mm``, upscaled so the longer side reaches ``min_display_px``."""
    pixel_mm = min(row_mm, col_mm)
    rows_mm, cols_mm = shape[0] * row_mm, shape[1] * col_mm
    longest = max(rows_mm, cols_mm) / pixel_mm
    if longest < min_display_px:
        pixel_mm *= longest / min_display_px
    out = (max(1, round(rows_mm / pixel_mm)), max(1, round(cols_mm / pixel_mm)))
    return out, pixel_mm


def _resize(img: np.ndarray, out_shape: tuple[int, int], order: int) -> np.ndarray:
    if img.shape == out_shape:
        return img
    zoom = (out_shape[0] / img.shape[0], out_shape[1] / img.shape[1])
    return ndimage.zoom(img, zoom, order=order, mode="nearest", grid_mode=True)


def render_slice(
    ct: Volume,
    labels: Volume | None,
    plane: str,
    index: int,
    width: float,
    level: float,
    opacity: float = 0.4,
    show: Iterable[str] = ("liver", "tumour", "necrosis", "lipiodol"),
    min_display_px: int = 384,
) -> RenderedSlice:
    """A windowed CT slice with coloured label overlays, ready for ``st.image``.

    Args:
        ct: the CT (HU).
        labels: a label image on the CT's grid (`pipelines.volume.LABELS`), or None for the CT alone.
        plane, index: as in `extract_slice`.
        width, level: display window in HU (see `WINDOW_PRESETS`).
        opacity: 0 (no tint) .. 1 (solid colour) for filled structures; outlines are always drawn solid when
            ``opacity > 0``.
        show: structure names from `OVERLAY_STYLES` to draw.
        min_display_px: small volumes are enlarged so the longer image side has at least this many pixels.

    Returns:
        `RenderedSlice` whose ``image`` is ``(H, W, 3)`` uint8 with square pixels of ``pixel_mm`` mm.
    """
    # 1. Check inputs.
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"render_slice: opacity must be within [0, 1], got {opacity!r}.")
    styles = _resolve_show(show)
    if labels is not None and labels.shape != ct.shape:
        raise GeometryMismatchError(
            f"The label image {labels.name!r} has shape {labels.shape} but the CT {ct.name!r} has {ct.shape}; "
            "resample the labels onto the CT grid (nearest neighbour) before viewing."
        )
    # 2. Grey slice, resampled to square pixels.
    row_mm, col_mm = slice_spacing(ct, plane)
    hu = extract_slice(ct, plane, index)
    out_shape, pixel_mm = _display_shape(hu.shape, row_mm, col_mm, min_display_px)
    grey = apply_window(_resize(hu.astype(np.float32), out_shape, order=1), width, level)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    # 3. Overlays (labels resampled nearest-neighbour so they stay labels).
    legend: list[LegendEntry] = []
    if labels is not None:
        lab = _resize(extract_slice(labels, plane, index), out_shape, order=0)
        for style in styles:
            mask = lab == style.label
            if style.style == "outline":
                mask = mask & ~ndimage.binary_erosion(mask, iterations=max(1, out_shape[1] // 256))
                alpha = 1.0 if opacity > 0 else 0.0
            else:
                alpha = opacity
            if alpha > 0 and mask.any():
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(style.rgb, dtype=np.float32)
            legend.append(LegendEntry(style.name, style.rgb, style.style, bool(mask.any())))
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return RenderedSlice(image=image, legend=legend, plane=plane, index=int(index), pixel_mm=float(pixel_mm))


# ------------------------------------------------------------------------------------------------ default slices
def default_slice(case, plane: str) -> int:
    """The slice to open first: through the centroid of the largest tumour when the case has a tumour mask,
    otherwise the middle slice.

    Args:
        case: a `pipelines.case.Case`.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    """
    axis = _PLANE_AXIS[_check_plane(plane)]
    n = n_slices(case.ct, plane)
    if not case.has_tumour_mask:
        return n // 2
    from pipelines.caseio.summary import find_lesions

    tumour = _ras_array(case.labels.with_array(case.tumour_mask().astype(np.uint8)))
    largest = find_lesions(tumour > 0, min_voxels=1)[0]
    centroid = ndimage.center_of_mass(largest)
    return int(min(n - 1, max(0, round(centroid[axis]))))
