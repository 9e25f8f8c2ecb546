"""The worklist's tables (SQLAlchemy 2): notes with the model's suggestions, the codes a coder submitted,
and the append-only audit log of every action. Alembic's migrations (`migrations/`) create and upgrade
them; this module is what the code reads and writes."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Note(Base):
    """A note in the queue. Open while `submitted_at` is null; claimed by `claimed_by` since `claimed_at`."""

    __tablename__ = "worklist_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note_id: Mapped[str] = mapped_column(String(256), unique=True)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(128))  # the checkpoint's identity (files' hash, or Hub revision)
    # times are UTC, without a zone (SQLite keeps none)
    loaded_at: Mapped[datetime] = mapped_column(DateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime())
    submitted_by: Mapped[str | None] = mapped_column(String(128))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime())
    seconds: Mapped[float | None] = mapped_column(Float)  # from the claim to the submit

    suggestions: Mapped[list["Suggestion"]] = relationship(order_by="Suggestion.rank", back_populates="note")
    final_codes: Mapped[list["FinalCode"]] = relationship(order_by="FinalCode.code", back_populates="note")

    # the queue's order among open notes: an index of open notes only, so a claim stays fast at any size
    __table_args__ = (Index("ix_worklist_open_notes", "id", sqlite_where=sql_text("submitted_at IS NULL"),
                            postgresql_where=sql_text("submitted_at IS NULL")),)


class Suggestion(Base):
    """A code the model suggested for a note: its probability, evidence spans (offsets only) and best synonym."""

    __tablename__ = "worklist_suggestions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note_pk: Mapped[int] = mapped_column(ForeignKey("worklist_notes.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(32))
    probability: Mapped[float | None] = mapped_column(Float)
    synonym: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[list] = mapped_column(JSON)  # [[start, end, weight], ...]

    note: Mapped[Note] = relationship(back_populates="suggestions")


class FinalCode(Base):
    """A code of a submitted note: `origin` "suggested" (an accepted suggestion) or "added" (by hand)."""

    __tablename__ = "worklist_final_codes"

    note_pk: Mapped[int] = mapped_column(ForeignKey("worklist_notes.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))

    note: Mapped[Note] = relationship(back_populates="final_codes")


class AuditEvent(Base):
    """One action: claim, release, skip, expire (a stale claim taken over), accept, reject, add, submit, load."""

    __tablename__ = "worklist_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime())
    coder: Mapped[str] = mapped_column(String(128))
    note_pk: Mapped[int] = mapped_column(ForeignKey("worklist_notes.id"))
    action: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))

    __table_args__ = (Index("ix_worklist_audit_note", "note_pk", "action", "coder"),)
