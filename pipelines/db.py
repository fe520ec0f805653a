"""The app's database: one SQLAlchemy engine per URL, a declarative `Base`, and a transaction helper.

``[app] database_url`` picks the database; empty means a SQLite file ``mewm.db`` in ``[app] data_dir``. Any other
SQLAlchemy URL (``postgresql+psycopg://user@host/db``) works the same: the code below uses only portable SQL.

Features add tables by subclassing `Base` in their own module (e.g. `pipelines.turing.tables`) and calling
`ensure_schema` before use; it creates the tables it has not created yet on that engine (``CREATE TABLE IF NOT
EXISTS``; there are no migrations yet, so a changed table needs a new name or a fresh database).

SQLite settings, chosen for several readers answering at once from Streamlit's threads and for crash safety:
write-ahead log (readers never block the writer), ``synchronous=FULL`` (a committed answer survives a power cut),
a 30 s busy timeout (a writer waits for another instead of failing), and foreign keys on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from models.errors import ConfigError

__all__ = ["Base", "DB_FILE", "database_url", "get_engine", "ensure_schema", "session_scope", "dispose_engines"]

DB_FILE = "mewm.db"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_created: dict[int, set[str]] = {}  # id(engine) -> tables created on it


class Base(DeclarativeBase):
    """Declarative base of every table of MeWM Workbench (one `MetaData`, so `ensure_schema` sees them all)."""


def database_url(config=None) -> str:
    """The SQLAlchemy URL the configuration names (``[app] database_url``, else SQLite in ``[app] data_dir``)."""
    from pipelines.config import resolve_config

    app = resolve_config(config).app
    if app.database_url.strip():
        return app.database_url.strip()
    folder = Path(app.data_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / DB_FILE).resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str | None = None, config=None) -> Engine:
    """The engine of ``url`` (default: `database_url` of ``config``), created once per URL and process.

    Raises:
        ConfigError: the URL is not a valid SQLAlchemy URL or names a driver that is not installed.
    """
    url = url or database_url(config)
    with _lock:
        if url in _engines:
            return _engines[url]
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
        except (ArgumentError, ImportError, ValueError) as e:
            raise ConfigError(f"[app] database_url {url!r} is not usable: {e}. Leave it empty for SQLite in "
                              "[app] data_dir, or give a SQLAlchemy URL such as postgresql+psycopg://user@host/db.") \
                from e
        _engines[url] = engine
        return engine


def ensure_schema(engine: Engine) -> None:
    """Create every table registered on `Base` that this process has not yet created on ``engine`` (idempotent)."""
    with _lock:
        done = _created.setdefault(id(engine), set())
        missing = [t for name, t in Base.metadata.tables.items() if name not in done]
        if missing:
            Base.metadata.create_all(engine, tables=missing, checkfirst=True)
            done.update(t.name for t in missing)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back (and re-raise) when it raises.

    Objects stay readable after the commit (``expire_on_commit=False``), so callers can return them.
    """
    session = sessionmaker(bind=engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection (tests that delete a database file call this first)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _created.clear()
