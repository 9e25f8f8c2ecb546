"""`msmn-code`: codes clinical notes with a trained MSMN checkpoint; JSON lines out, an HTML report if asked.

    msmn-code msmn-codiesp-d-50 note1.txt note2.txt --html report.html
    msmn-code msmn-codiesp-d-50 notes.jsonl.gz --top-k 5 --output codes.jsonl [--resume]
    msmn-code msmn-codiesp-d-all-codes note.txt --all-codes --top-k 10 [--operating-point unseen]
    cat note.txt | msmn-code msmn-codiesp-d-50
    torchrun --nproc_per_node 2 -m msmn.coding msmn-codiesp-d-50 notes.jsonl.gz --output codes.jsonl

Inputs: a `.jsonl` or `.jsonl.gz` file holds one note per line ({"text": ..., "id": ...}, id
optional); any other file is one note; no file or "-" reads one note from standard input. Each
output line is {"id": ..., "codes": [the icd-coding pipeline's predictions]}, in input order, with
"short_note": true where the note is much shorter than those the model was trained on. The HTML
report is one self-contained page: each note once, its codes to choose from, and the chosen code's
evidence marked in the note.

Notes are read, coded and written in batches, so memory does not grow with their number. Every
input line and the output files are checked before the model loads; `--output` and `--html` are
written through a `.partial` file and renamed when complete, and `--resume` continues what a stopped
run left. Under torchrun each process codes every K-th note and the output is the file one process
writes. Errors name the file and line, never the text of a note."""

import argparse
import contextlib
import dataclasses
import html
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open
import transformers
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from datasets_scripts import InputError
from datasets_scripts.files import read_json_lines
from msmn.evidence_markup import EVIDENCE_STYLE, chosen_code_style, code_line, marked_for_codes
from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification
from msmn.outputs import (KeptLines, OutputLock, checkpoint_identity, disk_message, finish, partial_path,
                          resumable_lines, start)


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
    try:
        return MSMNConfig.from_pretrained(folder)
    except ValueError as error:
        raise InputError(f"{config_file}: {error} Use the config.json saved with the weights.") from None


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


def is_json_lines(path: Path) -> bool:
    return path.name.lower().endswith((".jsonl", ".jsonl.gz"))


def check_note_files(paths: list[str]) -> None:
    """Every note file is there and of a kind msmn-code reads, before any work."""
    for name in paths:
        path = Path(name)
        if name == "-" or is_json_lines(path):
            continue
        if path.name.lower().endswith((".json", ".json.gz")):
            raise InputError(f'{path}: a .json file; give JSON lines instead (.jsonl: one {{"text": ..., "id": ...}} '
                             "object per line), e.g. jq -c '.[]' notes.json > notes.jsonl.")
        if not path.is_file():
            raise InputError(f"{path}: no such file.")


def read_notes(paths: list[str], stdin_note: str | None = None) -> Iterator[dict]:
    """{"id": ..., "text": ...} of each note of the given files, in order, streaming; with no file,
    `stdin_note` (the note read from standard input)."""
    for name in paths or ["-"]:
        path = Path(name)
        if name == "-":
            yield {"id": "stdin", "text": stdin_note}
        elif not is_json_lines(path):
            if not path.is_file():
                raise InputError(f"{path}: no such file.")
            yield {"id": path.name, "text": utf8_note(path.read_bytes(), str(path))}
        else:
            count = 0
            for line_number, record in read_json_lines(path, '{"text": ..., "id": ...}'):
                yield checked_note(record, f"{path}, line {line_number}", f"{path.name}:{line_number}")
                count += 1
            if count == 0:
                raise InputError(f'{path}: holds no notes; give one JSON line {{"text": ...}} per note.')


