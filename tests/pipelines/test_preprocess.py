"""Tumour-centred MONAI preprocessing and `paste_back` on a tiny synthetic case (anisotropic, LPS-like affine)."""

import numpy as np
import pytest
import torch

from models.errors import EmptyMaskError, ModelOutputError
from pipelines.case import Case
from pipelines.preprocess import (
    _crop_region,
    lesion_components,
    paste_back,
    preprocess_case,
    unwindow_hu,
    window_hu,
)
from pipelines.volume import Volume

torch.set_num_threads(1)

SHAPE = (40, 36, 24)
SPACING = (0.8, 0.9, 2.5)
BIG = (25, 12, 9)  # voxel centre of the large lesion (radius 6 mm)
SMALL = (8, 26, 16)  # voxel centre of the small lesion (radius 3.5 mm)
CROP = (16, 16, 16)


def _affine() -> np.ndarray:
    """LPS-like: the first two voxel axes point left and posterior in RAS world."""
    aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    aff[:3, 3] = [20.0, 30.0, -10.0]
    return aff


def _sphere(centre, radius_mm) -> np.ndarray:
    ii, jj, kk = np.indices(SHAPE)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((ii, jj, kk), centre, SPACING))
    return d2 <= radius_mm**2


def _make_case(with_post: bool = False) -> Case:
    aff = _affine()
    ii, jj, kk = np.indices(SHAPE).astype(np.float64)
    x, y, z = (aff[:3, :3] @ np.stack([ii, jj, kk]).reshape(3, -1) + aff[:3, 3:4]).reshape(3, *SHAPE)
    ct = (40 + 100 * np.sin(x / 7) + 80 * np.cos(y / 9) + 3 * z).astype(np.float32)  # smooth HU, some clipped
    labels = np.ones(SHAPE, np.uint8)
    labels[_sphere(BIG, 6.0)] = 2
    labels[_sphere(SMALL, 3.5)] = 2
    case = Case("synthetic", Volume(ct, aff, "scalar", "CT"), Volume(labels, aff, "label", "labels"))
    if with_post:
        post_labels = np.ones(SHAPE, np.uint8)
        post_labels[_sphere(BIG, 6.0)] = 4  # Lipiodol where the tumour was
        post_labels[_sphere(BIG, 3.0)] = 2
        case.post_ct = Volume(ct + 300 * (post_labels == 4), aff, "scalar", "post CT")
        case.post_labels = Volume(post_labels, aff, "label", "post labels")
    return case


@pytest.fixture(scope="module")
def case() -> Case:
    return _make_case()


@pytest.fixture(scope="module")
def sample(case):
    return preprocess_case(case, crop_size=CROP)


# ------------------------------------------------------------------------------------------------ intensity
def test_window_hu_map_and_inverse():
    hu = np.array([-1000.0, -175.0, 212.5, 600.0, 3000.0], dtype=np.float32)
    assert np.allclose(window_hu(hu), [-1, -1, 0, 1, 1])
    inside = np.linspace(-175, 600, 11, dtype=np.float32)
    assert np.allclose(unwindow_hu(window_hu(inside)), inside, atol=1e-3)
    t = window_hu(torch.tensor([212.5]))
    assert isinstance(t, torch.Tensor) and torch.allclose(unwindow_hu(t), torch.tensor([212.5]))


# ------------------------------------------------------------------------------------------------ forward
def test_shapes_types_and_range(sample):
    assert sample.image.shape == (1, *CROP) and sample.labels.shape == (1, *CROP)
    assert sample.image.dtype == torch.float32 and sample.labels.dtype == torch.int64
    assert float(sample.image.min()) >= -1.0 and float(sample.image.max()) <= 1.0
    assert set(torch.unique(sample.labels).tolist()) <= {0, 1, 2}
    assert sample.post_image is None and sample.post_labels is None
    # output grid is RAS at 1.5 mm whatever the input orientation
    assert np.allclose(np.diag(sample.crop_affine)[:3], [1.5, 1.5, 1.5])
    assert np.allclose(sample.crop_affine[:3, :3], np.diag([1.5, 1.5, 1.5]))


def test_default_crop_size_and_padding(case):
    """The default 64³ crop is larger than this tiny volume: it is padded with air (-1) and background (0)."""
    s = preprocess_case(case)
    assert s.image.shape == (1, 64, 64, 64)
    assert float(s.image[0, 0, 0, 0]) == -1.0 and int(s.labels[0, 0, 0, 0]) == 0
    assert int((s.labels == 2).sum()) > 0


def test_crop_is_centred_on_largest_lesion(case, sample):
    assert sample.lesion_index == 0 and sample.n_lesions == 2
    assert np.allclose(sample.centre_voxel, BIG, atol=0.5)
    assert np.allclose(sample.centre_world, (case.ct.affine @ np.append(BIG, 1.0))[:3], atol=0.5)
    centre = np.array(CROP) // 2
    assert np.all(np.abs(np.array(sample.centre_crop_voxel) - centre) <= 1)
    assert int(sample.labels[(0, *sample.centre_crop_voxel)]) == 2
    tumour = np.argwhere(sample.labels[0].numpy() == 2).mean(axis=0)
    assert np.all(np.abs(tumour - centre) <= 1.5)


