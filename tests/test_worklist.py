"""The worklist's database and operations, on a real SQLite file and a real PostgreSQL server: opening and
refusing databases, claims (atomic, expiring, skipped), submits (checked, all or nothing), the audit log."""

import contextlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy
from conftest import NOTES
from synthetic_corpus import ROOT
from transformers import pipeline

from datasets_scripts import InputError
from msmn.checkpoints import checkpoint_identity
from msmn.worklist.cli import main as worklist_main
from msmn.worklist.database import open_worklist
from msmn.worklist.store import ClaimError, Worklist


def coded(note_id, codes=("I10", "E11.9")):
    """A note as the loader stores it: the pipeline's codes with probability, synonym and evidence offsets."""
    return {"id": note_id, "text": f"note {note_id}: hypertension and diabetes",
            "codes": [{"code": code, "probability": 0.9 - rank / 10, "synonym": "high blood pressure",
                       "evidence": [{"start": 8, "end": 20, "weight": 0.5}]} for rank, code in enumerate(codes)]}


@pytest.fixture
def worklist(worklist_db):
    return Worklist(open_worklist(worklist_db))


def test_a_new_sqlite_worklist_is_its_owners_only(tmp_path):
    path = tmp_path / "reviews.sqlite"
    Worklist(open_worklist(str(path))).add_notes([coded("a")], "model-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in tmp_path.glob("reviews.sqlite-*"):  # SQLite's -wal and -shm take the file's mode
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0


def test_what_is_not_a_worklist_is_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="garbage.sqlite: not a database"):
        open_worklist(str(garbage))
    other = tmp_path / "other.sqlite"
    with sqlalchemy.create_engine(f"sqlite:///{other}").begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE patients (id INTEGER)"))
    with pytest.raises(InputError, match="holds tables of something else \\(patients"):
        open_worklist(str(other))
    newer = tmp_path / "newer.sqlite"
    open_worklist(str(newer)).dispose()
    with sqlalchemy.create_engine(f"sqlite:///{newer}").begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(InputError, match="schema 9999, which this release does not know"):
        open_worklist(str(newer))
    with pytest.raises(InputError, match="the folder .*missing does not exist"):
        open_worklist(str(tmp_path / "missing" / "reviews.sqlite"))


def test_a_server_that_cannot_be_reached_is_named_without_the_password():
    with pytest.raises(InputError) as refused:
        open_worklist("postgresql+psycopg://coder:s3cret-pw@127.0.0.1:9/worklist?connect_timeout=3")
    assert "127.0.0.1:9" in str(refused.value) and "s3cret-pw" not in str(refused.value)


def test_claims_submits_and_the_audit_log(worklist, worklist_db):
    assert worklist.add_notes([coded("a"), coded("b"), coded("c")], "model-1") == 3
    assert worklist.add_notes([coded("a"), coded("d")], "model-1") == 1  # a stored id adds nothing
    first = worklist.claim_next("ana")
    assert first.note_id == "a" and [s["code"] for s in first.suggestions] == ["I10", "E11.9"]
    assert first.suggestions[0]["evidence"] == [{"start": 8, "end": 20, "weight": 0.5}]
    assert worklist.claim_next("ana").pk == first.pk  # the note she holds, again
    assert worklist.claim_next("ben").note_id == "b"  # never the same note
    with pytest.raises(ClaimError, match="'a': claimed by ana, not by ben"):
        worklist.submit("ben", first.pk, ["I10"], [], [])
    with pytest.raises(InputError, match=r"accepted codes \['J18.9'\] are not suggestions"):
        worklist.submit("ana", first.pk, ["J18.9"], [], [])
    with pytest.raises(InputError, match=r"added codes \['I10'\] are suggestions"):
        worklist.submit("ana", first.pk, [], [], ["I10"])
    assert [e["action"] for e in worklist.history(first.pk)] == ["claim"]  # refused submits wrote nothing
    worklist.submit("ana", first.pk, ["I10"], ["E11.9"], ["N18.3"])
    with pytest.raises(ClaimError, match="already submitted by ana"):
        worklist.submit("ana", first.pk, ["I10"], [], [])
    history = worklist.history(first.pk)
    assert [(e["coder"], e["action"], e["code"]) for e in history] == [
        ("ana", "claim", None), ("ana", "accept", "I10"), ("ana", "reject", "E11.9"), ("ana", "add", "N18.3"),
        ("ana", "submit", None)]
    assert {e["model"] for e in history} == {"model-1"}
    assert worklist.claim_next("ana").note_id == "c"


