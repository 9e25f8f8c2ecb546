"""`msmn-serve`: a checkpoint's REST API, for hospital systems that code notes over HTTP.

    msmn-serve msmn-codiesp-d-50                                      # http://127.0.0.1:8000/docs
    msmn-serve msmn-codiesp-d-50 --host 0.0.0.0 --token-file tokens.txt
    curl -s localhost:8000/v1/code -H 'Content-Type: application/json' -d '{"inputs": "Fever and cough."}'

Without `--token-file` it listens on this machine only. The code encoding is computed once at start;
requests that arrive together are coded in one batch. The access log holds methods and paths only:
no request body, no token, no note text.
"""

import argparse
import sys
from pathlib import Path

import torch

from datasets_scripts import InputError
from msmn.checkpoints import checkpoint_identity, load_coder, model_card_data
from msmn.network import check_port, is_loopback
from msmn.serving.api import Limits, create_app
from msmn.serving.batching import DynamicBatcher
from msmn.serving.fhir import label_set_system


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="msmn-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint folder (train.py's --output_dir)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1: this machine only; another "
                                                            "address needs --token-file)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--token-file", type=Path, help="bearer tokens the clients send, one per line")
    parser.add_argument("--max-note-chars", type=int, default=200_000, help="longest note (default 200,000 characters)")
    parser.add_argument("--max-notes", type=int, default=64, help="most notes per request (default 64)")
    parser.add_argument("--max-batch", type=int, default=16, help="most notes coded together (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long a request waits for others to share its batch (default 10 ms)")
    parser.add_argument("--device", help="torch device, e.g. cuda:0 (default cpu)")
    args = parser.parse_args(argv)
    for name in ("max_note_chars", "max_notes", "max_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give 1 or more.")
    if args.max_wait_ms < 0:
        parser.error(f"--max-wait-ms {args.max_wait_ms}: give 0 or more.")
    return args


def read_tokens(path: Path) -> list[str]:
    """The tokens of --token-file (blank lines and # comments skipped); the message never repeats a line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--token-file {path}: cannot be read ({type(error).__name__}).") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise InputError(f"--token-file {path}: holds no token (one per line).")
    short = [number for number, token in enumerate(tokens, 1) if len(token) < 16]
    if short:
        raise InputError(f"--token-file {path}: token {short[0]} is under 16 characters; use long random tokens "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))').")
    return tokens


def model_description(coder, folder: Path) -> dict:
    """What GET /v1/model answers: the model's identity, codes, threshold and its card's summary."""
    config = coder.model.config
    card = model_card_data(folder)
    codes = [config.id2label[index] for index in range(config.num_labels)]
    descriptions = config.code_descriptions or [None] * len(codes)
    description = {
        "name": folder.name, "sha256": checkpoint_identity(folder), "num_codes": len(codes),
        "codes": [{"code": code, "description": text} for code, text in zip(codes, descriptions)],
        "threshold": config.threshold, "max_note_tokens": config.max_note_tokens,
        "training_note_words": config.training_note_words,
        "card": {"datasets": card.datasets, "license": card.license, "language": card.language} if card else None,
    }
    if coder.has_candidates():
        ranker = coder.candidate_ranker()
        description["candidates"] = {"code_system": ranker.code_system, "count": ranker.num_candidates,
                                     "operating_points": sorted(ranker.operating_points)}
    return description


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_arguments(argv)
    try:
        tokens = read_tokens(args.token_file) if args.token_file else []
        if not tokens and not is_loopback(args.host):
            raise InputError(f"--host {args.host} serves the network: give --token-file with the clients' bearer "
                             "tokens, or serve 127.0.0.1.")
        check_port(args.host, args.port)
        coder = load_coder(args.model, args.device)
    except ValueError as error:  # InputError: a bad folder, token file, address or port
        sys.exit(f"msmn-serve: error: {error}")
    with torch.no_grad():
        coder.model.msmn.code_encoding()  # once, here: every request reuses it
    folder = Path(args.model)
    codes = list(coder.model.config.id2label.values())
    app = create_app(DynamicBatcher(coder, args.max_batch, args.max_wait_ms / 1000), model_description(coder, folder),
                     label_set_system(codes), tokens, Limits(args.max_note_chars, args.max_notes))
    print(f"msmn-serve: serving {folder.name} on http://{args.host}:{args.port}/ (the API's pages: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
