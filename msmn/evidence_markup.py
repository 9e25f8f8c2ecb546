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


def marked_for_codes(text: str, codes: list[dict]) -> str:
    """The note as HTML once, with the evidence of every code marked: each stretch of text that spans
    cover is a <mark class="c0 c2" data-codes="0:1 2:3"> (code index:evidence rank), holding each
    covering code's intensity as --i0, --i2; `chosen_code_style` shows only the chosen code's marks."""
    spans = []  # (start, end, code index, rank, intensity)
    for index, code in enumerate(codes):
        strongest = max((span["weight"] for span in code["evidence"]), default=0.0) or 1.0
        spans += [(span["start"], span["end"], index, rank, span["weight"] / strongest)
                  for rank, span in enumerate(code["evidence"], start=1)]
    cuts = sorted({0, len(text)} | {span[0] for span in spans} | {span[1] for span in spans})
    pieces = []
    for start, end in zip(cuts, cuts[1:]):
        over = [span for span in spans if span[0] <= start and end <= span[1]]
        piece = html.escape(text[start:end])
        if not over:
            pieces.append(piece)
            continue
        classes = " ".join(f"c{index}" for _, _, index, _, _ in over)
        ranks = " ".join(f"{index}:{rank}" for _, _, index, rank, _ in over)
        intensities = ";".join(f"--i{index}: {intensity:.3f}" for _, _, index, _, intensity in over)
        pieces.append(f'<mark class="{classes}" data-codes="{ranks}" style="{intensities}">{piece}</mark>')
    return f'<div class="note-text">{"".join(pieces)}</div>'


def chosen_code_style(num_codes: int) -> str:
    """CSS that shows, in each note of `marked_for_codes`, the marks of the code whose radio button
    (class c<index>) is checked, each as dark as its share of that code's attention."""
    rules = [".coded-note mark { background: none; }"]
    rules += [f".coded-note:has(input.c{index}:checked) mark.c{index} {{ background: rgba(255, 153, 0, calc(.15 + .75 * "
              f"var(--i{index}))); }}" for index in range(num_codes)]
    return "\n".join(rules)
