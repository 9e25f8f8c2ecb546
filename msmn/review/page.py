"""`msmn-app`: a review page for coders — paste a note, check each suggested code against its evidence,
reject some, add others, export the result.

    msmn-app msmn-codiesp-d-50                # a checkpoint folder saved by train.py, or a Hub model id
    python app.py --model msmn-codiesp-d-50   # the same; as a Hugging Face Space, app.py reads MSMN_MODEL

The page codes the note with the `icd-coding` pipeline (codes above the checkpoint's tuned threshold,
or the top k), shows the note with the selected code's evidence marked (darker: more attention), and
exports the reviewed codes as JSON and CSV. The code encoding is computed once at start-up. Note text
never goes to the logs: messages give counts and offsets only. Every file that holds note text or
codes (Gradio's uploads and the exports) lives in one temporary folder of the app, removed when the
app stops: on exit, Ctrl-C (SIGINT) or SIGTERM (`kill`, `docker stop`, a Space restart).

The review state, the code search and the export are plain Python, tested without a browser.
"""

import argparse
import contextvars
import csv
import dataclasses
import fcntl
import html
import io
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import torch
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.errors import HFValidationError
from starlette.middleware import Middleware

from datasets_scripts.codiesp import read_shipped_split
from datasets_scripts import InputError
from modeling_msmn import ICDCodingPipeline, split_words
from msmn.evidence_markup import EVIDENCE_STYLE, code_line, note_with_evidence
from msmn.coding.cli import load_coder, utf8_note

MODEL_VARIABLE = "MSMN_MODEL"  # the checkpoint a Space (or `python app.py` without --model) serves
EXAMPLE_IDS = [  # CodiEsp test reports with several of the 50 most frequent codes, under 1,200 characters
    "S1130-01082008000500017-2",
    "S0210-48062010000100019-1",
    "S1130-01082009000500011-1",
]
EXPORT_FIELDS = ["code", "description", "probability", "accepted", "added"]
# A note longer than this is refused with a message, before any work (a pasted 20 MB text would hold a
# worker for tens of seconds); the model reads only its first max_note_tokens words in any case.
MAX_NOTE_CHARS = 200_000
TABLE_HEADERS = ["code", "description", "prob.", "best synonym", "review"]


# --- the review of one note ---------------------------------------------------------------------------


@dataclasses.dataclass
class Review:
    """The codes of one note as the coder reviews them.

    codes: the pipeline's predictions (code, description, probability, synonym, evidence), each with
        `accepted` (None: a suggestion the coder has not decided on; True or False once accepted or
        rejected: a suggestion is not a decision) and `added` (the coder added it).
    session: names the folder of this page session's export files (set when first exported).
    """

    note: str = ""
    codes: list[dict] = dataclasses.field(default_factory=list)
    selected: str | None = None
    session: str | None = None

    def suggest(self, predictions: list[dict]) -> None:
        """Replaces the model's suggestions (a new threshold or top k), keeping the coder's decisions."""
        accepted = {code["code"]: code["accepted"] for code in self.codes}
        added = [code for code in self.codes if code["added"]]
        suggested = [
            {**prediction, "accepted": accepted.get(prediction["code"]), "added": False}
            for prediction in predictions
            if prediction["code"] not in {code["code"] for code in added}
        ]
        self.codes = suggested + added
        if self.selected not in {code["code"] for code in self.codes}:
            self.selected = self.codes[0]["code"] if self.codes else None

    def add(self, prediction: dict) -> None:
        """Adds a code the coder chose (with its probability and evidence), or accepts it again if listed."""
        self.selected = prediction["code"]
        for code in self.codes:
            if code["code"] == prediction["code"]:
                code["accepted"] = True
                return
        self.codes.append({**prediction, "accepted": True, "added": True})

    def decide(self, accepted: bool) -> None:
        """Accepts or rejects the selected code."""
        if self.selected is None:
            raise ValueError("Select a code in the table first.")
        self.code(self.selected)["accepted"] = accepted

    def code(self, code: str) -> dict:
        return next(entry for entry in self.codes if entry["code"] == code)

    def table(self) -> list[list]:
        status = {(None, False): "suggested", (True, False): "accepted", (False, False): "rejected", (True, True): "added",
                  (False, True): "rejected"}
        return [
            [
                code["code"],
                ("unseen · " if code.get("in_label_set") is False else "") + (code["description"] or ""),
                None if code["probability"] is None else round(code["probability"], 3),
                code["synonym"] or "",
                status[code["accepted"], code["added"]],
            ]
            for code in self.codes
        ]

    def export_records(self) -> list[dict]:
        """What the coder decided: every listed code, accepted, rejected or undecided (None), and whether it
        was added."""
        return [{field: code[field] for field in EXPORT_FIELDS} for code in self.codes]


