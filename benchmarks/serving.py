"""`msmn-serve` under load: 1, then 16 concurrent clients for 60 s each, every client posting one CodiEsp
test report at a time (`top_k` 5), against one server on the CPU. Prints, per run, notes/s, p50/p95
latency, errors, answers that differ from the pipeline's codes for their own note (cross-talk), and the
server's resident memory every 10 s; then `msmn-code`'s notes/s on the same reports (model loading
included), for comparison. The load is printed too.

    python benchmarks/serving.py msmn-codiesp-d-50 [--clients 1 16] [--seconds 60]
"""

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import datasets_scripts
from msmn.checkpoints import load_coder


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def resident_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) // 1024


def post(url: str, token: str, note: str) -> list[str]:
    body = json.dumps({"inputs": note, "parameters": {"top_k": 5}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return [code["code"] for code in json.loads(response.read())["results"][0]["codes"]]


def load(url: str, token: str, notes: list[str], expected: list[list[str]], clients: int, seconds: float,
         server: int) -> dict:
    latencies, errors, cross_talk, memory = [], [], [0], [resident_mib(server)]
    deadline = time.monotonic() + seconds

    def client(index: int):
        position = index
        while time.monotonic() < deadline:
            note = position % len(notes)
            start = time.perf_counter()
            try:
                codes = post(url, token, notes[note])
            except OSError as error:
                errors.append(type(error).__name__)
                continue
            latencies.append(time.perf_counter() - start)
            cross_talk[0] += codes != expected[note]
            position += clients

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    while time.monotonic() < deadline:
        time.sleep(min(10, max(0, deadline - time.monotonic())))
        memory.append(resident_mib(server))
    for thread in threads:
        thread.join()
    quantiles = statistics.quantiles(latencies, n=20)
    return {"clients": clients, "notes_per_s": len(latencies) / seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * quantiles[18], "answers": len(latencies), "errors": len(errors), "cross_talk": cross_talk[0],
            "server_mib_every_10_s": memory}


def bulk_notes_per_s(model: str, notes: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "notes.jsonl"
        path.write_text("".join(json.dumps({"id": str(i), "text": note}) + "\n" for i, note in enumerate(notes)))
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "msmn-code"), model, str(path), "--top-k", "5", "--quiet",
                        "--output", str(Path(folder) / "codes.jsonl")], check=True)
        return len(notes) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a checkpoint folder trained on codiesp-d-50")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    notes = list(datasets_scripts.load("codiesp", config="codiesp-d-50").splits["test"]["text"])
    coder = load_coder(args.model, None)
    expected = [[code["code"] for code in codes] for codes in coder(notes, top_k=5, batch_size=16)]
    token, port = secrets.token_urlsafe(32), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as tokens:
        tokens.write(token + "\n")
    server = subprocess.Popen([str(Path(sys.executable).parent / "msmn-serve"), args.model, "--port", str(port),
                               "--token-file", tokens.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        for clients in args.clients:
            result = load(f"http://127.0.0.1:{port}/v1/code", token, notes, expected, clients, args.seconds, server.pid)
            print(json.dumps({key: round(value, 1) if isinstance(value, float) else value for key, value in result.items()}))
    finally:
        server.terminate()
        os.unlink(tokens.name)
    print(json.dumps({"msmn_code_notes_per_s": round(bulk_notes_per_s(args.model, notes), 1)}))
    print(f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
