"""The evidence markup that the HTML report (`msmn-code --html`) and the review app (`msmn-app`)
share: a note with one code's evidence spans in <mark>s, each as dark as its share of the attention,
under a line naming the code, its description, probability and best synonym. Everything from the
note or the model is HTML-escaped."""

import html

EVIDENCE_STYLE = """
.code-id { font-family: ui-monospace, monospace; font-weight: bold; }
.probability { color: #555; }
.note-text { white-space: pre-wrap; line-height: 1.6; border-left: 3px solid #eee; padding-left: .8rem; }
mark { background: rgba(255, 153, 0, calc(.15 + .75 * var(--intensity, 1))); color: inherit; border-radius: 3px; padding: 0 1px; }
.none { color: #777; font-style: italic; }
.unseen { font-size: .75em; font-weight: bold; color: #fff; background: #7a4fb5; border-radius: 3px; padding: 0 4px; }
"""


def code_line(code: dict) -> str:
    """The code, its description, its probability (a candidate outside the label set: its score and an
    "unseen" badge) and the synonym that matched best, as HTML."""
    synonym = f" · best synonym: “{html.escape(code['synonym'])}”" if code["synonym"] else ""
    value = f"{100 * code['probability']:.1f}%" if code["probability"] is not None else f"score {code['score']:.2f}"
    badge = (' <span class="unseen" title="outside the label set: ranked from its terms alone">unseen</span>'
             if code.get("in_label_set") is False else "")
    return (f'<span class="code-id">{html.escape(code["code"])}</span>{badge} {html.escape(code["description"] or "")} '
            f'<span class="probability">{value}{synonym}</span>')


def marked_text(text: str, evidence: list[dict]) -> str:
    """The note as HTML, each evidence span in a <mark> (spans of one code never overlap), as intense as
    its share of the attention relative to the strongest span."""
    pieces, position = [], 0
    ranked = sorted(enumerate(evidence, start=1), key=lambda item: item[1]["start"])
    strongest = max((span["weight"] for span in evidence), default=0.0) or 1.0
    for rank, span in ranked:
        pieces.append(html.escape(text[position : span["start"]]))
        title = f"evidence {rank}: {100 * span['weight']:.0f}% of the attention"
        pieces.append(
            f'<mark data-rank="{rank}" data-start="{span["start"]}" data-end="{span["end"]}" '
            f'data-weight="{span["weight"]:.4f}" style="--intensity: {span["weight"] / strongest:.3f}" title="{title}">'
            f"{html.escape(text[span['start'] : span['end']])}</mark>"
        )
        position = span["end"]
    pieces.append(html.escape(text[position:]))
    return "".join(pieces)


def note_with_evidence(text: str, code: dict) -> str:
    """The note, with `code`'s evidence marked, in the block both pages style as the note."""
    return f'<div class="note-text">{marked_text(text, code["evidence"])}</div>'
