"""Serving a checkpoint: the Inference Endpoints handler every folder carries, FHIR output validated by
fhir.resources, and `msmn-serve` as a real server over HTTP — tokens, limits, the review band, fuzzing
from its own OpenAPI schema, 16 concurrent clients without cross-talk, logs without notes or tokens."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import make_model
from fhir.resources.R4B.bundle import Bundle
from synthetic_corpus import ROOT, run, synthetic_notes
from test_pipeline import assert_same_predictions
from transformers import pipeline

from modeling_msmn import ICDCodingPipeline
from msmn.coding import cli as msmn_code

MSMN_SERVE = str(Path(sys.executable).parent / "msmn-serve")  # the console script pyproject.toml installs
TOKEN = "test-token-" + "x" * 24
NOTES = [note["text"] for note in synthetic_notes(16, seed=21)]


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


@pytest.fixture(scope="module")
def served(tokenizer, tmp_path_factory):
    """(checkpoint folder, base URL, log file) of a running `msmn-serve` with a token file."""
    folder = tmp_path_factory.mktemp("served")
    ICDCodingPipeline(model=make_model(tokenizer), tokenizer=tokenizer).save_pretrained(folder / "model")
    (folder / "tokens").write_text(f"# the clients' tokens\n{TOKEN}\n")
    port = free_port()
    log = folder / "server.log"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([MSMN_SERVE, str(folder / "model"), "--port", str(port), "--token-file",
                                str(folder / "tokens")], stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and call(url, "GET", "/health")[0] != 200:
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    yield folder / "model", url, log
    process.terminate()
    process.wait(timeout=30)


def call(url: str, method: str, path: str, body=None, token: str | None = TOKEN, accept: str | None = None):
    """(status, content type, decoded JSON body) of one request; (0, "", None) when nothing answers."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
               **({"Accept": accept} if accept else {})}
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("content-type", ""), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), json.loads(error.read() or b"null")
    except OSError:
        return 0, "", None


