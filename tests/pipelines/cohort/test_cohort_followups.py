"""Extra simulated follow-ups for dynamics training: files, manifest, resume, and the patient-grouped split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cohort.followups import FOLLOWUPS_MANIFEST, followup_id, patient_of, write_followups

GRID = (64, 56, 32)


@pytest.fixture(scope="module")
def cohort_with_followups(tmp_path_factory):
    from pipelines.cohort.generate import generate_cohort

    out = tmp_path_factory.mktemp("followups") / "seed11"
    generate_cohort(n=3, seed=11, out=out, size=GRID, progress=False)
    report = write_followups(out, per_patient=2, seed=0, progress=False)
    return out, report


def test_followup_ids_name_their_patient():
    assert followup_id("VC00007", 2) == "VC00007~cf2"
    assert patient_of("VC00007~cf2") == "VC00007" and patient_of("VC00007") == "VC00007"


def test_followups_manifest_lists_the_observed_rows_then_other_plans_of_the_same_patient(cohort_with_followups):
    from pipelines.manifest import read_manifest

    out, report = cohort_with_followups
    assert report.followups == 6 and report.written == 6 and report.patients == 3
    meta = json.loads((out / FOLLOWUPS_MANIFEST).with_suffix(".json").read_text())
    assert meta["synthetic"] is True and meta["followups"]["per_patient"] == 2 and meta["seed"] == 11
    observed = {r.case_id: r for r in read_manifest(out)}
    rows = read_manifest(out / FOLLOWUPS_MANIFEST)
    assert [r.case_id for r in rows] == [c for cid in sorted(observed) for c in
                                         (cid, followup_id(cid, 1), followup_id(cid, 2))]
    for r in rows:
        own = observed[patient_of(r.case_id)]
        assert r.ct == own.ct and r.labels == own.labels and r.covariates == own.covariates
        if r.case_id in observed:
            assert r.post_ct == own.post_ct and r.plan == own.plan and r.time_months == own.time_months
        else:
            assert r.post_ct != own.post_ct and r.time_months is None and r.event is None and r.clinical is None
    for cid, own in observed.items():
        from models.plan import Plan

        keys = {Plan.parse(r.plan).key() for r in rows if patient_of(r.case_id) == cid}
        assert len(keys) == 3, "the extra follow-ups use plans other than the administered one and each other"


def test_a_followup_is_the_simulators_response_to_its_plan(cohort_with_followups):
    from models.plan import Plan
    from pipelines.cohort.counterfactual import regenerate_cohort, render_counterfactual
    from pipelines.manifest import load_manifest_case, read_manifest

    out, _ = cohort_with_followups
    rows = {r.case_id: r for r in read_manifest(out / FOLLOWUPS_MANIFEST)}
    row = rows[followup_id("VC00001", 2)]
    case = load_manifest_case(row)
    assert case.plan.canonical() == row.plan, "the row's own plan, not the clinical JSON's administered plan"
    cohort = regenerate_cohort(out)
    cf = render_counterfactual(cohort.truths[1], Plan.parse(row.plan), cohort.size)
    np.testing.assert_array_equal(cf.post_labels.array, case.post_labels.array)
    np.testing.assert_array_equal(np.round(cf.post_ct.array), case.post_ct.array)


def test_rerun_writes_nothing_new_and_the_same_manifest(cohort_with_followups):
    out, _ = cohort_with_followups
    before = (out / FOLLOWUPS_MANIFEST).read_bytes()
    again = write_followups(out, per_patient=2, seed=0, progress=False)
    assert again.written == 0 and (out / FOLLOWUPS_MANIFEST).read_bytes() == before


def test_split_keeps_a_patients_rows_together_and_is_unchanged_for_one_row_per_patient():
    import torch

    from pipelines.training import SPLIT_SEED, split_cases

    ids = [f"VC{i:05d}" for i in range(40)]
    plain = split_cases(ids)
    # the split before follow-ups existed: a seeded permutation of the sorted ids
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    assert plain.val_ids == sorted(ids[p] for p in perm[36:])
    grouped = split_cases([c for cid in ids for c in (cid, followup_id(cid, 1), followup_id(cid, 2))])
    assert {patient_of(c) for c in grouped.val_ids} == set(plain.val_ids)
    assert not {patient_of(c) for c in grouped.val_ids} & {patient_of(c) for c in grouped.train_ids}
    assert len(grouped.val_ids) == 3 * len(plain.val_ids)


def test_drug_matched_followups_keep_the_embolics_and_change_the_drugs(tmp_path):
    from models.plan import Plan
    from pipelines.cohort.counterfactual import regenerate_cohort
    from pipelines.cohort.followups import choose_drug_matched
    from pipelines.cohort.generate import generate_cohort
    from pipelines.manifest import read_manifest

    out = tmp_path / "seed12"
    generate_cohort(n=3, seed=12, out=out, size=GRID, progress=False)
    plain = write_followups(out, per_patient=1, seed=0, progress=False)
    first = {r.case_id: r.plan for r in read_manifest(out / FOLLOWUPS_MANIFEST)}
    report = write_followups(out, per_patient=1, drug_matched=2, seed=0, progress=False)
    assert report.written == report.followups - plain.followups  # the first follow-ups were kept, not re-rendered
    rows = read_manifest(out / FOLLOWUPS_MANIFEST)
    observed = {r.case_id: r for r in read_manifest(out)}
    cohort = regenerate_cohort(out)
    for index, (cid, own) in enumerate(sorted(observed.items())):
        mine = {r.case_id: r for r in rows if patient_of(r.case_id) == cid}
        assert mine[followup_id(cid, 1)].plan == first[followup_id(cid, 1)]  # unchanged by drug_matched
        administered = Plan.parse(own.plan)
        expected = choose_drug_matched(administered, cohort.plans, [Plan.parse(first[followup_id(cid, 1)])], 2, 0,
                                       index)
        matched = [Plan.parse(mine[followup_id(cid, k)].plan) for k in range(2, 2 + len(expected))]
        assert len(mine) == 2 + len(expected)
        assert [p.key() for p in matched] == [p.key() for p in expected]
        for plan in matched:
            assert sorted(plan.embolics) == sorted(administered.embolics) and plan.drugs != administered.drugs
    meta = json.loads((out / FOLLOWUPS_MANIFEST).with_suffix(".json").read_text())
    assert meta["followups"]["drug_matched"] == 2
    with pytest.raises(ValueError, match="drug_matched >= 0"):
        write_followups(out, per_patient=1, drug_matched=-1, progress=False)


def test_choose_drug_matched_takes_what_the_plan_space_has():
    from models.plan import Plan
    from pipelines.cohort.followups import choose_drug_matched
    from pipelines.cohort.plan_space import cohort_plan_space

    space = cohort_plan_space()
    bland = Plan.from_agents(["PVA"])  # no other plan of the catalogue has PVA alone
    assert choose_drug_matched(bland, space, [], 3, 0, 0) == []
    lip_gs = Plan.from_agents(["Epirubicin", "Lipiodol", "Gelatin Sponge"])
    picked = choose_drug_matched(lip_gs, space, [], 50, 0, 0)
    same = [p for p in space if sorted(p.embolics) == ["Gelatin Sponge", "Lipiodol"]]
    assert len(picked) == len(same) - 1 and lip_gs.key() not in {p.key() for p in picked}
    assert choose_drug_matched(lip_gs, space, [], 3, 0, 5) == choose_drug_matched(lip_gs, space, [], 3, 0, 5)
