"""Crop cache (`build_crop_cache`), change region and the trainers' datasets, on a tiny virtual cohort."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from wm_training_helpers import TINY_CROP, tiny_cohort

from models.errors import CaseIOError, EmptyMaskError, ManifestError
from models.plan import Plan
from pipelines.caseio import read_nifti, write_nifti
from pipelines.manifest import read_manifest, write_manifest
from pipelines.volume import LABELS, Volume
from pipelines.worldmodel.crops import (AutoencoderCrops, CropCache, CropCacheWarning, SegmentationCrops,
                                        build_crop_cache, random_flips)
from pipelines.worldmodel.regions import ball, change_region, latent_masks

TUMOUR = [LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return tiny_cohort(tmp_path_factory)


@pytest.fixture(scope="module")
def cache(cohort, tmp_path_factory) -> CropCache:
    return build_crop_cache(cohort, tmp_path_factory.mktemp("crops") / "cache", spacing=TINY_CROP.spacing,
                            crop_size=TINY_CROP.crop_size, progress=False)


# ------------------------------------------------------------------------------------------------ the cache
def test_cache_holds_every_case_as_tumour_centred_crops(cache, cohort):
    assert not cache.reused and cache.synthetic and cache.skipped == []
    assert cache.case_ids == [r.case_id for r in read_manifest(cohort)]
    index = json.loads((cache.directory / "index.json").read_text())
    assert index["config"] == {"spacing": [5.0, 5.0, 5.0], "crop_size": [16, 16, 16]}
    for i in range(len(cache)):
        d = cache.load(i)
        for key in ("pre", "post", "pre_labels", "post_labels"):
            assert d[key].shape == (16, 16, 16)
        assert d["pre"].dtype == np.float32 and -1.0 <= d["pre"].min() and d["pre"].max() <= 1.0
        assert d["pre_labels"].dtype == np.uint8 and set(np.unique(d["pre_labels"])) <= set(LABELS.values())
        centre = d["pre_labels"][6:10, 6:10, 6:10]
        assert np.isin(centre, TUMOUR).any(), "the crop is centred on the lesion"
        assert Plan.parse(d["plan"]).canonical() == d["plan"]
        assert d["case_id"] == cache.case_ids[i]


def test_cache_is_reused_and_rebuilt_only_when_the_config_changes(cache, cohort):
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.directory.iterdir()}
    again = build_crop_cache(cohort, cache.directory, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size,
                             progress=False)
    assert again.reused and again.key == cache.key
    assert {p.name: p.stat().st_mtime_ns for p in again.directory.iterdir()} == stamp
    other = build_crop_cache(cohort, spacing=(6.0, 6.0, 6.0), crop_size=(8, 8, 8), progress=False)
    assert other.key != cache.key and not other.reused
    assert other.directory.parent == cohort / ".cache" and other.load(0)["pre"].shape == (8, 8, 8)


def test_cache_is_deterministic(cache, cohort, tmp_path):
    twin = build_crop_cache(cohort, tmp_path / "twin", spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size,
                            progress=False)
    for i in range(len(cache)):
        a, b = cache.load(i), twin.load(i)
        for key in ("pre", "post", "pre_labels", "post_labels"):
            np.testing.assert_array_equal(a[key], b[key])


def test_cache_built_by_two_workers_is_the_same_cache(cache, cohort, tmp_path):
    twin = build_crop_cache(cohort, tmp_path / "twin", spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size,
                            progress=False, workers=2)
    assert twin.key == cache.key and twin.case_ids == cache.case_ids and twin.skipped == cache.skipped
    for i in range(len(cache)):
        a, b = cache.load(i), twin.load(i)
        assert a["plan"] == b["plan"] and a["case_id"] == b["case_id"]
        for key in ("pre", "post", "pre_labels", "post_labels"):
            np.testing.assert_array_equal(a[key], b[key])


def test_a_worker_s_unreadable_case_is_a_clear_error_and_leaves_no_cache(cohort, tmp_path):
    records = read_manifest(cohort)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    records[2] = dataclasses.replace(records[2], post_ct=str(tmp_path / "broken.nii.gz"))
    write_manifest(records, tmp_path / "manifest.csv")
    with pytest.raises(CaseIOError, match="broken.nii.gz"):
        build_crop_cache(tmp_path, tmp_path / "cache", spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size,
                         progress=False, workers=2)
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob(".cache.*"))
    with pytest.raises(ValueError, match="workers >= 1"):
        build_crop_cache(cohort, tmp_path / "cache", progress=False, workers=0)


def test_case_without_tumour_is_skipped_with_a_warning(cohort, tmp_path):
    records = read_manifest(cohort)
    labels = read_nifti(records[1].labels, kind="label")
    no_tumour = np.where(np.isin(labels.array, TUMOUR), LABELS["liver"], labels.array).astype(np.uint8)
    records[1] = dataclasses.replace(records[1], clinical=None, labels=str(
        write_nifti(Volume(no_tumour, labels.affine, "label", "labels"), tmp_path / "labels.nii.gz")))
    write_manifest(records, tmp_path / "manifest.csv")
    with pytest.warns(CropCacheWarning, match=records[1].case_id):
        made = build_crop_cache(tmp_path, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size, progress=False)
    assert len(made) == 3 and records[1].case_id not in made.case_ids
    assert made.skipped[0]["case_id"] == records[1].case_id and "empty tumour" in made.skipped[0]["reason"]
    assert not made.synthetic  # this copy has no manifest.json saying so


def test_cache_refuses_a_folder_that_is_not_a_cache(cohort, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CaseIOError, match="not a crop cache"):
        build_crop_cache(cohort, tmp_path, spacing=TINY_CROP.spacing, crop_size=TINY_CROP.crop_size, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="No manifest"):
        build_crop_cache(tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------ change region
def test_change_region_contains_the_tumour_and_stays_in_the_liver(cache):
    for i in range(len(cache)):
        labels = cache.load(i)["pre_labels"]
        tumour = np.isin(labels, TUMOUR)
        region = change_region(labels, margin_mm=10, spacing_mm=5.0)
        assert region[tumour].all(), "every tumour voxel may change"
        assert (labels[region] >= LABELS["liver"]).all(), "nothing outside the liver may change"
        assert region.sum() > tumour.sum(), "the margin lets the tumour grow"
        np.testing.assert_array_equal(change_region(labels, margin_mm=0, spacing_mm=5.0), tumour)


def test_change_region_margin_is_in_millimetres():
    labels = np.ones((21, 21, 21), dtype=np.uint8)
    labels[10, 10, 10] = LABELS["tumour"]
    region = change_region(labels, margin_mm=6, spacing_mm=(2.0, 2.0, 3.0))
    assert region[10, 7:14, 10].all() and not region[10, 6, 10]  # 3 voxels of 2 mm along y
    assert region[10, 10, 8:13].all() and not region[10, 10, 7]  # 2 voxels of 3 mm along z
    assert not region[13, 13, 10]  # sqrt(36 + 36) mm > 6 mm: a ball, not a cube
    assert ball(6.0, (2.0, 2.0, 3.0)).shape == (7, 7, 5)


def test_change_region_errors():
    with pytest.raises(EmptyMaskError, match="no tumour"):
        change_region(np.ones((8, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="margin_mm"):
        change_region(np.full((8, 8, 8), 2, dtype=np.uint8), margin_mm=-1)


def test_latent_masks_are_block_fractions(cache):
    labels = cache.load(0)["pre_labels"]
    masks = latent_masks(labels, 4, spacing_mm=5.0, margin_mm=10)
    assert masks.shape == (2, 4, 4, 4) and masks.min() >= 0 and masks.max() <= 1
    assert (masks[1] >= masks[0]).all(), "the change region covers the tumour"
    assert masks[0].sum() * 64 == pytest.approx(np.isin(labels, TUMOUR).sum())
    with pytest.raises(ValueError, match="multiple"):
        latent_masks(labels[:15], 4)


# ------------------------------------------------------------------------------------------------ datasets
def test_autoencoder_crops_are_seeded(cache):
    ds = AutoencoderCrops(cache, [0, 2])
    assert len(ds) == 4 and ds[0].shape == (1, 16, 16, 16)
    a = ds.sample_batch(3, torch.Generator().manual_seed(5))
    b = ds.sample_batch(3, torch.Generator().manual_seed(5))
    c = ds.sample_batch(3, torch.Generator().manual_seed(6))
    assert a.shape == (3, 1, 16, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert sum(x.shape[0] for x in ds.all_batches(3)) == 4


def test_segmentation_crops_flip_image_and_labels_together(cache):
    ds = SegmentationCrops(cache)
    assert len(ds) == 2 * len(cache) and ds[0][1].dtype == torch.int64
    x, y = ds.images[:4], ds.labels[:4]
    fx, fy = random_flips([x, y], torch.Generator().manual_seed(1))
    flipped = 0
    for i in range(4):
        for dims in ([], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]):
            if torch.equal(fx[i], torch.flip(x[i:i + 1], [d for d in dims])[0]):
                assert torch.equal(fy[i], torch.flip(y[i:i + 1], dims)[0])
                flipped += bool(dims)
                break
        else:
            pytest.fail("the image was not flipped along whole axes")
    assert flipped > 0
    with pytest.raises(IndexError):
        SegmentationCrops(cache, [len(cache)])
