"""Schema creation, versioning and migration on SQLite and PostgreSQL; an unreachable database refused."""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from loupe.db.cache import ResultCache
from loupe.db.engine import DatabaseUnavailable, SchemaMismatch, init_db, make_engine
from loupe.db.tables import SCHEMA_VERSION, Analysis, Meta

from ..server import ROOT, free_port
from .test_cache import REQUEST, _stored


def test_a_database_of_an_unknown_schema_version_is_refused(engines):
    sessions = init_db(engines())
    with sessions.begin() as session:
        session.get(Meta, "schema_version").value = str(SCHEMA_VERSION + 1)
    with pytest.raises(SchemaMismatch, match=f"schema version {SCHEMA_VERSION + 1}"):
        init_db(engines())


def test_a_version_1_database_migrates_and_counts_sizes_alike(engines):
    """Migration 1 -> 2 sizes each stored row in SQL: LENGTH of the JSON text and of every blob
    (bytes, as bytea's LENGTH on PostgreSQL), so both backends arrive at the same number."""
    cache = ResultCache(init_db(engines()))
    slices = _stored(cache, "m" * 64)
    result = cache.get("m" * 64).result
    with cache.sessions.begin() as session:  # back to the version 1 layout
        for statement in (
            "DROP INDEX IF EXISTS ix_analysis_read_at", "DROP INDEX IF EXISTS ix_analysis_status",
            "ALTER TABLE analysis DROP COLUMN read_at", "ALTER TABLE analysis DROP COLUMN size_bytes",
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
        ):  # fmt: skip
            session.execute(text(statement))
    sessions = init_db(engines())
    with sessions() as session:
        row = session.get(Analysis, "m" * 64)
        assert row.size_bytes == len(json.dumps(REQUEST)) + len(json.dumps(result)) + sum(len(s.data) for s in slices)
        assert row.status == "done" and row.read_at.utcoffset().total_seconds() == 0
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    cache = ResultCache(sessions)
    assert cache.read("m" * 64).result == result and cache.blob("m" * 64, "pattern", 0, 1, 1).data == slices[1].data


def test_processes_opening_a_new_postgres_database_at_once_all_start(postgres):
    """Tables and the schema version are created once; the other openers wait, then use them.
    (PostgreSQL only: two openers of a brand-new SQLite file race on switching it to WAL, as before.)"""
    from concurrent.futures import ThreadPoolExecutor

    with postgres.database() as url:
        made = [make_engine(url) for _ in range(4)]
        with ThreadPoolExecutor(len(made)) as pool:
            factories = list(pool.map(init_db, made))
        with factories[0]() as session:
            assert session.scalars(text("SELECT value FROM meta")).all() == [str(SCHEMA_VERSION)]
        for engine in made:
            engine.dispose()


def test_an_unreachable_database_is_refused_with_one_line():
    url = f"postgresql+psycopg://loupe:secret@127.0.0.1:{free_port()}/loupe"
    with pytest.raises(DatabaseUnavailable, match="cannot open the database at .*127.0.0.1") as refused:
        init_db(make_engine(url))
    assert "secret" not in str(refused.value)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"), "LOUPE_DATABASE_URL": url, "LOUPE_PORT": str(free_port())}
    served = subprocess.run([sys.executable, "-m", "loupe"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert served.returncode == 2 and "Loupe cannot start: cannot open the database" in served.stderr
    assert "Traceback" not in served.stderr and "secret" not in served.stderr