def test_skip_release_and_expiry(worklist):
    worklist.add_notes([coded("a"), coded("b")], "model-1")
    note = worklist.claim_next("ana")
    worklist.release("ana", note.pk, skip=True)
    assert worklist.claim_next("ana").note_id == "b"  # she skipped a
    assert worklist.claim_next("ben").note_id == "a"  # others still get it
    worklist.release("ben", note.pk)
    with pytest.raises(ClaimError, match="not claimed"):
        worklist.release("ben", note.pk)
    short = Worklist(worklist.engine, claim_seconds=0.5)
    assert short.claim_next("cleo").note_id == "a"
    time.sleep(1.0)
    taken = short.claim_next("dan")  # cleo's claim expired: the note is not stranded
    assert taken.note_id in ("a", "b")
    assert [e["action"] for e in short.history(taken.pk)][-2:] == ["expire", "claim"]


def test_eight_coders_at_once_each_note_once(worklist):
    worklist.add_notes([coded(f"n{i:03d}") for i in range(120)], "model-1")
    submitted, errors = {}, []

    def work(coder):
        try:
            while (note := worklist.claim_next(coder)) is not None:
                worklist.submit(coder, note.pk, ["I10"], [], [])
                submitted.setdefault(note.note_id, []).append(coder)
        except Exception as error:  # noqa: BLE001 - the test reports it
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(f"coder{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(submitted) == [f"n{i:03d}" for i in range(120)] and all(len(c) == 1 for c in submitted.values())


def write_notes(path, notes):
    path.write_text("".join(json.dumps(note) + "\n" for note in notes), encoding="utf-8")
    return path


def msmn_worklist(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "msmn.worklist", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def load_here(*arguments) -> dict:
    """msmn-worklist load in this process (the model loads in a second); its summary."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        worklist_main(["load", *map(str, arguments), "--quiet"])
    return json.loads(printed.getvalue())


def test_load_codes_stores_and_resumes(small_checkpoint, worklist_db, tmp_path):
    notes = [{"id": f"n{i}", "text": f"{NOTES[i % 3]} visit {i}"} for i in range(10)]
    first_half = write_notes(tmp_path / "first.jsonl", notes[:4])  # a load stopped after 4 notes
    every = write_notes(tmp_path / "notes.jsonl", notes)
    assert load_here(small_checkpoint, first_half, "--db", worklist_db)["added"] == 4
    resumed = load_here(small_checkpoint, every, "--db", worklist_db, "--batch-size", "3")
    assert {key: resumed[key] for key in ("added", "already_stored")} == {"added": 6, "already_stored": 4}
    assert load_here(small_checkpoint, every, "--db", worklist_db)["added"] == 0  # the same file twice adds nothing
    worklist = Worklist(open_worklist(worklist_db))
    note = worklist.claim_next("ana")
    assert note.note_id == "n0" and note.text == notes[0]["text"]
    expected = pipeline("icd-coding", model=str(small_checkpoint), trust_remote_code=True)(notes[0]["text"])
    assert [s["code"] for s in note.suggestions] == [code["code"] for code in expected]
    assert note.model == checkpoint_identity(small_checkpoint)


@pytest.mark.parametrize("name, lines, message", [
    ("no_id", ['{"id": "a", "text": "Zqxmarker"}', '{"text": "Zqxmarker"}'], r'notes.jsonl, line 2: needs an "id"'),
    ("duplicate", ['{"id": "a", "text": "Zqxmarker"}', '{"id": "b", "text": "y"}', '{"id": "a", "text": "Zqxmarker"}'],
     r"notes.jsonl, line 3: the id 'a' of .*notes.jsonl, line 1"),
    ("not_json", ['{"id": "a", "text": "x"}', '{"id": "b", "text": "Zqxmarker"'], r"notes.jsonl, line 2: not valid JSON"),
    ("empty", [], r"hold no notes"),
])
def test_bad_notes_load_nothing(small_checkpoint, tmp_path, name, lines, message):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        worklist_main(["load", str(small_checkpoint), str(path), "--db", str(tmp_path / "reviews.sqlite")])
    assert re.search(message, str(stopped.value.code)), stopped.value.code
    assert "Zqxmarker" not in str(stopped.value.code)  # no note text
    assert not (tmp_path / "reviews.sqlite").exists()  # checked before the database is made


def test_non_utf8_notes_are_refused_by_the_command(small_checkpoint, tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    result = msmn_worklist("load", small_checkpoint, path, "--db", tmp_path / "reviews.sqlite", cwd=tmp_path)
    assert result.returncode == 1 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr
