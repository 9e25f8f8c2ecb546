"""`msmn-app`: a review page for coders — paste a note, check each suggested code against its evidence,
accept, reject or add codes, export the result.

    msmn-app msmn-codiesp-d-50                # a checkpoint folder saved by train.py, or a Hub model id
    msmn-app msmn-codiesp-d-50 --db reviews.sqlite --auth-file logins   # a team's worklist (msmn-worklist)
    python app.py --model msmn-codiesp-d-50   # the same; as a Hugging Face Space, app.py reads MSMN_MODEL

The code encoding is computed once at start-up. Note text never goes to the logs: messages give
counts and offsets only. Every file that holds note text or codes (Gradio's uploads and the exports)
lives in one temporary folder of the app, removed when the app stops: on exit, Ctrl-C (SIGINT) or
SIGTERM (`kill`, `docker stop`, a Space restart), or at the next start after a kill.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError
from starlette.middleware import Middleware

from datasets_scripts import InputError
from msmn.checkpoints import load_coder, model_card_data
from msmn.network import check_port
from msmn.review.access import ClientAddress, LoginGuard, claim_app_folder, logins, silence_gradio_inputs
from msmn.review.page import PAGE_STYLE, build_page, example_notes, model_summary
from msmn.review.state import MAX_NOTE_CHARS

MODEL_VARIABLE = "MSMN_MODEL"  # the checkpoint a Space (or `python app.py` without --model) serves


def model_folder(model: str) -> Path:
    """A local checkpoint folder, or the download of a Hub model id."""
    if Path(model).is_dir():
        return Path(model)
    try:
        return Path(snapshot_download(model))
    except (HFValidationError, OSError) as error:  # hub errors (offline, not found) are OSErrors
        raise InputError(
            f"{model}: no such folder, and no Hub model of that id could be downloaded ({type(error).__name__}). "
            "Give the folder that train.py wrote (its --output_dir) or a Hub model id."
        ) from None


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-app", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help=f"checkpoint folder or Hub model id (default: ${MODEL_VARIABLE})")
    parser.add_argument("--model", dest="model_option", help="the same, as an option (python app.py --model ...)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (default: $GRADIO_SERVER_NAME if set, else 127.0.0.1, this machine "
                             "only; 0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default: $GRADIO_SERVER_PORT if set, else 7860)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", action="append", default=[],
                        help="ask for this login (repeat for more users; visible to others in the process list: "
                             "prefer --auth-file)")
    parser.add_argument("--auth-file", type=Path, help="ask for a login: a file of USER:PASSWORD lines")
    parser.add_argument("--db", help="serve the coding worklist of this database (msmn-worklist load fills it): a SQLite "
                                     "file or a SQLAlchemy URL; needs --auth-file (the user name is the coder)")
    parser.add_argument("--claim-minutes", type=float, default=30,
                        help="with --db: a note claimed and left idle this long goes back to the queue (default 30)")
    parser.add_argument("--max-note-chars", type=int, default=MAX_NOTE_CHARS,
                        help=f"refuse longer notes, with a message (default {MAX_NOTE_CHARS:,})")
    args = parser.parse_args(argv)
    if args.max_note_chars < 1:
        parser.error(f"--max-note-chars {args.max_note_chars}: give a number of characters, 1 or more.")
    if args.db and not (args.auth or args.auth_file):
        parser.error("--db serves a worklist, where the login names the coder: give --auth-file (USER:PASSWORD[:ROLE] lines).")
    if args.claim_minutes <= 0:
        parser.error(f"--claim-minutes {args.claim_minutes}: give a number of minutes above 0.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    model = args.model_option or args.model or os.environ.get(MODEL_VARIABLE)
    if not model:
        sys.exit(f"msmn-app: error: give a checkpoint folder or Hub model id (msmn-app MODEL, or set {MODEL_VARIABLE}).")
    try:
        auth = logins(args.auth, args.auth_file)
        check_port(args.host, args.port)
        folder = model_folder(model)
        coder = load_coder(str(folder), args.device)
    except ValueError as error:  # InputError: not a folder, not an MSMN checkpoint, a bad login file, a busy port
        sys.exit(f"msmn-app: error: {error}")
    with torch.no_grad():
        coder.model.msmn.code_encoding()  # encoded once here; every click reuses it
    card = model_card_data(folder)
    language = (card.language[0] if isinstance(card.language, list) else card.language) if card and card.language else "en"
    app_folder, lock = claim_app_folder()  # every file with note text or codes, removed at the end
    os.environ["GRADIO_TEMP_DIR"] = str(app_folder / "gradio")  # Gradio's uploads and its copies of the exports
    tempfile.tempdir = str(app_folder)  # and any other temporary file of this process
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        silence_gradio_inputs()
        if args.db:
            serve_worklist(args, coder, model_summary(coder, folder, card), LoginGuard(auth))
            return
        (app_folder / "exports").mkdir()
        page = build_page(coder, model_summary(coder, folder, card), example_notes(language), app_folder / "exports",
                          args.max_note_chars)
        print(f"msmn-app: serving {folder.name} on http://{args.host}:{args.port}/", flush=True)
        try:
            page.launch(server_name=args.host, server_port=args.port, ssr_mode=False, css=PAGE_STYLE, quiet=True,
                        auth=LoginGuard(auth).login if auth else None, max_file_size=4 * args.max_note_chars,  # UTF-8: ≤ 4 bytes a character
                        app_kwargs={"middleware": [Middleware(ClientAddress)]})
        except KeyboardInterrupt:  # SIGINT or SIGTERM while launch was starting up (later, launch handles it)
            page.close()
    finally:
        shutil.rmtree(app_folder, ignore_errors=True)
        os.close(lock)


def serve_worklist(args, coder, summary: str, guard: LoginGuard) -> None:
    """The worklist's page and API on uvicorn (it stops on Ctrl-C and SIGTERM itself)."""
    import uvicorn

    from msmn.worklist.app import worklist_app

    try:
        app = worklist_app(args.db, args.claim_minutes, coder, guard, summary, PAGE_STYLE, 4 * args.max_note_chars)
    except ValueError as error:  # the database: cannot connect, not a worklist, another schema
        sys.exit(f"msmn-app: error: {error}")
    print(f"msmn-app: serving the worklist on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def stop_on_sigterm(signum, frame):
    """SIGTERM stops the app as Ctrl-C does: Gradio closes the server, and main removes the app's folder."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
