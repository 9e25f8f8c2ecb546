"""The review app: its review state, export and code search, and the page end to end in headless Chromium.
The README's screenshot takes the same browser path (docs/screenshot.py)."""

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import chromium_path, make_model
from transformers import pipeline
from synthetic_corpus import SIGNALS, run

from msmn.review import access
from msmn import checkpoints
from msmn.review import page as review_page
from msmn.review import cli as review_cli
from msmn.review import state
from datasets_scripts import InputError
from modeling_msmn import ICDCodingPipeline

MSMN_APP = str(Path(sys.executable).parent / "msmn-app")  # the console script pyproject.toml installs
NOTE = "patient was admitted with pneumonia and fever seen today infiltrate history of febrile plan follow up clinic."


def prediction(code, probability, start=0):
    return {"code": code, "description": f"{code} description", "probability": probability, "synonym": "term",
            "evidence": [{"start": start, "end": start + 4, "text": "word", "weight": 0.5}]}


# --- the review state, the export and the code search (no browser) -------------------------------------


def test_review_keeps_decisions_and_added_codes_across_thresholds():
    review = state.Review(note="a note")
    review.suggest([prediction("A01", 0.9), prediction("B02", 0.7), prediction("C03", 0.6)])
    # a suggestion is not a decision: every code starts undecided
    assert review.selected == "A01" and all(code["accepted"] is None and not code["added"] for code in review.codes)
    review.decide(accepted=True)
    review.selected = "B02"
    review.decide(accepted=False)
    review.add(prediction("D04", 0.1))
    assert review.selected == "D04"
    assert [row[0::4] for row in review.table()] == [
        ["A01", "accepted"], ["B02", "rejected"], ["C03", "suggested"], ["D04", "added"]]
    # a higher threshold drops C03; the acceptance of A01, the rejection of B02 and the added D04 stay, D04 last
    review.suggest([prediction("A01", 0.9), prediction("B02", 0.7)])
    assert [(code["code"], code["accepted"], code["added"]) for code in review.codes] == [
        ("A01", True, False), ("B02", False, False), ("D04", True, True)]
    assert review.selected == "D04"
    # a suggestion the coder had added stays added; adding a listed code accepts it again
    review.suggest([prediction("D04", 0.95), prediction("B02", 0.7)])
    assert [(code["code"], code["added"]) for code in review.codes] == [("B02", False), ("D04", True)]
    review.add(prediction("B02", 0.7))
    assert review.code("B02")["accepted"] and not review.code("B02")["added"] and len(review.codes) == 2
    # nothing left selected when the selected code goes: the first code is selected
    review.suggest([])
    assert review.selected == "D04"
    empty = state.Review(note="a note")
    empty.suggest([])
    assert empty.selected is None
    with pytest.raises(ValueError, match="Select a code in the table first"):
        empty.decide(accepted=True)


def test_export_as_json_and_csv():
    review = state.Review(note="a note")
    review.suggest([prediction("A01", 0.9), prediction("B02", 0.25)])
    review.selected = "B02"
    review.decide(accepted=False)
    review.add({**prediction("C03", 0.125), "description": 'with "quotes", commas'})
    expected = [  # A01 left undecided
        {"code": "A01", "description": "A01 description", "probability": 0.9, "accepted": None, "added": False},
        {"code": "B02", "description": "B02 description", "probability": 0.25, "accepted": False, "added": False},
        {"code": "C03", "description": 'with "quotes", commas', "probability": 0.125, "accepted": True, "added": True},
    ]
    assert json.loads(state.export_json(review)) == {"codes": expected}
    rows = list(csv.DictReader(io.StringIO(state.export_csv(review))))
    assert rows == [{key: "" if value is None else str(value) for key, value in record.items()} for record in expected]


