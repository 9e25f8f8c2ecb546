"""msmn-code keeps what it wrote: one run per output (a lock), a .partial that only grows by whole
lines, a resume that refuses damaged lines and another run's model or options, a full disk and Ctrl-C
that stop with a message naming what is kept. Real processes, real file-size limits, real signals."""

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from synthetic_corpus import ROOT, run
from test_msmn_code import MSMN_CODE, read_lines, run_msmn_code, write_notes
from test_pipeline import assert_same_predictions

from msmn import checkpoints
from msmn.coding import cli as msmn_code
from conftest import make_model
from modeling_msmn import ICDCodingPipeline, build_tokenizer


def limited_to(size: int):
    """preexec_fn: the process may write files of at most `size` bytes (writes past it fail with EFBIG,
    as on a full disk: a real error of the operating system, no privilege needed)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("codes.jsonl."))


@pytest.fixture
def coded(small_checkpoint, tmp_path):
    """(checkpoint, folder, the complete output's bytes) of 40 notes coded with --top-k 2, as reference."""
    write_notes(tmp_path / "notes.jsonl", 40)
    result = run_msmn_code(small_checkpoint, "notes.jsonl", "--top-k", "2", "--output", "reference.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return small_checkpoint, tmp_path, (tmp_path / "reference.jsonl").read_bytes()


def code(checkpoint, folder, *options, limit=None):
    command = [MSMN_CODE, str(checkpoint), "notes.jsonl", "--top-k", "2", "--output", "codes.jsonl", *options]
    return run(command, folder, preexec_fn=limited_to(limit) if limit else None)


def test_a_full_disk_stops_with_a_message_and_resume_never_shrinks_the_partial(coded):
    checkpoint, folder, reference = coded
    (folder / "codes.jsonl").write_bytes(reference)  # resuming a finished output on a full disk: nothing touched
    result = code(checkpoint, folder, "--resume", limit=len(reference) // 4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "codes.jsonl").read_bytes() == reference and leftovers(folder) == []
    (folder / "codes.jsonl").unlink()

    stopped = code(checkpoint, folder, limit=len(reference) // 2)
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    [message] = [line for line in stopped.stderr.splitlines() if line.startswith("msmn-code: error:")]
    assert "codes.jsonl.partial (File too large): the notes coded before are kept there" in message
    assert "--resume to continue" in message
    partial = (folder / "codes.jsonl.partial").read_bytes()
    assert 0 < partial.count(b"\n") < 40 and reference.startswith(partial[: partial.rfind(b"\n") + 1])
    assert leftovers(folder) == ["codes.jsonl.partial", "codes.jsonl.partial.run"]  # the lock went with the run

    again = code(checkpoint, folder, "--resume", limit=len(reference) // 2)  # still full: nothing is lost
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert (folder / "codes.jsonl.partial").read_bytes().startswith(partial[: partial.rfind(b"\n") + 1])

    resumed = code(checkpoint, folder, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_predictions(read_lines(folder / "codes.jsonl"), read_lines(folder / "reference.jsonl"))
    assert leftovers(folder) == []


def test_a_damaged_partial_is_refused_untouched(coded):
    checkpoint, folder, reference = coded
    lines = reference.splitlines(keepends=True)
    damaged = b"".join(lines[:30]) + lines[30][:20] + b"\xff" + lines[30][21:] + b"".join(lines[31:])
    (folder / "codes.jsonl.partial").write_bytes(damaged)
    result = code(checkpoint, folder, "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "codes.jsonl.partial, line 31: not a line msmn-code writes (damaged)" in result.stderr
    assert "head -n 30" in result.stderr
    assert (folder / "codes.jsonl.partial").read_bytes() == damaged

    # a last line cut inside a UTF-8 character is a half-written line: coded again
    notes = [{"id": f"née-{index}", "text": note["text"]} for index, note in enumerate(map(json.loads, open(folder / "notes.jsonl")))]
    (folder / "notes.jsonl").write_text("".join(json.dumps(note) + "\n" for note in notes), encoding="utf-8")
    assert code(checkpoint, folder, "--output", "whole.jsonl").returncode == 0
    whole = (folder / "whole.jsonl").read_bytes().splitlines(keepends=True)
    cut = whole[10][: whole[10].index("é".encode()) + 1]  # the first byte of "é"'s two
    (folder / "codes.jsonl.partial").write_bytes(b"".join(whole[:10]) + cut)
    (folder / "codes.jsonl.partial.run").unlink(missing_ok=True)
    result = code(checkpoint, folder, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_predictions(read_lines(folder / "codes.jsonl"), read_lines(folder / "whole.jsonl"))


def test_a_second_run_on_the_same_output_is_refused(small_checkpoint, tmp_path):
    write_notes(tmp_path / "notes.jsonl", 3)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([MSMN_CODE, str(small_checkpoint), "--output", "codes.jsonl"], cwd=tmp_path,
                             env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:  # the first run holds the output while it waits for its note on standard input
        deadline = time.monotonic() + 120
        while not (tmp_path / "codes.jsonl.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_msmn_code(small_checkpoint, "notes.jsonl", "--output", "codes.jsonl", cwd=tmp_path)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"codes.jsonl: msmn-code (process {first.pid} on" in second.stderr
        assert "is writing it; wait until that run ends, or give another output file" in second.stderr
        _, errors = first.communicate(b"fever and pneumonia", timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, errors.decode()[-3000:]
    assert [line["id"] for line in read_lines(tmp_path / "codes.jsonl")] == ["stdin"]
    assert leftovers(tmp_path) == []


def test_ctrl_c_stops_with_a_message_and_resume_continues(small_checkpoint, tmp_path):
    write_notes(tmp_path / "notes.jsonl", 3000)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [MSMN_CODE, str(small_checkpoint), "notes.jsonl", "--output", "codes.jsonl", "--batch-size", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = tmp_path / "codes.jsonl.partial"
    deadline = time.monotonic() + 120
    while (not partial.exists() or partial.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in errors.decode(), errors.decode()[-3000:]
    assert "msmn-code: stopped; the notes coded so far are kept in codes.jsonl.partial" in errors.decode()
    kept = partial.read_bytes().count(b"\n")
    assert 0 < kept < 3000
    resumed = run_msmn_code(small_checkpoint, "notes.jsonl", "--output", "codes.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    plain = run_msmn_code(small_checkpoint, "notes.jsonl", "--output", "plain.jsonl", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert_same_predictions(read_lines(tmp_path / "codes.jsonl"), read_lines(tmp_path / "plain.jsonl"))


def test_resume_refuses_another_model_or_other_options(coded, tokenizer, tmp_path_factory):
    checkpoint, folder, reference = coded
    assert code(checkpoint, folder, limit=len(reference) // 2).returncode == 1
    partial = (folder / "codes.jsonl.partial").read_bytes()
    result = run_msmn_code(checkpoint, "notes.jsonl", "--output", "codes.jsonl", cwd=folder)
    assert "codes.jsonl.partial holds what a stopped run coded: run again with --resume" in result.stderr
    result = run_msmn_code(checkpoint, "notes.jsonl", "--top-k", "1", "--output", "codes.jsonl", "--resume", cwd=folder)
    assert result.returncode == 1 and "was written by another run (options: {'top_k': 2" in result.stderr
    other = tmp_path_factory.mktemp("other") / "checkpoint"
    ICDCodingPipeline(model=make_model(tokenizer, seed=1), tokenizer=tokenizer).save_pretrained(other)
    result = code(other, folder, "--resume")
    assert result.returncode == 1 and "was written by another run (model: " in result.stderr
    assert "Run it as it was, or delete the .partial" in result.stderr
    assert (folder / "codes.jsonl.partial").read_bytes() == partial  # refused: left as it was
    assert code(checkpoint, folder, "--resume").returncode == 0
    assert_same_predictions(read_lines(folder / "codes.jsonl"), read_lines(folder / "reference.jsonl"))


def test_a_stopped_html_report_leaves_no_note_text_behind(coded):
    checkpoint, folder, reference = coded
    result = run([MSMN_CODE, str(checkpoint), "notes.jsonl", "--html", "report.html"], folder,
                 preexec_fn=limited_to(4096))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write report.html (File too large): nothing was written there" in result.stderr
    assert not list(folder.glob("report.html*"))


def test_note_lines_and_options_that_would_stop_a_run_are_named_first(small_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "surrogate.jsonl").write_text('{"text": "fever"}\n{"text": "cut emoji \\ud83e here"}\n')
    (tmp_path / "nan.jsonl").write_text('{"id": NaN, "text": "fever"}\n')
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "fever"}\n{"id": "a", "text": "cough"}\n')
    (tmp_path / "folder").mkdir()
    model = str(small_checkpoint)
    cases = [
        ([model, "surrogate.jsonl", "--output", "codes.jsonl"], "surrogate.jsonl, line 2: holds a lone surrogate escape"),
        ([model, "nan.jsonl"], "nan.jsonl, line 1: not valid JSON (NaN is not a JSON value"),
        ([model, "bom.jsonl", "--output", "folder"], "--output folder: that is a folder; give a file name"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main(arguments)
        assert message in str(exit_info.value.code)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bom.jsonl", "checkpoint", "folder", "nan.jsonl",
                                                                 "surrogate.jsonl"]
    capsys.readouterr()
    msmn_code.main([model, "bom.jsonl", "bom.jsonl", "--output", "codes.jsonl", "--quiet"])  # a byte-order mark is read
    assert [line["id"] for line in read_lines(tmp_path / "codes.jsonl")] == ["a", "a", "a", "a"]
    warnings = capsys.readouterr().err
    assert "given more than once: their notes are coded each time" in warnings
    assert "3 notes have the id of an earlier note (the first: 'a')" in warnings
    assert "Loading weights" not in warnings  # --quiet: no progress bar of transformers either


def test_checkpoints_that_do_not_fit_together_are_refused(small_checkpoint, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "note.txt").write_text("fever and pneumonia")
    words = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    other_sizes = build_tokenizer(words + ["extra"])
    same_size = build_tokenizer(words[:-1] + ["other"])
    for name, other in (("sizes", other_sizes), ("words", same_size)):
        folder = tmp_path / name
        folder.mkdir()
        for file in small_checkpoint.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        other.save_pretrained(tmp_path / f"{name}-tokenizer")
        (folder / "tokenizer.json").write_bytes((tmp_path / f"{name}-tokenizer" / "tokenizer.json").read_bytes())
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main([str(folder), "note.txt"])
        assert "tokenizer.json and config.json come from different checkpoints" in str(exit_info.value.code)
    modes = {path.name: path.stat().st_mode for path in small_checkpoint.iterdir()}  # the weights as readable as the rest
    assert modes["model.safetensors"] == modes["tokenizer.json"] == modes["config.json"]
    config = json.loads((small_checkpoint / "config.json").read_text())
    for threshold in ("0.5", None):
        (small_checkpoint / "config.json").write_text(json.dumps({**config, "threshold": threshold}))
        with pytest.raises(SystemExit) as exit_info:
            msmn_code.main([str(small_checkpoint), "note.txt"])
        assert f"config.json: MSMNConfig: threshold ({threshold!r}) must be a number" in str(exit_info.value.code)
    (small_checkpoint / "config.json").write_text(json.dumps(config))
    coder = checkpoints.load_coder(str(small_checkpoint), None)
    with pytest.raises(ValueError, match=r"threshold must be a number, got '0.5'"):
        coder("fever", threshold="0.5")
    with pytest.raises(ValueError, match=r"codes must be a list of codes, e.g. codes=\['R50.9'\]"):
        coder("fever", codes="R50.9")
