"""The SQLAlchemy engine (SQLite in WAL mode with a busy timeout, or PostgreSQL), its session
factory, and migrations."""

import json
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .tables import SCHEMA_VERSION, Analysis, Base, Meta


class SchemaMismatch(RuntimeError):
    """The database was written by a schema Loupe cannot read; Loupe refuses to misread it."""


class DatabaseUnavailable(RuntimeError):
    """The database at LOUPE_DATABASE_URL cannot be reached or opened (wrong host, credentials, name)."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            # before any table exists: a new file frees pages on `PRAGMA incremental_vacuum` (eviction)
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # a server that does not answer is refused at start-up within seconds, not after the OS's TCP timeout
    connect_args = {"connect_timeout": 10} if url.startswith("postgresql") and "connect_timeout" not in url else {}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except ModuleNotFoundError as error:  # e.g. postgresql+psycopg without the `postgres` extra
        raise DatabaseUnavailable(f"LOUPE_DATABASE_URL needs the driver {error.name!r}: pip install 'loupe[postgres]'") from None


def _migrate_1_to_2(session: Session) -> None:
    """Version 2 adds each analysis' stored size and last read time (for LOUPE_MAX_DB_BYTES): the
    columns are added and filled from what is stored; nothing is dropped."""
    columns = {c["name"] for c in inspect(session.connection()).get_columns("analysis")}
    read_at = Analysis.__table__.c.read_at.type.compile(session.get_bind().dialect)  # TIMESTAMP WITH TIME ZONE on PostgreSQL
    for name, ddl in (("size_bytes", "INTEGER NOT NULL DEFAULT 0"), ("read_at", read_at)):
        if name not in columns:
            session.execute(text(f"ALTER TABLE analysis ADD COLUMN {name} {ddl}"))
    session.execute(
        text(
            "UPDATE analysis SET read_at = COALESCE(read_at, updated_at, created_at), size_bytes = "
            "LENGTH(CAST(request AS TEXT)) + COALESCE(LENGTH(CAST(result AS TEXT)), 0) + "
            "COALESCE((SELECT SUM(LENGTH(data)) FROM blob WHERE blob.analysis_id = analysis.id), 0)"
        )
    )
    for column in ("status", "read_at"):
        session.execute(text(f"CREATE INDEX IF NOT EXISTS ix_analysis_{column} ON analysis ({column})"))


def _head_ablation_result(old: dict) -> dict:
    """A stored `head_ablation` result in `ablation`'s shape: its zero-ablation loss sweep, unchanged."""
    kept = ("tokens", "token_ids", "n_iterations", "n_layers", "n_heads", "attention_layers", "formula")
    return {key: old[key] for key in kept if key in old} | {
        "mode": "zero", "metric": "loss", "heads": None, "iteration": None, "clean": old["loss"], "ablated": None,
        "delta": old["delta_loss"], "patterns": False,
    }  # fmt: skip


def _migrate_2_to_3(session: Session) -> None:
    """Version 3: `head_ablation` became `ablation` (its sweep with the default params). Stored rows are
    renamed and their results reshaped, so their permalinks (the same ids) open as `ablation`; their
    request params ({loop}) are valid `ablation` params with the same meaning."""
    rows = session.execute(text("SELECT id, result FROM analysis WHERE analysis = 'head_ablation'")).all()
    for key, result in rows:
        old = json.loads(result) if isinstance(result, str) else result
        new = None if old is None else json.dumps(_head_ablation_result(old))
        session.execute(
            text("UPDATE analysis SET analysis = 'ablation', result = :result, size_bytes = size_bytes + :grown WHERE id = :id"),
            {"id": key, "result": new, "grown": 0 if new is None else len(new) - len(json.dumps(old))},
        )


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def init_db(engine: Engine) -> sessionmaker[Session]:
    """Create the tables on a new database, migrate an older one in place, and refuse one written
    by a newer (unknown) schema version, or one that cannot be reached (DatabaseUnavailable)."""
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
        raise DatabaseUnavailable(f"cannot open the database at {engine.url} (LOUPE_DATABASE_URL): {reason}") from None
    try:
        _create_or_migrate(engine)
    except OperationalError:  # SQLite: another process created the tables between our look and our CREATE
        _create_or_migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)


SCHEMA_LOCK = 0x10C9E  # the PostgreSQL advisory lock held while a database's schema is created or migrated


def _create_or_migrate(engine: Engine) -> None:
    """One transaction: the tables, then the schema version (written, checked or migrated). On
    PostgreSQL, processes opening one database at once take turns on an advisory lock."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        Base.metadata.create_all(connection)
        with Session(connection) as session:
            row = session.get(Meta, "schema_version")
            if row is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                session.flush()
                return
            version = int(row.value) if row.value.isdigit() else -1
            if version not in MIGRATIONS and version != SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"the database at {engine.url} has schema version {row.value}, this Loupe uses "
                    f"{SCHEMA_VERSION} and migrates from {sorted(MIGRATIONS)}; point LOUPE_DATA_DIR at a new folder "
                    "(or LOUPE_DATABASE_URL at a new database)"
                )
            while version in MIGRATIONS:
                MIGRATIONS[version](session)
                version += 1
            row.value = str(version)
            session.flush()
