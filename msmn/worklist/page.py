"""The worklist page of `msmn-app MODEL --db ...` (Gradio): a coder logs in, takes the next note, checks each
suggestion against its evidence, accepts, rejects and adds codes, and submits (the next note loads); skips or
releases a note; sees the note's history. Admins also see the analytics tab: acceptance by model, coder and
code, plotted. The review of a note is `msmn.review.state.Review`; the database is `Worklist`."""

import dataclasses

import pandas as pd

from modeling_msmn import ICDCodingPipeline
from msmn.review.access import LoginGuard
from msmn.review.page import TABLE_HEADERS, evidence_html, matching_codes
from msmn.review.state import Review, code_search
from msmn.worklist.analytics import acceptance_report, most_often
from msmn.worklist.store import ClaimedNote, Worklist

HISTORY_HEADERS = ["time (UTC)", "coder", "action", "code"]


@dataclasses.dataclass
class Held:
    """The note a page session holds (None: none) and its review."""

    note: ClaimedNote | None = None
    review: Review = dataclasses.field(default_factory=Review)


def held_review(coder: ICDCodingPipeline, note: ClaimedNote) -> Held:
    """The review of a claimed note: its stored suggestions, described from the model's code table."""
    config = coder.model.config
    descriptions = dict(zip(config.id2label.values(), config.code_descriptions or []))
    review = Review(note=note.text)
    review.suggest([{**suggestion, "description": descriptions.get(suggestion["code"])}
                    for suggestion in note.suggestions])
    return Held(note, review)


def decisions(review: Review) -> tuple[list[str], list[str], list[str]]:
    """(accepted suggestions, rejected suggestions, codes added by hand) of a review."""
    accepted = [code["code"] for code in review.codes if code["accepted"] is True and not code["added"]]
    rejected = [code["code"] for code in review.codes if code["accepted"] is False and not code["added"]]
    added = [code["code"] for code in review.codes if code["accepted"] is True and code["added"]]
    return accepted, rejected, added


class WorklistEvents:
    """The page's handlers: each takes the session's `Held` note (and what the event carries; the coder is the
    logged-in user) and returns every view: the state, the status line, the table, the evidence, the history
    and a message."""

    def __init__(self, gr, worklist: Worklist, coder: ICDCodingPipeline, guard: LoginGuard):
        self.gr, self.worklist, self.coder, self.guard = gr, worklist, coder, guard
        self.search = code_search(coder)

    def show(self, held: Held, message: str = ""):
        if held.note is None:
            status = "No note held: press **Next note**."
            history = []
        else:
            status = f"Note **{held.note.note_id}** · coded by model `{held.note.model[:12]}`"
            history = [[e["at"], e["coder"], e["action"], e["code"] or ""] for e in self.worklist.history(held.note.pk)]
        return held, status, held.review.table(), evidence_html(held.review), history, message

    def next_note(self, held: Held, request):
        note = self.worklist.claim_next(request.username)
        if note is None:
            return self.show(Held(), "**The worklist is empty**: every note is submitted or held by another coder.")
        return self.show(held_review(self.coder, note))

    def submit(self, held: Held, request):
        if held.note is None:
            return self.show(held, "**Take a note first** (Next note).")
        try:
            self.worklist.submit(request.username, held.note.pk, *decisions(held.review))
        except ValueError as error:  # ClaimError, or a decision the store refuses
            return self.show(held, f"**{error}**")
        shown = self.next_note(Held(), request)
        return (*shown[:-1], f"Submitted note {held.note.note_id}. " + shown[-1])

    def give_back(self, held: Held, request, skip: bool):
        if held.note is None:
            return self.show(held)
        try:
            self.worklist.release(request.username, held.note.pk, skip=skip)
        except ValueError as error:
            return self.show(held, f"**{error}**")
        return self.show(Held(), f"{'Skipped' if skip else 'Released'} note {held.note.note_id}.")

    def select(self, held: Held, event):  # event: gr.SelectData, the clicked cell
        held.review.selected = held.review.codes[event.index[0]]["code"]
        return self.show(held)

    def decide(self, held: Held, accepted: bool):
        try:
            held.review.decide(accepted)
        except ValueError as error:
            return self.show(held, f"**{error}**")
        return self.show(held)

    def find(self, query):
        return matching_codes(self.gr, self.search, query)

    def add(self, code, held: Held):
        if held.note is None or not code:
            return self.show(held, "**Take a note, search for a code, pick it, then press Add.**")
        held.review.add(self.coder(held.review.note, codes=[code])[0])
        return self.show(held)

    def analytics(self, request):
        """The analytics tab's tables and plots (admins only; a coder sees a message)."""
        if self.guard.roles.get(request.username) != "admin":
            empty = pd.DataFrame()
            return "The analytics are for admins (role admin in the login file).", empty, empty, empty, empty, empty
        report = acceptance_report(self.worklist.engine)
        by_coder = report["by_coder"]
        bars = by_coder.melt(id_vars="coder", value_vars=["precision", "recall"], var_name="measure")
        bars["bar"] = bars["coder"].astype(str) + " · " + bars["measure"]  # side by side, not stacked
        counts = [most_often(report["by_code"], column) for column in ("rejected", "added_by_hand")]
        return ("Submitted notes only. Precision: the share of suggestions accepted; recall: the share of submitted "
                "codes that were suggestions.", report["by_model"], by_coder, bars,
                *[self.gr.BarPlot(value=frame, y_lim=[0, max(1, int(frame.iloc[:, 1].max() if len(frame) else 1))])
                  for frame in counts])  # from 0: a count of 1 is a bar, not the axis


