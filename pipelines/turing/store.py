"""`StudyStore`: every read and write of reader studies, one transaction per call.

The app and the CLI call only this class. Guarantees:

- every answer is committed in its own transaction before `submit_answer` returns, so a crash or a server restart
  loses nothing answered; the reader resumes at the first item of their own order they have not answered;
- one answer per (reader, item) is enforced by the database (a unique constraint): a second tab, a double click or a
  concurrent request raises `AnswerConflictError` and keeps the first answer;
- what a reader receives (`ShownItem`) holds the PNG bytes and the position only; the truth, the source and the
  item's file name stay on the server;
- study changes (created, opened/closed, readers added, codes reset, exports) are written to the audit log in the
  same transaction as the change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from models.errors import AccessDeniedError, AnswerConflictError, StudyClosedError, StudyError
from pipelines.db import ensure_schema, get_engine, session_scope
from pipelines.progress import ProgressFn
from pipelines.turing.access import new_code, split_code, verify_secret
from pipelines.turing.render import ViewSettings
from pipelines.turing.setup import new_token, render_items
from pipelines.turing.sources import SourceSet
from pipelines.turing.stats import AnswerRecord, StudyResults, study_results
from pipelines.turing.tables import STATUSES, TRUTHS, Answer, AuditEvent, Reader, Study, StudyItem, utcnow

__all__ = ["StudyStore", "StudySummary", "ReaderSummary", "ReaderLogin", "ShownItem", "NewReader", "MAX_COMMENT"]

MAX_COMMENT = 2000


@dataclass(frozen=True)
class StudySummary:
    id: int
    name: str
    status: str
    items: int
    real: int
    synthetic: int
    readers: int
    answers: int
    created_at: datetime
    settings: dict


@dataclass(frozen=True)
class ReaderSummary:
    id: int
    name: str
    role: str
    answered: int
    total: int
    last_answer_at: datetime | None


@dataclass(frozen=True)
class NewReader:
    """A reader just added (or whose code was reset): ``code`` is shown once and never stored."""

    id: int
    name: str
    role: str
    code: str


@dataclass(frozen=True)
class ReaderLogin:
    """Who is reading: the reader and the study (no truth, no item list)."""

    reader_id: int
    study_id: int
    name: str
    study_name: str


@dataclass(frozen=True)
class ShownItem:
    """What a reader's page receives for one item: the image(s) and where they are in their list.

    ``token`` stays in the server-side session (it identifies the item when the answer comes back).
    """

    token: str
    position: int  # 1-based
    total: int
    png: bytes
    context_png: bytes | None


class StudyStore:
    """Reader studies in one database (``engine``) with their images under ``studies_dir``."""

    def __init__(self, engine: Engine, studies_dir: str | os.PathLike) -> None:
        self.engine = engine
        self.studies_dir = Path(studies_dir).expanduser()
        ensure_schema(engine)

    @classmethod
    def from_config(cls, config=None) -> "StudyStore":
        """The store the configuration names (``[app] database_url``/``data_dir``, ``[study] studies_dir``)."""
        from pipelines.config import resolve_config

        config = resolve_config(config)
        return cls(get_engine(config=config), config.study.studies_dir)

    # ------------------------------------------------------------------------------------------ set-up (admin)
    def create_study(self, name: str, sources: SourceSet, view: ViewSettings, seed: int = 0,
                     context: bool = False, actor: str = "admin",
                     progress: ProgressFn | None = None) -> StudySummary:
        """Render the items, write their PNGs, and record the study (open for reading) with an audit event.

        The PNGs are written to a temporary folder renamed into place only after the database commit, so a
        failure leaves neither a half study nor orphan images.
        """
        name = str(name).strip()
        if not name:
            raise StudyError("Give the study a name.")
        items = render_items(sources.crops, view, context, seed, progress)
        uid = new_token()
        self.studies_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.studies_dir))
        try:
            for item in items:
                (tmp / f"{item.token}.png").write_bytes(item.png)
                if item.context_png is not None:
                    (tmp / f"{item.context_token}.png").write_bytes(item.context_png)
            settings = {"view": view.to_dict(), "context": bool(context), "source": sources.description,
                        "skipped": sources.skipped,
                        "counts": {t: sum(i.truth == t for i in items) for t in TRUTHS}}
            with session_scope(self.engine) as s:
                study = Study(uid=uid, name=name, status="open", seed=int(seed), settings=settings)
                study.items = [StudyItem(token=i.token, context_token=i.context_token, truth=i.truth,
                                         source=i.source, case_id=i.case_id) for i in items]
                s.add(study)
                s.flush()
                s.add(AuditEvent(actor=actor, action="study created", study_id=study.id,
                                 details={"name": name, "items": len(items), **settings["counts"],
                                          "seed": int(seed), "source": sources.description.get("kind")}))
                study_id = study.id
            os.replace(tmp, self.studies_dir / uid)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.study(study_id)

    def set_status(self, study_id: int, status: str, actor: str = "admin") -> None:
        """Open or close a study for reading."""
        if status not in STATUSES:
            raise StudyError(f"Unknown study status {status!r}; use one of {', '.join(STATUSES)}.")
        with session_scope(self.engine) as s:
            study = self._study(s, study_id)
            if study.status != status:
                s.add(AuditEvent(actor=actor, action=f"study {'opened' if status == 'open' else 'closed'}",
                                 study_id=study_id, details={"from": study.status, "to": status}))
                study.status = status

    def add_reader(self, study_id: int, name: str, role: str = "", actor: str = "admin") -> NewReader:
        """Add a reader with their own item order (seeded by the study seed and the reader's number) and a code."""
        name, role = str(name).strip(), str(role).strip()
        if not name:
            raise StudyError("Give the reader a name.")
        with session_scope(self.engine) as s:
            study = self._study(s, study_id)
            number = s.scalar(select(func.count()).select_from(Reader).where(Reader.study_id == study_id)) or 0
            item_ids = sorted(s.scalars(select(StudyItem.id).where(StudyItem.study_id == study_id)))
            order = [item_ids[int(i)] for i in np.random.default_rng([study.seed, number]).permutation(len(item_ids))]
            code = self._unique_code(s)
            reader = Reader(study_id=study_id, name=name, role=role, login=code.login, code_salt=code.salt,
                            code_hash=code.digest, item_order=order)
            s.add(reader)
            s.flush()
            s.add(AuditEvent(actor=actor, action="reader added", study_id=study_id,
                             details={"reader_id": reader.id, "name": name, "role": role}))
            return NewReader(reader.id, name, role, code.code)

    def reset_code(self, reader_id: int, actor: str = "admin") -> NewReader:
        """Give a reader a new code (the old one stops working); their answers are kept."""
        with session_scope(self.engine) as s:
            reader = self._reader(s, reader_id)
            code = self._unique_code(s)
            reader.login, reader.code_salt, reader.code_hash = code.login, code.salt, code.digest
            s.add(AuditEvent(actor=actor, action="reader code reset", study_id=reader.study_id,
                             details={"reader_id": reader.id, "name": reader.name}))
            return NewReader(reader.id, reader.name, reader.role, code.code)

    def log(self, action: str, study_id: int | None, details: dict | None = None, actor: str = "admin") -> None:
        """Add an audit event (e.g. an export) in its own transaction."""
        with session_scope(self.engine) as s:
            s.add(AuditEvent(actor=actor, action=action, study_id=study_id, details=dict(details or {})))

    @staticmethod
    def _unique_code(s):
        for _ in range(20):
            code = new_code()
            if s.scalar(select(Reader.id).where(Reader.login == code.login)) is None:
                return code
        raise StudyError("Could not draw a free reader code; try again.")  # pragma: no cover - 31^6 logins

    # ------------------------------------------------------------------------------------------ queries (admin)
    def studies(self) -> list[StudySummary]:
        """Every study, newest first."""
        with session_scope(self.engine) as s:
            ids = list(s.scalars(select(Study.id).order_by(Study.id.desc())))
        return [self.study(i) for i in ids]

    def study(self, study_id: int) -> StudySummary:
        with session_scope(self.engine) as s:
            study = self._study(s, study_id)
            truths = list(s.scalars(select(StudyItem.truth).where(StudyItem.study_id == study_id)))
            readers = s.scalar(select(func.count()).select_from(Reader).where(Reader.study_id == study_id))
            answers = s.scalar(select(func.count()).select_from(Answer).join(Reader)
                               .where(Reader.study_id == study_id))
            return StudySummary(study.id, study.name, study.status, len(truths), truths.count("real"),
                                truths.count("synthetic"), int(readers or 0), int(answers or 0), study.created_at,
                                dict(study.settings))

    def study_folder(self, study_id: int) -> Path:
        """The folder holding the study's PNGs (named by the study's random uid)."""
        with session_scope(self.engine) as s:
            return self.studies_dir / self._study(s, study_id).uid

    def readers(self, study_id: int) -> list[ReaderSummary]:
        with session_scope(self.engine) as s:
            self._study(s, study_id)
            out = []
            for reader in s.scalars(select(Reader).where(Reader.study_id == study_id).order_by(Reader.id)):
                answered, last = s.execute(select(func.count(Answer.id), func.max(Answer.answered_at))
                                           .where(Answer.reader_id == reader.id)).one()
                out.append(ReaderSummary(reader.id, reader.name, reader.role, int(answered), len(reader.item_order),
                                         last))
            return out

    def answer_rows(self, study_id: int) -> list[dict]:
        """One dict per answer, with the item's truth and source (admin only: this is the unblinded data)."""
        with session_scope(self.engine) as s:
            self._study(s, study_id)
            rows = s.execute(select(Answer, Reader, StudyItem).join(Reader, Answer.reader_id == Reader.id)
                             .join(StudyItem, Answer.item_id == StudyItem.id)
                             .where(Reader.study_id == study_id).order_by(Answer.id)).all()
            return [{"study_id": study_id, "reader_id": r.id, "reader": r.name, "role": r.role,
                     "item": i.token, "truth": i.truth, "call": a.call, "correct": a.call == i.truth,
                     "confidence": a.confidence, "comment": a.comment, "reading_ms": a.reading_ms,
                     "answered_at": a.answered_at.isoformat(), "case_id": i.case_id or "", "source": i.source}
                    for a, r, i in rows]

    def results(self, study_id: int) -> StudyResults:
        """The study's statistics (`pipelines.turing.stats.study_results`) over all answers so far."""
        records = [AnswerRecord(reader=f"{row['reader']} (#{row['reader_id']})", item=row["item"],
                                truth=row["truth"], call=row["call"], confidence=row["confidence"],
                                reading_ms=row["reading_ms"]) for row in self.answer_rows(study_id)]
        return study_results(records)

    def audit(self, study_id: int | None = None, limit: int = 500) -> list[dict]:
        """Audit events, newest first (of one study, or all)."""
        with session_scope(self.engine) as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if study_id is not None:
                q = q.where(AuditEvent.study_id == study_id)
            return [{"at": e.at.isoformat(timespec="seconds"), "actor": e.actor, "action": e.action,
                     "study_id": e.study_id, "details": e.details} for e in s.scalars(q)]

    # ------------------------------------------------------------------------------------------ reading
    def login(self, code: str) -> ReaderLogin:
        """The reader whose access code this is. Raises `AccessDeniedError` for an unknown or wrong code."""
        login, secret = split_code(code)
        with session_scope(self.engine) as s:
            reader = s.scalar(select(Reader).where(Reader.login == login))
            if reader is None or not verify_secret(secret, reader.code_salt, reader.code_hash):
                raise AccessDeniedError("That access code is not valid. Check it with the study administrator.")
            return ReaderLogin(reader.id, reader.study_id, reader.name, reader.study.name)

    def progress(self, reader_id: int) -> tuple[int, int]:
        """``(answered, total)`` for a reader."""
        with session_scope(self.engine) as s:
            reader = self._reader(s, reader_id)
            answered = s.scalar(select(func.count()).select_from(Answer).where(Answer.reader_id == reader_id))
            return int(answered or 0), len(reader.item_order)

    def next_item(self, reader_id: int) -> ShownItem | None:
        """The first item of the reader's order they have not answered, or None when they are done.

        Raises:
            StudyClosedError: the study is closed.
        """
        with session_scope(self.engine) as s:
            reader = self._reader(s, reader_id)
            if reader.study.status != "open":
                raise StudyClosedError(f"The study {reader.study.name!r} is closed for reading. Your answers are "
                                       "saved; the study administrator can reopen it.")
            done = set(s.scalars(select(Answer.item_id).where(Answer.reader_id == reader_id)))
            remaining = [i for i in reader.item_order if i not in done]
            if not remaining:
                return None
            item = s.get(StudyItem, remaining[0])
            folder = self.studies_dir / reader.study.uid
            token, context_token = item.token, item.context_token
            position, total = len(done) + 1, len(reader.item_order)
        png = self._image(folder, token)
        context = self._image(folder, context_token) if context_token else None
        return ShownItem(token, position, total, png, context)

    def submit_answer(self, reader_id: int, token: str, call: str, confidence: int, comment: str = "",
                      reading_ms: int | None = None) -> None:
        """Record one answer, committed before returning.

        Raises:
            StudyError: an unknown item, an item of another study, a call other than real/synthetic, a confidence
                outside 1–5. StudyClosedError: the study is closed. AnswerConflictError: already answered.
        """
        if call not in TRUTHS:
            raise StudyError(f"Answer 'real' or 'synthetic', got {call!r}.")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, np.integer)) \
                or not 1 <= int(confidence) <= 5:
            raise StudyError(f"Confidence must be a whole number from 1 to 5, got {confidence!r}.")
        comment = str(comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise StudyError(f"The comment is {len(comment)} characters long; keep it under {MAX_COMMENT}.")
        if reading_ms is not None:
            reading_ms = max(0, int(reading_ms))
        try:
            with session_scope(self.engine) as s:
                reader = self._reader(s, reader_id)
                item = s.scalar(select(StudyItem).where(StudyItem.token == str(token)))
                if item is None or item.study_id != reader.study_id:
                    raise StudyError("This image is not part of your study; reload the page.")
                if reader.study.status != "open":
                    raise StudyClosedError(f"The study {reader.study.name!r} is closed; this answer was not saved.")
                s.add(Answer(reader_id=reader_id, item_id=item.id, call=call, confidence=int(confidence),
                             comment=comment, reading_ms=reading_ms, answered_at=utcnow()))
        except IntegrityError as e:
            raise AnswerConflictError("You have already answered this image (perhaps in another tab); your first "
                                      "answer is kept.") from e

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _study(s, study_id: int) -> Study:
        study = s.get(Study, int(study_id))
        if study is None:
            raise StudyError(f"No study with id {study_id}. `mewm study list` shows the studies.")
        return study

    @staticmethod
    def _reader(s, reader_id: int) -> Reader:
        reader = s.get(Reader, int(reader_id))
        if reader is None:
            raise StudyError(f"No reader with id {reader_id}; sign in again with your access code.")
        return reader

    @staticmethod
    def _image(folder: Path, token: str) -> bytes:
        path = folder / f"{token}.png"
        try:
            return path.read_bytes()
        except OSError as e:
            raise StudyError(f"An image of this study is missing from {folder} (the study folder was moved or "
                             "deleted); the study administrator must restore it or set up the study again.") from e