def export_json(review: Review) -> str:
    return json.dumps({"codes": review.export_records()}, ensure_ascii=False, indent=1) + "\n"


def export_csv(review: Review) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(review.export_records())
    return text.getvalue()


# --- finding a code to add ------------------------------------------------------------------------------


class CodeSearch:
    """Finds the model's codes by code (prefix, dots optional) or by words of their terms (substring match)."""

    def __init__(self, codes: list[str], code_terms: list[list[str]] | None, descriptions: list[str] | None):
        descriptions = descriptions or [""] * len(codes)
        terms = code_terms or [[description] for description in descriptions]
        self.codes = codes
        self.descriptions = dict(zip(codes, descriptions))
        # computed once, not per keystroke: a full code set has about 100,000 codes
        self.bare_codes = [code.lower().replace(".", "") for code in codes]
        self.searchable_terms = [" | ".join(dict.fromkeys(term.lower() for term in code)) for code in terms]
        split_words("")  # builds the word splitter here (seconds), not at the first search

    def __call__(self, query: str, limit: int = 20) -> list[str]:
        """Codes matching `query`: codes that start with it first, then codes with a term holding every word."""
        bare_query = query.strip().lower().replace(".", "")
        if not bare_query:
            return []
        by_code = [code for code, bare in zip(self.codes, self.bare_codes) if bare.startswith(bare_query)]
        if len(by_code) >= limit:
            return by_code[:limit]
        listed, words = set(by_code), split_words(query.lower())
        by_terms = [
            code
            for code, terms in zip(self.codes, self.searchable_terms)
            if words and code not in listed and all(word in terms for word in words)
        ]
        return (by_code + by_terms)[:limit]

    def label(self, code: str) -> str:
        return f"{code} — {self.descriptions[code]}".rstrip(" —")


# --- coding a note --------------------------------------------------------------------------------------


def check_note(note: str, max_chars: int = MAX_NOTE_CHARS) -> None:
    """Raises ValueError for a note the app does not code: empty, or over `max_chars`."""
    if not note.strip():
        raise ValueError("The note is empty: paste a note, upload a .txt file or pick an example.")
    if len(note) > max_chars:
        raise ValueError(
            f"The note has {len(note):,} characters; this app codes notes of up to {max_chars:,}. Code the part "
            "you need, or start the app with a larger --max-note-chars."
        )


def suggestions(coder: ICDCodingPipeline, note: str, threshold: float, top_k: int | None,
                all_codes: bool = False) -> tuple[list[dict], str]:
    """(the model's codes for the note, '' or warnings: the model read only the note's beginning, or the
    note is much shorter than those the model was trained on). With `all_codes`, every candidate code of
    the checkpoint is ranked (above the score threshold chosen on dev, or the top k), not only the label set.

    Raises ValueError for a note without any word: there is nothing to code.
    """
    if all_codes:  # the operating point's score threshold, not the slider's probability
        options = {"candidates": "all", **({"top_k": int(top_k)} if top_k else {})}
    else:
        options = {"top_k": int(top_k)} if top_k else {"threshold": threshold}
    coded = coder(note, note_info=True, **options)  # the pipeline says how much of the note it read
    max_tokens = coder.model.config.max_note_tokens
    if coded["note_words"] == 0:
        raise ValueError("The note has no words (only punctuation or symbols): there is nothing to code.")
    warnings = []
    if coded["short_note"]:
        warnings.append(f"**A short note** ({coded['note_words']:,} words, fewer than 99% of the notes the model was "
                        "trained on): its codes are less certain than their probabilities say; check each one.")
    if coded["note_words"] > max_tokens:
        warnings.append(
            f"This note has {coded['note_words']:,} words; the model reads the first {max_tokens:,}, as in training. "
            f"The text from character {coded['coded_characters']:,} on (the last {coded['note_words'] - max_tokens:,} "
            "words) was not coded.")
    return coded["codes"], " ".join(warnings)


