"""Rendered virtual cases on a small grid: realistic HU per tissue, consistent labels, notes that parse back."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.cohort.anatomy import TISSUES, build_anatomy, grid_affine, render_ct
from pipelines.cohort.generate import render_case
from pipelines.cohort.simulate import case_seeds, simulate_case
from pipelines.volume import LABELS

SMALL = (64, 56, 32)


@pytest.fixture(scope="module")
def rendered(plan_space):
    """Six cases of seed 3, rendered on the small grid."""
    out = []
    for i, ss in enumerate(case_seeds(3, 6)):
        truth = simulate_case(ss, i, plan_space)
        out.append((truth, render_case(truth, SMALL)))
    return out


def test_grid_is_ras_with_fixed_field_of_view():
    aff = grid_affine((160, 128, 80))
    np.testing.assert_allclose(np.diag(aff)[:3], [2.0, 2.0, 2.5])
    with pytest.raises(ValueError, match="size"):
        grid_affine((4, 4, 4))


def test_tissue_hu_ranges(rendered):
    truth, (ct, labels, _, _) = rendered[0]
    hu, lab = ct.array, labels.array
    assert ct.orientation == "RAS" and ct.shape == SMALL
    liver = np.median(hu[lab == LABELS["liver"]])
    assert 55 <= liver <= 110
    tumour = hu[lab == LABELS["tumour"]]
    assert tumour.size > 0 and np.median(tumour) > liver  # arterial hyperenhancement
    rng = np.random.default_rng(0)
    anatomy = build_anatomy(0.3, rng, SMALL)
    plain = render_ct(anatomy, "arterial", rng)
    for name, lo, hi in [("fat", -130, -70), ("muscle", 30, 70), ("cortical_bone", 300, 1200),
                         ("cancellous_bone", 300, 1200), ("air", -1010, -990), ("aorta", 200, 400)]:
        m = anatomy.tissue == TISSUES[name]
        assert m.any(), name
        assert lo <= np.median(plain[m]) <= hi, name


def test_cirrhosis_is_visible_in_liver_shape():
    healthy = build_anatomy(0.0, np.random.default_rng(1), SMALL)
    cirrhotic = build_anatomy(1.0, np.random.default_rng(1), SMALL)
    spleen = TISSUES["spleen"]
    assert cirrhotic.liver.sum() < 0.9 * healthy.liver.sum()  # right-lobe atrophy
    assert (cirrhotic.tissue == spleen).sum() > 1.3 * (healthy.tissue == spleen).sum()  # splenomegaly


def test_post_tace_labels_match_the_post_ct(rendered):
    seen_lipiodol = False
    for truth, (_, labels, post_ct, post_labels) in rendered:
        hu, lab = post_ct.array, post_labels.array
        assert set(np.unique(lab)) <= set(LABELS.values())
        assert np.array_equal(lab > 0, labels.array > 0)  # treatment changes the tumour, not the liver outline
        nec = hu[lab == LABELS["necrosis"]]
        if nec.size > 5:
            assert 0 <= np.median(nec) <= 40
        lip = hu[lab == LABELS["lipiodol"]]
        if truth.response.has_lipiodol and truth.response.kill > 0.1:
            assert lip.size > 0 and np.median(lip) > 300
            seen_lipiodol = True
        if not truth.response.has_lipiodol:
            assert lip.size == 0
    assert seen_lipiodol


def test_post_tumour_shrinks_with_kill_and_can_grow_outside_old_mask(plan_space):
    from dataclasses import replace

    ss = case_seeds(11, 1)[0]
    truth = simulate_case(ss, 0, plan_space)
    strong = replace(truth, response=replace(truth.response, kill=0.9, viable_ratio=0.1 * np.exp(0.1),
                                             lipiodol_fraction=0.5, necrosis_fraction=0.4),
                     render_seed=case_seeds(11, 1)[0].spawn(3)[2])
    weak = replace(truth, response=replace(truth.response, kill=0.05, viable_ratio=1.6, lipiodol_fraction=0.0,
                                           necrosis_fraction=0.05, has_lipiodol=False),
                   render_seed=case_seeds(11, 1)[0].spawn(3)[2])
    _, pre, _, post_s = render_case(strong, SMALL)
    _, _, _, post_w = render_case(weak, SMALL)
    viable_pre = (pre.array == LABELS["tumour"]).sum()
    assert (post_s.array == LABELS["tumour"]).sum() < 0.3 * viable_pre
    grown = post_w.array == LABELS["tumour"]
    assert grown.sum() > 1.3 * viable_pre
    assert np.any(grown & (pre.array == LABELS["liver"]))  # outside the old tumour


def test_notes_parse_back_to_the_administered_plan(plan_space):
    from models.plan import Plan

    for i, ss in enumerate(case_seeds(5, 40)):
        truth = simulate_case(ss, i, plan_space)
        assert Plan.parse(truth.note) == truth.plan, truth.note
        assert truth.plan.key() == plan_space[truth.plan_index].key()


def test_reported_lesion_count_and_size_match_what_the_mask_shows(plan_space):
    """The clinical record's lesion count and largest axial diameter are what a reader measures on the CT."""
    from pipelines.case import Case
    from pipelines.caseio.summary import case_summary
    from pipelines.cohort.anatomy import DEFAULT_SIZE

    checked = 0
    for i, ss in enumerate(case_seeds(3, 40)):
        truth = simulate_case(ss, i, plan_space)
        cov = truth.patient.covariates
        if cov.n_lesions < 2:
            continue
        ct, labels, _, _ = render_case(truth, DEFAULT_SIZE)
        summary = case_summary(Case(truth.case_id, ct, labels))
        assert summary.n_tumours == cov.n_lesions, truth.case_id
        measured = max(les.max_axial_diameter_mm for les in summary.lesions)
        assert abs(measured - cov.max_diameter_mm) <= 0.25 * cov.max_diameter_mm, (truth.case_id, measured)
        checked += 1
        if checked == 5:
            break
    assert checked == 5
