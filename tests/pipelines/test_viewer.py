"""Slice rendering: radiological orientation, window maths, overlay colours, anisotropic aspect, default slice."""

import numpy as np
import pytest

from models.errors import GeometryMismatchError
from pipelines.case import Case
from pipelines.viewer import (
    OVERLAY_STYLES,
    WINDOW_PRESETS,
    apply_window,
    default_slice,
    extract_slice,
    n_slices,
    pixel_aspect,
    render_slice,
    slice_spacing,
)
from pipelines.volume import LABELS, Volume

SHAPE = (10, 12, 8)  # x (R), y (A), z (S)


def _ras(arr, spacing=(1.0, 1.0, 1.0), kind="scalar"):
    return Volume(arr, np.diag([*spacing, 1.0]), kind)


def _lps(arr_ras, spacing=(1.0, 1.0, 1.0), kind="scalar"):
    """The same patient stored LPS-style: i runs to the patient's left, j posterior (DICOM order)."""
    arr = arr_ras[::-1, ::-1, :].copy()
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [(SHAPE[0] - 1) * spacing[0], (SHAPE[1] - 1) * spacing[1], 0.0]
    return Volume(arr, aff, kind)


def _marker(i, j, k):
    a = np.zeros(SHAPE, np.float32)
    a[i, j, k] = 1000.0
    return a


# ------------------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize("store", [_ras, _lps])
def test_axial_patient_right_is_on_image_left_and_anterior_up(store):
    # Marker at the patient's far right (max x), most anterior (max y), slice z=3.
    vol = store(_marker(SHAPE[0] - 1, SHAPE[1] - 1, 3))
    img = extract_slice(vol, "axial", 3)
    assert img.shape == (SHAPE[1], SHAPE[0])  # rows = A..P, cols = R..L
    r, c = np.argwhere(img == 1000.0)[0]
    assert (r, c) == (0, 0)  # top-left: anterior, patient right
    assert not extract_slice(vol, "axial", 4).any()


@pytest.mark.parametrize("store", [_ras, _lps])
def test_patient_left_lands_on_image_right(store):
    vol = store(_marker(0, 5, 2))  # x=0 is the patient's far left
    img = extract_slice(vol, "axial", 2)
    assert np.argwhere(img == 1000.0)[0][1] == SHAPE[0] - 1


@pytest.mark.parametrize("store", [_ras, _lps])
def test_coronal_and_sagittal_have_superior_up(store):
    vol = store(_marker(SHAPE[0] - 1, 4, SHAPE[2] - 1))  # right, superior
    cor = extract_slice(vol, "coronal", 4)
    assert cor.shape == (SHAPE[2], SHAPE[0])
    assert tuple(np.argwhere(cor == 1000.0)[0]) == (0, 0)  # superior row, patient right on the left
    sag = extract_slice(vol, "sagittal", SHAPE[0] - 1)
    assert sag.shape == (SHAPE[2], SHAPE[1])
    r, c = np.argwhere(sag == 1000.0)[0]
    assert r == 0 and c == SHAPE[1] - 1 - 4  # superior at the top, anterior on the left


def test_slice_index_out_of_range_and_unknown_plane_raise():
    vol = _ras(np.zeros(SHAPE, np.float32))
    assert n_slices(vol, "axial") == SHAPE[2] and n_slices(vol, "sagittal") == SHAPE[0]
    with pytest.raises(IndexError, match="valid 0..7"):
        extract_slice(vol, "axial", 8)
    with pytest.raises(ValueError, match="Did you mean 'axial'"):
        extract_slice(vol, "axail", 0)


# --------------------------------------------------------------------------------------------------- windowing
def test_apply_window_maps_edges_and_centre():
    out = apply_window(np.array([-1000.0, -15.0, 60.0, 135.0, 3000.0]), width=150, level=60)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]


def test_apply_window_rejects_bad_width_and_nan():
    with pytest.raises(ValueError, match="width must be a positive"):
        apply_window(np.zeros(3), width=0, level=40)
    with pytest.raises(ValueError, match="NaN"):
        apply_window(np.array([np.nan]), width=400, level=40)


def test_presets_are_standard():
    assert (WINDOW_PRESETS["Soft tissue"].width, WINDOW_PRESETS["Soft tissue"].level) == (400, 40)
    assert (WINDOW_PRESETS["Bone"].width, WINDOW_PRESETS["Bone"].level) == (1800, 400)
    assert {"Liver", "Lipiodol"} <= set(WINDOW_PRESETS)


