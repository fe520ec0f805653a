"""The tables of reader studies: studies, their items, readers, answers, and the audit log.

What is secret and where it lives:
- an item's truth (``truth``: ``"real"`` or ``"synthetic"``) and where it came from (``source``) live only here and
  in the results/export; a reader's page receives the item's PNG bytes and its position, nothing else;
- an item's ``token`` (its PNG file name) is random (`secrets.token_urlsafe`), unrelated to its truth or order;
- a reader's access code is ``<login>-<secret>``: ``login`` is stored in clear to find the row, the secret only as a
  salted scrypt hash (``code_salt``, ``code_hash``).

Integrity: one answer per (reader, item) is a unique constraint, so two browser tabs or a double click can never
record an item twice, whatever the app does.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, CheckConstraint, DateTime, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pipelines.db import Base

__all__ = ["TRUTHS", "STATUSES", "Study", "StudyItem", "Reader", "Answer", "AuditEvent", "utcnow"]

TRUTHS = ("real", "synthetic")
STATUSES = ("open", "closed")


def utcnow() -> datetime:
    """Timezone-aware UTC now (stored as UTC; SQLite drops the zone, so readers of the rows treat naive as UTC)."""
    return datetime.now(timezone.utc)


class Study(Base):
    """One reader study: its settings (``settings`` JSON: source, counts, seed, slices, window) and status."""

    __tablename__ = "turing_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)  # random; names the study's image folder
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open")
    seed: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    items: Mapped[list["StudyItem"]] = relationship(back_populates="study", cascade="all, delete-orphan")
    readers: Mapped[list["Reader"]] = relationship(back_populates="study", cascade="all, delete-orphan")

    __table_args__ = (CheckConstraint("status IN ('open', 'closed')", name="turing_study_status"),)


class StudyItem(Base):
    """One image set shown to readers: its PNG (``token``.png), an optional context PNG, and its hidden truth."""

    __tablename__ = "turing_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("turing_studies.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    context_token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    truth: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)  # what it was made from (case, plan, sample, path): admin only
    case_id: Mapped[str | None] = mapped_column(String(200), nullable=True)

    study: Mapped[Study] = relationship(back_populates="items")

    __table_args__ = (CheckConstraint("truth IN ('real', 'synthetic')", name="turing_item_truth"),)


class Reader(Base):
    """A reader of one study; ``item_order`` is this reader's own random item order (item ids), fixed when added."""

    __tablename__ = "turing_readers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("turing_studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(200), default="")
    login: Mapped[str] = mapped_column(String(32), unique=True)
    code_salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    item_order: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="readers")
    answers: Mapped[list["Answer"]] = relationship(back_populates="reader", cascade="all, delete-orphan")


class Answer(Base):
    """One reader's call on one item: ``call`` ("real"/"synthetic"), confidence 1–5, comment, reading time."""

    __tablename__ = "turing_answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("turing_readers.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("turing_items.id", ondelete="CASCADE"), index=True)
    call: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    reading_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    reader: Mapped[Reader] = relationship(back_populates="answers")
    item: Mapped[StudyItem] = relationship()

    __table_args__ = (
        UniqueConstraint("reader_id", "item_id", name="turing_one_answer_per_item"),
        CheckConstraint("call IN ('real', 'synthetic')", name="turing_answer_call"),
        CheckConstraint("confidence BETWEEN 1 AND 5", name="turing_answer_confidence"),
    )


class AuditEvent(Base):
    """One change to a study (created, reader added, code reset, opened, closed, exported), who did it, when."""

    __tablename__ = "turing_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # kept after a study is deleted
    details: Mapped[dict] = mapped_column(JSON, default=dict)
