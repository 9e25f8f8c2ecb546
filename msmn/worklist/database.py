"""Opening the worklist's database: a SQLite file (`--db reviews.sqlite`: created on first use, readable by
its owner only, since it holds notes) or a SQLAlchemy URL (`--db postgresql+psycopg://user@host/db`). Its
schema is made and upgraded by Alembic; a database that is not a worklist, or of a schema this release does
not know, is refused. Messages name the database without its password."""

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from datasets_scripts import InputError

OWNER_ONLY = 0o600


def database_url(db: str) -> URL:
    """The SQLAlchemy URL of --db: a URL as given, or a file path for SQLite."""
    if "://" not in db:
        return URL.create("sqlite", database=str(Path(db).expanduser().resolve()))
    try:
        return make_url(db)
    except ArgumentError:
        raise InputError(f"--db: not a database URL or file path (e.g. reviews.sqlite, "
                         "postgresql+psycopg://user@host/dbname).") from None


def described(url: URL) -> str:
    """How messages name the database: its file, or driver, host, port and name; never the password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"{url.get_backend_name()} database {url.database!r} on {url.host or 'the local socket'}:{url.port or 'default port'}"


def connect(db: str) -> Engine:
    """An engine on --db (a new SQLite file is made owner-only first), checked to answer."""
    url = database_url(db)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database)
        if not path.parent.is_dir():
            raise InputError(f"--db {path}: the folder {path.parent} does not exist.")
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, OWNER_ONLY))  # created owner-only, before SQLite opens it
        os.chmod(path, OWNER_ONLY)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", sqlite_settings)
    else:
        engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            inspect(connection).get_table_names()
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        if url.password:
            reason = reason.replace(url.password, "***")
        raise InputError(f"cannot open the {described(url)}: {reason}. Check the URL, that the server runs and "
                         "accepts this user.") from None
    except DatabaseError:
        raise InputError(f"{described(url)}: not a database (SQLite cannot read it). Give a new file name, or the "
                         "worklist's own database.") from None
    return engine


def sqlite_settings(connection, _record) -> None:
    """Readers beside one writer (WAL), a wait instead of an error while another process writes, and foreign keys."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrations() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def open_worklist(db: str, upgrade: bool = False) -> Engine:
    """The engine of a worklist database: an empty one gets the schema; one of an older schema is upgraded only
    with `upgrade` (`msmn-worklist upgrade`); anything else is refused with the reason."""
    engine = connect(db)
    config = migrations()
    head = ScriptDirectory.from_config(config).get_current_head()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    with engine.begin() as connection:
        tables = inspect(connection).get_table_names()
        current = MigrationContext.configure(connection).get_current_revision()
        where = described(engine.url)
        if tables and current is None:
            raise InputError(f"{where}: holds tables of something else ({', '.join(sorted(tables)[:3])}…), not a "
                             "worklist. Give a database of its own.")
        if current is not None and current not in known:
            raise InputError(f"{where}: a worklist of schema {current}, which this release does not know (made by a "
                             "newer one?). Upgrade msmn.")
        if current not in (None, head) and not upgrade:
            raise InputError(f"{where}: a worklist of the older schema {current}; upgrade it (back it up first): "
                             f"msmn-worklist upgrade --db ...")
        if current != head:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    return engine