def code_search(coder: ICDCodingPipeline) -> CodeSearch:
    """The search of the add-a-code box: the label set's codes, and every candidate the checkpoint carries."""
    config = coder.model.config
    codes, descriptions = list(config.id2label.values()), config.code_descriptions or [""] * config.num_labels
    terms = config.code_terms or [[description] for description in descriptions]
    if coder.has_candidates():
        ranker = coder.candidate_ranker()
        codes, terms = codes + ranker.extra_codes, terms + ranker.extra_terms
        descriptions = descriptions + ranker.extra_descriptions
    return CodeSearch(codes, terms, descriptions)


def candidates_switch(coder: ICDCodingPipeline) -> str | None:
    """The label of the switch to rank every candidate code, or None when the checkpoint carries none."""
    if not coder.has_candidates():
        return None
    ranker = coder.candidate_ranker()
    return (f"All {ranker.code_system} ({ranker.num_labels + len(ranker.extra_codes):,} codes; those outside the "
            f"{ranker.num_labels:,} trained on marked unseen, ranked at the dev-chosen threshold or the top k)")


def evidence_html(review: Review) -> str:
    """The note with the selected code's evidence marked, each span as dark as its share of the attention."""
    if review.selected is None:
        return '<p class="none">No code selected.</p>' if review.note else ""
    code = review.code(review.selected)
    return (f'<div id="evidence" data-code="{html.escape(code["code"])}"><p>{code_line(code)}</p>'
            f"{note_with_evidence(review.note, code)}</div>")


def model_card_data(folder: Path):
    """The metadata of the checkpoint's model card (README.md), or None without one."""
    return ModelCard.load(folder / "README.md").data if (folder / "README.md").is_file() else None


def model_summary(coder: ICDCodingPipeline, folder: Path, card) -> str:
    """The model panel: code count, training data and licence (from the model card), the tuned threshold."""
    config = coder.model.config
    datasets = ", ".join(card.datasets) if card and card.datasets else "not stated in the model card"
    licence = card.license if card and card.license else "not stated in the model card"
    return (
        f"**Model** `{folder.name}` · **{len(config.id2label):,} codes** · trained on {datasets} "
        f"(licence {licence}) · threshold **{config.threshold:.3f}** (tuned on dev) · reads the first "
        f"{config.max_note_tokens:,} words of a note"
    )


def example_notes(language: str) -> list[str]:
    """Three CodiEsp test reports (CC BY 4.0), in the model's language (English unless it is Spanish)."""
    field = "text_es" if language == "es" else "text_en"
    reports = {report["id"]: report[field] for report in read_shipped_split("test")}
    return [reports[report_id] for report_id in EXAMPLE_IDS]


def model_folder(model: str) -> Path:
    """A local checkpoint folder, or the download of a Hub model id."""
    if Path(model).is_dir():
        return Path(model)
    try:
        return Path(snapshot_download(model))
    except (HFValidationError, OSError) as error:  # hub errors (offline, not found) are OSErrors
        raise InputError(
            f"{model}: no such folder, and no Hub model of that id could be downloaded ({type(error).__name__}). "
            "Give the folder that train.py wrote (its --output_dir) or a Hub model id."
        ) from None


# --- the page -------------------------------------------------------------------------------------------

PAGE_STYLE = EVIDENCE_STYLE + "#evidence .note-text { max-height: 32rem; overflow-y: auto; }"


def write_exports(review: Review, exports: Path) -> tuple[str | None, str | None]:
    """(JSON file, CSV file) of the review's codes, in the page session's own folder under `exports`,
    replaced at each change (so a download never serves another session's file, and files do not pile
    up); (None, None) without codes."""
    if not review.codes:
        return None, None
    review.session = review.session or uuid.uuid4().hex
    folder = exports / review.session
    folder.mkdir(exist_ok=True)
    for name, text in (("codes.json", export_json(review)), ("codes.csv", export_csv(review))):
        (folder / f"{name}.new").write_text(text, encoding="utf-8")
        (folder / f"{name}.new").replace(folder / name)
    return str(folder / "codes.json"), str(folder / "codes.csv")


class ReviewEvents:
    """The page's event handlers: each takes the review (and what the event carries) and returns every
    view of the review — the state, the table, the evidence, the two export buttons and a message."""

    def __init__(self, gr, coder: ICDCodingPipeline, exports: Path, max_note_chars: int):
        self.gr, self.coder, self.exports, self.max_note_chars = gr, coder, exports, max_note_chars
        self.search = code_search(coder)

    def show(self, review: Review, message: str = ""):
        json_file, csv_file = write_exports(review, self.exports)
        return (review, review.table(), evidence_html(review),
                self.gr.DownloadButton(value=json_file, interactive=json_file is not None),
                self.gr.DownloadButton(value=csv_file, interactive=csv_file is not None), message)

    def code_note(self, note, threshold, top_k, all_codes, review):
        try:
            check_note(note, self.max_note_chars)
            predictions, warning = suggestions(self.coder, note, threshold, top_k, all_codes)
        except ValueError as error:
            return self.show(Review(session=review.session), f"**{error}**")
        if note != review.note:  # a new note: a new review, in the same session
            review = Review(note=note, session=review.session)
        review.suggest(predictions)
        if not review.codes:
            warning = (warning + " " if warning else "") + "No code above the threshold: lower it, set a top k, or add codes."
        return self.show(review, warning)

    def recode(self, note, threshold, top_k, all_codes, review):
        return self.code_note(note, threshold, top_k, all_codes, review) if review.note else self.show(review)

    def select(self, review, event):  # event: gr.SelectData, the clicked cell
        review.selected = review.codes[event.index[0]]["code"]
        return self.show(review)

    def decide(self, review, accepted: bool):
        try:
            review.decide(accepted)
        except ValueError as error:
            return self.show(review, f"**{error}**")
        return self.show(review)

    def find(self, query):
        matches = self.search(query)
        return self.gr.Radio(choices=[(self.search.label(code), code) for code in matches],
                             value=matches[0] if matches else None)

    def add(self, code, review):
        if not review.note:
            return self.show(review, "**Code a note first, then add codes to it.**")
        if not code:
            return self.show(review, "**Search for a code by code or description, pick it, then press Add.**")
        review.add(self.coder(review.note, codes=[code])[0])
        return self.show(review)

    def upload(self, file):
        try:
            note = utf8_note(Path(file).read_bytes(), Path(file).name)
            check_note(note, self.max_note_chars)
            return note, ""
        except ValueError as error:  # InputError too
            return self.gr.Textbox(), f"**{error}**"


def page_layout(gr, threshold: float, summary: str, examples: list[str], candidates: str | None = None) -> dict:
    """The page's components, by name, laid out; the page itself is "page"."""
    # Gradio's copies of the exports (a patient's codes) are deleted after an hour, and at exit.
    with gr.Blocks(title="MSMN ICD coding review", analytics_enabled=False, delete_cache=(600, 3600)) as page:
        review = gr.State(Review())
        gr.Markdown(f"# ICD coding review\n{summary}", elem_id="model-summary")
        with gr.Row():
            with gr.Column(scale=2):
                note = gr.Textbox(label="Note", lines=10, max_lines=20, elem_id="note")
                with gr.Row():
                    upload_button = gr.UploadButton("Upload .txt", file_types=[".txt"], type="filepath")
                    code_button = gr.Button("Code", variant="primary", elem_id="code-button")
                gr.Examples(examples=[[example] for example in examples], inputs=[note], label="CodiEsp test reports")
            with gr.Column(scale=1):
                threshold = gr.Slider(0.01, 0.99, value=round(threshold, 3), step=0.001, label="Threshold")
                top_k = gr.Number(value=0, precision=0, minimum=0, label="Top k (0: use the threshold)", elem_id="top-k")
                all_codes = gr.Checkbox(value=False, label=candidates or "", visible=candidates is not None,
                                        elem_id="all-codes")
                query = gr.Textbox(label="Add a code: search by code or description", elem_id="code-query")
                found = gr.Radio(choices=[], label="Matching codes (the first 20)", elem_id="code-found")
                add_button = gr.Button("Add", elem_id="add-button")
        message = gr.Markdown(elem_id="message")
        with gr.Row():
            with gr.Column(scale=3):
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "str", "number", "str", "str"],
                                     column_widths=["11%", "35%", "13%", "28%", "13%"], wrap=True, interactive=False,
                                     elem_id="codes", label="Codes (click a row to see its evidence)")
                with gr.Row():
                    accept_button = gr.Button("Accept selected code", elem_id="accept-button")
                    reject_button = gr.Button("Reject selected code", elem_id="reject-button")
                    json_button = gr.DownloadButton("Export JSON", interactive=False, elem_id="export-json")
                    csv_button = gr.DownloadButton("Export CSV", interactive=False, elem_id="export-csv")
            with gr.Column(scale=2):
                evidence = gr.HTML(label="Evidence", elem_id="evidence-panel")
    return {name: value for name, value in locals().items() if name not in ("gr", "summary", "examples", "candidates")}


def selection_handler(events: ReviewEvents):
    """events.select, with the annotation by which Gradio passes the clicked cell (gradio.SelectData)."""

    def select(review, event: events.gr.SelectData):
        return events.select(review, event)

    return select


def connect(page: dict, events: ReviewEvents) -> None:
    """Each component's events to their handlers (inside the page's Blocks context)."""
    views = [page[name] for name in ("review", "table", "evidence", "json_button", "csv_button", "message")]
    recoding = [page["note"], page["threshold"], page["top_k"], page["all_codes"], page["review"]]
    page["code_button"].click(events.code_note, recoding, views)
    page["threshold"].change(events.recode, recoding, views, trigger_mode="always_last")
    page["all_codes"].change(events.recode, recoding, views)
    page["top_k"].submit(events.recode, recoding, views)
    page["table"].select(selection_handler(events), [page["review"]], views)
    page["accept_button"].click(lambda review: events.decide(review, True), [page["review"]], views)
    page["reject_button"].click(lambda review: events.decide(review, False), [page["review"]], views)
    page["query"].input(events.find, [page["query"]], [page["found"]], trigger_mode="always_last")  # typing: the latest
    page["query"].submit(events.find, [page["query"]], [page["found"]])
    page["add_button"].click(events.add, [page["found"], page["review"]], views)
    page["upload_button"].upload(events.upload, [page["upload_button"]], [page["note"], page["message"]])


def build_page(coder: ICDCodingPipeline, summary: str, examples: list[str], exports: Path,
               max_note_chars: int = MAX_NOTE_CHARS) -> "gradio.Blocks":
    """The review page; the export files go to folders under `exports`."""
    import gradio as gr  # imported here, after main has set GRADIO_TEMP_DIR: Gradio reads it once, at import

    page = page_layout(gr, coder.model.config.threshold, summary, examples, candidates_switch(coder))
    with page["page"]:
        connect(page, ReviewEvents(gr, coder, exports, max_note_chars))
    return page["page"]


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-app", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help=f"checkpoint folder or Hub model id (default: ${MODEL_VARIABLE})")
    parser.add_argument("--model", dest="model_option", help="the same, as an option (python app.py --model ...)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (default: $GRADIO_SERVER_NAME if set, else 127.0.0.1, this machine "
                             "only; 0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default: $GRADIO_SERVER_PORT if set, else 7860)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", action="append", default=[],
                        help="ask for this login (repeat for more users; visible to others in the process list: "
                             "prefer --auth-file)")
    parser.add_argument("--auth-file", type=Path, help="ask for a login: a file of USER:PASSWORD lines")
    parser.add_argument("--max-note-chars", type=int, default=MAX_NOTE_CHARS,
                        help=f"refuse longer notes, with a message (default {MAX_NOTE_CHARS:,})")
    args = parser.parse_args(argv)
    if args.max_note_chars < 1:
        parser.error(f"--max-note-chars {args.max_note_chars}: give a number of characters, 1 or more.")
    return args


def logins(pairs: list[str], auth_file: Path | None) -> list[tuple[str, str]]:
    """(user, password) pairs of --auth and of the lines of --auth-file (blank lines and # comments skipped)."""
    sources = [("--auth", pair) for pair in pairs]
    if auth_file is not None:
        try:
            lines = auth_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"--auth-file {auth_file}: cannot be read ({type(error).__name__}).") from None
        sources += [(f"--auth-file {auth_file}, line {number}", line.strip()) for number, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]
        if not sources:
            raise InputError(f"--auth-file {auth_file}: holds no USER:PASSWORD line.")
    pairs = []
    for source, pair in sources:
        user, colon, password = pair.partition(":")
        if not (user and colon and password):  # the message never repeats the line: it may hold a password
            raise InputError(f"{source}: not USER:PASSWORD (a user name, a colon, a password).")
        pairs.append((user, password))
    return pairs


CLIENT_ADDRESS = contextvars.ContextVar("client_address", default="unknown")


class ClientAddress:
    """ASGI middleware: remembers the address of the client being served, for the login check."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("client"):
            CLIENT_ADDRESS.set(scope["client"][0])
        await self.app(scope, receive, send)


class LoginGuard:
    """Checks the app's logins. A failed login is logged (user and address, never the password); after
    FREE_FAILURES failures in a row for a user or from an address, both are refused without a check for
    2, 4, 8 … up to MAX_WAIT seconds after each further failure. A success clears the user's and the
    address's count."""

    FREE_FAILURES = 4
    MAX_WAIT = 300.0

    def __init__(self, pairs: list[tuple[str, str]]):
        self.passwords = dict(pairs)
        self.failures = {}  # user or address → (failures in a row, time of the last)
        self.lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        count, last = self.failures.get(key, (0, 0.0))
        if count <= self.FREE_FAILURES:
            return 0.0
        return max(0.0, last + min(2.0 ** (count - self.FREE_FAILURES), self.MAX_WAIT) - time.monotonic())

    def check(self, user: str, password: str, address: str) -> bool:
        with self.lock:
            keys = (f"user {user!r}", f"address {address}")
            wait = max(self.wait(key) for key in keys)
            correct = wait == 0 and secrets.compare_digest(self.passwords.get(user, "").encode(), password.encode())
            if correct and user in self.passwords:
                for key in keys:
                    self.failures.pop(key, None)
                return True
            for key in keys:
                self.failures[key] = (self.failures.get(key, (0, 0.0))[0] + 1, time.monotonic())
            reason = f"refused for {wait:.0f} s more after repeated failures" if wait else "wrong user or password"
        print(f"msmn-app: failed login for user {user!r} from {address}: {reason}", file=sys.stderr, flush=True)
        return False

    async def login(self, user: str, password: str) -> bool:
        """Gradio's login check (a coroutine function, which Gradio awaits), for the client being served."""
        return self.check(user, password, CLIENT_ADDRESS.get())


