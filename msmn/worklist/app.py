"""The worklist's web app: its HTTP API (`api.py`) and its page (`page.py`) on one FastAPI app, behind the app's
logins, served by `msmn-app MODEL --db ...`."""

from fastapi import FastAPI

from modeling_msmn import ICDCodingPipeline
from msmn.review.access import ClientAddress, LoginGuard
from msmn.worklist.api import worklist_api
from msmn.worklist.database import open_worklist
from msmn.worklist.page import build_worklist_page
from msmn.worklist.store import Worklist


def worklist_app(db: str, claim_minutes: float, coder: ICDCodingPipeline, guard: LoginGuard, summary: str,
                 style: str, max_file_size: int) -> FastAPI:
    """The API under /api/worklist/ and the page at /, both for the logins of `guard`."""
    import gradio as gr

    worklist = Worklist(open_worklist(db), claim_seconds=60 * claim_minutes)
    app = worklist_api(worklist, guard)
    app.add_middleware(ClientAddress)
    page = build_worklist_page(worklist, coder, guard, summary)
    return gr.mount_gradio_app(app, page, path="", auth=guard.login, css=style, ssr_mode=False,
                               max_file_size=max_file_size)