def test_code_search_by_code_and_by_words_of_the_terms():
    search = state.CodeSearch(
        ["E11.9", "E11.65", "I10", "N39.0", "R50.9"],
        [["Type 2 diabetes mellitus without complications", "diabetes type 2"],
         ["Type 2 diabetes mellitus with hyperglycemia", "diabetes poorly controlled"],
         ["Essential hypertension", "high blood pressure"],
         ["Urinary tract infection", "UTI"],
         ["Fever, unspecified", "pyrexia"]],
        ["Type 2 diabetes mellitus without complications", "Type 2 diabetes mellitus with hyperglycemia",
         "Essential hypertension", "Urinary tract infection", "Fever, unspecified"],
    )
    assert search("E11") == ["E11.9", "E11.65"]  # code prefix, in the model's order
    assert search("e116") == search("E11.6") == ["E11.65"]  # case and dots do not matter
    assert search("i10") == ["I10"]
    assert search("blood pressure high") == ["I10"]  # every word, any order, in one code's terms
    assert search("PYREX") == ["R50.9"]  # substring of a synonym, not only of the description
    assert search("diabetes") == ["E11.9", "E11.65"] and search("diabetes", limit=1) == ["E11.9"]
    assert search("diabetes controlled") == ["E11.65"]  # words may come from different terms of a code
    assert search("pressure fever") == [] and search("   ") == [] and search(".") == []
    assert search.label("N39.0") == "N39.0 — Urinary tract infection"


def test_note_checks(tokenizer):
    coder = ICDCodingPipeline(model=make_model(tokenizer, max_note_tokens=5).eval(), tokenizer=tokenizer, task="icd-coding")
    with pytest.raises(ValueError, match="The note is empty"):
        state.check_note(" \n\t")
    with pytest.raises(ValueError, match="The note has no words"):
        state.suggestions(coder, "... -- ;;", 0.5, 2)
    codes, warning = state.suggestions(coder, "fever and cough", 0.5, 2)
    assert warning == "" and codes == coder("fever and cough", top_k=2)
    note = "fever and productive cough with pneumonia treated"  # 7 words, the model reads 5
    codes, warning = state.suggestions(coder, note, 0.5, 0)
    assert codes == coder(note, threshold=0.5)
    assert "This note has 7 words; the model reads the first 5" in warning
    assert f"from character {note.index('pneumonia')} on (the last 2 words)" in warning


def test_the_review_band_marks_the_codes_between_its_bound_and_the_threshold(tokenizer):
    coder = ICDCodingPipeline(model=make_model(tokenizer).eval(), tokenizer=tokenizer, task="icd-coding")
    codes, _ = state.suggestions(coder, NOTE, 0.5, 0, review_from=0.01)
    assert codes and [code["review"] for code in codes] == [code["probability"] <= 0.5 for code in codes]
    assert [code["code"] for code in codes] == [code["code"] for code in coder(NOTE, threshold=0.01)]
    review = state.Review(note=NOTE)
    review.suggest(codes)
    assert [row[1].startswith("review · ") for row in review.table()] == [code["review"] for code in codes]
    with pytest.raises(ValueError, match=r"review_threshold \(0.6\) must be below the threshold \(0.5000\)"):
        state.suggestions(coder, NOTE, 0.5, 0, review_from=0.6)


def test_model_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(InputError, match="no-such-folder: no such folder, and no Hub model"):
        review_cli.model_folder(str(tmp_path / "no-such-folder"))  # offline in tests: no download either
    assert review_cli.model_folder(str(tmp_path)) == tmp_path


