"""Reader studies end to end without a browser: set-up, blinding of what a reader receives, reading, resuming
after a restart, conflicts, access codes, audit, export."""

import csv
import io
from dataclasses import fields

import pytest

from models.errors import AccessDeniedError, AnswerConflictError, StudyClosedError, StudyError, StudySetupError
from pipelines.turing.access import ADMIN_LOCKED, check_admin_passcode
from pipelines.turing.export import ANSWER_COLUMNS, answers_csv, summary_csv
from pipelines.turing.render import ViewSettings, png_chunks
from pipelines.turing.sources import cohort_sources, folder_sources
from pipelines.turing.store import ShownItem, StudyStore
from turing_helpers import make_store, write_crop_folders


def _read_all(store, reader_id, call="real"):
    seen = []
    while (item := store.next_item(reader_id)) is not None:
        seen.append(item)
        store.submit_answer(reader_id, item.token, call, 3, reading_ms=500)
    return seen


def test_cohort_sources_counts_and_truths(cohort_set):
    truths = [c.truth for c in cohort_set.crops]
    assert truths.count("real") == 3 and truths.count("synthetic") == 4
    assert {c.hu.shape for c in cohort_set.crops} == {(16, 16, 16)}
    assert all(c.context_hu is not None for c in cohort_set.crops)
    assert all(-175.01 <= c.hu.min() and c.hu.max() <= 600.01 for c in cohort_set.crops)  # one HU window for all


def test_cohort_sources_refuse_more_real_items_than_cases(tiny_cohort, tiny_world):
    with pytest.raises(StudySetupError, match="at most 3 real"):
        cohort_sources(tiny_cohort, tiny_world, n_real=4, n_synthetic=1, steps=2)
    with pytest.raises(StudySetupError, match="whole number"):
        cohort_sources(tiny_cohort, tiny_world, n_real=0, n_synthetic=1, steps=2)


def test_cohort_sources_from_different_patients(tiny_cohort, tiny_world):
    got = cohort_sources(tiny_cohort, tiny_world, n_real=1, n_synthetic=3, steps=2, disjoint=True)
    real = {c.case_id for c in got.crops if c.truth == "real"}
    synthetic = {c.case_id for c in got.crops if c.truth == "synthetic"}
    assert len(real) == 1 and len(synthetic) == 2 and not real & synthetic
    assert sum(c.truth == "synthetic" for c in got.crops) == 3
    with pytest.raises(StudySetupError, match="leave none to simulate"):
        cohort_sources(tiny_cohort, tiny_world, n_real=3, n_synthetic=1, steps=2, disjoint=True)


def test_study_items_are_blinded_on_disk(study, store):
    assert (study.items, study.real, study.synthetic) == (7, 3, 4)
    files = sorted((store.studies_dir).rglob("*.png"))
    assert len(files) == 14  # item + context for each
    sizes = {f.stat().st_size for f in files}
    assert len(sizes) == 1, sizes  # uncompressed: the length says nothing about the content
    for f in files:
        chunks = png_chunks(f.read_bytes())
        assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and set(chunks[1:-1]) == {b"IDAT"}  # no metadata
        assert not any(s in f.name for s in ("TC0", "real", "synth", "post", "sim"))


def test_shown_item_carries_no_truth(study, store):
    assert {f.name for f in fields(ShownItem)} == {"token", "position", "total", "png", "context_png"}
    reader = store.add_reader(study.id, "Dr A", "radiologist")
    item = store.next_item(store.login(reader.code).reader_id)
    assert (item.position, item.total) == (1, 7)
    assert b"TC0" not in item.png and b"real" not in item.png.lower() and b"synthetic" not in item.png.lower()


