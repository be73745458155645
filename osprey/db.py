"""Database plumbing shared by every service that owns SQL data.

``Database`` is nameko-sqlalchemy's provider, configured from ``osprey.config``
instead of a DB_URIS entry, with SQLite tuned for several processes (WAL, a busy
timeout, foreign keys) and the service's Alembic migrations applied on start.
PostgreSQL (a ``postgresql+psycopg://`` URL) works as well: sessions in UTC, and
migrations serialised by an advisory lock so that instances may start together.

A schema change is a new revision in ``services/<svc>/migrations/versions``:
``cd services/<svc>/migrations && ../../../.venv/bin/alembic -c /dev/null`` is awkward,
so use ``osprey db revision SERVICE "message"`` (autogenerates against a scratch DB).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

from nameko_sqlalchemy import Database as _Database
from nameko_sqlalchemy.database import Session as _Session
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker


def _wal(cur) -> None:
    """WAL is a property of the file: set it once. Switching needs a lock SQLite does not
    wait for (its busy handler is skipped), so a replica connecting while another one
    migrates gets "database is locked" at once: read first, retry a while."""
    import sqlite3
    import time
    for attempt in range(100):
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.1)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _utc(dbapi_conn, _record):
            # times come back in UTC whatever the server's TimeZone (as models.iso expects)
            cur = dbapi_conn.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.close()
            dbapi_conn.commit()

        @event.listens_for(engine, "before_cursor_execute", retval=True)
        def _no_nul(_conn, _cursor, statement, parameters, _context, _executemany):
            return statement, _without_nul(parameters)
    return engine


def _without_nul(value):
    """PostgreSQL's text cannot hold U+0000, which mail text can (SQLite stores it):
    on PostgreSQL it is stored as U+FFFD, the replacement character (the raw mail in
    ingest's store keeps every byte). Bytes (bytea) and JSON (escaped) are untouched."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_nul(v) for v in value)
    return value


def migrate(engine: Engine, migrations: Path) -> None:
    """Bring the database to the newest schema: ``alembic upgrade head`` with the
    service's own migrations folder (each service owns its schema)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    if engine.dialect.name == "sqlite":
        _migrate_sqlite(engine, cfg)
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # several instances of a service may start at once: one migrates, the others
            # wait here (the lock ends with the transaction) and then find it done
            key = zlib.crc32(f"osprey-migrate:{Path(migrations).resolve().parent.name}".encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _migrate_sqlite(engine: Engine, cfg) -> None:
    """SQLite changes a constraint by copying the table (Alembic's batch mode), and a
    copy cannot drop the old table while foreign keys are enforced: switch them off
    for the migration (outside its transaction, as SQLite requires), then check them."""
    import contextlib
    import fcntl

    from alembic import command

    # Several processes may start on one SQLite file (replicas, `osprey run`): Python's sqlite3
    # runs DDL outside a transaction, so two migrations at once would both create the same
    # tables. One migrates while the others wait on a lock file beside the database.
    database = engine.url.database
    lock = open(f"{database}.migrate-lock", "a") if database and database != ":memory:" else None
    with contextlib.ExitStack() as stack:
        if lock is not None:
            stack.callback(lock.close)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _migrate_sqlite_locked(engine, cfg, command)


def _migrate_sqlite_locked(engine: Engine, cfg, command) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()   # ends SQLAlchemy's autobegun transaction; the PRAGMA ran outside any
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows with broken foreign keys: {broken[:5]}")
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def prepare(engine: Engine, migrations: Path, after_create: Callable[[Engine], None] | None = None) -> None:
    migrate(engine, migrations)
    if after_create:
        after_create(engine)


def run_migrations(metadata) -> None:
    """The body of every service's ``migrations/env.py``."""
    from alembic import context

    unmanaged = tuple(metadata.info.get("unmanaged_prefixes", ()))

    def include_name(name, type_, _parent):
        # tables made by raw DDL on purpose (e.g. an FTS5 index and its shadow tables)
        return not (type_ == "table" and unmanaged and name.startswith(unmanaged))

    def run(conn):
        context.configure(connection=conn, target_metadata=metadata, include_name=include_name,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()

    conn = context.config.attributes.get("connection")
    if conn is not None:
        run(conn)
        return
    # the alembic command line (e.g. `alembic revision --autogenerate`): URL from -x url=...
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path ...")
    with make_engine(url).begin() as conn:
        run(conn)


class Database(_Database):
    """nameko-sqlalchemy's Database, its URL from a callable, schema created in setup."""

    def __init__(self, declarative_base, url: Callable[[], str], migrations: Path,
                 after_create: Callable[[Engine], None] | None = None):
        super().__init__(declarative_base, session_options={"expire_on_commit": False})
        self._url = url
        self._migrations = migrations
        self._after_create = after_create

    def setup(self):
        self.db_uri = self._url()
        self.engine = make_engine(self.db_uri)
        prepare(self.engine, self._migrations, self._after_create)
        self.Session = sessionmaker(bind=self.engine, class_=_Session, **self.session_options)
