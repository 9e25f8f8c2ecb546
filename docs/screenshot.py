"""The screenshots of the docs, taken as the browser tests drive the pages: the review app (the README and
docs/pipeline.md: the first example report coded, its top code selected), and the worklist (docs/worklist.md:
ten CodiEsp test reports loaded, a coder on the first, and the analytics tab after two coders submitted the
rest through the API, accepting each suggestion among the report's gold codes and adding the missing ones,
2 to 6 seconds a note).

    python docs/screenshot.py msmn-codiesp-d-50 docs/review_app.png
    python docs/screenshot.py --worklist msmn-codiesp-d-50 docs/
"""

import gzip
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import chromium_path  # noqa: E402
from test_app import code_note, open_page, select_code, start_app, table_rows  # noqa: E402
from test_worklist_app import client, log_in_page, login_file  # noqa: E402

from msmn.review.page import example_notes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def small_png(path: str) -> None:
    from PIL import Image

    Image.open(path).quantize(colors=128).save(path, optimize=True)  # a small PNG for the docs


def save_screenshot(model: str, output: str) -> None:
    from playwright.sync_api import sync_playwright

    log = Path(output).with_suffix(".log")
    process, url = start_app(model, log)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = open_page(browser, url)
            code_note(page, example_notes("en")[0])
            select_code(page, table_rows(page)[0][0])
            page.screenshot(path=output, full_page=True)
            browser.close()
        small_png(output)
    finally:
        process.terminate()
        log.unlink()


def review_through_the_api(url: str, coder: str, gold: dict) -> None:
    """Submits notes until none is left, taking 2 to 6 seconds over each (as a reading coder would take minutes)."""
    rng = random.Random(coder)
    with client(url, coder) as http:
        while (claimed := http.post("/api/worklist/next")).status_code == 200:
            note = claimed.json()
            time.sleep(rng.uniform(2, 6))
            suggested = [s["code"] for s in note["suggestions"]]
            codes = [code for code in gold[note["note_id"]] if code in gold["_labels"]]
            http.post(f"/api/worklist/notes/{note['pk']}/submit", json={
                "accepted": [c for c in suggested if c in codes], "rejected": [c for c in suggested if c not in codes],
                "added": [c for c in codes if c not in suggested]})


def save_worklist_screenshots(model: str, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    with gzip.open(ROOT / "datasets_scripts/data/codiesp/test.jsonl.gz", "rt", encoding="utf-8") as lines:
        reports = [json.loads(line) for line in lines][:10]
    labels = set(json.loads((Path(model) / "config.json").read_text())["id2label"].values())
    gold = {report["id"]: report["diagnosis_codes"] for report in reports} | {"_labels": labels}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        notes = work / "notes.jsonl"
        notes.write_text("".join(json.dumps({"id": r["id"], "text": r["text_en"]}) + "\n" for r in reports))
        db = str(work / "reviews.sqlite")
        subprocess.run([sys.executable, "-m", "msmn.worklist", "load", model, str(notes), "--db", db, "--quiet"],
                       check=True, cwd=ROOT)
        process, url = start_app(model, work / "server.log", options=["--db", db, "--auth-file", str(login_file(work))])
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
                page = log_in_page(browser, url, "coder0")
                page.click("#next-button")
                page.wait_for_function("() => document.querySelectorAll('#codes .virtual-row').length > 0")
                select_code(page, table_rows(page)[0][0])
                page.screenshot(path=str(folder / "worklist.png"), full_page=True)
                coders = [threading.Thread(target=review_through_the_api, args=(url, coder, gold))
                          for coder in ("coder1", "coder2")]
                for thread in coders:
                    thread.start()
                for thread in coders:
                    thread.join()
                lead = log_in_page(browser, url, "lead")
                lead.click("#analytics-tab-button")
                lead.wait_for_selector("#coder-plot canvas, #coder-plot svg")
                lead.wait_for_timeout(1000)
                lead.screenshot(path=str(folder / "worklist_analytics.png"), full_page=True)
                browser.close()
        finally:
            process.terminate()
    for name in ("worklist.png", "worklist_analytics.png"):
        small_png(str(folder / name))


if __name__ == "__main__":
    if sys.argv[1] == "--worklist":
        save_worklist_screenshots(sys.argv[2], Path(sys.argv[3]))
    else:
        save_screenshot(*sys.argv[1:3])
