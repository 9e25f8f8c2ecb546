"""`msmn-code`: codes clinical notes with a trained MSMN checkpoint; JSON lines out, an HTML report if asked.

    msmn-code msmn-codiesp-d-50 note1.txt note2.txt --html report.html
    msmn-code msmn-codiesp-d-50 notes.jsonl.gz --top-k 5 --output codes.jsonl [--resume]
    msmn-code msmn-codiesp-d-all-codes note.txt --all-codes --top-k 10 [--operating-point unseen]
    cat note.txt | msmn-code msmn-codiesp-d-50
    torchrun --nproc_per_node 2 -m msmn_code msmn-codiesp-d-50 notes.jsonl.gz --output codes.jsonl

Inputs: a `.jsonl` or `.jsonl.gz` file holds one note per line ({"text": ..., "id": ...}, id
optional); any other file is one note; no file or "-" reads one note from standard input. Each
output line is {"id": ..., "codes": [the icd-coding pipeline's predictions]}, in input order. The
HTML report is one self-contained page: each note, and per predicted code the note with that code's
evidence marked.

Notes are read, coded and written in batches, so memory does not grow with their number. Every
input line and the output files are checked before the model loads; `--output` and `--html` are
written through a `.partial` file and renamed when complete, and `--resume` continues what a stopped
run left. Under torchrun each process codes every K-th note and the output is the file one process
writes. Errors name the file and line, never the text of a note."""

import argparse
import dataclasses
import html
import itertools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from datasets_scripts import InputError
from datasets_scripts.files import read_json_lines, write_atomically
from evidence_markup import EVIDENCE_STYLE, code_line, note_with_evidence
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
                if not isinstance(record.get("text"), str):
                    raise InputError(f'{path}, line {line_number}: needs a "text" field holding the note.')
                count += 1
                yield {"id": record.get("id", f"{path.name}:{line_number}"), "text": record["text"]}
            if count == 0:
                raise InputError(f'{path}: holds no notes; give one JSON line {{"text": ...}} per note.')


