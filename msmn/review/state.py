"""The review of one note, without Gradio: the coder's decisions on the model's suggestions, the search
for a code to add, the note checks, and the export files (JSON and CSV)."""

import csv
import dataclasses
import io
import json
import uuid
from pathlib import Path

from datasets_scripts.files import write_atomically
from modeling_msmn import ICDCodingPipeline, split_words

EXPORT_FIELDS = ["code", "description", "probability", "accepted", "added"]
# A note longer than this is refused with a message, before any work (a pasted 20 MB text would hold a
# worker for tens of seconds); the model reads only its first max_note_tokens words in any case.
MAX_NOTE_CHARS = 200_000


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
                ("unseen · " if code.get("in_label_set") is False else "") + ("review · " if code.get("review") else "")
                + (code["description"] or ""),
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
                all_codes: bool = False, review_from: float = 0.0) -> tuple[list[dict], str]:
    """(the model's codes for the note, '' or warnings: the model read only the note's beginning, or the
    note is much shorter than those the model was trained on). With `all_codes`, every candidate code of
    the checkpoint is ranked (above the score threshold chosen on dev, or the top k), not only the label set.
    With `review_from` (a probability below the threshold), the codes between it and the threshold come
    too, marked for review.

    Raises ValueError for a note without any word: there is nothing to code.
    """
    if all_codes:  # the operating point's score threshold, not the slider's probability
        options = {"candidates": "all", **({"top_k": int(top_k)} if top_k else {})}
    else:
        options = {"top_k": int(top_k)} if top_k else {"threshold": threshold}
        if review_from:
            options["review_threshold"] = review_from
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
    if coder.has_candidates():
        codes, descriptions, terms = coder.candidate_ranker().code_table(config)
        return CodeSearch(codes, terms, descriptions)
    codes = [config.id2label[index] for index in range(config.num_labels)]
    return CodeSearch(codes, config.code_terms, config.code_descriptions)


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
        write_atomically(folder / name, lambda file: file.write(text.encode("utf-8")))
    return str(folder / "codes.json"), str(folder / "codes.csv")