def test_each_reader_has_own_reproducible_order_and_resumes_after_restart(study, store, tmp_path):
    a = store.add_reader(study.id, "Dr A")
    b = store.add_reader(study.id, "Dr B")
    first_a = [store.next_item(a.id).token]
    store.submit_answer(a.id, first_a[0], "synthetic", 4, "smooth texture", 2500)
    second = store.next_item(a.id)
    store.submit_answer(a.id, second.token, "real", 2)
    # "restart": a new store on the same files, a new engine after disposing the old connections
    from pipelines.db import dispose_engines, get_engine

    dispose_engines()
    again = StudyStore(get_engine(f"sqlite:///{tmp_path / 'studies.db'}"), tmp_path / "studies")
    assert again.progress(a.id) == (2, 7)
    third = again.next_item(a.id)
    assert third.position == 3 and third.token not in (first_a[0], second.token)
    rest = _read_all(again, a.id)
    tokens_a = first_a + [second.token] + [i.token for i in rest]
    assert len(set(tokens_a)) == 7  # never the same item twice
    assert again.next_item(a.id) is None
    tokens_b = [i.token for i in _read_all(again, b.id)]
    assert sorted(tokens_a) == sorted(tokens_b) and tokens_a != tokens_b  # same items, own order
    rows = again.answer_rows(study.id)
    assert len(rows) == 14 and rows[0]["comment"] == "smooth texture" and rows[0]["reading_ms"] == 2500


def test_second_answer_to_an_item_is_refused(study, store):
    r = store.add_reader(study.id, "Dr A")
    item = store.next_item(r.id)
    store.submit_answer(r.id, item.token, "real", 3)
    with pytest.raises(AnswerConflictError, match="already answered"):
        store.submit_answer(r.id, item.token, "synthetic", 5)
    assert store.answer_rows(study.id)[0]["call"] == "real"


@pytest.mark.parametrize("call, confidence, match", [("maybe", 3, "real' or 'synthetic"), ("real", 0, "1 to 5"),
                                                     ("real", 6, "1 to 5"), ("real", True, "1 to 5")])
def test_bad_answers_are_refused(study, store, call, confidence, match):
    r = store.add_reader(study.id, "Dr A")
    item = store.next_item(r.id)
    with pytest.raises(StudyError, match=match):
        store.submit_answer(r.id, item.token, call, confidence)
    with pytest.raises(StudyError, match="not part of your study"):
        store.submit_answer(r.id, "not-a-token", "real", 3)


def test_closed_study_keeps_answers_and_refuses_new_ones(study, store):
    r = store.add_reader(study.id, "Dr A")
    item = store.next_item(r.id)
    store.set_status(study.id, "closed")
    with pytest.raises(StudyClosedError):
        store.next_item(r.id)
    with pytest.raises(StudyClosedError):
        store.submit_answer(r.id, item.token, "real", 3)
    store.set_status(study.id, "open")
    assert store.next_item(r.id).token == item.token
    actions = [e["action"] for e in store.audit(study.id)]
    assert actions == ["study opened", "study closed", "reader added", "study created"]


def test_access_codes_are_hashed_and_checked(study, store, tmp_path):
    r = store.add_reader(study.id, "Dr A", "fellow")
    login, secret = r.code.split("-", 1)
    assert store.login(f"  {r.code} ").reader_id == r.id
    for bad in (f"{login}-wrong", "nodash", f"zzzzzz-{secret}", ""):
        with pytest.raises(AccessDeniedError):
            store.login(bad)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("studies.db*"))  # the database and its WAL
    assert stored and secret.encode() not in stored and r.code.encode() not in stored
    new = store.reset_code(r.id)
    with pytest.raises(AccessDeniedError):
        store.login(r.code)
    assert store.login(new.code).reader_id == r.id


def test_admin_passcode():
    with pytest.raises(AccessDeniedError, match="locked"):
        check_admin_passcode("anything", "")
    assert "admin_passcode" in ADMIN_LOCKED
    with pytest.raises(AccessDeniedError, match="Wrong"):
        check_admin_passcode("guess", "s3cret")
    check_admin_passcode("s3cret", "s3cret")


