"""`pip install .` (a wheel, not editable) holds everything the commands need: msmn-code and msmn-app's
modules and data run from the installed files alone, and `python train.py` runs from the clone."""

import json
import subprocess
import sys

import pytest
from synthetic_corpus import ROOT


@pytest.mark.slow
def test_the_wheel_runs_the_commands_from_its_own_files(small_checkpoint, tmp_path):
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheel"), str(ROOT)], capture_output=True, text=True)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    [built] = (tmp_path / "wheel").glob("msmn-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(built)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    environment = {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                   "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    (tmp_path / "note.txt").write_text("fever and pneumonia")

    def run(code: str, *arguments: str) -> subprocess.CompletedProcess:  # from outside the clone: no source tree
        return subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=tmp_path,
                              env=environment, timeout=300)

    where = run("import msmn, modeling_msmn, datasets_scripts; print(msmn.__file__, modeling_msmn.__file__, "
                "datasets_scripts.__file__)")
    assert where.returncode == 0 and where.stdout.count(str(site)) == 3, where.stdout + where.stderr
    coded = run("import sys; from msmn.coding.cli import main; main(sys.argv[1:])", str(small_checkpoint), "note.txt")
    assert coded.returncode == 0, coded.stderr[-3000:]
    assert json.loads(coded.stdout)["id"] == "note.txt"
    examples = run("from msmn.review.page import example_notes; from msmn.review.cli import parse_arguments; "
                   "print(len(example_notes('en')), parse_arguments(['model']).port)")
    assert examples.returncode == 0 and examples.stdout.split() == ["3", "7860"], examples.stderr[-3000:]
    metrics = run("import evaluate, msmn.evaluation.icd_coding as m; "
                  "print(evaluate.load(list(m.__path__)[0]).compute(predictions=[[0.9, 0.1]], "
                  "references=[[1, 0]])['micro_f1'])")
    assert metrics.returncode == 0 and float(metrics.stdout) == 1.0, metrics.stderr[-3000:]
    worklist = run("import sqlalchemy; from msmn.worklist.database import open_worklist; "
                   "print(sorted(sqlalchemy.inspect(open_worklist('reviews.sqlite')).get_table_names()))")
    assert worklist.returncode == 0, worklist.stderr[-3000:]  # the Alembic migrations ship with the wheel
    assert "worklist_notes" in worklist.stdout and "alembic_version" in worklist.stdout
    trained = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                             cwd=tmp_path, env=environment)
    assert trained.returncode == 0 and "--preset PRESET" in trained.stdout, trained.stderr[-3000:]
