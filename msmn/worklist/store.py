"""The worklist's operations, each one transaction: adding coded notes, claiming the oldest open note,
submitting a coder's decisions, releasing and skipping, a note's history. A claim is a conditional
UPDATE (the note still open and unclaimed, or its claim expired), so two coders never hold one note, on
SQLite as on PostgreSQL; a submit checks the claim in the same transaction, so a failed one writes
nothing. Every action is appended to the audit log."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from datasets_scripts import InputError
from msmn.worklist.schema import AuditEvent, FinalCode, Note, Suggestion

CLAIM_SECONDS = 30 * 60  # a claim idle this long expires: its note goes back to the queue
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,31}")


class ClaimError(InputError):
    """A coder acted on a note that is not theirs to act on (claimed by another, submitted, or unknown)."""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class ClaimedNote:
    """A note a coder holds: its key, id, text, the model that coded it and its suggestions."""

    pk: int
    note_id: str
    text: str
    model: str
    suggestions: list[dict]


class Worklist:
    """The operations on one worklist database (`msmn.worklist.database.open_worklist`)."""

    def __init__(self, engine: Engine, claim_seconds: float = CLAIM_SECONDS):
        self.engine, self.claim_seconds = engine, claim_seconds

    def stored_ids(self, note_ids: list[str]) -> set[str]:
        with Session(self.engine) as session:
            return set(session.scalars(select(Note.note_id).where(Note.note_id.in_(note_ids))))

    def add_notes(self, notes: list[dict], model: str) -> int:
        """Stores coded notes ({"id", "text", "codes": the pipeline's codes}) not already there; how many it added."""
        now, added = utc_now(), 0
        with Session(self.engine) as session, session.begin():
            stored = set(session.scalars(select(Note.note_id).where(Note.note_id.in_([n["id"] for n in notes]))))
            for note in notes:
                if note["id"] in stored:
                    continue
                suggestions = [Suggestion(rank=rank, code=code["code"], probability=code.get("probability"),
                                          synonym=code.get("synonym"),
                                          evidence=[[span["start"], span["end"], round(span["weight"], 4)]
                                                    for span in code.get("evidence", [])])
                               for rank, code in enumerate(note["codes"])]
                session.add(Note(note_id=note["id"], text=note["text"], model=model, loaded_at=now,
                                 suggestions=suggestions))
                added += 1
        return added

    def claim_next(self, coder: str) -> ClaimedNote | None:
        """The coder's note: the one they hold, else the oldest open note nobody holds (or whose claim expired)
        and they did not skip; None when the queue is empty."""
        now = utc_now()
        cutoff = now - timedelta(seconds=self.claim_seconds)
        with Session(self.engine) as session, session.begin():
            held = session.scalar(select(Note.id).where(Note.claimed_by == coder, Note.submitted_at.is_(None),
                                                        Note.claimed_at >= cutoff).order_by(Note.id).limit(1))
            if held is not None:
                return claimed_note(session.get(Note, held))
        claimable = (Note.submitted_at.is_(None), or_(Note.claimed_by.is_(None), Note.claimed_at < cutoff))
        skipped = select(AuditEvent.id).where(AuditEvent.note_pk == Note.id, AuditEvent.coder == coder,
                                              AuditEvent.action == "skip").exists()
        while True:
            with Session(self.engine) as session, session.begin():
                candidate = session.execute(select(Note.id, Note.claimed_by, Note.model).where(*claimable, ~skipped)
                                            .order_by(Note.id).limit(1)).first()
                if candidate is None:
                    return None
                taken = session.execute(update(Note).where(Note.id == candidate.id, *claimable)
                                        .values(claimed_by=coder, claimed_at=now))
                if taken.rowcount != 1:
                    continue  # another coder claimed it first: the next one
                if candidate.claimed_by is not None:
                    session.add(event(now, candidate.claimed_by, candidate.id, "expire", candidate.model))
                session.add(event(now, coder, candidate.id, "claim", candidate.model))
                return claimed_note(session.get(Note, candidate.id))

    def submit(self, coder: str, note_pk: int, accepted: list[str], rejected: list[str], added: list[str]) -> None:
        """The coder's decisions on the note they hold: accepted and rejected suggestions, codes added by hand.
        The note's final codes are the accepted and the added ones."""
        now = utc_now()
        with Session(self.engine) as session, session.begin():
            note = self.held_note(session, coder, note_pk)
            check_decisions({s.code for s in note.suggestions}, accepted, rejected, added)
            done = session.execute(update(Note).where(Note.id == note_pk, Note.claimed_by == coder,
                                                      Note.claimed_at == note.claimed_at, Note.submitted_at.is_(None))
                                   .values(submitted_by=coder, submitted_at=now, claimed_by=None, claimed_at=None,
                                           seconds=(now - note.claimed_at).total_seconds()))
            if done.rowcount != 1:
                raise ClaimError(f"note {note.note_id!r}: taken by another coder while you worked on it; nothing was "
                                 "saved. Ask for the next note.")
            for codes, origin in ((accepted, "suggested"), (added, "added")):
                session.add_all(FinalCode(note_pk=note_pk, code=code, origin=origin) for code in sorted(set(codes)))
            for codes, action in ((accepted, "accept"), (rejected, "reject"), (added, "add")):
                session.add_all(event(now, coder, note_pk, action, note.model, code) for code in sorted(set(codes)))
            session.add(event(now, coder, note_pk, "submit", note.model))

    def release(self, coder: str, note_pk: int, skip: bool = False) -> None:
        """Gives the held note back to the queue; with `skip`, this coder is not offered it again."""
        with Session(self.engine) as session, session.begin():
            note = self.held_note(session, coder, note_pk)
            session.execute(update(Note).where(Note.id == note_pk, Note.claimed_by == coder)
                            .values(claimed_by=None, claimed_at=None))
            session.add(event(utc_now(), coder, note_pk, "skip" if skip else "release", note.model))

    def held_note(self, session: Session, coder: str, note_pk: int) -> Note:
        """The note, if this coder holds it; else a ClaimError that says why."""
        note = session.get(Note, note_pk)
        if note is None:
            raise ClaimError(f"note {note_pk}: not in the worklist.")
        if note.submitted_at is not None:
            raise ClaimError(f"note {note.note_id!r}: already submitted by {note.submitted_by}.")
        if note.claimed_by != coder:
            holder = f"claimed by {note.claimed_by}" if note.claimed_by else "not claimed (the claim expired?)"
            raise ClaimError(f"note {note.note_id!r}: {holder}, not by {coder}; nothing was saved. Ask for the next note.")
        return note

    def history(self, note_pk: int) -> list[dict]:
        """The note's audit events, oldest first: time, coder, action, code."""
        with Session(self.engine) as session:
            events = session.scalars(select(AuditEvent).where(AuditEvent.note_pk == note_pk).order_by(AuditEvent.id))
            return [{"at": e.at.isoformat(timespec="seconds"), "coder": e.coder, "action": e.action, "code": e.code,
                     "model": e.model} for e in events]


def event(at: datetime, coder: str, note_pk: int, action: str, model: str, code: str | None = None) -> AuditEvent:
    return AuditEvent(at=at, coder=coder, note_pk=note_pk, action=action, code=code, model=model)


def claimed_note(note: Note) -> ClaimedNote:
    suggestions = [{"code": s.code, "probability": s.probability, "synonym": s.synonym,
                    "evidence": [{"start": start, "end": end, "weight": weight} for start, end, weight in s.evidence]}
                   for s in note.suggestions]
    return ClaimedNote(note.id, note.note_id, note.text, note.model, suggestions)


def check_decisions(suggested: set[str], accepted: list[str], rejected: list[str], added: list[str]) -> None:
    """Accepted and rejected codes are suggestions, none both; added codes are codes, and not suggestions."""
    for name, codes in (("accepted", accepted), ("rejected", rejected)):
        unknown = sorted(set(codes) - suggested)
        if unknown:
            raise InputError(f"{name} codes {unknown} are not suggestions of this note; add them as codes of your own.")
    both = sorted(set(accepted) & set(rejected))
    if both:
        raise InputError(f"codes {both} are both accepted and rejected; choose one.")
    malformed = sorted(code for code in added if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code))
    if malformed:
        raise InputError(f"added codes {malformed[:5]} are not codes (letters, digits, '.', '-'; up to 32).")
    again = sorted(set(added) & suggested)
    if again:
        raise InputError(f"added codes {again} are suggestions of this note: accept them instead.")
