"""`msmn-code`: codes clinical notes with a trained MSMN checkpoint; JSON lines out, an HTML report if asked.

    msmn-code msmn-codiesp-d-50 note1.txt note2.txt --html report.html
    msmn-code msmn-codiesp-d-50 notes.jsonl --top-k 5 --output codes.jsonl
    cat note.txt | msmn-code msmn-codiesp-d-50

Inputs: a `.jsonl` or `.jsonl.gz` file holds one note per line ({"text": ..., "id": ...}, id
optional); any other file is one note; no file or "-" reads one note from standard input. Each
output line is {"id": ..., "codes": [the icd-coding pipeline's predictions]}. The HTML report is one
self-contained page: each note, and per predicted code the note with that code's evidence marked.
Errors name the file and line, never the text of a note.
"""

import argparse
import html
import json
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer

from datasets_scripts.files import InputError, read_json_lines
from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification


def load_coder(model_dir: str, device: str | None) -> ICDCodingPipeline:
    """The icd-coding pipeline over a checkpoint folder, after checking that it holds an MSMN model."""
    folder = Path(model_dir)
    config = read_config(folder)
    check_weights(folder, config)
    if not (folder / "tokenizer.json").is_file():
        raise InputError(f"{folder}: no tokenizer.json (the model's vocabulary). Copy the whole folder that train.py "
                         "wrote: the tokenizer is saved beside the weights.")
    device = check_device(device or "cpu")
    # This package's own classes serve the folder: no remote code runs.
    model = MSMNForSequenceClassification.from_pretrained(folder, config=config)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return ICDCodingPipeline(model=model, tokenizer=tokenizer, task="icd-coding", device=device)


def read_config(folder: Path) -> MSMNConfig:
    """The folder's config.json, checked to be an MSMN config."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(
            f"{folder}: no config.json, so not a model folder. Give the folder that train.py wrote "
            "(its --output_dir) or one saved with ICDCodingPipeline.save_pretrained."
        )
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{config_file}: not valid JSON; copy config.json again from where the model was saved.") from None
    if not isinstance(settings, dict):
        raise InputError(f"{config_file}: holds a JSON {type(settings).__name__}, not a model configuration (an object).")
    model_type = settings.get("model_type")
    if model_type != "msmn":
        raise InputError(f"{folder}: model_type is {model_type!r}, not an MSMN checkpoint (model_type 'msmn').")
    return MSMNConfig.from_pretrained(folder)


def check_weights(folder: Path, config: MSMNConfig) -> None:
    """model.safetensors is there, whole, and holds the tensors that config.json describes, in their shapes."""
    weights_file = folder / "model.safetensors"
    if not weights_file.is_file():
        raise InputError(f"{folder}: no model.safetensors (the weights). Copy the whole folder that train.py wrote; "
                         "an authors' checkpoint is converted with convert_authors_checkpoint.")
    try:
        with safe_open(weights_file, "pt") as weights:
            stored = {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except SafetensorError:
        raise InputError(f"{weights_file}: damaged or truncated ({weights_file.stat().st_size:,} bytes), not "
                         "readable as safetensors; copy it again or train the model again.") from None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {name: list(tensor.shape) for name, tensor in MSMNForSequenceClassification(config).state_dict().items()}
    different = [name for name in expected if stored.get(name) != expected[name]]
    if different:
        name = different[0]
        raise InputError(
            f"{folder}: config.json does not match model.safetensors ({len(different)} of {len(expected)} tensors differ; {name}: "
            f"{stored.get(name, 'missing')} in the weights, {expected[name]} from config.json with "
            f"{config.num_labels} codes). Use the config.json saved with these weights."
        )


def check_device(device: str) -> str:
    """`device` if torch can use it here."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputError(f"--device {device!r}: not a torch device; give e.g. cpu, cuda or cuda:1.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch finds no CUDA GPU on this machine; leave --device out to use the CPU.")
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), counted from 0.")
    return device