def checked_note(record: dict, source: str, default_id: str) -> dict:
    """{"id", "text"} of a JSON line, its text a note that can be written back as UTF-8."""
    if not isinstance(record.get("text"), str):
        raise InputError(f'{source}: needs a "text" field holding the note.')
    note_id = record.get("id", default_id)
    try:
        (record["text"] + json.dumps(note_id, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{source}: holds a lone surrogate escape (such as \\ud83e), which is no character; fix "
                         "the text where it was written (it was cut inside an emoji or other character).") from None
    return {"id": note_id, "text": record["text"]}


def count_notes(paths: list[str], stdin_note: str | None) -> int:
    """How many notes the files hold, reading each once: every line is checked before the model loads.
    Repeated ids and a file given twice are counted in a warning."""
    seen, repeated, first_repeated = set(), 0, None
    for note in read_notes(paths, stdin_note):
        key = json.dumps(note["id"])
        if key in seen:
            repeated, first_repeated = repeated + 1, first_repeated or note["id"]
        seen.add(key)
    files = [Path(name).resolve() for name in paths if name != "-"]
    twice = sorted({str(name) for name in files if files.count(name) > 1})
    if twice:
        print(f"msmn-code: warning: {twice} given more than once: their notes are coded each time.", file=sys.stderr)
    if repeated:
        print(f"msmn-code: warning: {repeated} notes have the id of an earlier note (the first: {first_repeated!r}); "
              "each is coded, and the output has one line per note, in input order.", file=sys.stderr)
    return len(seen) + repeated


def read_stdin_note(paths: list[str]) -> str | None:
    """The note on standard input, where one is to be read (no file, or "-")."""
    if paths and "-" not in paths:
        return None
    if sys.stdin.isatty():
        print("msmn-code: waiting for a note on standard input (end it with Ctrl-D), or give note files: "
              "msmn-code MODEL notes.jsonl", file=sys.stderr)
    return utf8_note(sys.stdin.buffer.read(), "standard input")


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


# --- outputs: checked first, locked, written through a .partial file, resumable ---------------------------


def check_outputs(args) -> None:
    """The output files can be written, and none of them is an input, before any coding."""
    inputs = [Path(name).resolve() for name in args.notes if name != "-"] + [Path(args.model).resolve()]
    outputs = [("--output", args.output), ("--html", args.html)]
    for option, name in outputs:
        if name is None:
            continue
        path = Path(name).resolve()
        if path.is_dir():
            raise InputError(f"{option} {name}: that is a folder; give a file name (e.g. {Path(name) / 'codes.jsonl'}).")
        if not path.parent.is_dir():
            raise InputError(f"{option} {name}: the folder {path.parent} does not exist; create it first.")
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise InputError(f"{option} {name}: cannot be written here (no permission).")
        if path in inputs:
            raise InputError(f"{option} {name}: that is one of the inputs; give another file name.")
    if args.output and args.html and Path(args.output).resolve() == Path(args.html).resolve():
        raise InputError(f"--output and --html are the same file ({args.output}); give two names.")
    if args.resume and not args.output:
        raise InputError("--resume continues the file of --output: give --output.")
    if args.resume and args.html:
        raise InputError("--resume does not continue an HTML report: run --html on its own, without --resume.")


def check_no_stopped_run(path: Path) -> None:
    """Without --resume, a stopped run's .partial is never overwritten."""
    if partial_path(path).is_file():
        raise InputError(f"{partial_path(path)} holds what a stopped run coded: run again with --resume to continue it, "
                         "or delete it to code every note again.")


def batches(notes: Iterator[dict], size: int) -> Iterator[list[dict]]:
    return iter(lambda: list(itertools.islice(notes, size)), [])


def code_into(file, coder, notes: Iterator[dict], options: dict, batch_size: int, progress, report=None) -> None:
    """Codes the notes batch by batch: one whole JSON line per note into `file` (binary), flushed after
    each batch, and one section per note into `report` (a Report) where there is one."""
    for batch in batches(notes, batch_size):
        coded = coder([note["text"] for note in batch], batch_size=batch_size, note_info=True, **options)
        lines = "".join(json.dumps(output_line(note, info), ensure_ascii=False) + "\n" for note, info in zip(batch, coded))
        file.write(lines.encode("utf-8"))  # UTF-8 JSON lines whatever the terminal's locale
        file.flush()
        if report is not None:
            report.add(batch, coded)
        progress.update(len(batch))


def output_line(note: dict, info: dict) -> dict:
    """A note's output line: its id and codes, and "short_note": true where it is much shorter than the
    notes the model was trained on."""
    return {"id": note["id"], "codes": info["codes"], **({"short_note": True} if info["short_note"] else {})}


def write_output(path: Path, coder, notes: Iterator[dict], options: dict, batch_size: int, progress,
                 resume: bool, record: dict, report=None) -> None:
    """The JSON lines of `notes` appended to `path.partial` (their report sections to `report`), renamed to
    `path` when complete. With `resume`, the whole lines that a stopped run left (in the .partial, or a
    finished `path`) are checked against the input and kept as they are; only the notes after them are coded."""
    kept = resumable_lines(path, (note["id"] for note in notes), record) if resume else KeptLines()
    progress.update(kept.count)
    if kept.source == path:  # a finished output: complete, or of other notes
        if next(notes, None) is None:
            return
        raise InputError(f"{path}: a finished output of {kept.count} notes, and the input has more; --resume continues "
                         "a stopped run's .partial file. Code the input into another file.")
    file = start(path, record, kept)
    try:
        code_into(file, coder, notes, options, batch_size, progress, report)
        finish(path, file)
    except OSError as error:
        raise InputError(f"{disk_message(error, partial_path(path))}: the notes coded before are kept there; fix "
                         "that, then run the same command with --resume to continue.") from None
    finally:
        with contextlib.suppress(OSError):  # buffered bytes a full disk refused: a half line, cut on resume
            file.close()


def write_whole(path: Path, write) -> None:
    """`path` written by `write(file)` through `path.partial`, renamed when complete; on any stop the
    .partial is removed (an HTML report holds note text and cannot be resumed)."""
    partial = partial_path(path)
    try:
        with open(partial, "wb") as file:
            write(file)
        partial.replace(path)
    except OSError as error:
        raise InputError(f"{disk_message(error, path)}: nothing was written there; fix that and run again.") from None
    finally:
        partial.unlink(missing_ok=True)


def coding_options(args) -> dict:
    options = {"top_k": args.top_k, "threshold": args.threshold, "num_evidence": args.num_evidence,
               "candidates": "all" if args.all_codes else None, "operating_point": args.operating_point}
    return {name: value for name, value in options.items() if value is not None}


def selection(args, coder) -> str:
    if args.all_codes:
        ranker = coder.candidate_ranker()
        point_name = args.operating_point or "best_map"
        among = (f"among all {ranker.num_labels + len(ranker.extra_codes):,} {ranker.code_system} candidates "
                 f"(operating point {point_name})")
        threshold = args.threshold if args.threshold is not None else ranker.point(point_name).threshold
        return f"the {args.top_k} best codes per note {among}" if args.top_k else f"codes {among} with score above {threshold:.3f}"
    if args.top_k:
        return f"the {args.top_k} most probable codes per note"
    return f"codes with probability above {args.threshold or coder.model.config.threshold:.3f}"


def code_in_one_process(coder, notes: Iterator[dict], total: int, args, record: dict) -> None:
    options = coding_options(args)
    with tqdm(total=total, unit="notes", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty()) as progress:

        def write_codes(report=None):
            if args.output:
                write_output(Path(args.output), coder, notes, options, args.batch_size, progress, args.resume, record,
                             report)
            else:
                code_into(sys.stdout.buffer, coder, notes, options, args.batch_size, progress, report)

        if not args.html:
            write_codes()
            return
        header = report_header(Path(args.model).name, total, selection(args, coder)).encode("utf-8")

        def write_report(file):
            file.write(header)
            report = Report(file)
            write_codes(report)
            report.close()

        write_whole(Path(args.html), write_report)


# --- sharding over the processes torchrun starts ----------------------------------------------------------


@dataclasses.dataclass
class Shard:
    """This process's place among those torchrun started (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Shard":
        names = {"rank": "RANK", "world_size": "WORLD_SIZE", "local_rank": "LOCAL_RANK",
                 "local_world_size": "LOCAL_WORLD_SIZE"}
        return cls(**{field: int(os.environ[name]) for field, name in names.items() if name in os.environ})

    def notes(self, notes: Iterator[dict]) -> Iterator[dict]:
        """Every world_size-th note, from this rank on: each process its share, by position."""
        return itertools.islice(notes, self.rank, None, self.world_size)

    def device(self, device: str | None) -> str:
        """Each rank its own GPU (LOCAL_RANK); on CPUs each process its share of the cores."""
        if self.world_size == 1:
            return device or "cpu"
        if device and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world_size))
        return device or "cpu"

    def part(self, output: Path) -> Path:
        return output.with_name(f"{output.name}.rank{self.rank}-of-{self.world_size}")


def check_sharding(args, shard: Shard) -> None:
    if shard.world_size > 1 and not args.output:
        raise InputError(f"{shard.world_size} processes write one file: give --output.")
    if shard.world_size > 1 and (args.html or not args.notes or "-" in args.notes):
        raise InputError("under torchrun, give note files (not standard input) and no --html; "
                         "write the HTML report with one process.")


def code_in_shards(coder, notes: Iterator[dict], total: int, args, shard: Shard, record: dict) -> None:
    """Each rank codes its share into its own part file; rank 0 then interleaves the parts into --output,
    so the file is the one a single process writes."""
    share = len(range(shard.rank, total, shard.world_size))
    with tqdm(total=share, unit="notes", file=sys.stderr, disable=args.quiet or shard.rank or not sys.stderr.isatty()) as progress:
        write_output(shard.part(Path(args.output)), coder, shard.notes(notes), coding_options(args), args.batch_size,
                     progress, args.resume, record)
    torch.distributed.barrier()
    if shard.rank == 0:
        parts = [Shard(rank, shard.world_size).part(Path(args.output)) for rank in range(shard.world_size)]

        def interleave(file):
            readers = [open(part, "rb") for part in parts]
            try:
                for index in range(total):
                    file.write(readers[index % shard.world_size].readline())
            finally:
                for reader in readers:
                    reader.close()

        write_whole(Path(args.output), interleave)
        for part in parts:
            part.unlink()
    torch.distributed.barrier()


def written_files(args, shard: Shard) -> list[Path]:
    """The files this process writes: its part under torchrun, --output on rank 0, --html."""
    output = [Path(args.output)] if args.output and shard.rank == 0 else []
    part = [shard.part(Path(args.output))] if args.output and shard.world_size > 1 else []
    return part + output + ([Path(args.html)] if args.html else [])


def run_record(args, model_folder: Path) -> dict:
    """What shapes the output: the checkpoint (its files' hash) and the coding options."""
    return {"model": checkpoint_identity(model_folder), "options": coding_options(args)}


# --- the command ------------------------------------------------------------------------------------------


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-code", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint folder (train.py's --output_dir)")
    parser.add_argument("notes", nargs="*", help="note files (.txt: one note; .jsonl[.gz]: one per line); - for stdin")
    parser.add_argument("--output", help="write the JSON lines here instead of standard output")
    parser.add_argument("--resume", action="store_true",
                        help="continue the --output that a stopped run left: keep its whole lines, code the rest")
    parser.add_argument("--html", help="also write a self-contained HTML report to this file")
    parser.add_argument("--top-k", type=int, help="the K most probable codes per note instead of the tuned threshold")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's); with "
                                                           "--all-codes, a threshold on the score")
    parser.add_argument("--all-codes", action="store_true",
                        help="rank every candidate code the checkpoint carries (train.py --candidate_codes), codes "
                             "outside its label set included")
    parser.add_argument("--operating-point", help="with --all-codes: best_map (default) or unseen (favours codes "
                                                  "absent from training)")
    parser.add_argument("--num-evidence", type=int, default=3, help="evidence spans per code (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="notes per forward pass (default 8)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu; under torchrun: cuda gives each "
                                         "process its own GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is no terminal)")
    args = parser.parse_intermixed_args(argv)  # options before or after the note files
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: give 1 or more.")
    if args.operating_point and not args.all_codes:
        parser.error("--operating-point chooses how --all-codes ranks: add --all-codes.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    shard = Shard.from_environment()
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    try:
        with contextlib.ExitStack() as locks:
            code_notes(args, shard, locks)
    except ValueError as error:  # InputError and the pipeline's bad-argument errors
        sys.exit(f"msmn-code: error: {error}")
    except KeyboardInterrupt:
        kept = [partial_path(path) for path in written_files(args, shard) if partial_path(path).is_file()]
        print("msmn-code: stopped" + (f"; the notes coded so far are kept in {kept[0]}: run the same command with "
                                      "--resume to continue." if kept and args.output else "."), file=sys.stderr)
        sys.exit(130)


def code_notes(args, shard: Shard, locks: contextlib.ExitStack) -> None:
    """Checks every input and output, locks the outputs, loads the model, and codes."""
    check_outputs(args)  # before the model loads: bad input fails fast, and nothing is lost
    check_sharding(args, shard)
    for path in written_files(args, shard):
        locks.enter_context(OutputLock(path))
    if args.output and not args.resume:
        for path in written_files(args, shard)[:-1 if args.html else None]:
            check_no_stopped_run(path)
    check_note_files(args.notes)
    stdin_note = read_stdin_note(args.notes)
    total = count_notes(args.notes, stdin_note)
    coder = load_coder(args.model, shard.device(args.device))
    if args.all_codes:
        coder.candidate_ranker()  # the checkpoint carries candidates, or a clear error
    coder([], **coding_options(args))  # checks the options (e.g. a threshold outside (0, 1)) before coding
    record = run_record(args, Path(args.model)) if args.output else {}
    notes = read_notes(args.notes, stdin_note)
    if shard.world_size > 1:
        torch.distributed.init_process_group("gloo")
        code_in_shards(coder, notes, total, args, shard, record)
        torch.distributed.destroy_process_group()
    else:
        code_in_one_process(coder, notes, total, args, record)


if __name__ == "__main__":
    main()
