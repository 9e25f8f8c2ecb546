"""msmn-code: files and stdin in, JSON lines out, clear errors, and an HTML report checked in Chromium."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from conftest import chromium_path, make_model
from synthetic_corpus import run, synthetic_notes
from test_pipeline import UNUSUAL_NOTE, assert_same_predictions
from transformers import pipeline

from msmn.coding import cli as msmn_code
from modeling_msmn import ICDCodingPipeline

MSMN_CODE = str(Path(sys.executable).parent / "msmn-code")  # the console script pyproject.toml installs


def run_msmn_code(*arguments, cwd, stdin=None):
    return run([MSMN_CODE, *map(str, arguments)], cwd, input=stdin)


@pytest.fixture(scope="module")
def notes_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notes")
    notes = [{"id": f"note-{i}", "text": note["text"]} for i, note in enumerate(synthetic_notes(4, seed=11))]
    (folder / "notes.jsonl").write_text("".join(json.dumps(note) + "\n" for note in notes), encoding="utf-8")
    (folder / "unusual.txt").write_text(UNUSUAL_NOTE + " fever febrile", encoding="utf-8", newline="")
    return folder, notes + [{"id": "unusual.txt", "text": UNUSUAL_NOTE + " fever febrile"}]


def test_codes_files_and_stdin_like_the_pipeline(synthetic_checkpoint, notes_folder):
    checkpoint, _ = synthetic_checkpoint
    folder, notes = notes_folder
    result = run_msmn_code(checkpoint, "notes.jsonl", "unusual.txt", "--output", "codes.jsonl", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (folder / "codes.jsonl").read_text(encoding="utf-8").splitlines()]
    coder = pipeline("icd-coding", model=str(checkpoint), trust_remote_code=True, device="cpu")
    assert [line["id"] for line in lines] == [note["id"] for note in notes]
    assert_same_predictions([line["codes"] for line in lines], coder([note["text"] for note in notes]))
    assert notes[0]["text"] not in result.stdout + result.stderr  # output went to the file, nothing to the logs

    result = run_msmn_code(checkpoint, "--top-k", "2", cwd=folder, stdin=notes[1]["text"])
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["id"] == "stdin"
    assert_same_predictions(line["codes"], coder(notes[1]["text"], top_k=2))


def test_bad_inputs_get_clear_errors(synthetic_checkpoint, tmp_path, monkeypatch, capfd):
    checkpoint, _ = synthetic_checkpoint
    secret = "Jane Doe was seen for fever"
    (tmp_path / "broken.jsonl").write_text(json.dumps({"text": secret}) + "\n" + '{"text": "Jane Doe\n')
    (tmp_path / "no_text.jsonl").write_text(json.dumps({"note": secret}) + "\n")
    (tmp_path / "good.jsonl").write_text(json.dumps({"text": secret}) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "latin1.txt").write_bytes(secret.replace("was", "está").encode("latin-1"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases = [
        ((tmp_path / "nowhere", "good.jsonl"), "nowhere: no config.json, so not a model folder"),
        ((tmp_path / "bert", "good.jsonl"), "model_type is 'bert', not an MSMN checkpoint"),
        ((checkpoint, "missing.txt"), "missing.txt: no such file"),
        ((checkpoint, "missing.jsonl"), "missing.jsonl: no such file"),
        ((checkpoint, "broken.jsonl"), "broken.jsonl, line 2: not valid JSON"),
        ((checkpoint, "no_text.jsonl"), 'no_text.jsonl, line 1: needs a "text" field'),
        ((checkpoint, "latin1.txt"), "latin1.txt: not UTF-8 text"),
        ((checkpoint, "empty.jsonl"), "empty.jsonl: holds no notes"),
        ((checkpoint, "good.jsonl", "--threshold", "2"), "threshold is a probability"),
    ]
    monkeypatch.chdir(tmp_path)
    for arguments, message in cases:  # in this process: main() exits with the message
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main(list(map(str, arguments)))
        assert str(exit_info.value.code).startswith("msmn-code: error: ")
        assert message in str(exit_info.value.code)
        assert "Jane" not in str(exit_info.value.code) + "".join(capfd.readouterr())
    # and the console script exits non-zero with the message, no traceback
    result = run_msmn_code(checkpoint, "broken.jsonl", cwd=tmp_path)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith(
        "msmn-code: error: broken.jsonl, line 2: not valid JSON")
    assert "Traceback" not in result.stderr and "Jane" not in result.stderr + result.stdout


def test_damaged_checkpoint_folders_get_clear_errors(tokenizer, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    ICDCodingPipeline(model=make_model(tokenizer), tokenizer=tokenizer, task="icd-coding").save_pretrained(whole)
    weights = (whole / "model.safetensors").read_bytes()
    config = json.loads((whole / "config.json").read_text())
    more_codes = {**config, "id2label": {str(index): f"C{index}" for index in range(6)},
                  "label2id": {f"C{index}": index for index in range(6)}, "code_terms": None, "code_descriptions": None}
    damages = {
        "truncated": ("model.safetensors", weights[: len(weights) // 2], "model.safetensors: damaged or truncated"),
        "empty": ("model.safetensors", b"", "model.safetensors: damaged or truncated (0 bytes)"),
        "no_weights": ("model.safetensors", None, "no_weights: no model.safetensors (the weights)"),
        "config_list": ("config.json", b"[1, 2]", "config.json: holds a JSON list, not a model configuration"),
        "config_broken": ("config.json", b'{"model_type": "msmn",', "config.json: not valid JSON"),
        "no_tokenizer": ("tokenizer.json", None, "no_tokenizer: no tokenizer.json (the model's vocabulary)"),
        "more_codes": ("config.json", json.dumps(more_codes).encode(),
                       "more_codes: config.json does not match model.safetensors (1 of"),
    }
    monkeypatch.chdir(tmp_path)
    (tmp_path / "note.txt").write_text("fever and pneumonia")
    for name, (file, content, message) in damages.items():
        shutil.copytree(whole, tmp_path / name)
        if content is None:
            (tmp_path / name / file).unlink()
        else:
            (tmp_path / name / file).write_bytes(content)
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main([name, "note.txt"])
        assert message in str(exit_info.value.code), name
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda: torch finds no CUDA GPU on this machine"):
            msmn_code.main(["whole", "note.txt", "--device", "cuda"])
    with pytest.raises(SystemExit, match="--device 'gpu0': not a torch device"):
        msmn_code.main(["whole", "note.txt", "--device", "gpu0"])


def write_notes(path, count):
    notes = [{"id": f"n{index}", "text": note["text"]} for index, note in enumerate(synthetic_notes(count, seed=5))]
    path.write_text("".join(json.dumps(note) + "\n" for note in notes), encoding="utf-8")
    return notes


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_streams_in_input_order_and_resumes_a_stopped_run(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = write_notes(tmp_path / "notes.JSONL", 23)  # JSON lines whatever the case of the suffix
    msmn_code.main([str(small_checkpoint), "--top-k", "2", "notes.JSONL", "--output", "codes.jsonl", "--batch-size", "4"])
    lines = read_lines(tmp_path / "codes.jsonl")  # options before and after the note file
    coder = pipeline("icd-coding", model=str(small_checkpoint), trust_remote_code=True, device="cpu")
    assert [line["id"] for line in lines] == [note["id"] for note in notes]
    assert_same_predictions([line["codes"] for line in lines], coder([note["text"] for note in notes], top_k=2))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "codes.jsonl", "notes.JSONL"]

    whole = (tmp_path / "codes.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "codes.jsonl").unlink()
    (tmp_path / "codes.jsonl.partial").write_text("".join(whole[:9]) + whole[9][:40], encoding="utf-8")  # killed mid-line
    msmn_code.main([str(small_checkpoint), "notes.JSONL", "--top-k", "2", "--output", "codes.jsonl", "--resume"])
    assert_same_predictions(read_lines(tmp_path / "codes.jsonl"), lines)
    assert not list(tmp_path.glob("codes.jsonl.*"))

    (tmp_path / "codes.jsonl.partial").write_text(whole[1] + whole[0], encoding="utf-8")
    with pytest.raises(SystemExit, match="line 1: codes note 'n1', but note 1 of the input is 'n0'"):
        msmn_code.main([str(small_checkpoint), "notes.JSONL", "--output", "codes.jsonl", "--resume"])
    assert (tmp_path / "codes.jsonl.partial").read_text(encoding="utf-8") == whole[1] + whole[0]  # left as it was
    (tmp_path / "codes.jsonl.partial").write_text("not msmn-code's\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"codes.jsonl.partial, line 1: not a line msmn-code writes"):
        msmn_code.main([str(small_checkpoint), "notes.JSONL", "--output", "codes.jsonl", "--resume"])


def test_outputs_and_inputs_are_checked_before_any_coding(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notes(tmp_path / "notes.jsonl", 3)
    (tmp_path / "notes.json").write_text("[]")
    (tmp_path / "codes.jsonl").write_text("an earlier run's output\n")
    model = str(small_checkpoint)
    cases = [
        ([model, "notes.jsonl", "--output", "missing/codes.jsonl"], "the folder"),
        ([model, "notes.jsonl", "--output", "notes.jsonl"], "--output notes.jsonl: that is one of the inputs"),
        ([model, "notes.jsonl", "--html", "notes.jsonl"], "--html notes.jsonl: that is one of the inputs"),
        ([model, "notes.jsonl", "--output", "a.jsonl", "--html", "a.jsonl"], "--output and --html are the same file"),
        ([model, "notes.json", "--output", "codes.jsonl"], "notes.json: a .json file; give JSON lines instead"),
        ([model, "notes.jsonl", "--resume"], "--resume continues the file of --output: give --output"),
        ([model, "notes.jsonl", "--output", "codes.jsonl", "--threshold", "2"], "threshold is a probability"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main(arguments)
        assert message in str(exit_info.value.code)
    assert (tmp_path / "codes.jsonl").read_text() == "an earlier run's output\n"  # nothing lost, nothing half-written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "codes.jsonl", "notes.json", "notes.jsonl"]
    result = run_msmn_code(model, cwd=tmp_path, stdin="")  # standard input that is not a terminal: no prompt
    assert "waiting for a note" not in result.stderr


def test_torchrun_processes_write_the_file_one_process_writes(small_checkpoint, tmp_path):
    write_notes(tmp_path / "notes.jsonl", 11)
    one = run_msmn_code(small_checkpoint, "notes.jsonl", "--top-k", "3", "--output", "one.jsonl", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "msmn.coding", str(small_checkpoint), "notes.jsonl", "--top-k", "3", "--output", "two.jsonl"]
    two = run(command, tmp_path, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_predictions(read_lines(tmp_path / "two.jsonl"), read_lines(tmp_path / "one.jsonl"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "notes.jsonl", "one.jsonl", "two.jsonl"]
    for text in (note["text"] for note in map(json.loads, (tmp_path / "notes.jsonl").open())):
        assert text not in two.stdout + two.stderr  # no note text from the worker processes either


class MarkedSpans(HTMLParser):
    """Per note of the rendered report: its codes, its text as displayed and, per code index, each evidence
    rank's span (offset into the displayed text, the text), from the <mark>s as the DOM holds them."""

    def __init__(self):
        super().__init__()
        self.notes, self.in_text, self.mark = [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.notes.append({"codes": [], "text": "", "spans": {}})
        elif tag == "label" and attrs.get("class") == "code":
            self.notes[-1]["codes"].append(attrs["data-code"])
        elif tag == "div" and attrs.get("class") == "note-text":
            self.in_text = True
        elif tag == "mark" and self.in_text:
            self.mark = [tuple(map(int, item.split(":"))) for item in attrs["data-codes"].split()]

    def handle_endtag(self, tag):
        if tag == "div":
            self.in_text = False
        elif tag == "mark":
            self.mark = None

    def handle_data(self, data):
        if not self.in_text:
            return
        note = self.notes[-1]
        for code_rank in self.mark or []:  # a span is the run of marks that carry its code and rank
            offset, text = note["spans"].get(code_rank, (len(note["text"]), ""))
            note["spans"][code_rank] = (offset, text + data)
        note["text"] += data


def test_html_report_shows_the_evidence_in_chromium(synthetic_checkpoint, notes_folder):
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    checkpoint, _ = synthetic_checkpoint
    folder, notes = notes_folder
    result = run_msmn_code(checkpoint, "notes.jsonl", "unusual.txt", "--html", "report.html", "--output", "report.jsonl",
                       cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    rendered = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (folder / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert rendered.returncode == 0 and "<mark" in rendered.stdout, rendered.stderr[-2000:]
    page = MarkedSpans()
    page.feed(rendered.stdout)
    lines = [json.loads(line) for line in (folder / "report.jsonl").open(encoding="utf-8")]
    assert len(page.notes) == len(notes) and any(line["codes"] for line in lines)
    for shown, note, line in zip(page.notes, notes, lines):
        assert shown["codes"] == [code["code"] for code in line["codes"]]
        assert shown["text"] == (note["text"].replace("\r\n", "\n") if line["codes"] else "")  # the note, once
        expected = {(index, rank): (len(note["text"][: span["start"]].replace("\r\n", "\n")),
                                    span["text"].replace("\r\n", "\n"))
                    for index, code in enumerate(line["codes"]) for rank, span in enumerate(code["evidence"], start=1)}
        assert shown["spans"] == expected  # each span where its offsets say, in the displayed note
    report = (folder / "report.html").read_text(encoding="utf-8")
    most_codes = max(len(line["codes"]) for line in lines)
    assert f"input.c{most_codes - 1}:checked" in report and f"input.c{most_codes}:" not in report


def test_all_codes_ranks_the_candidates_the_checkpoint_carries(ranked_checkpoint, small_checkpoint, tmp_path,
                                                               monkeypatch, capsys):
    folder = ranked_checkpoint[0]
    monkeypatch.chdir(tmp_path)
    Path("note.txt").write_text("Admitted for acute appendicitis; chest pain, troponin raised.")
    msmn_code.main([str(folder), "note.txt", "--all-codes", "--top-k", "5", "--output", "codes.jsonl",
                    "--html", "report.html"])
    (line,) = Path("codes.jsonl").read_text().splitlines()
    coder = pipeline("icd-coding", model=str(folder), trust_remote_code=True)
    expected = coder(Path("note.txt").read_text(), candidates="all", top_k=5)
    codes = json.loads(line)["codes"]
    assert [c["code"] for c in codes] == [c["code"] for c in expected] and any(not c["in_label_set"] for c in codes)
    assert [c["score"] for c in codes] == pytest.approx([c["score"] for c in expected], abs=1e-5)
    report = Path("report.html").read_text()
    assert report.count('class="unseen"') == sum(not c["in_label_set"] for c in codes)
    assert "among all 14 test codes candidates (operating point best_map)" in report
    msmn_code.main([str(folder), "note.txt", "--all-codes", "--operating-point", "unseen", "--output", "unseen.jsonl"])
    assert json.loads(Path("unseen.jsonl").read_text())["id"] == "note.txt"
    for arguments, error in [
        ([str(small_checkpoint), "note.txt", "--all-codes"], "carries no candidate codes beyond its 4 label codes"),
        ([str(folder), "note.txt", "--all-codes", "--operating-point", "rare"], "operating_point 'rare'"),
        ([str(folder), "note.txt", "--operating-point", "unseen"], "--operating-point chooses how --all-codes ranks"),
    ]:
        with pytest.raises(SystemExit) as exit_info:  # the message: sys.exit's, or argparse's on stderr
            msmn_code.main(arguments)
        assert error in str(exit_info.value.code) + capsys.readouterr().err
