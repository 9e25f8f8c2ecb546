"""The worklist in `msmn-app MODEL --db ...`, a real server on a real database (SQLite and PostgreSQL): eight
coders at once through its HTTP API, a SIGKILL in the middle of submits, roles, refusals."""

import base64
import json
import random
import signal
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_app import start_app

from msmn.checkpoints import checkpoint_identity
from msmn.worklist.database import open_worklist
from msmn.worklist.schema import AuditEvent, FinalCode, Note
from msmn.worklist.store import Worklist

CODERS = [f"coder{i}" for i in range(8)]


def queue_notes(db: str, model_folder, count: int) -> Worklist:
    """`count` notes with two suggestions each, as msmn-worklist load stores them (without coding them)."""
    worklist = Worklist(open_worklist(db))
    notes = [{"id": f"note-{i:04d}", "text": f"Zqxmarker note {i}: hypertension, type 2 diabetes.",
              "codes": [{"code": "I21.4", "probability": 0.8, "synonym": "heart attack", "evidence": []},
                        {"code": "E11.65", "probability": 0.6, "synonym": None, "evidence": []}]} for i in range(count)]
    for start in range(0, count, 100):
        worklist.add_notes(notes[start : start + 100], checkpoint_identity(model_folder))
    return worklist


def login_file(folder):
    lines = [f"{coder}:pw-{coder}" for coder in CODERS] + ["lead:pw-lead:admin"]
    (folder / "logins").write_text("\n".join(lines) + "\n")
    return folder / "logins"


def client(url: str, user: str) -> httpx.Client:
    return httpx.Client(base_url=url, auth=(user, f"pw-{user}"), timeout=60)


def decide(note: dict, rng: random.Random) -> dict:
    """A coder's decisions: each suggestion accepted or rejected, sometimes a code added."""
    codes = [suggestion["code"] for suggestion in note["suggestions"]]
    accepted = [code for code in codes if rng.random() < 0.7]
    return {"accepted": accepted, "rejected": [code for code in codes if code not in accepted],
            "added": ["N18.3"] if rng.random() < 0.3 else []}


def work(url: str, coder: str, sent: dict, errors: list) -> None:
    """Takes and submits notes until the queue is empty, recording what it sent."""
    rng = random.Random(coder)
    with client(url, coder) as http:
        try:
            while (claimed := http.post("/api/worklist/next")).status_code == 200:
                note = claimed.json()
                decisions = decide(note, rng)
                answer = http.post(f"/api/worklist/notes/{note['pk']}/submit", json=decisions)
                if answer.status_code != 200:
                    errors.append((coder, answer.status_code, answer.text))
                    return
                sent[note["note_id"]] = (coder, decisions)
            if claimed.status_code != 204:
                errors.append((coder, claimed.status_code, claimed.text))
        except httpx.HTTPError as error:
            errors.append((coder, repr(error)))


