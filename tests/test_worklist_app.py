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
from test_app import start_app, table_rows

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


def log_in_page(browser, url: str, user: str):
    """A browser page logged in to the app as `user`, on the worklist."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.fill("input[data-testid=textbox]", user)  # Gradio's login form
    page.fill("input[data-testid=password]", f"pw-{user}")
    page.keyboard.press("Enter")
    page.wait_for_selector("#next-button")
    return page


def test_code_through_the_worklist_page(small_checkpoint, tmp_path):
    from test_app import add_code, chromium_path, message, select_code, wait_for_review

    if chromium_path() is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    db = str(tmp_path / "reviews.sqlite")
    queue_notes(db, small_checkpoint, 3)
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log",
                             options=["--db", db, "--auth-file", str(login_file(tmp_path))])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = log_in_page(browser, url, "coder0")
            page.click("#next-button")
            page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length === 2")
            assert "note-0000" in page.inner_text("#status")
            assert [row[0] for row in table_rows(page)] == ["I21.4", "E11.65"]
            select_code(page, "I21.4")
            page.click("#accept-button")
            wait_for_review(page, "I21.4", "accepted")
            select_code(page, "E11.65")
            page.click("#reject-button")
            wait_for_review(page, "E11.65", "rejected")
            add_code(page, "pneumonia", "J18.9 — Pneumonia, unspecified organism")
            wait_for_review(page, "J18.9", "added")
            page.click("#submit-button")
            message(page, "Submitted note note-0000")
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('note-0001')")
            assert "claim" in page.inner_text("#history")
            page.click("#skip-button")
            message(page, "Skipped note note-0001")
            page.click("#analytics-tab-button")
            assert "for admins" in page.inner_text("#analytics-about")
            lead = log_in_page(browser, url, "lead")
            lead.click("#analytics-tab-button")
            lead.wait_for_function("() => document.querySelector('#by-coder').innerText.includes('coder0')")
            assert "Precision" in lead.inner_text("#analytics-about")
            lead.screenshot(path=str(tmp_path / "analytics.png"), full_page=True)
            lead.wait_for_selector("#coder-plot canvas, #coder-plot svg", timeout=20_000)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
    worklist = Worklist(open_worklist(db))
    history = [(e["coder"], e["action"], e["code"]) for e in worklist.history(1)]
    assert history == [("coder0", "claim", None), ("coder0", "accept", "I21.4"), ("coder0", "reject", "E11.65"),
                       ("coder0", "add", "J18.9"), ("coder0", "submit", None)]
    assert "Zqxmarker" not in (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_reviewed_notes_train_a_model_that_codes_again(small_checkpoint, tmp_path):
    """Notes loaded with a model, reviewed through the API by two coders (who submit each note's true codes),
    exported, a model trained on the export, and notes loaded again with it."""
    from synthetic_corpus import TINY_MODEL, run_train, synthetic_notes, write_corpus
    from test_worklist import msmn_worklist, write_notes

    write_corpus(tmp_path)  # code_terms.json of the synthetic codes
    truth = {f"r{i}": note["labels"] for i, note in enumerate(synthetic_notes(60, seed=7))}
    notes = [{"id": f"r{i}", "text": note["text"]} for i, note in enumerate(synthetic_notes(60, seed=7))]
    db = str(tmp_path / "reviews.sqlite")
    loaded = msmn_worklist("load", small_checkpoint, write_notes(tmp_path / "notes.jsonl", notes), "--db", db, "--quiet",
                           cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log",
                             options=["--db", db, "--auth-file", str(login_file(tmp_path))])
    try:
        def review(coder):
            with client(url, coder) as http:
                while (claimed := http.post("/api/worklist/next")).status_code == 200:
                    note = claimed.json()
                    suggested = [s["code"] for s in note["suggestions"]]
                    gold = truth[note["note_id"]]
                    decisions = {"accepted": [c for c in suggested if c in gold],
                                 "rejected": [c for c in suggested if c not in gold],
                                 "added": [c for c in gold if c not in suggested]}
                    assert http.post(f"/api/worklist/notes/{note['pk']}/submit", json=decisions).status_code == 200

        threads = [threading.Thread(target=review, args=(coder,)) for coder in ("coder0", "coder1")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        process.terminate()
        process.wait(timeout=60)
    exported = msmn_worklist("export", "--db", db, "--output", tmp_path / "reviews", cwd=tmp_path)
    counts = [json.loads(exported.stdout)[split] for split in ("train", "validation", "test")]
    assert sum(counts) == 60 and min(counts) > 0
    records = [json.loads(line) for split in ("train", "validation", "test")
               for line in (tmp_path / "reviews" / f"{split}.jsonl").read_text().splitlines()]
    assert {record["id"]: sorted(record["labels"]) for record in records} == {k: sorted(v) for k, v in truth.items()}
    trained = run_train("--train_file", "reviews/train.jsonl", "--validation_file", "reviews/validation.jsonl",
                        "--test_file", "reviews/test.jsonl", "--code_terms", "code_terms.json", "--output_dir", "retrained",
                        "--num_train_epochs", "2", *TINY_MODEL, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    fresh = [{"id": f"new{i}", "text": note["text"]} for i, note in enumerate(synthetic_notes(5, seed=8))]
    again = msmn_worklist("load", tmp_path / "retrained", write_notes(tmp_path / "fresh.jsonl", fresh), "--db", db,
                          "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["added"] == 5
    assert json.loads(again.stdout)["model"] == checkpoint_identity(tmp_path / "retrained") != checkpoint_identity(small_checkpoint)
