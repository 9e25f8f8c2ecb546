"""`msmn-worklist`: a team's coding worklist in a database — load notes coded by a model, measure how coders
received its suggestions, export the reviewed notes for training, upgrade the schema. Coders work through the
notes in `msmn-app MODEL --db ...`.

    msmn-worklist load MODEL notes.jsonl[.gz] --db reviews.sqlite     # or --db postgresql+psycopg://user@host/db
    torchrun --nproc_per_node=4 -m msmn.worklist load MODEL notes.jsonl --db postgresql+psycopg://...
    msmn-worklist report --db reviews.sqlite [--csv FOLDER]
    msmn-worklist export --db reviews.sqlite --output FOLDER
    msmn-worklist upgrade --db reviews.sqlite
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
import transformers

from datasets_scripts import InputError
from msmn.checkpoints import checkpoint_identity, load_coder
from msmn.coding.shards import Shard
from msmn.worklist.analytics import acceptance_report, most_often
from msmn.worklist.database import open_worklist
from msmn.worklist.export import export_reviews, write_report_csv
from msmn.worklist.loading import check_notes, load_notes, summary
from msmn.worklist.store import Worklist


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-worklist", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="code notes with a model and queue them")
    load.add_argument("model", help="checkpoint folder (train.py's --output_dir)")
    load.add_argument("notes", nargs="+", type=Path, help='JSON lines of {"id": ..., "text": ...} (.jsonl, .jsonl.gz)')
    load.add_argument("--batch-size", type=int, default=8, help="notes per forward pass (default 8)")
    load.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    report = commands.add_parser("report", help="print the acceptance figures (by model, coder and code)")
    report.add_argument("--csv", type=Path, help="also write them as by_model.csv, by_coder.csv, by_code.csv here")
    export = commands.add_parser("export", help="write the submitted notes as train/validation/test JSON lines")
    export.add_argument("--output", type=Path, required=True, help="a folder (train.py --train_file FOLDER/train.jsonl ...)")
    upgrade = commands.add_parser("upgrade", help="upgrade a worklist made by an older release (back it up first)")
    for command in (load, report, export, upgrade):
        command.add_argument("--db", required=True, help="a SQLite file (created owner-only) or a SQLAlchemy URL")
    args = parser.parse_args(argv)
    if args.command == "load" and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: give 1 or more.")
    return args


def load(args) -> None:
    """Checks the notes and the database, loads the model, and codes into the worklist."""
    shard = Shard.from_environment()
    check_notes(args.notes)  # before the model loads: bad input fails fast, and nothing is written
    worklist = Worklist(open_worklist(args.db))
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    coder = load_coder(args.model, shard.device(args.device))
    model = checkpoint_identity(Path(args.model))
    added, kept = load_notes(worklist, coder, model, args.notes, args.batch_size, shard, args.quiet)
    if shard.world_size > 1:
        torch.distributed.init_process_group("gloo")
        counts = torch.tensor([added, kept])
        torch.distributed.all_reduce(counts)
        added, kept = counts.tolist()
        torch.distributed.destroy_process_group()
    if shard.rank == 0:
        print(summary(added, kept, model))


def print_report(engine, csv_folder: Path | None) -> None:
    """The acceptance figures as text tables (the codes most often rejected and added), and as CSV files."""
    report = acceptance_report(engine)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for name, table in report.items():
            shown = table.head(20) if name == "by_code" else table
            print(f"{name.replace('_', ' ')}:\n{shown.to_string(index=False) if len(table) else '(no submitted notes)'}\n")
        for column in ("rejected", "added_by_hand"):
            print(f"most often {column.replace('_', ' ')}: " + ", ".join(
                f"{row.code} ({row[column]})" for _, row in most_often(report["by_code"], column).iterrows()))
    if csv_folder is not None:
        check_folder(csv_folder)
        print("written: " + ", ".join(str(path) for path in write_report_csv(engine, csv_folder)))


def check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: a file; give a folder to write into.")


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    try:
        if args.command == "load":
            load(args)
        elif args.command == "report":
            print_report(open_worklist(args.db), args.csv)
        elif args.command == "export":
            check_folder(args.output)
            counts = export_reviews(open_worklist(args.db), args.output)
            print(json.dumps({"folder": str(args.output), **counts}))
        elif args.command == "upgrade":
            open_worklist(args.db, upgrade=True).dispose()
            print(f"msmn-worklist: {args.db if '://' not in args.db else 'the database'} is at the current schema.")
    except ValueError as error:  # InputError and the pipeline's bad-argument errors
        sys.exit(f"msmn-worklist: error: {error}")
    except KeyboardInterrupt:
        print("msmn-worklist: stopped; the notes stored so far are kept: run the same command to go on.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
