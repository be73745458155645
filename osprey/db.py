"""Database plumbing shared by every service that owns SQL data.

``Database`` is nameko-sqlalchemy's provider, configured from ``osprey.config``
instead of a DB_URIS entry, with SQLite tuned for several processes (WAL, a busy
timeout, foreign keys) and the service's tables created on start.
"""
from __future__ import annotations

from typing import Callable

from nameko_sqlalchemy import Database as _Database
from nameko_sqlalchemy.database import Session as _Session
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def prepare(engine: Engine, metadata, after_create: Callable[[Engine], None] | None = None) -> None:
    metadata.create_all(engine)
    if after_create:
        after_create(engine)


class Database(_Database):
    """nameko-sqlalchemy's Database, its URL from a callable, schema created in setup."""

    def __init__(self, declarative_base, url: Callable[[], str],
                 after_create: Callable[[Engine], None] | None = None):
        super().__init__(declarative_base, session_options={"expire_on_commit": False})
        self._url = url
        self._after_create = after_create

    def setup(self):
        self.db_uri = self._url()
        self.engine = make_engine(self.db_uri)
        prepare(self.engine, self.declarative_base.metadata, self._after_create)
        self.Session = sessionmaker(bind=self.engine, class_=_Session, **self.session_options)
