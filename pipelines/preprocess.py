"""Tumour-centred preprocessing with MONAI dictionary transforms, and the way back to the full CT grid.

The reference MeWM preprocessing (its §1), made deterministic and invertible:

1. ``Orientationd`` to RAS;
2. ``Spacingd`` to ``spacing`` mm (default 1.5 mm isotropic): bilinear for images, nearest for labels;
3. ``ScaleIntensityRanged``: HU [-175, 600] → [-1, 1], clipped (`window_hu`);
4. ``BorderPadd`` by half the crop size (images with -1 = air, labels with 0), so a crop near the border is full;
5. `LesionCentredCropd`: a ``crop_size`` box (default 64³) centred on the centroid of one lesion: the largest
   connected tumour component by default (26-connectivity; necrosis and Lipiodol count as tumour), or the
   ``lesion``-th largest. The centre is given in world (RAS mm) coordinates, so it is exact whatever the resampling.

All five run in ONE `monai.transforms.Compose` over the fixed keys ``image``, ``labels``, ``post_image``,
``post_labels`` (the post pair only when the case has it). Inputs are `MetaTensor`s carrying the voxel→RAS affine, so
MONAI records every spatial step and `Compose.inverse` undoes the crop, the padding, the spacing and the orientation.
`paste_back` uses that inverse to put a (possibly modified) crop back into the original CT grid.

Array convention: tensors are channel-first ``(1, X, Y, Z)`` in RAS voxel order (MONAI's), crops are ``crop_size``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    BorderPadd,
    Compose,
    InvertibleTransform,
    MapTransform,
    Orientationd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Spacingd,
)
from monai.transforms.croppad.array import Crop
from scipy import ndimage

from models.errors import EmptyMaskError, ModelOutputError
from pipelines.case import Case
from pipelines.caseio.geometry import check_same_grid
from pipelines.volume import Volume

__all__ = [
    "HU_WINDOW",
    "KEYS",
    "CropSample",
    "LesionCentredCropd",
    "build_transforms",
    "crop_size_ladder",
    "lesion_components",
    "lesion_fits",
    "preprocess_case",
    "paste_back",
    "window_hu",
    "unwindow_hu",
]

# The intensity window of the reference preprocessing: HU [-175, 600] ↔ [-1, 1].
HU_WINDOW: tuple[float, float] = (-175.0, 600.0)
_OUT_RANGE: tuple[float, float] = (-1.0, 1.0)

IMAGE_KEYS = ("image", "post_image")
LABEL_KEYS = ("labels", "post_labels")
KEYS = ("image", "labels", "post_image", "post_labels")
_MODES = ("bilinear", "nearest", "bilinear", "nearest")
CENTRE_KEY = "crop_centre_world"


# ------------------------------------------------------------------------------------------------ intensity
def window_hu(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Hounsfield units → model intensities: HU [-175, 600] maps linearly to [-1, 1], clipped (same type and shape)."""
    (a_min, a_max), (b_min, b_max) = HU_WINDOW, _OUT_RANGE
    return ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True)(x)