@dataclasses.dataclass
class WorklistPage:
    """The page (`blocks`) and the components its events read and write."""

    blocks: object
    held: object
    status: object
    next_button: object
    submit_button: object
    skip_button: object
    release_button: object
    message: object
    table: object
    accept_button: object
    reject_button: object
    query: object
    found: object
    add_button: object
    history: object
    evidence: object
    analytics: list  # the analytics tab's views: about, by model, by coder, and three plots
    refresh: object

    def views(self) -> list:
        return [self.held, self.status, self.table, self.evidence, self.history, self.message]


def worklist_tab(gr) -> dict:
    """The worklist tab's components, laid out."""
    parts = {"status": gr.Markdown(elem_id="status")}
    with gr.Row():
        parts["next_button"] = gr.Button("Next note", variant="primary", elem_id="next-button")
        parts["submit_button"] = gr.Button("Submit", variant="primary", elem_id="submit-button")
        parts["skip_button"] = gr.Button("Skip", elem_id="skip-button")
        parts["release_button"] = gr.Button("Release", elem_id="release-button")
    parts["message"] = gr.Markdown(elem_id="message")
    with gr.Row():
        with gr.Column(scale=3):
            parts["table"] = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "str", "number", "str", "str"],
                                          wrap=True, interactive=False, elem_id="codes",
                                          label="Codes (click a row to see its evidence)")
            with gr.Row():
                parts["accept_button"] = gr.Button("Accept selected code", elem_id="accept-button")
                parts["reject_button"] = gr.Button("Reject selected code", elem_id="reject-button")
            parts["query"] = gr.Textbox(label="Add a code: search by code or description", elem_id="code-query")
            parts["found"] = gr.Radio(choices=[], label="Matching codes (the first 20)", elem_id="code-found")
            parts["add_button"] = gr.Button("Add", elem_id="add-button")
            parts["history"] = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, label="History of this note",
                                            elem_id="history")
        with gr.Column(scale=2):
            parts["evidence"] = gr.HTML(label="Evidence", elem_id="evidence-panel")
    return parts


def analytics_tab(gr) -> tuple[list, object]:
    """The analytics tab's views (about, tables, plots) and its refresh button."""
    about = gr.Markdown(elem_id="analytics-about")
    refresh = gr.Button("Refresh", elem_id="refresh-analytics")
    by_model = gr.Dataframe(label="By model", interactive=False, elem_id="by-model")
    by_coder = gr.Dataframe(label="By coder", interactive=False, elem_id="by-coder")
    coder_plot = gr.BarPlot(x="bar", y="value", color="measure", y_lim=[0, 1], elem_id="coder-plot", x_title="coder",
                            title="Suggestions by coder: precision and recall")
    with gr.Row():
        rejected_plot = gr.BarPlot(x="code", y="rejected", sort="-y", title="Most often rejected", elem_id="rejected-plot")
        added_plot = gr.BarPlot(x="code", y="added_by_hand", sort="-y", title="Most often added by hand",
                                   elem_id="added-plot")
    return [about, by_model, by_coder, coder_plot, rejected_plot, added_plot], refresh


def page_layout(gr, summary: str) -> WorklistPage:
    with gr.Blocks(title="MSMN coding worklist", analytics_enabled=False) as blocks:
        held = gr.State(Held())
        gr.Markdown(f"# ICD coding worklist\n{summary}", elem_id="model-summary")
        with gr.Tab("Worklist", elem_id="worklist-tab"):
            parts = worklist_tab(gr)
        with gr.Tab("Analytics", elem_id="analytics-tab"):
            analytics, refresh = analytics_tab(gr)
    return WorklistPage(blocks, held, analytics=analytics, refresh=refresh, **parts)


def connect(gr, page: WorklistPage, events: WorklistEvents) -> None:
    """Each component's events to their handlers (inside the page's Blocks context); the handlers that act for
    the coder get the request (its user name) through Gradio's gr.Request annotation."""

    def next_note(held, request: gr.Request):
        return events.next_note(held, request)

    def submit(held, request: gr.Request):
        return events.submit(held, request)

    def skip(held, request: gr.Request):
        return events.give_back(held, request, skip=True)

    def release(held, request: gr.Request):
        return events.give_back(held, request, skip=False)

    def select(held, event: gr.SelectData):
        return events.select(held, event)

    def analytics(request: gr.Request):
        return events.analytics(request)

    views = page.views()
    for button, handler in ((page.next_button, next_note), (page.submit_button, submit), (page.skip_button, skip),
                            (page.release_button, release)):
        button.click(handler, [page.held], views)
    page.table.select(select, [page.held], views)
    page.accept_button.click(lambda held: events.decide(held, True), [page.held], views)
    page.reject_button.click(lambda held: events.decide(held, False), [page.held], views)
    page.query.input(events.find, [page.query], [page.found], trigger_mode="always_last")
    page.query.submit(events.find, [page.query], [page.found])
    page.add_button.click(events.add, [page.found, page.held], views)
    page.refresh.click(analytics, None, page.analytics)
    page.blocks.load(analytics, None, page.analytics)


def build_worklist_page(worklist: Worklist, coder: ICDCodingPipeline, guard: LoginGuard, summary: str):
    """The worklist page (Blocks), wired to its handlers."""
    import gradio as gr

    page = page_layout(gr, summary)
    with page.blocks:
        connect(gr, page, WorklistEvents(gr, worklist, coder, guard))
    return page.blocks