# ---------------------------------------------------------------------------------------------------- overlays
def _ct_and_labels():
    ct = np.full(SHAPE, 40.0, np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:9, 1:11, :] = LABELS["liver"]
    lab[3:6, 3:6, :] = LABELS["tumour"]
    lab[7, 8, :] = LABELS["lipiodol"]
    return _ras(ct), _ras(lab, kind="label")


def test_overlay_colours_tumour_and_leaves_background_grey():
    ct, lab = _ct_and_labels()
    r = render_slice(ct, lab, "axial", 4, width=400, level=40, opacity=1.0, min_display_px=1)
    assert r.image.shape == (SHAPE[1], SHAPE[0], 3) and r.image.dtype == np.uint8
    tum = extract_slice(lab, "axial", 4) == LABELS["tumour"]
    assert np.all(r.image[tum] == OVERLAY_STYLES["tumour"].rgb)
    grey = r.image[0, 0]  # background corner: windowed 40 HU at level 40 → mid grey, untinted
    assert grey[0] == grey[1] == grey[2] == 128
    present = {e.name: e.present for e in r.legend}
    assert present == {"Liver": True, "Viable tumour": True, "Necrosis": False, "Lipiodol": True}


def test_opacity_blends_and_show_filters():
    ct, lab = _ct_and_labels()
    half = render_slice(ct, lab, "axial", 4, 400, 40, opacity=0.5, show=("tumour",), min_display_px=1)
    tum = extract_slice(lab, "axial", 4) == LABELS["tumour"]
    expected = np.rint(0.5 * 128 + 0.5 * np.array(OVERLAY_STYLES["tumour"].rgb))
    assert np.all(half.image[tum] == expected)
    assert [e.name for e in half.legend] == ["Viable tumour"]
    liver_only = extract_slice(lab, "axial", 4) == LABELS["liver"]
    assert np.all(half.image[liver_only] == 128)  # liver not drawn when not shown
    none = render_slice(ct, None, "axial", 4, 400, 40)
    assert none.legend == [] and np.all(none.image == 128)


def test_render_rejects_labels_on_another_grid_and_unknown_structures():
    ct, _ = _ct_and_labels()
    other = _ras(np.zeros((4, 4, 4), np.uint8), kind="label")
    with pytest.raises(GeometryMismatchError, match=r"\(4, 4, 4\)"):
        render_slice(ct, other, "axial", 0, 400, 40)
    with pytest.raises(ValueError, match="Did you mean 'tumour'"):
        render_slice(ct, None, "axial", 0, 400, 40, show=("tumor",))


# ------------------------------------------------------------------------------------------------------ aspect
def test_anisotropic_spacing_gives_true_proportions():
    vol = _ras(np.zeros(SHAPE, np.float32), spacing=(0.5, 0.5, 2.5))
    assert slice_spacing(vol, "coronal") == (2.5, 0.5)
    assert pixel_aspect(vol, "coronal") == pytest.approx(5.0)
    assert pixel_aspect(vol, "axial") == pytest.approx(1.0)
    r = render_slice(vol, None, "coronal", 0, 400, 40, min_display_px=1)
    # 8 slices x 2.5 mm = 20 mm tall, 10 columns x 0.5 mm = 5 mm wide → 40 x 10 pixels of 0.5 mm.
    assert r.image.shape[:2] == (40, 10) and r.pixel_mm == pytest.approx(0.5)


def test_small_volumes_are_enlarged_for_display():
    vol = _ras(np.zeros(SHAPE, np.float32))
    r = render_slice(vol, None, "axial", 0, 400, 40, min_display_px=120)
    assert r.image.shape[:2] == (120, 100)
    assert r.pixel_mm == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ default slice
def test_default_slice_goes_through_largest_tumour_else_middle():
    ct, _ = _ct_and_labels()
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:9, 1:11, :] = LABELS["liver"]
    lab[2:5, 2:5, 1:4] = LABELS["tumour"]  # large: centre (3, 3, 2)
    lab[8, 10, 6] = LABELS["tumour"]  # small
    case = Case("c1", ct, _ras(lab, kind="label"))
    assert default_slice(case, "axial") == 2
    assert default_slice(case, "sagittal") == 3
    assert default_slice(case, "coronal") == 3
    no_mask = Case("c2", ct)
    assert default_slice(no_mask, "axial") == SHAPE[2] // 2
