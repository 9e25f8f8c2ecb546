"""The screenshot of the review app in the README and docs/pipeline.md, taken as the browser tests drive
the page: the app on a checkpoint, the first example report coded, its top code selected.

    python docs/screenshot.py msmn-codiesp-d-50 docs/review_app.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import chromium_path  # noqa: E402
from test_app import code_note, open_page, select_code, start_app, table_rows  # noqa: E402

from msmn.review.page import example_notes  # noqa: E402


def save_screenshot(model: str, output: str) -> None:
    from PIL import Image
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
        Image.open(output).quantize(colors=128).save(output, optimize=True)  # a small PNG for the README
    finally:
        process.terminate()
        log.unlink()


if __name__ == "__main__":
    save_screenshot(*sys.argv[1:3])
