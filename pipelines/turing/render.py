"""Rendering study items: a 3D crop in HU → one grey PNG of one or several axial slices, the same way for every item.

Blinding decisions made here (so that nothing but the pixels differs between a real and a synthetic item):

- one path for every source: `pipelines.viewer.render_slice` (radiological orientation, square pixels, fixed
  window), the same slices relative to the crop centre, the same display size;
- PNGs are written **uncompressed** (zlib level 0) in 8-bit grey with no ancillary chunks: the file holds only
  IHDR, IDAT and IEND, and its length depends on the image size alone. A compressed PNG would be smaller for the
  smoother (often synthetic) images, a side channel a curious reader could read in the browser's network panel;
- no text, file name or label is drawn into the image.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from models.errors import StudySetupError
from pipelines.viewer import WINDOW_PRESETS, n_slices, render_slice
from pipelines.volume import Volume

__all__ = ["ViewSettings", "slice_indices", "render_crop", "encode_png", "png_chunks", "GAP_PX"]

GAP_PX = 4  # black gap between slices of a montage
ALLOWED_CHUNKS = (b"IHDR", b"IDAT", b"IEND")


@dataclass(frozen=True)
class ViewSettings:
    """What readers see of each crop.

    Attributes:
        slices: how many axial slices (odd, 1–7), centred on the crop's centre (the lesion centre).
        slice_gap_mm: distance between neighbouring slices.
        window_width, window_level: the fixed display window (HU), e.g. `WINDOW_PRESETS`.
        display_px: edge of each slice image in pixels (small crops are enlarged to it).
    """

    slices: int = 1
    slice_gap_mm: float = 6.0
    window_width: float = WINDOW_PRESETS["Soft tissue"].width
    window_level: float = WINDOW_PRESETS["Soft tissue"].level
    display_px: int = 384

    def __post_init__(self) -> None:
        if isinstance(self.slices, bool) or not isinstance(self.slices, int) or not (1 <= self.slices <= 7) \
                or self.slices % 2 == 0:
            raise StudySetupError(f"slices must be an odd number from 1 to 7, got {self.slices!r}.")
        if not (math.isfinite(self.slice_gap_mm) and self.slice_gap_mm > 0):
            raise StudySetupError(f"slice_gap_mm must be a positive number, got {self.slice_gap_mm!r}.")
        if not (math.isfinite(self.window_width) and self.window_width > 0 and math.isfinite(self.window_level)):
            raise StudySetupError(f"The window needs a positive width and a finite level (HU), got "
                                  f"W{self.window_width!r} / L{self.window_level!r}.")
        if not (64 <= int(self.display_px) <= 1024):
            raise StudySetupError(f"display_px must be within 64..1024, got {self.display_px!r}.")

    def to_dict(self) -> dict:
        return {"slices": self.slices, "slice_gap_mm": self.slice_gap_mm, "window_width": self.window_width,
                "window_level": self.window_level, "display_px": self.display_px}


def slice_indices(volume: Volume, view: ViewSettings) -> list[int]:
    """Axial slice indices shown: the centre slice and ``(slices − 1) / 2`` on each side, ``slice_gap_mm`` apart.

    Raises:
        StudySetupError: the slices reach beyond the crop.
    """
    n = n_slices(volume, "axial")
    z_mm = float(abs(volume.spacing[2])) if volume.spacing[2] else 1.0
    step = max(1, round(view.slice_gap_mm / z_mm))
    centre = n // 2
    half = view.slices // 2
    indices = [centre + (i - half) * step for i in range(view.slices)]
    if indices[0] < 0 or indices[-1] >= n:
        raise StudySetupError(f"{view.slices} slices {view.slice_gap_mm:g} mm apart do not fit in a crop of {n} "
                              f"axial slices ({z_mm:g} mm); show fewer slices or a smaller gap.")
    return indices


def render_crop(hu: np.ndarray, spacing: tuple[float, float, float], view: ViewSettings) -> np.ndarray:
    """``(H, W)`` uint8: the chosen axial slices of an ``(X, Y, Z)`` RAS crop in HU, side by side.

    Every slice is rendered by `render_slice` (window, orientation, square pixels) and scaled to ``display_px`` on
    its longer side; the montage puts `GAP_PX` black columns between slices.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise StudySetupError(f"A study crop must be a 3D array (X, Y, Z), got shape {hu.shape}.")
    volume = Volume(hu, np.diag([*map(float, spacing), 1.0]), "scalar", "crop")
    tiles = []
    for index in slice_indices(volume, view):
        shown = render_slice(volume, None, "axial", index, view.window_width, view.window_level,
                             min_display_px=int(view.display_px))
        tiles.append(_fit(shown.image[..., 0], int(view.display_px)))
    gap = np.zeros((tiles[0].shape[0], GAP_PX), np.uint8)
    parts = []
    for i, tile in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(tile)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Scale ``image`` so its longer side is ``size`` and pad it (black) to ``size × size``, centred."""
    from PIL import Image

    h, w = image.shape
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new != (w, h):
        image = np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))
    out = np.zeros((size, size), np.uint8)
    top, left = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    out[top:top + image.shape[0], left:left + image.shape[1]] = image
    return out


def encode_png(gray: np.ndarray) -> bytes:
    """An uncompressed 8-bit grey PNG with only IHDR, IDAT and IEND (length = a function of the size only)."""
    from PIL import Image

    gray = np.asarray(gray)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"encode_png: need a 2D uint8 array, got {gray.dtype} {gray.shape}.")
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", compress_level=0, optimize=False)
    data = buffer.getvalue()
    extra = [c for c in png_chunks(data) if c not in ALLOWED_CHUNKS]
    if extra:  # a Pillow change that adds metadata must fail loudly, not leak quietly
        raise RuntimeError(f"encode_png: unexpected PNG chunks {extra}; the study images must carry no metadata.")
    return data


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order (checks the signature and each chunk's CRC)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("png_chunks: not a PNG file.")
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"png_chunks: bad CRC in chunk {kind!r}.")
        out.append(kind)
        pos += 12 + length
    return out