def test_results_and_csv_export(study, store):
    a, b = store.add_reader(study.id, "Dr A"), store.add_reader(study.id, "Dr B")
    _read_all(store, a.id, "real")
    _read_all(store, b.id, "synthetic")
    res = store.results(study.id)
    assert res.overall.answers == 14
    assert res.per_reader["Dr A (#1)"].specificity.value == 1.0
    assert res.per_reader["Dr A (#1)"].synthetic_judged_real.value == 1.0
    assert res.per_reader["Dr B (#2)"].sensitivity.value == 1.0
    assert res.agreement.kappa == pytest.approx(-1.0)  # two readers who disagree on every item
    rows = list(csv.DictReader(io.StringIO(answers_csv(store.answer_rows(study.id)))))
    assert tuple(rows[0]) == ANSWER_COLUMNS and len(rows) == 14
    assert {r["truth"] for r in rows} == {"real", "synthetic"}
    summary = list(csv.DictReader(io.StringIO(summary_csv(res))))
    assert [r["group"] for r in summary][:3] == ["overall", "reader", "reader"]
    assert float(summary[0]["fleiss_kappa"]) == pytest.approx(-1.0)


def test_folder_source_study_and_its_errors(tmp_path):
    real, synth = write_crop_folders(tmp_path / "crops")
    store = make_store(tmp_path)
    s = store.create_study("folders", folder_sources(real, synth, 3, 2, seed=0), ViewSettings(), seed=0)
    assert (s.real, s.synthetic) == (3, 2)
    with pytest.raises(StudySetupError, match="Context images need"):
        store.create_study("ctx", folder_sources(real, synth, 1, 1), ViewSettings(), context=True)
    with pytest.raises(StudySetupError, match="holds 4 crop"):
        folder_sources(real, synth, 5, 1)
    with pytest.raises(StudySetupError, match="same"):
        folder_sources(real, real, 1, 1)
    odd_real, odd_synth = write_crop_folders(tmp_path / "odd", synthetic_shape=(20, 16, 12))
    with pytest.raises(StudySetupError, match="share one grid"):
        folder_sources(odd_real, odd_synth, 4, 4)
    with pytest.raises(StudySetupError, match="no NIfTI"):
        (tmp_path / "empty").mkdir()
        folder_sources(real, tmp_path / "empty", 1, 1)
    with pytest.raises(StudySetupError, match="do not fit"):
        store.create_study("deep", folder_sources(real, synth, 1, 1), ViewSettings(slices=7, slice_gap_mm=10))
    assert len(store.studies()) == 1  # failed set-ups left nothing behind
    assert len(list(store.studies_dir.iterdir())) == 1  # and no half-written image folder


def test_view_settings_are_validated():
    for kwargs, match in (({"slices": 2}, "odd"), ({"slice_gap_mm": 0}, "positive"),
                          ({"window_width": -1}, "window"), ({"display_px": 10}, "display_px")):
        with pytest.raises(StudySetupError, match=match):
            ViewSettings(**kwargs)


def test_same_seed_same_study_apart_from_the_random_tokens(cohort_set, tmp_path):
    from pipelines.db import session_scope
    from pipelines.turing.tables import StudyItem
    from sqlalchemy import select

    store = make_store(tmp_path)
    view = ViewSettings()
    ids = [store.create_study(f"s{i}", cohort_set, view, seed=5).id for i in range(2)]
    with session_scope(store.engine) as s:
        items = {i: list(s.scalars(select(StudyItem).where(StudyItem.study_id == i).order_by(StudyItem.id)))
                 for i in ids}
    assert [x.source for x in items[ids[0]]] == [x.source for x in items[ids[1]]]
    assert not {x.token for x in items[ids[0]]} & {x.token for x in items[ids[1]]}
    pngs = [[(store.study_folder(i) / f"{x.token}.png").read_bytes() for x in items[i]]
            for i in ids]
    assert pngs[0] == pngs[1]  # the same pixels, in the same order


def test_tables_compile_for_postgresql():
    """The schema uses portable types only, so a PostgreSQL `database_url` creates the same tables."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from pipelines.db import Base
    from pipelines.turing import tables  # noqa: F401 - registers the tables on Base

    ddl = [str(CreateTable(t).compile(dialect=postgresql.dialect())) for t in Base.metadata.sorted_tables
           if t.name.startswith("turing_")]
    assert len(ddl) == 5
    assert any("UNIQUE (reader_id, item_id)" in d for d in ddl)
    assert any("BYTEA" in d for d in ddl) and any("JSON" in d for d in ddl)