def unwindow_hu(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Model intensities → HU: the inverse line of `window_hu` ([-1, 1] → [-175, 600]); values are not clipped."""
    (a_min, a_max), (b_min, b_max) = HU_WINDOW, _OUT_RANGE
    return (x - b_min) / (b_max - b_min) * (a_max - a_min) + a_min


# ------------------------------------------------------------------------------------------------ lesions
def lesion_components(tumour: np.ndarray) -> list[np.ndarray]:
    """Connected tumour components (26-connectivity), largest first; ties by first voxel in C order.

    Args:
        tumour: boolean ``(X, Y, Z)`` mask.

    Returns:
        one boolean ``(X, Y, Z)`` mask per lesion.
    """
    labelled, n = ndimage.label(tumour, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    flat = labelled.ravel()
    first = np.full(n, flat.size, dtype=np.int64)
    nz = np.flatnonzero(flat)
    np.minimum.at(first, flat[nz] - 1, nz)
    order = sorted(range(n), key=lambda i: (-int(sizes[i]), int(first[i])))
    return [labelled == (i + 1) for i in order]


# ------------------------------------------------------------------------------------------------ the crop
class LesionCentredCropd(MapTransform, InvertibleTransform):
    """Crop ``roi_size`` voxels centred on a world point stored in the data under ``centre_key``.

    The centre (RAS mm, shape ``(3,)``) becomes a voxel of each key's current grid through the key's own affine, so
    it stays exact after reorientation and resampling. The image must already be padded so the box fits (see
    `build_transforms`). The crop is recorded on each `MetaTensor`, and `inverse` pads it back (MONAI ``Crop``).

    Args:
        keys: keys to crop.
        roi_size: crop size ``(X, Y, Z)`` in voxels.
        centre_key: data key holding the world centre.
        allow_missing_keys: skip absent keys (the post pair is optional).
    """

    def __init__(self, keys, roi_size: tuple[int, int, int], centre_key: str = CENTRE_KEY,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.centre_key = centre_key
        self.cropper = Crop()

    def __call__(self, data):
        d = dict(data)
        if self.centre_key not in d:
            raise KeyError(f"LesionCentredCropd needs the world centre under key {self.centre_key!r}.")
        world = np.append(np.asarray(d[self.centre_key], dtype=np.float64), 1.0)
        for key in self.key_iterator(d):
            img = d[key]
            voxel = np.linalg.solve(np.asarray(img.affine, dtype=np.float64), world)[:3]
            centre = np.rint(voxel).astype(int)
            slices = Crop.compute_slices(roi_center=centre.tolist(), roi_size=list(self.roi_size))
            spatial = img.shape[1:]
            if any(s.start < 0 or s.stop > n for s, n in zip(slices, spatial)):
                raise ValueError(
                    f"LesionCentredCropd: the {self.roi_size} box around voxel {centre.tolist()} leaves the "
                    f"{tuple(spatial)} grid of {key!r}; pad by at least half the crop size first.")
            d[key] = self.cropper(img, slices)
        return d

    def inverse(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


@lru_cache(maxsize=8)
def build_transforms(spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
                     crop_size: tuple[int, int, int] = (64, 64, 64)) -> Compose:
    """The one preprocessing `Compose` for given ``spacing`` (mm) and ``crop_size`` (voxels); cached per setting.

    The same instance must do the forward pass and the inverse (MONAI matches transforms by identity), which is why
    `CropSample` keeps it.
    """
    border = [int(s) // 2 + 1 for s in crop_size]
    (a_min, a_max), (b_min, b_max) = HU_WINDOW, _OUT_RANGE
    return Compose([
        Orientationd(keys=KEYS, axcodes="RAS", labels=None, allow_missing_keys=True),  # axis labels from the RAS space
        Spacingd(keys=KEYS, pixdim=spacing, mode=_MODES, allow_missing_keys=True),
        ScaleIntensityRanged(keys=IMAGE_KEYS, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True,
                             allow_missing_keys=True),
        BorderPadd(keys=IMAGE_KEYS, spatial_border=border, mode="constant", value=b_min, allow_missing_keys=True),
        BorderPadd(keys=LABEL_KEYS, spatial_border=border, mode="constant", value=0, allow_missing_keys=True),
        LesionCentredCropd(keys=KEYS, roi_size=crop_size, allow_missing_keys=True),
    ])


@dataclass(frozen=True, eq=False)
class CropSample:
    """A tumour-centred crop of one case, and what `paste_back` needs to return to the case's grid.

    Attributes:
        image: ``(1, X, Y, Z)`` float32 `MetaTensor` in [-1, 1] (RAS voxel order, ``spacing`` mm).
        labels: ``(1, X, Y, Z)`` int64 `MetaTensor` (`pipelines.volume.LABELS`).
        post_image, post_labels: the same for the post-treatment pair, or ``None``.
        centre_voxel: lesion centroid in the original CT's voxel coordinates ``(i, j, k)`` (float).
        centre_world: the same point in RAS mm.
        crop_affine: ``4x4`` voxel→RAS affine of the crop grid.
        lesion_index: which lesion (0 = largest); ``n_lesions``: how many the case has.
        spacing: crop voxel size (mm); ``crop_size``: crop shape (voxels).
        transforms: the `Compose` that made the crop (its inverse is used by `paste_back`).
    """

    image: MetaTensor
    labels: MetaTensor
    post_image: MetaTensor | None
    post_labels: MetaTensor | None
    centre_voxel: tuple[float, float, float]
    centre_world: tuple[float, float, float]
    crop_affine: np.ndarray
    lesion_index: int
    n_lesions: int
    spacing: tuple[float, float, float]
    crop_size: tuple[int, int, int]
    transforms: Compose = field(repr=False)

    @property
    def centre_crop_voxel(self) -> tuple[int, int, int]:
        """The crop voxel nearest the lesion centroid (``crop_size // 2`` up to rounding)."""
        world = np.append(np.asarray(self.centre_world), 1.0)
        return tuple(int(v) for v in np.rint(np.linalg.solve(self.crop_affine, world)[:3]))  # type: ignore[return-value]


def _check_triplet(name: str, value, kind: type) -> tuple:
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"preprocess_case: {name} must be 3 positive numbers, got {value!r}.") from e
    if len(out) != 3 or any(not np.isfinite(v) or v <= 0 for v in out):
        raise ValueError(f"preprocess_case: {name} must be 3 positive numbers, got {value!r}.")
    if kind is int and any(int(v) != v for v in value):
        raise ValueError(f"preprocess_case: {name} must be whole voxel counts, got {value!r}.")
    return out


def _meta(volume: Volume, dtype: torch.dtype) -> MetaTensor:
    array = np.ascontiguousarray(volume.array[None]).astype(np.float32)
    return MetaTensor(torch.from_numpy(array).to(dtype), affine=torch.as_tensor(volume.affine, dtype=torch.float64))


def preprocess_case(case: Case, spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
                    crop_size: tuple[int, int, int] = (64, 64, 64), lesion: int | None = None) -> CropSample:
    """Resample, window and crop ``case`` around one lesion (see the module docstring for the steps).

    Args:
        case: a `Case` with a tumour mask in ``labels`` (tumour, necrosis or Lipiodol voxels).
        spacing: output voxel size in mm ``(x, y, z)``.
        crop_size: output shape ``(X, Y, Z)`` in voxels.
        lesion: which connected tumour component to centre on, largest first (``None`` = 0 = the largest).

    Returns:
        a `CropSample`; ``image``/``labels`` (and the post pair, when the case has it) are ``(1, *crop_size)``.

    Raises:
        EmptyMaskError: the case has no labels or no tumour voxels.
        ValueError: bad ``spacing``/``crop_size``, or ``lesion`` beyond the number of lesions.
        GeometryMismatchError: labels or the post pair are not on the CT's grid.
    """
    # 1. check inputs
    spacing = _check_triplet("spacing", spacing, float)
    crop_size = _check_triplet("crop_size", crop_size, int)
    if case.labels is None:
        raise EmptyMaskError(f"Case {case.case_id!r} has no label image, so there is no tumour to centre the crop on. "
                             "Load a tumour mask (label 2) with the CT.")
    for other in (case.labels, case.post_ct, case.post_labels):
        if other is not None:
            check_same_grid(case.ct, other)
    lesions = lesion_components(case.tumour_mask())
    if not lesions:
        raise EmptyMaskError(f"Case {case.case_id!r}: the label image has no tumour voxels (labels 2, 3 or 4); "
                             f"values present: {np.unique(case.labels.array).tolist()}. Segment the tumour first.")
    index = 0 if lesion is None else int(lesion)
    if not 0 <= index < len(lesions):
        raise ValueError(f"preprocess_case: lesion={lesion!r} but case {case.case_id!r} has {len(lesions)} "
                         f"lesion(s); choose 0..{len(lesions) - 1} (0 = largest).")

    # 2. the lesion centre, in original voxels and in world (RAS mm) coordinates
    centre_voxel = np.argwhere(lesions[index]).mean(axis=0)
    centre_world = (case.ct.affine @ np.append(centre_voxel, 1.0))[:3]

    # 3. one Compose over the fixed keys
    data: dict = {"image": _meta(case.ct, torch.float32), "labels": _meta(case.labels, torch.float32),
                  CENTRE_KEY: centre_world}
    if case.post_ct is not None:
        data["post_image"] = _meta(case.post_ct, torch.float32)
    if case.post_labels is not None:
        data["post_labels"] = _meta(case.post_labels, torch.float32)
    transforms = build_transforms(spacing, crop_size)
    out = transforms(data)

    # 4. typed result: labels back to integers (MetaTensor keeps the applied operations)
    def as_labels(t: MetaTensor | None) -> MetaTensor | None:
        return None if t is None else torch.round(t).to(torch.int64)

    return CropSample(
        image=out["image"], labels=as_labels(out["labels"]), post_image=out.get("post_image"),
        post_labels=as_labels(out.get("post_labels")),
        centre_voxel=tuple(float(v) for v in centre_voxel), centre_world=tuple(float(v) for v in centre_world),
        crop_affine=np.asarray(out["image"].affine, dtype=np.float64), lesion_index=index, n_lesions=len(lesions),
        spacing=spacing, crop_size=crop_size, transforms=transforms,
    )


# ------------------------------------------------------------------------------------------------ the way back
def lesion_fits(case: Case, crop: CropSample) -> bool:
    """Whether the lesion ``crop`` is centred on lies wholly inside it (voxel centres, to half a voxel)."""
    lesion = lesion_components(case.tumour_mask())[crop.lesion_index]
    to_crop = np.linalg.inv(crop.crop_affine) @ case.ct.affine
    ijk = np.argwhere(lesion).astype(np.float64)
    at = ijk @ to_crop[:3, :3].T + to_crop[:3, 3]
    size = np.asarray(crop.crop_size, dtype=np.float64)
    return bool(np.all(at.min(axis=0) >= -0.5) and np.all(at.max(axis=0) <= size - 0.5))


def crop_size_ladder(base: tuple[int, int, int], step: int, largest: int) -> list[tuple[int, int, int]]:
    """Crop sizes smallest first: ``base``, then each side grown by ``step`` voxels while no side exceeds
    ``largest`` (the crops tried for a lesion larger than ``base``; same spacing)."""
    if step < 1:
        raise ValueError(f"crop_size_ladder: step must be >= 1, got {step!r}.")
    sizes = [tuple(int(s) for s in base)]
    while max(sizes[-1]) + step <= largest:
        sizes.append(tuple(s + step for s in sizes[-1]))
    return sizes


def _crop_region(sample: CropSample, grid: Volume, kind: str) -> np.ndarray:
    """Voxels of ``grid`` whose centres fall inside the crop: within the outer voxel centres for bilinear values
    (so interpolation uses crop voxels only), within the outer voxel faces for nearest labels."""
    ijk = np.indices(grid.shape, dtype=np.float64).reshape(3, -1)
    world = grid.affine[:3, :3] @ ijk + grid.affine[:3, 3:4]
    inv = np.linalg.inv(sample.crop_affine)
    c = inv[:3, :3] @ world + inv[:3, 3:4]
    hi = np.asarray(sample.crop_size, dtype=np.float64)[:, None] - 1
    eps = 1e-6
    if kind == "label":
        inside = np.all((c >= -0.5 + eps) & (c < hi + 0.5 - eps), axis=0)
    else:
        inside = np.all((c >= -eps) & (c <= hi + eps), axis=0)
    return inside.reshape(grid.shape)


def paste_back(crop: np.ndarray | torch.Tensor, sample: CropSample, case: Case,
               kind: Literal["scalar", "label"] = "scalar", base: Volume | None = None) -> Volume:
    """Put a crop (the sample's own or a model's output) back into the case's original CT grid.

    MONAI's inverse undoes the crop, the padding, the spacing (bilinear for ``"scalar"``, nearest for ``"label"``)
    and the orientation. Voxels inside the crop take the crop's values (scalars mapped back to HU with
    `unwindow_hu`); voxels outside keep ``base``.

    Args:
        crop: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` array of ``sample.crop_size``; scalars in [-1, 1], labels integers.
        sample: the `CropSample` the crop belongs to.
        case: the case it came from (gives the grid and the default ``base``).
        kind: ``"scalar"`` (a CT crop) or ``"label"`` (a label crop).
        base: the volume outside the crop; default ``case.ct`` for scalars, ``case.labels`` for labels.

    Returns:
        a `Volume` on ``case.ct``'s grid: float32 HU, or labels in ``base``'s integer type.

    Raises:
        ModelOutputError: the crop has the wrong shape or non-finite values.
    """
    # 1. check inputs
    if kind not in ("scalar", "label"):
        raise ValueError(f"paste_back: kind must be 'scalar' or 'label', got {kind!r}.")
    array = crop.detach().cpu().numpy() if isinstance(crop, torch.Tensor) else np.asarray(crop)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape != tuple(sample.crop_size):
        raise ModelOutputError(f"paste_back: the crop has shape {tuple(crop.shape)}, expected {sample.crop_size} or "
                               f"(1, {', '.join(map(str, sample.crop_size))}) to match the sample.")
    if not np.all(np.isfinite(array)):
        raise ModelOutputError("paste_back: the crop holds NaN or infinite values.")
    base = base if base is not None else (case.ct if kind == "scalar" else case.labels)
    if base is not None:
        check_same_grid(case.ct, base)

    # 2. MONAI inverse on a MetaTensor that carries the sample's recorded operations
    ref = sample.image if kind == "scalar" else sample.labels
    key = "image" if kind == "scalar" else "labels"
    meta = {k: copy.deepcopy(v) for k, v in ref.meta.items() if k != "affine"}
    tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                        affine=ref.affine.clone(), meta=meta)
    tensor.applied_operations = copy.deepcopy(ref.applied_operations)
    full = sample.transforms.inverse({key: tensor})[key][0].detach().cpu().numpy()
    if full.shape != case.ct.shape:
        raise ModelOutputError(f"paste_back: the inverse transform gave shape {full.shape}, expected the CT's "
                               f"{case.ct.shape}; was the sample made from this case?")

    # 3. inside the crop: crop values; outside: the base volume
    region = _crop_region(sample, case.ct, kind)
    if kind == "scalar":
        out = (base.array.astype(np.float32, copy=True) if base is not None
               else np.zeros(case.ct.shape, dtype=np.float32))
        out[region] = unwindow_hu(full[region]).astype(np.float32)
        return Volume(out, case.ct.affine, "scalar", f"{case.ct.name} (pasted)")
    dtype = base.array.dtype if base is not None else np.uint8
    out = base.array.copy() if base is not None else np.zeros(case.ct.shape, dtype=dtype)
    out[region] = np.rint(full[region]).astype(dtype)
    return Volume(out, case.ct.affine, "label", "labels (pasted)")
