"""The HTML report of `msmn-code --html`: one self-contained page, each note once with its codes to
choose from, the chosen code's evidence marked in the note (CSS, no script)."""

import dataclasses
import html
from typing import BinaryIO

from msmn.evidence_markup import EVIDENCE_STYLE, chosen_code_style, code_line, marked_for_codes


REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d1d1f; }
section.note { border-top: 2px solid #888; margin-top: 2rem; }
label.code { display: block; margin: .3rem 0; padding: .2rem .5rem; border: 1px solid #ddd; border-radius: 6px; cursor: pointer; }
label.code:has(input:checked) { border-color: #f90; }
.short { color: #8a4b00; font-weight: bold; }
""" + EVIDENCE_STYLE


def report_header(model_name: str, num_notes: int, selection: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ICD coding report</title>'
        f"<style>{REPORT_STYLE}</style></head><body><h1>ICD coding report</h1>"
        f"<p>Model <code>{html.escape(model_name)}</code>, {num_notes} notes, {html.escape(selection)}. "
        "Choose a code to see the spans of the note that its attention weighted most, each as dark as its "
        "share of the attention.</p>\n"
    )


def report_section(note: dict, info: dict, number: int) -> str:
    """One note of the HTML report: its codes as a choice (the first chosen), then the note once, with the
    chosen code's evidence marked."""
    codes = info["codes"]
    short = ('<p class="short">A short note: fewer words than 99% of the notes the model was trained on. Its '
             "codes are less certain than their probabilities say: check each one.</p>" if info["short_note"] else "")
    choices = "".join(f'<label class="code" data-code="{html.escape(code["code"])}"><input type="radio" class="c{index}" '
                      f'name="note-{number}"{" checked" if index == 0 else ""}> {code_line(code)}</label>'
                      for index, code in enumerate(codes))
    body = f"{choices}{marked_for_codes(note['text'], codes)}" if codes else '<p class="none">No code predicted.</p>'
    return f'<section class="note coded-note"><h2>{html.escape(str(note["id"]))}</h2>{short}{body}</section>\n'


@dataclasses.dataclass
class Report:
    """The HTML report being written (a binary file), note by note: how many notes, the most codes of one."""

    file: BinaryIO
    num_notes: int = 0
    max_codes: int = 0

    def add(self, notes: list[dict], coded: list[dict]) -> None:
        sections = [report_section(note, info, self.num_notes + index) for index, (note, info) in enumerate(zip(notes, coded))]
        self.file.write("".join(sections).encode("utf-8"))
        self.num_notes += len(notes)
        self.max_codes = max([self.max_codes] + [len(info["codes"]) for info in coded])

    def close(self) -> None:
        """The end of the page, with the style that shows each note's chosen code (as many as a note has)."""
        self.file.write(f"<style>{chosen_code_style(self.max_codes)}</style></body></html>\n".encode("utf-8"))
