"""The delivery envelope on the intake ledger: read from the AMQP header, stored on
the row (JSON, on SQLite and PostgreSQL), shown by as_dict (intake_status,
list_intake), and the migration that adds the column keeps existing rows."""
from __future__ import annotations

import hashlib

from sqlalchemy import select, text

from osprey import contracts
from osprey.db import make_engine, migrate
from services.ingest import envelope, models as ingest_models, pipeline
from services.ingest.models import Intake
from services.ingest.rawstore import RawStore
from tests.helpers import make_mail
from tests.unit_fixtures import ingest_db

RAW = make_mail("Envelope", "kept", message_id="<envelope@example.net>")
ENVELOPE = {"mail_from": "", "rcpt_to": ["abuse@csirt.example", "cert@csirt.example"], "peer": "[::1]:40000",
            "lhlo": "mx1.example.net"}


def headers(env: dict | None) -> dict:
    h = {contracts.H_QUEUE: "general", contracts.H_ACTION: "correspond", contracts.H_SOURCE: "lmtp"}
    if env is not None:
        h[envelope.H_ENVELOPE] = envelope.encode(env)
    return h


def test_delivery_reads_the_envelope_header():
    assert pipeline.Delivery.from_headers(RAW, headers(ENVELOPE)).envelope == ENVELOPE
    assert pipeline.Delivery.from_headers(RAW, headers(None)).envelope is None
    broken = {**headers(None), envelope.H_ENVELOPE: b"{not json"}
    assert pipeline.Delivery.from_headers(RAW, broken).envelope == {"unreadable": "{not json"}


def test_the_envelope_is_stored_with_the_first_delivery(databases, tmp_path):
    engine, make_session = ingest_db(databases.url("ingest", ingest_models.MIGRATIONS))
    store = RawStore(tmp_path / "raw")
    try:
        with make_session() as session:
            row, new = pipeline.receive(session, store, pipeline.Delivery.from_headers(RAW, headers(ENVELOPE)))
            assert new and row.as_dict()["envelope"] == ENVELOPE
            # the MTA retries with another client address: one delivery, counted; the first envelope stays
            again = {**ENVELOPE, "peer": "[::1]:40001"}
            row, new = pipeline.receive(session, store, pipeline.Delivery.from_headers(RAW, headers(again)))
            assert (new, row.deliveries) == (False, 2)
        with make_session() as other:             # as committed, read back by another session
            (stored,) = other.scalars(select(Intake)).all()
            assert stored.as_dict()["envelope"] == ENVELOPE
            assert stored.as_dict()["intake_id"] == contracts.intake_id(hashlib.sha256(RAW).hexdigest(), "general",
                                                                        "correspond")
    finally:
        engine.dispose()


def test_upgrading_a_ledger_keeps_its_rows_and_adds_an_empty_envelope(tmp_path):
    from alembic import command
    from alembic.config import Config

    engine = make_engine(f"sqlite:///{tmp_path}/ingest.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(ingest_models.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "ac49eea6f50f")        # the schema before the envelope
        conn.execute(text("INSERT INTO intake (id, sha256, size, queue, action, source, status, deliveries, "
                          "received_at, updated_at) VALUES ('i1', 's1', 10, 'general', 'correspond', 'mailgate', "
                          "'delivered', 1, '2026-01-01', '2026-01-01')"))
    migrate(engine, ingest_models.MIGRATIONS)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, status, envelope FROM intake")).all() == [("i1", "delivered", None)]
    engine.dispose()
