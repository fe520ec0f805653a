"""pipelines.db: the URL from the configuration, one engine per URL, SQLite settings, bad URLs as typed errors."""

import pytest
from sqlalchemy import text

from models.errors import ConfigError
from pipelines.config import load_config
from pipelines.db import DB_FILE, database_url, ensure_schema, get_engine, session_scope


def test_empty_url_is_sqlite_in_the_data_dir(tmp_path):
    config = load_config(env={"MEWM_APP__DATA_DIR": str(tmp_path / "d")})
    url = database_url(config)
    assert url == f"sqlite:///{(tmp_path / 'd' / DB_FILE).resolve()}"
    engine = get_engine(config=config)
    assert engine is get_engine(url)
    ensure_schema(engine)
    with session_scope(engine) as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "d" / DB_FILE).is_file()


def test_configured_url_wins_and_bad_urls_are_config_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert database_url(load_config(env={"MEWM_APP__DATABASE_URL": url})) == url
    for bad in ("not a url", "nosuchdialect://host/db"):
        with pytest.raises(ConfigError, match="database_url"):
            get_engine(bad)


def test_session_scope_rolls_back_on_error(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with session_scope(engine) as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    with pytest.raises(RuntimeError):
        with session_scope(engine) as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("boom")
    with session_scope(engine) as s:
        assert s.execute(text("SELECT COUNT(*) FROM t")).scalar() == 0
