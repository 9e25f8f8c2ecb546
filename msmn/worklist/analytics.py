"""How the model fares in the coders' hands, from the submitted notes: per model identity, per coder and per
code — suggestions, the share accepted (the suggestions' precision against the submitted codes), the share of
submitted codes that were suggestions (their recall), codes added by hand, explicit rejections, median seconds
per note and notes per hour of coding time."""

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from msmn.worklist.schema import AuditEvent, FinalCode, Note, Suggestion


def submitted_frames(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(notes, suggestions with `accepted`, final codes with `origin`, rejections) of the submitted notes."""
    notes_query = select(Note.id.label("note_pk"), Note.model, Note.submitted_by.label("coder"), Note.seconds).where(
        Note.submitted_at.is_not(None))
    suggestions_query = (select(Suggestion.note_pk, Suggestion.code, FinalCode.code.is_not(None).label("accepted"))
                         .join(Note, Note.id == Suggestion.note_pk)
                         .outerjoin(FinalCode, (FinalCode.note_pk == Suggestion.note_pk) & (FinalCode.code == Suggestion.code))
                         .where(Note.submitted_at.is_not(None)))
    final_query = select(FinalCode.note_pk, FinalCode.code, FinalCode.origin)
    rejections_query = select(AuditEvent.note_pk, AuditEvent.code).where(AuditEvent.action == "reject")
    with engine.connect() as connection:
        notes = pd.read_sql(notes_query, connection)
        suggestions = pd.read_sql(suggestions_query, connection).merge(notes, on="note_pk")
        final = pd.read_sql(final_query, connection).merge(notes, on="note_pk")
        rejections = pd.read_sql(rejections_query, connection).merge(notes, on="note_pk")
    suggestions["accepted"] = suggestions["accepted"].astype(bool)
    return notes, suggestions, final, rejections


def grouped(key: str, notes, suggestions, final, rejections) -> pd.DataFrame:
    """The figures of each value of `key` (model, coder or code)."""
    table = pd.DataFrame({
        "suggestions": suggestions.groupby(key).size(),
        "accepted": suggestions.groupby(key)["accepted"].sum(),
        "rejected": rejections.groupby(key).size(),
        "final_codes": final.groupby(key).size(),
        "added_by_hand": final[final["origin"] == "added"].groupby(key).size(),
    }).fillna(0).astype(int)
    table["precision"] = (table["accepted"] / table["suggestions"].where(table["suggestions"] > 0)).round(4)
    table["recall"] = (table["accepted"] / table["final_codes"].where(table["final_codes"] > 0)).round(4)
    if key != "code":
        by_note = notes.groupby(key)
        table.insert(0, "notes", by_note.size())
        table["median_seconds"] = by_note["seconds"].median().round(1)
        table["notes_per_hour"] = (3600 * by_note.size() / by_note["seconds"].sum().where(lambda s: s > 0)).round(1)
    return table.reset_index().rename(columns={"index": key})


def acceptance_report(engine: Engine) -> dict[str, pd.DataFrame]:
    """The figures by model, by coder and by code (most suggested first)."""
    frames = submitted_frames(engine)
    by_code = grouped("code", *frames).sort_values(["suggestions", "code"], ascending=[False, True])
    return {"by_model": grouped("model", *frames), "by_coder": grouped("coder", *frames), "by_code": by_code}


def most_often(by_code: pd.DataFrame, column: str, count: int = 10) -> pd.DataFrame:
    """The codes most often rejected or added by hand (`column`), with their counts."""
    return by_code[by_code[column] > 0].sort_values([column, "code"], ascending=[False, True]).head(count)[["code", column]]