def test_eight_coders_through_the_api(small_checkpoint, worklist_db, tmp_path):
    queue_notes(worklist_db, small_checkpoint, 300)
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log",
                             options=["--db", worklist_db, "--auth-file", str(login_file(tmp_path))])
    sent, errors = {}, []
    try:
        threads = [threading.Thread(target=work, args=(url, coder, sent, errors)) for coder in CODERS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with client(url, "lead") as http:
            report = http.get("/api/worklist/report").json()
        with client(url, "coder0") as http:
            assert http.get("/api/worklist/report").status_code == 403  # coders do not see the report
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert errors == []
    assert len(sent) == 300  # every note submitted exactly once (a note twice would have been refused)
    engine = open_worklist(worklist_db)
    with Session(engine) as session:
        notes = {note.note_id: note for note in session.scalars(select(Note))}
        assert all(note.submitted_by == sent[note_id][0] for note_id, note in notes.items())
        for note_id, (coder, decisions) in sent.items():
            final = {(code.code, code.origin) for code in session.scalars(select(FinalCode).where(
                FinalCode.note_pk == notes[note_id].id))}
            assert final == {(code, "suggested") for code in decisions["accepted"]} | {(code, "added") for code in decisions["added"]}
            actions = [(event.action, event.code) for event in session.scalars(
                select(AuditEvent).where(AuditEvent.note_pk == notes[note_id].id).order_by(AuditEvent.id))]
            assert actions[0] == ("claim", None) and actions[-1] == ("submit", None)
            assert sorted(actions[1:-1]) == sorted([("accept", c) for c in decisions["accepted"]] + [
                ("reject", c) for c in decisions["rejected"]] + [("add", c) for c in decisions["added"]])
    suggested = 600
    accepted = sum(len(decisions["accepted"]) for _, decisions in sent.values())
    [by_model] = report["by_model"]
    assert (by_model["notes"], by_model["suggestions"], by_model["accepted"]) == (300, suggested, accepted)
    assert by_model["precision"] == pytest.approx(accepted / suggested, abs=1e-4)
    assert sum(row["notes"] for row in report["by_coder"]) == 300
    assert "Zqxmarker" not in (tmp_path / "server.log").read_text()


def test_a_killed_app_leaves_no_half_submit(small_checkpoint, worklist_db, tmp_path):
    """SIGKILL while eight coders submit: after a restart every note is either submitted whole (its final codes
    and its submit event) or open with nothing of a submit, and the claims of the killed app expire."""
    queue_notes(worklist_db, small_checkpoint, 200)
    options = ["--db", worklist_db, "--auth-file", str(login_file(tmp_path)), "--claim-minutes", "0.05"]
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log", options=options)
    sent, errors = {}, []
    threads = [threading.Thread(target=work, args=(url, coder, sent, errors)) for coder in CODERS]
    for thread in threads:
        thread.start()
    while len(sent) < 40:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    for thread in threads:
        thread.join()
    assert errors  # the coders saw the app go
    engine = open_worklist(worklist_db)
    with Session(engine) as session:
        submitted = session.scalar(select(func.count()).select_from(Note).where(Note.submitted_at.is_not(None)))
        submit_events = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "submit"))
        open_with_codes = session.scalar(select(func.count(FinalCode.code)).join(Note).where(Note.submitted_at.is_(None)))
    assert submitted == submit_events >= len(sent) and open_with_codes == 0
    process, url = start_app(str(small_checkpoint), tmp_path / "restart.log", options=options)
    try:
        time.sleep(4)  # the killed app's claims expire (3 s)
        done = {}
        work(url, "coder0", done, errors := [])
        assert errors == [] and len(done) == 200 - submitted  # nothing stranded
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_worklist_needs_a_login_and_a_worklist(small_checkpoint, tmp_path):
    from test_app import MSMN_APP, run

    refused = run([MSMN_APP, str(small_checkpoint), "--db", str(tmp_path / "reviews.sqlite")], cwd=tmp_path)
    assert refused.returncode != 0 and "--db serves a worklist" in refused.stderr
    (tmp_path / "other.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(4080))
    refused = run([MSMN_APP, str(small_checkpoint), "--db", "postgresql+psycopg://lead:pw-secret@127.0.0.1:9/x",
                   "--auth-file", str(login_file(tmp_path))], cwd=tmp_path)
    assert refused.returncode != 0 and "127.0.0.1:9" in refused.stderr and "pw-secret" not in refused.stderr
    assert "Traceback" not in refused.stderr


def test_basic_auth_is_checked(small_checkpoint, tmp_path):
    db = str(tmp_path / "reviews.sqlite")
    queue_notes(db, small_checkpoint, 3)
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log",
                             options=["--db", db, "--auth-file", str(login_file(tmp_path))])
    try:
        assert httpx.post(url + "api/worklist/next").status_code == 401
        wrong = base64.b64encode(b"coder0:nope").decode()
        assert httpx.post(url + "api/worklist/next", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        with client(url, "coder0") as ana, client(url, "coder1") as ben:
            note = ana.post("/api/worklist/next").json()
            taken = ben.post(f"/api/worklist/notes/{note['pk']}/submit", json={"accepted": ["I21.4"]})
            assert taken.status_code == 409 and "claimed by coder0" in taken.json()["detail"]
            bad = ana.post(f"/api/worklist/notes/{note['pk']}/submit", json={"accepted": ["X99"]})
            assert bad.status_code == 422 and "not suggestions" in bad.json()["detail"]
            history = ana.get(f"/api/worklist/notes/{note['pk']}/history").json()
            assert [event["action"] for event in history] == ["claim"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    log = (tmp_path / "server.log").read_text()
    assert "Zqxmarker" not in log and "pw-coder0" not in log and json.dumps("nope") not in log
