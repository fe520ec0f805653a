"""Several readers answering at once (threads on one SQLite file, as Streamlit's threads do): nothing lost, nothing
recorded twice, even when one reader submits each answer from two tabs at the same moment."""

import threading

from models.errors import AnswerConflictError
from pipelines.turing.store import StudyStore

READERS = 4


def test_concurrent_readers_lose_and_duplicate_nothing(study, store: StudyStore):
    readers = [store.add_reader(study.id, f"Reader {i}") for i in range(READERS)]
    start = threading.Barrier(READERS * 2)
    outcomes: dict[int, list[str]] = {r.id: [] for r in readers}
    errors: list[BaseException] = []

    def tab(reader_id: int) -> None:
        """One browser tab: answer the next item until none is left; a conflict means the other tab won."""
        try:
            start.wait()
            while (item := store.next_item(reader_id)) is not None:
                try:
                    store.submit_answer(reader_id, item.token, "synthetic", 2, reading_ms=10)
                    outcomes[reader_id].append("saved")
                except AnswerConflictError:
                    outcomes[reader_id].append("conflict")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=tab, args=(r.id,)) for r in readers for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    rows = store.answer_rows(study.id)
    assert len(rows) == READERS * study.items
    pairs = [(r["reader_id"], r["item"]) for r in rows]
    assert len(set(pairs)) == len(pairs)  # no (reader, item) twice
    for r in readers:
        assert outcomes[r.id].count("saved") == study.items  # every save reported is in the database
        assert store.progress(r.id) == (study.items, study.items)