class QuietTracebacks:
    """Stands for the `traceback` module inside Gradio's request handling: a failed request is logged by
    its exception's type and where it was raised, never its message (Gradio's messages quote a request's
    inputs: the note)."""

    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        error = sys.exc_info()[1]
        frames = traceback.extract_tb(error.__traceback__) if error is not None else []
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        print(f"msmn-app: a request failed: {type(error).__name__}{where} (its message is not logged: it may quote "
              "the note)", file=sys.stderr, flush=True)


def silence_gradio_inputs() -> None:
    """Gradio's request errors are logged without their messages (`QuietTracebacks`)."""
    import gradio.queueing
    import gradio.route_utils
    import gradio.routes
    import gradio.utils

    for module in (gradio.queueing, gradio.route_utils, gradio.routes, gradio.utils):
        module.traceback = QuietTracebacks()


APP_FOLDER_PREFIX = "msmn-app-"


def claim_app_folder() -> tuple[Path, int]:
    """(a new temporary folder for the app's files, the descriptor of its lock, held while the app runs).
    Folders that an app killed without clean-up left (their lock free) are removed first: they hold notes."""
    for stale in Path(tempfile.gettempdir()).glob(f"{APP_FOLDER_PREFIX}*"):
        if stale.is_dir() and (stale / "lock").is_file() and not holds_lock(stale / "lock"):
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=APP_FOLDER_PREFIX))
    descriptor = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return folder, descriptor


def holds_lock(path: Path) -> bool:
    """Whether a running process holds the lock file `path`."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


def check_port(host: str, port: int) -> None:
    """The address can be served: nothing else listens there."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise InputError(f"--host {host} --port {port}: cannot serve there ({error.strerror or error}); another program "
                         "(an msmn-app already running?) may listen on that port: give another --port.") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    model = args.model_option or args.model or os.environ.get(MODEL_VARIABLE)
    if not model:
        sys.exit(f"msmn-app: error: give a checkpoint folder or Hub model id (msmn-app MODEL, or set {MODEL_VARIABLE}).")
    try:
        auth = logins(args.auth, args.auth_file)
        check_port(args.host, args.port)
        folder = model_folder(model)
        coder = load_coder(str(folder), args.device)
    except ValueError as error:  # InputError: not a folder, not an MSMN checkpoint, a bad login file, a busy port
        sys.exit(f"msmn-app: error: {error}")
    with torch.no_grad():
        coder.model.msmn.code_encoding()  # encoded once here; every click reuses it
    card = model_card_data(folder)
    language = (card.language[0] if isinstance(card.language, list) else card.language) if card and card.language else "en"
    app_folder, lock = claim_app_folder()  # every file with note text or codes, removed at the end
    os.environ["GRADIO_TEMP_DIR"] = str(app_folder / "gradio")  # Gradio's uploads and its copies of the exports
    tempfile.tempdir = str(app_folder)  # and any other temporary file of this process
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        (app_folder / "exports").mkdir()
        page = build_page(coder, model_summary(coder, folder, card), example_notes(language), app_folder / "exports",
                          args.max_note_chars)
        silence_gradio_inputs()
        print(f"msmn-app: serving {folder.name} on http://{args.host}:{args.port}/", flush=True)
        try:
            page.launch(server_name=args.host, server_port=args.port, ssr_mode=False, css=PAGE_STYLE, quiet=True,
                        auth=LoginGuard(auth).login if auth else None, max_file_size=4 * args.max_note_chars,  # UTF-8: ≤ 4 bytes a character
                        app_kwargs={"middleware": [Middleware(ClientAddress)]})
        except KeyboardInterrupt:  # SIGINT or SIGTERM while launch was starting up (later, launch handles it)
            page.close()
    finally:
        shutil.rmtree(app_folder, ignore_errors=True)
        os.close(lock)


def stop_on_sigterm(signum, frame):
    """SIGTERM stops the app as Ctrl-C does: Gradio closes the server, and main removes the app's folder."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