def test_lesion_index_selects_smaller_lesion(case):
    s = preprocess_case(case, crop_size=CROP, lesion=1)
    assert s.lesion_index == 1
    assert np.allclose(s.centre_voxel, SMALL, atol=0.5)
    assert int(s.labels[(0, *s.centre_crop_voxel)]) == 2
    with pytest.raises(ValueError, match=r"lesion=2 but case 'synthetic' has 2 lesion\(s\)"):
        preprocess_case(case, crop_size=CROP, lesion=2)


def test_lesion_components_order():
    mask = _sphere(BIG, 6.0) | _sphere(SMALL, 3.5)
    comps = lesion_components(mask)
    assert len(comps) == 2 and comps[0].sum() > comps[1].sum()
    assert comps[0][BIG] and comps[1][SMALL]
    assert lesion_components(np.zeros(SHAPE, bool)) == []


def test_post_pair_is_cropped_at_the_same_place():
    case = _make_case(with_post=True)
    s = preprocess_case(case, crop_size=CROP)
    assert s.post_image.shape == (1, *CROP) and s.post_labels.shape == (1, *CROP)
    assert torch.equal(torch.as_tensor(s.post_image.affine), torch.as_tensor(s.image.affine))
    assert int(s.post_labels[(0, *s.centre_crop_voxel)]) == 2
    assert int((s.post_labels == 4).sum()) > 0


def test_deterministic(case, sample):
    again = preprocess_case(case, crop_size=CROP)
    assert torch.equal(again.image, sample.image) and torch.equal(again.labels, sample.labels)


def test_spacing_is_configurable(case):
    s = preprocess_case(case, spacing=(2.0, 2.0, 2.0), crop_size=(8, 8, 8))
    assert s.image.shape == (1, 8, 8, 8)
    assert np.allclose(np.diag(s.crop_affine)[:3], 2.0)


def test_bad_arguments(case):
    with pytest.raises(ValueError, match="spacing must be 3 positive numbers"):
        preprocess_case(case, spacing=(1.5, 0, 1.5))
    with pytest.raises(ValueError, match="crop_size must be whole voxel counts"):
        preprocess_case(case, crop_size=(16, 16.5, 16))


def test_empty_mask_errors(case):
    no_labels = Case("c1", case.ct)
    with pytest.raises(EmptyMaskError, match="has no label image"):
        preprocess_case(no_labels)
    liver_only = Case("c2", case.ct, case.labels.with_array(np.ones(SHAPE, np.uint8)))
    with pytest.raises(EmptyMaskError, match=r"no tumour voxels.*values present: \[1\]"):
        preprocess_case(liver_only)


# ------------------------------------------------------------------------------------------------ paste_back
def test_paste_back_unmodified_scalar(case, sample):
    vol = paste_back(sample.image, sample, case)
    assert vol.shape == SHAPE and np.allclose(vol.affine, case.ct.affine)
    region = _crop_region(sample, case.ct, "scalar")
    assert 0 < region.sum() < region.size
    assert np.array_equal(vol.array[~region], case.ct.array[~region])  # exactly the original outside
    expected = np.clip(case.ct.array, -175, 600)[region]  # the window clips
    err = np.abs(vol.array[region] - expected)
    assert err.mean() < 1.0 and err.max() < 5.0  # HU: bilinear down- and up-sampling of a smooth image
    # the region covers the lesion that was cropped
    assert region[BIG]
    # the sample is reusable: a second paste gives the same volume
    assert np.array_equal(paste_back(sample.image.numpy(), sample, case).array, vol.array)


def test_paste_back_modified_crop(case, sample):
    bright = torch.ones(CROP)  # +1 = 600 HU everywhere in the crop
    vol = paste_back(bright, sample, case)
    region = _crop_region(sample, case.ct, "scalar")
    assert np.allclose(vol.array[region], 600.0, atol=1e-3)
    assert np.array_equal(vol.array[~region], case.ct.array[~region])


def test_labels_round_trip(case, sample):
    vol = paste_back(sample.labels, sample, case, kind="label")
    assert vol.kind == "label" and vol.array.dtype == case.labels.array.dtype
    region = _crop_region(sample, case.ct, "label")
    assert np.array_equal(vol.array[~region], case.labels.array[~region])
    agree = (vol.array[region] == case.labels.array[region]).mean()
    assert agree > 0.95  # nearest down- and up-sampling only moves boundaries
    assert vol.array[BIG] == 2
    # a crop of zeros erases the labels inside the crop only
    erased = paste_back(np.zeros((1, *CROP)), sample, case, kind="label")
    assert not erased.array[region].any()
    assert np.array_equal(erased.array[~region], case.labels.array[~region])


def test_paste_back_rejects_wrong_shape(case, sample):
    with pytest.raises(ModelOutputError, match=r"expected \(16, 16, 16\)"):
        paste_back(np.zeros((8, 8, 8)), sample, case)
    with pytest.raises(ModelOutputError, match="NaN"):
        paste_back(np.full(CROP, np.nan), sample, case)