def test_start_up_refuses_a_folder_that_is_not_an_msmn_checkpoint(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for folder, message in [(tmp_path, "no config.json, so not a model folder"),
                            (tmp_path / "bert", "model_type is 'bert', not an MSMN checkpoint")]:
        result = run([MSMN_APP, str(folder)], cwd=tmp_path)
        assert result.returncode != 0 and f"msmn-app: error: {folder}: {message}" in result.stderr
        assert "Traceback" not in result.stderr
    result = run([MSMN_APP], cwd=tmp_path, environment={"MSMN_MODEL": ""})
    assert result.returncode != 0 and "give a checkpoint folder or Hub model id" in result.stderr


def test_login_file_errors_name_the_line_and_never_the_password(tmp_path):
    (tmp_path / "logins").write_text("# coders\ncoder:s3cret pass\n\nreviewer\n")
    with pytest.raises(InputError, match="logins, line 4: not USER:PASSWORD") as error:
        access.logins([], tmp_path / "logins")
    assert "s3cret" not in str(error.value) and "reviewer" not in str(error.value)
    (tmp_path / "logins").write_text("# coders\ncoder:s3cret pass\n")
    assert access.logins(["chief:x:y"], tmp_path / "logins") == [("chief", "x:y", "coder"), ("coder", "s3cret pass", "coder")]
    assert access.logins(["chief:x:y:admin", "ana:pw:coder", "ben:admin"], None) == [
        ("chief", "x:y", "admin"), ("ana", "pw", "coder"), ("ben", "admin", "coder")]
    with pytest.raises(InputError, match="--auth: not USER:PASSWORD"):
        access.logins([":nouser"], None)
    (tmp_path / "comments").write_text("# nobody\n")
    with pytest.raises(InputError, match="comments: holds no USER:PASSWORD line"):
        access.logins([], tmp_path / "comments")
    with pytest.raises(InputError, match="missing: cannot be read"):
        access.logins([], tmp_path / "missing")


def test_a_note_over_the_size_limit_is_refused_with_a_message():
    state.check_note("fever " * 10, max_chars=60)
    with pytest.raises(ValueError, match="The note has 61 characters; this app codes notes of up to 60"):
        state.check_note("fever " * 10 + "x", max_chars=60)


def upload_note(url: str, text: str, cookie: str | None = None) -> int:
    """Uploads a .txt note as the page's upload button does; the HTTP status."""
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="note.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n--b--\r\n")
    headers = {"Content-Type": "multipart/form-data; boundary=b", **({"Cookie": cookie} if cookie else {})}
    request = urllib.request.Request(url + "gradio_api/upload", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_sigterm_removes_every_file_of_the_app(small_checkpoint, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log", environment={"TMPDIR": str(temporary)})
    try:
        assert upload_note(url, "patient with pneumonia and fever") == 200
        [app_folder] = temporary.iterdir()  # one folder of the app holds everything
        assert app_folder.name.startswith("msmn-app-")
        uploaded = [path for path in app_folder.rglob("*") if path.is_file() and path.name != "lock"]
        assert [path.read_text() for path in uploaded] == ["patient with pneumonia and fever"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()
    assert list(temporary.iterdir()) == []
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_login_is_asked_for(small_checkpoint, tmp_path):
    (tmp_path / "logins").write_text("coder:s3cret\n")
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log", options=["--auth-file", str(tmp_path / "logins")])
    try:
        assert upload_note(url, "a note") == 401
        login = urllib.parse.urlencode({"username": "coder", "password": "wrong"}).encode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "login", data=login, timeout=30)
        login = urllib.parse.urlencode({"username": "coder", "password": "s3cret"}).encode()
        with urllib.request.urlopen(url + "login", data=login, timeout=30) as response:
            cookie = "; ".join(value.split(";")[0] for value in response.headers.get_all("Set-Cookie"))
        assert upload_note(url, "a note", cookie) == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "s3cret" not in (tmp_path / "server.log").read_text()


def log_in(url: str, user: str, password: str) -> str | None:
    """The session cookie of a login, or None when it is refused."""
    login = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(url + "login", data=login, timeout=30) as response:
            return "; ".join(value.split(";")[0] for value in response.headers.get_all("Set-Cookie"))
    except urllib.error.HTTPError:
        return None


def test_failed_logins_are_slowed_and_api_errors_keep_notes_out_of_the_log(small_checkpoint, tmp_path):
    (tmp_path / "logins").write_text("coder:s3cret\n")
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log", options=["--auth-file", str(tmp_path / "logins")])
    try:
        for attempt in range(5):  # the fifth failure in a row locks the user and the address for 2 s
            assert log_in(url, "coder", f"guess-{attempt}") is None
        assert log_in(url, "coder", "s3cret") is None  # the right password, refused while locked (4 s now)
        time.sleep(4.5)
        cookie = log_in(url, "coder", "s3cret")
        assert cookie is not None
        # a malformed API call (the note without the other inputs): Gradio's error quotes its inputs
        request = urllib.request.Request(url + "gradio_api/call/code_note", method="POST",
                                         data=json.dumps({"data": ["PATIENT JOHN DOE MRN 4417"]}).encode(),
                                         headers={"Content-Type": "application/json", "Cookie": cookie})
        with urllib.request.urlopen(request, timeout=30) as response:
            event = json.loads(response.read())["event_id"]
        result = urllib.request.Request(url + f"gradio_api/call/code_note/{event}", headers={"Cookie": cookie})
        with urllib.request.urlopen(result, timeout=60) as response:
            assert "event: error" in response.read().decode()
    finally:
        process.terminate()
        process.wait(timeout=60)
    log = (tmp_path / "server.log").read_text()
    assert "msmn-app: failed login for user 'coder' from 127.0.0.1: wrong user or password" in log
    assert "msmn-app: failed login for user 'coder' from 127.0.0.1: refused for 2 s more" in log
    assert "guess-" not in log and "s3cret" not in log
    assert "msmn-app: a request failed: ValueError" in log and "JOHN DOE" not in log and "Traceback" not in log
    assert "share=True" not in log  # no hint to publish a patient-data app


def test_a_killed_app_leaves_nothing_after_the_next_start(small_checkpoint, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    killed, url = start_app(str(small_checkpoint), tmp_path / "killed.log", environment={"TMPDIR": str(temporary)})
    assert upload_note(url, "patient with pneumonia and fever") == 200
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    [left] = temporary.iterdir()  # SIGKILL runs no clean-up: the uploaded note stays ...
    process, url = start_app(str(small_checkpoint), tmp_path / "server.log", environment={"TMPDIR": str(temporary)})
    try:
        assert not left.exists() and len(list(temporary.iterdir())) == 1  # ... until the next app starts
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert list(temporary.iterdir()) == []


def test_a_port_in_use_is_a_clear_error(small_checkpoint, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = run([MSMN_APP, str(small_checkpoint), "--port", str(listener.getsockname()[1])], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot serve there" in result.stderr and "give another --port" in result.stderr


def test_exports_are_replaced_not_piled_up(small_checkpoint, tmp_path):
    import gradio

    coder = checkpoints.load_coder(str(small_checkpoint), None)
    exports = tmp_path / "exports"
    exports.mkdir()
    events = review_page.ReviewEvents(gradio, coder, exports, max_note_chars=1000)
    review = state.Review()
    for count in range(1, 21):
        review = events.code_note("fever and pneumonia " * count, 0.01, 0, False, review)[0]
    assert sorted(path.name for path in exports.rglob("*") if path.is_file()) == ["codes.csv", "codes.json"]
    other = events.code_note("another session's note", 0.01, 0, False, state.Review())[0]
    assert other.session != review.session and len(list(exports.iterdir())) == 2


# --- the page in a browser -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def start_app(model: str, log_path: Path, timeout: float = 180.0, options=(), environment=None):
    """(the running `msmn-app` process, its URL), once the page answers; its output goes to `log_path`."""
    port = free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", **(environment or {})}
    log = log_path.open("w")
    process = subprocess.Popen([MSMN_APP, model, "--port", str(port), *options], stdout=log,
                               stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"msmn-app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"msmn-app did not answer at {url} within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.requested_hosts = set()  # the page must load nothing from outside the server (patient data)
    page.on("request", lambda request: page.requested_hosts.add(urllib.parse.urlsplit(request.url).netloc))
    page.goto(url)
    page.wait_for_selector("#note textarea")
    return page


def code_note(page, note: str) -> None:
    page.fill("#note textarea", note)
    page.click("#code-button")
    page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length > 0")


def table_rows(page) -> list[list[str]]:
    """The codes table as shown: [code, description, probability, best synonym, review] per row."""
    return page.eval_on_selector_all(
        "#codes .virtual-row", "rows => rows.map(row => [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))"
    )


def wait_for_review(page, code: str, status: str) -> None:
    page.wait_for_function(
        "([code, status]) => [...document.querySelectorAll('#codes .virtual-row')].some(row => {"
        " const cells = [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim());"
        " return cells[0] === code && cells[4] === status; })",
        arg=[code, status],
    )


def select_code(page, code: str) -> None:
    row = [row[0] for row in table_rows(page)].index(code)
    page.click(f'#codes [data-testid="cell-{row}-1"]')
    page.wait_for_selector(f'#evidence[data-code="{code}"]')


def shown_marks(page) -> list[dict]:
    """The evidence marks of the selected code: offsets, text, intensity, and where each sits in the shown note."""
    return page.eval_on_selector_all(
        "#evidence .note-text mark",
        """marks => marks.map(mark => {
            const range = document.createRange();
            range.setStart(mark.closest('.note-text'), 0);
            range.setEndBefore(mark);
            return {start: +mark.dataset.start, end: +mark.dataset.end, text: mark.textContent,
                    offset: range.toString().length, intensity: +mark.style.getPropertyValue('--intensity')};
        })""",
    )


def add_code(page, query: str, label: str) -> None:
    page.locator("#code-query textarea").press_sequentially(query)
    page.locator("#code-query textarea").press("Enter")
    page.get_by_label(label).check()
    page.click("#add-button")


def download(page, button: str) -> str:
    with page.expect_download() as started:
        page.click(button)
    return Path(started.value.path()).read_text(encoding="utf-8")


def message(page, expected: str) -> str:
    page.wait_for_function("text => document.querySelector('#message').innerText.includes(text)", arg=expected)
    return page.inner_text("#message")


@pytest.fixture(scope="module")
def app(synthetic_checkpoint, tmp_path_factory):
    """(the checkpoint, the page's URL, the server's log) of `msmn-app` serving the synthetic checkpoint."""
    if chromium_path() is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    checkpoint, _ = synthetic_checkpoint
    log = tmp_path_factory.mktemp("app") / "server.log"
    process, url = start_app(str(checkpoint), log)
    yield checkpoint, url, log
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one for the module's tests (playwright's sync API runs once per thread)."""
    if chromium_path() is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser
        browser.close()


def test_review_a_note_in_the_browser(app, browser, tmp_path):
    checkpoint, url, log = app
    coder = checkpoints.load_coder(str(checkpoint), None)
    page = open_page(browser, url)
    summary = page.inner_text("#model-summary")
    assert "5 codes" in summary and f"threshold {coder.model.config.threshold:.3f}" in summary

    code_note(page, NOTE)
    rows = table_rows(page)
    expected = {prediction["code"]: prediction for prediction in coder(NOTE)}
    shown = {row[0]: row for row in rows}
    # the planted codes, as the pipeline codes them (its probabilities to the shown 3 decimals, within a
    # rounding step: the server runs on 1 thread, this process on its own count)
    assert {"J18.9", "R50.9"} <= set(shown) and all(row[4] == "suggested" for row in rows)  # none decided yet
    for code in {"J18.9", "R50.9"}:
        assert shown[code][1] == SIGNALS[code][0][0] and shown[code][3] == expected[code]["synonym"]
        assert abs(float(shown[code][2]) - expected[code]["probability"]) <= 1.5e-3

    # the selected code's evidence sits at the pipeline's offsets, the strongest span at full intensity
    select_code(page, "R50.9")
    marks = shown_marks(page)
    evidence = sorted(expected["R50.9"]["evidence"], key=lambda span: span["start"])
    assert [(m["start"], m["end"], m["text"]) for m in marks] == [(e["start"], e["end"], e["text"]) for e in evidence]
    assert all(mark["offset"] == mark["start"] for mark in marks)
    strongest = max(span["weight"] for span in evidence)  # as intense as its weight, relative to the strongest
    assert [m["intensity"] for m in marks].count(1.0) == 1
    assert [m["intensity"] for m in marks] == pytest.approx([e["weight"] / strongest for e in evidence], abs=2e-3)
    page.screenshot(path=tmp_path / "review.png", full_page=True)

    # accept one, reject one, add one by description, export
    page.click("#accept-button")
    wait_for_review(page, "R50.9", "accepted")
    select_code(page, "J18.9")
    page.click("#reject-button")
    wait_for_review(page, "J18.9", "rejected")
    add_code(page, "urinary", "N39.0 — urinary tract infection")
    wait_for_review(page, "N39.0", "added")
    page.wait_for_selector('#evidence[data-code="N39.0"]')
    exported = json.loads(download(page, "#export-json"))["codes"]
    by_code = {record["code"]: record for record in exported}
    assert [record["code"] for record in exported] == [row[0] for row in table_rows(page)]
    assert (by_code["J18.9"]["accepted"], by_code["J18.9"]["added"]) == (False, False)
    assert (by_code["R50.9"]["accepted"], by_code["R50.9"]["added"]) == (True, False)
    assert (by_code["N39.0"]["accepted"], by_code["N39.0"]["added"]) == (True, True)
    assert by_code["N39.0"]["description"] == "urinary tract infection"
    added = coder(NOTE, codes=["N39.0"])[0]
    assert abs(by_code["N39.0"]["probability"] - added["probability"]) <= 1e-4
    assert abs(by_code["R50.9"]["probability"] - expected["R50.9"]["probability"]) <= 1e-4
    exported_csv = list(csv.DictReader(io.StringIO(download(page, "#export-csv"))))
    assert [(row["code"], row["accepted"], row["added"]) for row in exported_csv] == [
        (record["code"], "" if record["accepted"] is None else str(record["accepted"]), str(record["added"]))
        for record in exported]

    # top k (every code) re-codes the note and keeps the coder's decisions: J18.9 rejected, N39.0 added
    page.fill("#top-k input", "5")
    page.press("#top-k input", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length === 5")
    review = {row[0]: row[4] for row in table_rows(page)}
    assert review == {**{code: "suggested" for code in SIGNALS}, "R50.9": "accepted", "J18.9": "rejected",
                      "N39.0": "added"}
    assert page.requested_hosts == {urllib.parse.urlsplit(url).netloc}
    page.close()
    server_log = log.read_text()
    assert "Traceback" not in server_log
    assert "pneumonia and fever" not in server_log  # note text never goes to the logs


def test_bad_input_in_the_page_shows_a_message(app, browser, tmp_path):
    checkpoint, url, log = app
    page = open_page(browser, url)
    page.click("#code-button")
    assert "The note is empty" in message(page, "The note is empty")
    page.fill("#note textarea", "... ;; -- !!")
    page.click("#code-button")
    message(page, "The note has no words")

    (tmp_path / "latin1.txt").write_bytes("fièvre et pneumonie".encode("latin-1"))
    page.set_input_files("input[type=file]", tmp_path / "latin1.txt")
    assert "latin1.txt: not UTF-8 text" in message(page, "not UTF-8")
    (tmp_path / "note.txt").write_text(NOTE, encoding="utf-8")
    page.set_input_files("input[type=file]", tmp_path / "note.txt")
    page.wait_for_function("text => document.querySelector('#note textarea').value === text", arg=NOTE)

    max_tokens = json.loads((checkpoint / "config.json").read_text())["max_note_tokens"]
    long_note = " ".join(["fever"] * (max_tokens + 7)) + " secretword"
    page.fill("#note textarea", long_note)
    page.click("#code-button")
    warning = message(page, "the model reads the first")
    assert f"This note has {max_tokens + 8:,} words; the model reads the first {max_tokens:,}" in warning
    page.close()
    server_log = log.read_text()
    assert "Traceback" not in server_log and "secretword" not in server_log and "fièvre" not in server_log


def test_all_candidate_codes_in_the_browser(ranked_checkpoint, browser, tmp_path):
    # the switch ranks every candidate, marks those outside the label set "unseen", and shows an unseen
    # code's evidence at the pipeline's offsets; the add-a-code search finds candidates too
    folder = ranked_checkpoint[0]
    note = "Admitted for acute appendicitis; chest pain, troponin raised."
    expected = {p["code"]: p for p in pipeline("icd-coding", model=str(folder), trust_remote_code=True)(
        note, candidates="all", top_k=6)}
    process, url = start_app(str(folder), tmp_path / "server.log")
    try:
        page = open_page(browser, url)
        page.wait_for_selector("#all-codes", state="visible")  # rendered after the note box, at its own pace
        assert "All test codes (14 codes" in page.inner_text("#all-codes")
        page.check("#all-codes input")
        page.fill("#top-k input", "6")
        page.press("#top-k input", "Enter")
        code_note(page, note)
        page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length === 6")
        page.uncheck("#all-codes input")  # the label set alone: its 4 codes
        page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length === 4")
        assert all(not row[1].startswith("unseen") for row in table_rows(page))
        page.check("#all-codes input")
        page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length === 6")
        rows = {row[0]: row for row in table_rows(page)}
        assert set(rows) == set(expected)
        unseen = [code for code, p in expected.items() if not p["in_label_set"]]
        assert unseen and all(rows[code][1].startswith("unseen · ") and rows[code][2] == "" for code in unseen)
        select_code(page, unseen[0])
        assert page.inner_text('#evidence .unseen') == "unseen"
        marks = shown_marks(page)
        spans = sorted(expected[unseen[0]]["evidence"], key=lambda span: span["start"])
        assert [(m["start"], m["end"], m["text"]) for m in marks] == [(s["start"], s["end"], s["text"]) for s in spans]
        assert all(mark["offset"] == mark["start"] for mark in marks)
        add_code(page, "otitis", "H66.90 — otitis media")
        wait_for_review(page, "H66.90", "added")
        page.wait_for_selector('#evidence[data-code="H66.90"] .unseen')
        page.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