def count_notes(paths: list[str], stdin_note: str | None) -> int:
    """How many notes the files hold, reading each once: every line is checked before the model loads."""
    return sum(1 for _ in read_notes(paths, stdin_note))


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
details.code { margin: .5rem 0; border: 1px solid #ddd; border-radius: 6px; padding: .3rem .6rem; }
summary { cursor: pointer; }
""" + EVIDENCE_STYLE


def report_header(model_name: str, num_notes: int, selection: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ICD coding report</title>'
        f"<style>{REPORT_STYLE}</style></head><body><h1>ICD coding report</h1>"
        f"<p>Model <code>{html.escape(model_name)}</code>, {num_notes} notes, {html.escape(selection)}. "
        "Open a code to see the spans of the note that its attention weighted most, each as dark as its "
        "share of the attention.</p>\n"
    )


def report_section(note: dict, codes: list[dict]) -> str:
    """One note of the HTML report, per predicted code the note with the code's evidence marked."""
    items = [f'<details class="code" data-code="{html.escape(code["code"])}"{" open" if index == 0 else ""}>'
             f"<summary>{code_line(code)}</summary>{note_with_evidence(note['text'], code)}</details>"
             for index, code in enumerate(codes)]
    body = "".join(items) or '<p class="none">No code predicted.</p>'
    return f'<section class="note"><h2>{html.escape(str(note["id"]))}</h2>{body}</section>\n'


REPORT_FOOTER = "</body></html>\n"


# --- outputs: checked first, written through a .partial file, resumable ----------------------------------


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def check_outputs(args) -> None:
    """The output files can be written, and none of them is an input, before any coding."""
    inputs = [Path(name).resolve() for name in args.notes if name != "-"] + [Path(args.model).resolve()]
    outputs = [("--output", args.output), ("--html", args.html)]
    for option, name in outputs:
        if name is None:
            continue
        path = Path(name).resolve()
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


def kept_lines(path: Path, expected_ids: Iterator, source: Path) -> Iterator[str]:
    """The whole lines of a stopped run's output (`source`, read from `path`; a half-written last line
    is dropped), each checked to code the next note of the input."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                return  # cut off mid-line by the stop: coded again
            try:
                written = json.loads(line)["id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{source}, line {number}: not a line msmn-code writes; --resume cannot continue it.") from None
            expected = next(expected_ids, None)
            if written != expected:
                raise InputError(f"{source}, line {number}: codes note {written!r}, but note {number} of the input is "
                                 f"{expected!r}; --resume continues only an output of the same notes in the same order.")
            yield line


def batches(notes: Iterator[dict], size: int) -> Iterator[list[dict]]:
    return iter(lambda: list(itertools.islice(notes, size)), [])


def code_into(file, coder, notes: Iterator[dict], options: dict, batch_size: int, progress, report=None) -> None:
    """Codes the notes batch by batch: one whole JSON line per note into `file` (binary), flushed after
    each batch, and one section per note into `report` (binary) where there is one."""
    for batch in batches(notes, batch_size):
        predictions = coder([note["text"] for note in batch], batch_size=batch_size, **options)
        lines = "".join(json.dumps({"id": note["id"], "codes": codes}, ensure_ascii=False) + "\n"
                        for note, codes in zip(batch, predictions))
        file.write(lines.encode("utf-8"))  # UTF-8 JSON lines whatever the terminal's locale
        file.flush()
        if report is not None:
            report.write("".join(map(report_section, batch, predictions)).encode("utf-8"))
        progress.update(len(batch))


def write_output(path: Path, coder, notes: Iterator[dict], args, progress, report=None) -> None:
    """The JSON lines of `notes` (and their report sections, into `report`) written to `path` through
    `path.partial`, renamed when complete; with --resume, the whole lines a stopped run left (in the
    .partial, or in `path`) are kept, not coded again."""
    options = coding_options(args)
    source = next((candidate for candidate in (partial_path(path), path) if args.resume and candidate.is_file()), None)
    kept = source.rename(path.with_name(path.name + ".resumed")) if source else None

    def write(file):
        if kept is not None:
            for line in kept_lines(kept, (note["id"] for note in notes), source):
                file.write(line.encode("utf-8"))
                progress.update(1)
        code_into(file, coder, notes, options, args.batch_size, progress, report)

    try:
        write_atomically(path, write)
    except InputError:
        if kept is not None:  # an output of other notes: left as it was
            kept.replace(source)
        raise
    finally:  # otherwise the new .partial holds every kept line, and more
        if kept is not None and kept.exists():
            kept.unlink()


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


def code_in_one_process(coder, notes: Iterator[dict], total: int, args) -> None:
    with tqdm(total=total, unit="notes", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty()) as progress:

        def write_codes(report=None):
            if args.output:
                write_output(Path(args.output), coder, notes, args, progress, report)
            else:
                code_into(sys.stdout.buffer, coder, notes, coding_options(args), args.batch_size, progress, report)

        if not args.html:
            write_codes()
            return
        header = report_header(Path(args.model).name, total, selection(args, coder)).encode("utf-8")

        def write_report(report):
            report.write(header)
            write_codes(report)
            report.write(REPORT_FOOTER.encode("utf-8"))

        write_atomically(Path(args.html), write_report)


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


def code_in_shards(coder, notes: Iterator[dict], total: int, args, shard: Shard) -> None:
    """Each rank codes its share into its own part file; rank 0 then interleaves the parts into --output,
    so the file is the one a single process writes."""
    share = len(range(shard.rank, total, shard.world_size))
    with tqdm(total=share, unit="notes", file=sys.stderr, disable=args.quiet or shard.rank or not sys.stderr.isatty()) as progress:
        write_output(shard.part(Path(args.output)), coder, shard.notes(notes), args, progress)
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

        write_atomically(Path(args.output), interleave)
        for part in parts:
            part.unlink()
    torch.distributed.barrier()


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
    try:
        check_outputs(args)  # before the model loads: bad input fails fast, and nothing is lost
        check_sharding(args, shard)
        check_note_files(args.notes)
        stdin_note = read_stdin_note(args.notes)
        total = count_notes(args.notes, stdin_note)
        coder = load_coder(args.model, shard.device(args.device))
        if args.all_codes:
            coder.candidate_ranker()  # the checkpoint carries candidates, or a clear error
        coder([], **coding_options(args))  # checks the options (e.g. a threshold outside (0, 1)) before coding
        notes = read_notes(args.notes, stdin_note)
        if shard.world_size > 1:
            torch.distributed.init_process_group("gloo")
            code_in_shards(coder, notes, total, args, shard)
            torch.distributed.destroy_process_group()
        else:
            code_in_one_process(coder, notes, total, args)
    except ValueError as error:  # InputError and the pipeline's bad-argument errors
        sys.exit(f"msmn-code: error: {error}")


if __name__ == "__main__":
    main()
