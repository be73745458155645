"""Small helpers the unit tests share: real databases (SQLite, or PostgreSQL by the
``databases``/``db_url`` fixtures of tests/storage.py), prepared exactly as the
services prepare theirs (osprey.db.make_engine/prepare).

Kept out of tests/conftest.py, which belongs to the integration harness.
"""
from __future__ import annotations

import json
from pathlib import Path

from nameko.exceptions import deserialize, serialize
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from osprey.db import make_engine, prepare
from services.ingest import models as ingest_models
from services.tickets import models as tickets_models
from services.tickets import records


def _url(db: str | Path) -> str:
    """A database URL; a path is an SQLite file."""
    return db if isinstance(db, str) else f"sqlite:///{db}"


def tickets_db(db: str | Path, queues=("general",)) -> tuple[Engine, sessionmaker]:
    """A tickets database (URL, or SQLite file) as the tickets service sets it up on
    first start: schema, search index, the given queues (committed)."""
    engine = make_engine(_url(db))
    prepare(engine, tickets_models.MIGRATIONS)
    make_session = sessionmaker(bind=engine, expire_on_commit=False)
    with make_session() as session:
        records.ensure_queues(session, list(queues))
        session.commit()
    return engine, make_session


def ingest_db(db: str | Path) -> tuple[Engine, sessionmaker]:
    """The intake ledger (URL, or SQLite file) as the ingest service sets it up."""
    engine = make_engine(_url(db))
    prepare(engine, ingest_models.MIGRATIONS)
    return engine, sessionmaker(bind=engine, expire_on_commit=False)


class TicketsOverSQLite:
    """The tickets end of ``add_mail`` without a broker: the payload crosses as JSON
    (nameko's serializer), ``records.add_mail`` runs on a real tickets database
    (SQLite or PostgreSQL, whatever ``make_session`` is bound to) in
    one committed transaction, as in TicketsService.add_mail, and an exception
    crosses back the way nameko carries it (serialize → deserialize, which gives
    the caller a ``RemoteError``)."""

    def __init__(self, make_session: sessionmaker):
        self.make_session = make_session

    def add_mail(self, payload: dict) -> dict:
        payload = json.loads(json.dumps(payload))
        with self.make_session() as session:
            try:
                result = records.add_mail(session, payload)
                session.commit()
            except Exception as exc:
                session.rollback()
                raise deserialize(serialize(exc)) from exc
        return json.loads(json.dumps(result))
