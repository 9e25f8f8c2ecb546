"""The review page in Gradio: its layout, its event handlers (`ReviewEvents`: each takes the review and
what the event carries, and returns every view of the review) and their wiring. The page codes the
note with the `icd-coding` pipeline (codes above the checkpoint's tuned threshold, or the top k),
shows the note with the selected code's evidence marked (darker: more attention), and exports the
reviewed codes as JSON and CSV. The review itself is plain Python (`msmn.review.state`)."""

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

from modeling_msmn import ICDCodingPipeline
from msmn.coding.notes import utf8_note
from msmn.evidence_markup import EVIDENCE_STYLE, code_line, note_with_evidence
from msmn.review.state import MAX_NOTE_CHARS, CodeSearch, Review, check_note, code_search, suggestions
from msmn.review.state import write_exports

# CodiEsp test reports with several of the 50 most frequent codes, under 1,200 characters
EXAMPLES = Path(__file__).parent / "examples.json"
TABLE_HEADERS = ["code", "description", "prob.", "best synonym", "review"]


def candidates_switch(coder: ICDCodingPipeline) -> str | None:
    """The label of the switch to rank every candidate code, or None when the checkpoint carries none."""
    if not coder.has_candidates():
        return None
    ranker = coder.candidate_ranker()
    return (f"All {ranker.code_system} ({ranker.num_candidates:,} codes; those outside the "
            f"{ranker.num_labels:,} trained on marked unseen, ranked at the dev-chosen threshold or the top k)")


def evidence_html(review: Review) -> str:
    """The note with the selected code's evidence marked, each span as dark as its share of the attention."""
    if review.selected is None:
        return '<p class="none">No code selected.</p>' if review.note else ""
    code = review.code(review.selected)
    return (f'<div id="evidence" data-code="{html.escape(code["code"])}"><p>{code_line(code)}</p>'
            f"{note_with_evidence(review.note, code)}</div>")


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
    """The page's three example notes (CodiEsp test reports, CC BY 4.0, shipped with the app in
    examples.json), in the model's language (English unless it is Spanish)."""
    reports = json.loads(EXAMPLES.read_text(encoding="utf-8"))["reports"]
    return [report["es" if language == "es" else "en"] for report in reports]


PAGE_STYLE = EVIDENCE_STYLE + "#evidence .note-text { max-height: 32rem; overflow-y: auto; }"


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

    def code_note(self, note, threshold, top_k, all_codes, review, review_from=0.0):
        try:
            check_note(note, self.max_note_chars)
            predictions, warning = suggestions(self.coder, note, threshold, top_k, all_codes, review_from)
        except ValueError as error:
            return self.show(Review(session=review.session), f"**{error}**")
        if note != review.note:  # a new note: a new review, in the same session
            review = Review(note=note, session=review.session)
        review.suggest(predictions)
        if not review.codes:
            warning = (warning + " " if warning else "") + "No code above the threshold: lower it, set a top k, or add codes."
        return self.show(review, warning)

    def recode(self, note, threshold, top_k, all_codes, review, review_from=0.0):
        return self.code_note(note, threshold, top_k, all_codes, review, review_from) if review.note else self.show(review)

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
        return matching_codes(self.gr, self.search, query)

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


def matching_codes(gr, search: CodeSearch, query: str):
    """The add-a-code box's choices for `query` (the first preselected), as a Radio update."""
    matches = search(query)
    return gr.Radio(choices=[(search.label(code), code) for code in matches], value=matches[0] if matches else None)


@dataclasses.dataclass
class ReviewPage:
    """The page (`blocks`) and the components its events read and write."""

    blocks: Any
    review: Any  # gr.State holding the Review
    note: Any
    upload_button: Any
    code_button: Any
    threshold: Any
    top_k: Any
    review_from: Any
    all_codes: Any
    query: Any
    found: Any
    add_button: Any
    message: Any
    table: Any
    accept_button: Any
    reject_button: Any
    json_button: Any
    csv_button: Any
    evidence: Any

    def views(self) -> list:
        """What every handler of ReviewEvents returns, in its order."""
        return [self.review, self.table, self.evidence, self.json_button, self.csv_button, self.message]


def page_layout(gr, threshold: float, summary: str, examples: list[str], candidates: str | None = None) -> ReviewPage:
    """The page's components, laid out."""
    # Gradio's copies of the exports (a patient's codes) are deleted after an hour, and at exit.
    with gr.Blocks(title="MSMN ICD coding review", analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
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
                review_from = gr.Number(value=0, minimum=0, maximum=0.99, step=0.01, elem_id="review-from",
                                        label="Review band from (0: none): codes between it and the threshold, marked review")
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
    return ReviewPage(blocks, review, note, upload_button, code_button, threshold, top_k, review_from, all_codes, query,
                      found, add_button, message, table, accept_button, reject_button, json_button, csv_button, evidence)


def selection_handler(events: ReviewEvents):
    """events.select, with the annotation by which Gradio passes the clicked cell (gradio.SelectData)."""

    def select(review, event: events.gr.SelectData):
        return events.select(review, event)

    return select


def connect(page: ReviewPage, events: ReviewEvents) -> None:
    """Each component's events to their handlers (inside the page's Blocks context)."""
    views = page.views()
    recoding = [page.note, page.threshold, page.top_k, page.all_codes, page.review, page.review_from]
    page.code_button.click(events.code_note, recoding, views)
    page.threshold.change(events.recode, recoding, views, trigger_mode="always_last")
    page.all_codes.change(events.recode, recoding, views)
    page.top_k.submit(events.recode, recoding, views)
    page.review_from.submit(events.recode, recoding, views)
    page.table.select(selection_handler(events), [page.review], views)
    page.accept_button.click(lambda review: events.decide(review, True), [page.review], views)
    page.reject_button.click(lambda review: events.decide(review, False), [page.review], views)
    page.query.input(events.find, [page.query], [page.found], trigger_mode="always_last")  # typing: the latest
    page.query.submit(events.find, [page.query], [page.found])
    page.add_button.click(events.add, [page.found, page.review], views)
    page.upload_button.upload(events.upload, [page.upload_button], [page.note, page.message])


def build_page(coder: ICDCodingPipeline, summary: str, examples: list[str], exports: Path,
               max_note_chars: int = MAX_NOTE_CHARS):
    """The review page; the export files go to folders under `exports`."""
    import gradio as gr  # imported here, after main has set GRADIO_TEMP_DIR: Gradio reads it once, at import

    page = page_layout(gr, coder.model.config.threshold, summary, examples, candidates_switch(coder))
    with page.blocks:
        connect(page, ReviewEvents(gr, coder, exports, max_note_chars))
    return page.blocks
