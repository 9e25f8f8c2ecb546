"""Shared fixtures: offline Hugging Face settings and a small MSMN model with real code terms."""

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

# Tests never touch the network; the HF cache lives in a temporary folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="msmn-hf-home-"))

import pytest  # noqa: E402
import torch  # noqa: E402

import modeling_msmn  # noqa: E402
from synthetic_corpus import LEARNING_RUN, run_train, write_corpus  # noqa: E402

NOTES = [
    "Patient admitted with acute myocardial infarction; troponin 12.3. Chest pain resolved.",
    "Fever 39C and productive cough, community-acquired pneumonia treated with antibiotics.",
    "Type 2 diabetes mellitus, poorly controlled. [**First Name3 (LF) 1283**] seen in clinic.",
    "",
]
CODE_TERMS = {
    "E11.65": ["Type 2 diabetes mellitus with hyperglycemia", "diabetes type 2 poorly controlled"],
    "I21.4": ["Non-ST elevation myocardial infarction", "NSTEMI", "subendocardial infarction", "heart attack"],
    "J18.9": ["Pneumonia, unspecified organism", "pneumonia NOS"],
    "R50.9": ["Fever, unspecified", "pyrexia", "febrile"],
}
CODES = sorted(CODE_TERMS)


def chromium_path() -> str | None:
    """The system's Chromium, which the browser tests drive (Debian: apt-get install chromium)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def make_model(tokenizer, num_synonyms=4, hidden_size=16, rnn_dim=12, num_lstm_layers=1, seed=0, **config):
    term_ids, terms = modeling_msmn.build_code_term_ids(tokenizer, CODES, CODE_TERMS, num_synonyms, term_length=8)
    msmn_config = modeling_msmn.MSMNConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(CODES)),
        embedding_dim=6,
        rnn_dim=rnn_dim,
        hidden_size=hidden_size,
        num_lstm_layers=num_lstm_layers,
        num_synonyms=num_synonyms,
        term_length=8,
        code_terms=terms,
        code_descriptions=[CODE_TERMS[code][0] for code in CODES],
        **config,
    )
    torch.manual_seed(seed)
    return modeling_msmn.MSMNForSequenceClassification(msmn_config, code_term_ids=term_ids)


@pytest.fixture(scope="session")
def tokenizer():
    extra = [word for terms in CODE_TERMS.values() for term in terms for word in modeling_msmn.split_words(term)]
    return modeling_msmn.build_tokenizer(modeling_msmn.build_vocabulary(NOTES[:2], extra_words=extra))


@pytest.fixture
def small_checkpoint(tokenizer, tmp_path):
    """An untrained MSMN checkpoint folder: serving and coding at scale need no quality, only a real folder."""
    folder = tmp_path / "checkpoint"
    modeling_msmn.ICDCodingPipeline(model=make_model(tokenizer), tokenizer=tokenizer, task="icd-coding").save_pretrained(folder)
    return folder


@pytest.fixture
def corpus(tmp_path):
    """The synthetic corpus's files (splits and code terms) in a temporary folder."""
    return write_corpus(tmp_path)


def pytest_collection_modifyitems(items):
    """A test that uses the trained synthetic checkpoint trains through train.py: it is `slow`."""
    for item in items:
        if "synthetic_checkpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory):
    """(folder, completed process) of train.py's learning run on the synthetic corpus, trained once."""
    folder = write_corpus(tmp_path_factory.mktemp("synthetic"))
    result = run_train(*LEARNING_RUN, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "out", result


@pytest.fixture(scope="session")
def ranked_checkpoint(tmp_path_factory):
    """(folder, model, ranker, build report): a small untrained model saved with candidate codes beyond its
    label set, their operating points chosen on a small dev set (tests/ranked_checkpoint.py)."""
    from ranked_checkpoint import write_ranked_checkpoint

    folder = tmp_path_factory.mktemp("ranked")
    return (folder, *write_ranked_checkpoint(folder))


POSTGRESQL_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgresql"


@pytest.fixture(scope="session")
def postgresql_server():
    """The URL of a PostgreSQL server for the worklist's tests: $MSMN_TEST_POSTGRESQL, or one started here by
    .ci/postgresql (Debian's postgresql package) and stopped at the end. Without a server the PostgreSQL tests
    are skipped, except where $MSMN_REQUIRE_POSTGRESQL is set (.ci/run sets it): there they fail."""
    if os.environ.get("MSMN_TEST_POSTGRESQL"):
        yield os.environ["MSMN_TEST_POSTGRESQL"]
        return
    started = subprocess.run([str(POSTGRESQL_SCRIPT)], capture_output=True, text=True)
    if started.returncode != 0:
        reason = f"no PostgreSQL server for the tests ({started.stderr.strip()})"
        if os.environ.get("MSMN_REQUIRE_POSTGRESQL"):
            pytest.fail(reason)
        pytest.skip(reason)
    url = started.stdout.strip()
    yield url
    subprocess.run([str(POSTGRESQL_SCRIPT), "stop", url], check=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def worklist_db(request, tmp_path):
    """--db of a new, empty worklist database: a SQLite file, or a database of its own on the PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "reviews.sqlite")
        return
    import sqlalchemy

    server = sqlalchemy.engine.make_url(request.getfixturevalue("postgresql_server"))
    name = f"worklist_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