def utf8_note(data: bytes, source: str) -> str:
    """One note's text, decoded as is: line ends are kept, so evidence offsets index the file's text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text; convert it (e.g. iconv -t utf-8).") from None


def read_notes(paths: list[str]) -> list[dict]:
    """[{"id": ..., "text": ...}] from the given files, or one note from standard input."""
    notes = []
    for name in paths or ["-"]:
        if name == "-":
            notes.append({"id": "stdin", "text": utf8_note(sys.stdin.buffer.read(), "standard input")})
            continue
        path = Path(name)
        if not path.name.endswith((".jsonl", ".jsonl.gz")):
            if not path.is_file():
                raise InputError(f"{path}: no such file.")
            notes.append({"id": path.name, "text": utf8_note(path.read_bytes(), str(path))})
            continue
        notes_before = len(notes)
        for line_number, record in read_json_lines(path, '{"text": ..., "id": ...}'):
            if not isinstance(record.get("text"), str):
                raise InputError(f'{path}, line {line_number}: needs a "text" field holding the note.')
            notes.append({"id": record.get("id", f"{path.name}:{line_number}"), "text": record["text"]})
        if len(notes) == notes_before:
            raise InputError(f'{path}: holds no notes; give one JSON line {{"text": ...}} per note.')
    return notes


EVIDENCE_STYLE = """
.code-id { font-family: ui-monospace, monospace; font-weight: bold; }
.probability { color: #555; }
.note-text { white-space: pre-wrap; line-height: 1.6; border-left: 3px solid #eee; padding-left: .8rem; }
mark { background: rgba(255, 153, 0, calc(.15 + .75 * var(--intensity, 1))); color: inherit; border-radius: 3px; padding: 0 1px; }
.none { color: #777; font-style: italic; }
"""
REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d1d1f; }
section.note { border-top: 2px solid #888; margin-top: 2rem; }
details.code { margin: .5rem 0; border: 1px solid #ddd; border-radius: 6px; padding: .3rem .6rem; }
summary { cursor: pointer; }
""" + EVIDENCE_STYLE


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


def render_report(notes: list[dict], predictions: list[list[dict]], model_name: str, selection: str) -> str:
    """A self-contained HTML page: per note, per predicted code, the note with the code's evidence marked."""
    sections = []
    for note, codes in zip(notes, predictions):
        items = []
        for index, code in enumerate(codes):
            synonym = f' · best synonym: “{html.escape(code["synonym"])}”' if code["synonym"] else ""
            items.append(
                f'<details class="code" data-code="{html.escape(code["code"])}"{" open" if index == 0 else ""}>'
                f'<summary><span class="code-id">{html.escape(code["code"])}</span> '
                f'{html.escape(code["description"] or "")} <span class="probability">'
                f'{100 * code["probability"]:.1f}%{synonym}</span></summary>'
                f'<div class="note-text">{marked_text(note["text"], code["evidence"])}</div></details>'
            )
        body = "".join(items) or '<p class="none">No code predicted.</p>'
        sections.append(f'<section class="note"><h2>{html.escape(str(note["id"]))}</h2>{body}</section>')
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ICD coding report</title>'
        f"<style>{REPORT_STYLE}</style></head><body><h1>ICD coding report</h1>"
        f"<p>Model <code>{html.escape(model_name)}</code>, {len(notes)} notes, {html.escape(selection)}. "
        "Open a code to see the spans of the note that its attention weighted most, each as dark as its "
        f"share of the attention.</p>{''.join(sections)}</body></html>\n"
    )


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-code", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint folder (train.py's --output_dir)")
    parser.add_argument("notes", nargs="*", help="note files (.txt: one note; .jsonl[.gz]: one per line); - for stdin")
    parser.add_argument("--output", help="write the JSON lines here instead of standard output")
    parser.add_argument("--html", help="also write a self-contained HTML report to this file")
    parser.add_argument("--top-k", type=int, help="the K most probable codes per note instead of the tuned threshold")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's)")
    parser.add_argument("--num-evidence", type=int, default=3, help="evidence spans per code (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="notes per forward pass (default 8)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    try:
        notes = read_notes(args.notes)  # before the model loads: bad input fails fast
        coder = load_coder(args.model, args.device)
        options = {"top_k": args.top_k, "threshold": args.threshold, "num_evidence": args.num_evidence}
        predictions = coder(
            [note["text"] for note in notes],
            batch_size=args.batch_size,
            **{name: value for name, value in options.items() if value is not None},
        )
    except ValueError as error:  # InputError and the pipeline's bad-argument errors
        sys.exit(f"msmn-code: error: {error}")
    lines = "".join(
        json.dumps({"id": note["id"], "codes": codes}, ensure_ascii=False) + "\n" for note, codes in zip(notes, predictions)
    )
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
    else:
        sys.stdout.buffer.write(lines.encode("utf-8"))  # UTF-8 JSON lines whatever the terminal's locale
        sys.stdout.flush()
    if args.html:
        if args.top_k:
            selection = f"the {args.top_k} most probable codes per note"
        else:
            selection = f"codes with probability above {args.threshold or coder.model.config.threshold:.3f}"
        report = render_report(notes, predictions, Path(args.model).name, selection)
        Path(args.html).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
