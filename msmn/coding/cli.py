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
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from datasets_scripts import InputError
from msmn.checkpoints import checkpoint_identity, load_coder
from msmn.coding.notes import check_note_files, count_notes, read_notes, read_stdin_note
from msmn.coding.report import Report, report_header
from msmn.coding.shards import Shard, check_sharding, code_in_shards
from msmn.coding.writing import Coding, code_into, write_output
from msmn.outputs import OutputLock, partial_path, write_whole
from msmn.serving.fhir import label_set_system


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


def coding_options(args) -> dict:
    options = {"top_k": args.top_k, "threshold": args.threshold, "num_evidence": args.num_evidence,
               "candidates": "all" if args.all_codes else None, "operating_point": args.operating_point,
               "review_threshold": args.review_threshold}
    return {name: value for name, value in options.items() if value is not None}


def selection(coder, options: dict) -> str:
    """Which codes the report lists, in words, for the coding `options`."""
    top_k, threshold = options.get("top_k"), options.get("threshold")
    if options.get("candidates"):
        ranker = coder.candidate_ranker()
        point_name = options.get("operating_point", "best_map")
        among = (f"among all {ranker.num_candidates:,} {ranker.code_system} candidates "
                 f"(operating point {point_name})")
        threshold = threshold if threshold is not None else ranker.point(point_name).threshold
        return f"the {top_k} best codes per note {among}" if top_k else f"codes {among} with score above {threshold:.3f}"
    if top_k:
        return f"the {top_k} most probable codes per note"
    return f"codes with probability above {threshold or coder.model.config.threshold:.3f}"


def code_in_one_process(coding: Coding, notes: Iterator[dict], total: int, args, record: dict) -> None:
    with tqdm(total=total, unit="notes", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty()) as progress:

        def write_codes(report=None):
            if args.output:
                write_output(Path(args.output), coding, notes, progress, args.resume, record, report)
            else:
                code_into(sys.stdout.buffer, coding, notes, progress, report)

        if not args.html:
            write_codes()
            return
        header = report_header(Path(args.model).name, total, selection(coding.coder, coding.options)).encode("utf-8")

        def write_report(file):
            file.write(header)
            report = Report(file)
            write_codes(report)
            report.close()

        write_whole(Path(args.html), write_report)


def written_files(output: str | None, html: str | None, shard: Shard) -> list[Path]:
    """The files this process writes: its part under torchrun, --output on rank 0, --html (last)."""
    own = [Path(output)] if output and shard.rank == 0 else []
    part = [shard.part(Path(output))] if output and shard.world_size > 1 else []
    return part + own + ([Path(html)] if html else [])


def run_record(options: dict, model_folder: Path) -> dict:
    """What shapes the output: the checkpoint (its files' hash) and the coding options."""
    return {"model": checkpoint_identity(model_folder), "options": options}


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
    parser.add_argument("--review-threshold", type=float,
                        help="a review band: also the codes above this, below the threshold, each line's codes marked "
                             "review: true (for a coder to check) or false (confident)")
    parser.add_argument("--format", choices=["jsonl", "fhir"], default="jsonl",
                        help="jsonl: each line the note's id and codes (default); fhir: each line a FHIR R4 Bundle of "
                             "Condition resources")
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
        kept = [partial_path(path) for path in written_files(args.output, args.html, shard) if partial_path(path).is_file()]
        print("msmn-code: stopped" + (f"; the notes coded so far are kept in {kept[0]}: run the same command with "
                                      "--resume to continue." if kept and args.output else "."), file=sys.stderr)
        sys.exit(130)


def code_notes(args, shard: Shard, locks: contextlib.ExitStack) -> None:
    """Checks every input and output, locks the outputs, loads the model, and codes."""
    check_outputs(args)  # before the model loads: bad input fails fast, and nothing is lost
    check_sharding(shard, args.output, args.html, args.notes)
    for path in written_files(args.output, args.html, shard):
        locks.enter_context(OutputLock(path))
    if args.output and not args.resume:
        for path in written_files(args.output, None, shard):  # the JSON lines' files (a report is never resumed)
            check_no_stopped_run(path)
    check_note_files(args.notes)
    stdin_note = read_stdin_note(args.notes)
    total = count_notes(args.notes, stdin_note)
    coder = load_coder(args.model, shard.device(args.device))
    if args.all_codes:
        coder.candidate_ranker()  # the checkpoint carries candidates, or a clear error
    options = coding_options(args)
    coder([], **options)  # checks the options (e.g. a threshold outside (0, 1)) before coding
    fhir_system = label_set_system(list(coder.model.config.id2label.values())) if args.format == "fhir" else None
    coding = Coding(coder, options, args.batch_size, fhir_system)
    record = run_record({**coding.options, "format": args.format}, Path(args.model)) if args.output else {}
    notes = read_notes(args.notes, stdin_note)
    if shard.world_size > 1:
        torch.distributed.init_process_group("gloo")
        code_in_shards(coding, notes, total, Path(args.output), args.resume, args.quiet, shard, record)
        torch.distributed.destroy_process_group()
    else:
        code_in_one_process(coding, notes, total, args, record)


if __name__ == "__main__":
    main()