def test_every_checkpoint_carries_an_inference_endpoints_handler(small_checkpoint, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_checkpoint, copy)  # the folder alone, as the Hub holds it
    assert (copy / "requirements.txt").read_text().startswith("transformers>=5,<6")
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from handler import EndpointHandler; "
              "handler = EndpointHandler(sys.argv[1]); "
              "print(json.dumps(handler({'inputs': json.loads(sys.argv[2]), 'parameters': {'top_k': 2}})))")
    result = run([sys.executable, "-c", script, str(copy), json.dumps(NOTES[:3])], tmp_path,
                 environment={"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    coder = pipeline("icd-coding", model=str(small_checkpoint), trust_remote_code=True)
    assert_same_predictions(json.loads(result.stdout.splitlines()[-1]), coder(NOTES[:3], top_k=2))


def test_msmn_code_writes_fhir_bundles_and_a_review_band(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps({"id": f"n{i}", "text": note}) + "\n"
                                                  for i, note in enumerate(NOTES[:4])))
    coder = pipeline("icd-coding", model=str(small_checkpoint), trust_remote_code=True)
    everything = sorted(code["probability"] for codes in coder(NOTES[:4], threshold=0.01) for code in codes)
    threshold = everything[len(everything) // 2]  # half the codes above it, half in the band
    msmn_code.main([str(small_checkpoint), "notes.jsonl", "--format", "fhir", "--threshold", str(threshold),
                    "--review-threshold", "0.01", "--output", "bundles.jsonl"])
    lines = (tmp_path / "bundles.jsonl").read_text().splitlines()
    assert len(lines) == 4
    conditions = []
    for line in lines:
        bundle = Bundle.model_validate_json(line)  # FHIR R4(B) structure, checked by fhir.resources
        assert bundle.type == "collection"
        conditions += [entry.resource for entry in bundle.entry]
    assert conditions and all(c.verificationStatus.coding[0].code == "unconfirmed" for c in conditions)
    assert {c.category[0].coding[0].code for c in conditions} == {"encounter-diagnosis"}
    assert {c.code.coding[0].system for c in conditions} == {"http://hl7.org/fhir/sid/icd-10-cm"}
    reviews = [next(e.valueBoolean for e in c.extension if e.url.endswith("/review")) for c in conditions]
    probabilities = [next(float(e.valueDecimal) for e in c.extension if e.url.endswith("/probability")) for c in conditions]
    assert reviews == [p <= threshold for p in probabilities] and True in reviews and False in reviews
    with pytest.raises(SystemExit, match=r"review_threshold \(0.99\) must be below the threshold"):
        msmn_code.main([str(small_checkpoint), "notes.jsonl", "--review-threshold", "0.99"])


def test_the_api_codes_as_the_pipeline_does(served):
    folder, url, log = served
    coder = pipeline("icd-coding", model=str(folder), trust_remote_code=True)
    status, _, answer = call(url, "POST", "/v1/code", {"inputs": NOTES[0], "parameters": {"top_k": 3}})
    assert status == 200 and len(answer["results"]) == 1 and answer["results"][0]["id"] == "1"
    assert_same_predictions(answer["results"][0]["codes"], coder(NOTES[0], top_k=3))
    status, _, answer = call(url, "POST", "/v1/code", {"inputs": NOTES[:3], "ids": ["a", "b", "c"],
                                                        "parameters": {"review_threshold": 0.01, "evidence": False}})
    assert status == 200 and [result["id"] for result in answer["results"]] == ["a", "b", "c"]
    expected = coder(NOTES[:3], review_threshold=0.01, num_evidence=0)
    assert_same_predictions([result["codes"] for result in answer["results"]], expected)
    status, kind, bundle = call(url, "POST", "/v1/code", {"inputs": NOTES[:2]}, accept="application/fhir+json")
    assert status == 200 and kind.startswith("application/fhir+json")
    assert Bundle.model_validate(bundle).entry
    status, _, model = call(url, "GET", "/v1/model")
    assert status == 200 and model["num_codes"] == 4 and len(model["sha256"]) == 64
    assert [code["code"] for code in model["codes"]] == list(coder.model.config.id2label.values())
    assert call(url, "GET", "/health", token=None)[0] == 200


def test_tokens_limits_and_bad_requests_are_clear_4xx(served):
    _, url, log = served
    note = {"inputs": "Jane Roe, fever"}
    assert call(url, "POST", "/v1/code", note, token=None)[0] == 401
    status, _, answer = call(url, "POST", "/v1/code", note, token="wrong-token-" + "y" * 20)
    assert status == 401 and answer["detail"][0]["loc"] == ["Authorization"]
    assert call(url, "GET", "/v1/model", token=None)[0] == 401
    cases = [
        ({"inputs": "x" * 200_001}, 413, ["inputs[0]"]),
        ({"inputs": ["fever"] * 65}, 413, ["inputs"]),
        ({"inputs": []}, 422, ["inputs"]),
        ({"inputs": "Jane Roe, fever", "parameters": {"top_k": 0}}, 422, ["body", "parameters", "top_k"]),
        ({"inputs": "Jane Roe, fever", "parameters": {"review_threshold": 0.99}}, 422, ["parameters"]),
        ({"inputs": "Jane Roe, fever", "parameters": {"candidates": "all"}}, 422, ["parameters"]),
        ({"inputs": ["Jane Roe, fever"], "ids": ["a", "b"]}, 422, ["ids"]),
        ({"note": "Jane Roe, fever"}, 422, ["body", "inputs"]),
        (b'{"inputs": "Jane Roe, fever"', 422, ["body", 28]),
    ]
    for body, expected_status, field in cases:
        status, _, answer = call(url, "POST", "/v1/code", body)
        assert status == expected_status, (body if isinstance(body, bytes) else list(body), answer)
        assert answer["detail"][0]["loc"][: len(field)] == field, answer
        assert "Jane Roe" not in json.dumps(answer)  # errors never quote a note


def test_fuzzed_from_its_own_schema_no_request_is_a_server_error(served):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    _, url, _ = served
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    statuses = []
    for result in schema.get_all_operations():
        operation = result.ok()
        negative = (GenerationMode.NEGATIVE,) if operation.method.upper() == "POST" else ()  # GETs take no input
        for mode in (GenerationMode.POSITIVE, *negative):

            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.path, response.text[:300])
                if 400 <= response.status_code < 500:
                    assert all(item["loc"] for item in response.json()["detail"])  # the field at fault

            fuzz()
    assert 200 in statuses and any(400 <= status < 500 for status in statuses)


def test_sixteen_concurrent_clients_each_get_their_own_codes(served):
    folder, url, log = served
    expected = pipeline("icd-coding", model=str(folder), trust_remote_code=True)(NOTES, top_k=2)
    errors, answered = [], [0] * len(NOTES)
    deadline = time.monotonic() + 8

    def client(index):
        while time.monotonic() < deadline:
            status, _, answer = call(url, "POST", "/v1/code", {"inputs": NOTES[index], "parameters": {"top_k": 2}})
            try:
                assert status == 200
                assert_same_predictions(answer["results"][0]["codes"], expected[index])
                answered[index] += 1
            except AssertionError as error:
                errors.append((index, status, str(error)[:300]))
                return

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(NOTES))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and min(answered) >= 1
    text = log.read_text()
    assert not any(note[:40] in text for note in NOTES) and TOKEN not in text  # paths only
    assert re.search(r'"POST /v1/code HTTP/1.1" 200', text) and "Traceback" not in text


def test_the_curl_example_of_the_docs_runs(served):
    _, url, _ = served
    page = (ROOT / "docs" / "serving.md").read_text()
    command = next(block for block in re.findall(r"```bash\n(.*?)```", page, re.S) if "curl" in block and "/v1/code" in block)
    result = subprocess.run(["bash", "-c", command.replace("http://127.0.0.1:8000", url)], capture_output=True, text=True,
                            env={**os.environ, "MSMN_TOKEN": TOKEN}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["codes"]


def test_a_server_without_tokens_serves_this_machine_only(small_checkpoint, tmp_path):
    result = run([MSMN_SERVE, str(small_checkpoint), "--host", "0.0.0.0"], tmp_path)
    assert result.returncode == 1 and "--host 0.0.0.0 serves the network: give --token-file" in result.stderr
    (tmp_path / "short").write_text("abc\n")
    result = run([MSMN_SERVE, str(small_checkpoint), "--token-file", "short"], tmp_path)
    assert "token 1 is under 16 characters" in result.stderr and "abc" not in result.stderr
    (tmp_path / "broken").mkdir()
    result = run([MSMN_SERVE, str(tmp_path / "broken")], tmp_path)
    assert "no config.json, so not a model folder" in result.stderr and "Traceback" not in result.stderr
