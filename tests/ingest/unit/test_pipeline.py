"""services/ingest/pipeline.py: receive (raw store + ledger) and process (parse,
thread, deliver) against a real intake ledger and a real tickets database, both on
SQLite and both on PostgreSQL."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from nameko.exceptions import RemoteError
from sqlalchemy import func, select

from osprey import contracts
from services.ingest import models as ingest_models
from services.ingest import pipeline
from services.ingest.models import Intake
from services.ingest.parse import parse_mail
from services.ingest.rawstore import RawStore
from services.tickets import models as tickets_models
from services.tickets import records
from services.tickets.models import Article, Ticket
from tests.unit_fixtures import TicketsOverSQLite, ingest_db, tickets_db

DATA = Path(__file__).resolve().parent.parent / "data"
PLAIN = (DATA / "plain.eml").read_bytes()
FOLLOW_UP = (PLAIN.replace(b"Subject: Phishing site at 192.0.2.15", b"Subject: Re: [Osprey #1] Phishing site")
             .replace(b"<plain-1@example.net>", b"<plain-2@example.net>"))
NOT_A_MAIL = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"


@pytest.fixture
def ledger(databases):
    engine, make_session = ingest_db(databases.url("ingest", ingest_models.MIGRATIONS))
    with make_session() as session:
        yield session
    engine.dispose()


@pytest.fixture
def store(tmp_path):
    return RawStore(tmp_path / "raw")


@pytest.fixture
def tickets_session(databases):
    engine, make_session = tickets_db(databases.url("tickets", tickets_models.MIGRATIONS))
    yield make_session
    engine.dispose()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def without_times(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("received_at", "updated_at", "created", "updated")}


def deliver(ledger, store, tickets_session, raw, queue="general", action="correspond") -> dict:
    """What IngestService.handle_intake does with one intake message."""
    intake, _new = pipeline.receive(ledger, store, pipeline.Delivery(raw, queue, action, "mailgate"))
    if intake.status == contracts.INTAKE_RECEIVED:
        ctx = pipeline.Context(intake=intake, raw=raw, tickets=TicketsOverSQLite(tickets_session),
                               ticket_tag="Osprey", max_body_chars=1024 * 1024)
        intake = pipeline.process(ledger, ctx)
    return without_times(intake.as_dict())


def ledger_rows(ledger) -> list[dict]:
    ledger.expire_all()
    return [without_times(r.as_dict()) for r in ledger.scalars(select(Intake).order_by(Intake.received_at))]


# --- Delivery ------------------------------------------------------------------

def test_delivery_from_amqp_headers():
    headers = {contracts.H_QUEUE: b"abuse", contracts.H_ACTION: "comment", contracts.H_SOURCE: "lmtp"}
    assert pipeline.Delivery.from_headers(PLAIN, headers) == pipeline.Delivery(PLAIN, "abuse", "comment", "lmtp")


@pytest.mark.parametrize("headers", [None, {}])
def test_delivery_without_headers_gets_the_defaults(headers):
    assert pipeline.Delivery.from_headers(PLAIN, headers) == pipeline.Delivery(PLAIN, "general", "correspond",
                                                                               "unknown")


# --- receive -------------------------------------------------------------------

def received(raw: bytes, queue="general", action="correspond", **changes) -> dict:
    return {"intake_id": contracts.intake_id(sha(raw), queue, action), "sha256": sha(raw), "size": len(raw),
            "queue": queue, "action": action, "source": "mailgate", "status": "received", "reason": None,
            "deliveries": 1, "message_id": None, "subject": None, "from": None, "envelope_ticket": None, "envelope": None, "ticket_id": None,
            "article_id": None, **changes}


def test_first_delivery_is_stored_and_recorded_as_received(ledger, store):
    intake, is_new = pipeline.receive(ledger, store, pipeline.Delivery(PLAIN, "general", "correspond", "mailgate"))
    assert (is_new, without_times(intake.as_dict())) == (True, received(PLAIN))
    assert ledger_rows(ledger) == [received(PLAIN)]
    assert store.get(sha(PLAIN)) == PLAIN


def test_receive_commits(ledger, store, databases):
    pipeline.receive(ledger, store, pipeline.Delivery(PLAIN, "general", "correspond", "mailgate"))
    engine, make_session = ingest_db(databases.url("ingest"))   # the same database
    with make_session() as other:
        assert [without_times(r.as_dict()) for r in other.scalars(select(Intake))] == [received(PLAIN)]
    engine.dispose()


def test_repeated_delivery_counts_up_and_is_not_new(ledger, store):
    delivery = pipeline.Delivery(PLAIN, "general", "correspond", "mailgate")
    pipeline.receive(ledger, store, delivery)
    pipeline.receive(ledger, store, delivery)
    intake, is_new = pipeline.receive(ledger, store, delivery)
    assert (is_new, without_times(intake.as_dict())) == (False, received(PLAIN, deliveries=3))
    assert ledger_rows(ledger) == [received(PLAIN, deliveries=3)]


def test_same_bytes_for_another_queue_or_action_is_another_delivery(ledger, store):
    for queue, action in [("general", "correspond"), ("abuse", "correspond"), ("general", "comment")]:
        _intake, is_new = pipeline.receive(ledger, store, pipeline.Delivery(PLAIN, queue, action, "mailgate"))
        assert is_new
    assert sorted(r["intake_id"] for r in ledger_rows(ledger)) == sorted(
        contracts.intake_id(sha(PLAIN), q, a) for q, a in [("general", "correspond"), ("abuse", "correspond"),
                                                             ("general", "comment")])


def test_unknown_action_is_quarantined_with_a_reason(ledger, store):
    intake, is_new = pipeline.receive(ledger, store, pipeline.Delivery(PLAIN, "general", "forward", "mailgate"))
    assert (is_new, without_times(intake.as_dict())) == (True, received(
        PLAIN, action="forward", status="quarantined",
        reason="unknown action 'forward' (expected one of correspond, comment)"))
    assert store.get(sha(PLAIN)) == PLAIN     # kept, so it can be looked at


# --- thread --------------------------------------------------------------------

@pytest.mark.parametrize("subject, hint", [
    ("[Osprey #42] Phishing", 42),
    ("Re: Re: [Osprey #1] Phishing", 1),
    ("AW: [ osprey # 7 ] case and spaces", 7),
    ("[OSPREY #0012]", 12),
    ("[Other #3] another system's tag", None),
    ("[Osprey #] no number", None),
    ("Osprey #5 without brackets", None),
    ("", None),
])
def test_thread_reads_the_ticket_tag(subject, hint):
    raw = f"From: a@example.org\nSubject: {subject}\n\nbody\n".encode()
    ctx = pipeline.Context(intake=Intake(), raw=raw, tickets=None, ticket_tag="Osprey", max_body_chars=100)
    ctx.mail = parse_mail(raw, 100)
    pipeline.thread(ctx)
    assert ctx.ticket_hint == hint


# --- process -------------------------------------------------------------------

def test_mail_becomes_a_ticket(ledger, store, tickets_session):
    assert deliver(ledger, store, tickets_session, PLAIN) == received(
        PLAIN, status="delivered", message_id="<plain-1@example.net>", subject="Phishing site at 192.0.2.15",
        **{"from": "Alice Reporter <alice@example.net>"}, ticket_id=1, article_id=1)
    with tickets_session() as session:
        assert without_times(records.ticket_dict(records.get_ticket(session, 1))) == {
            "id": 1, "queue": "general", "subject": "Phishing site at 192.0.2.15", "state": "new",
            "requestor": "alice@example.net", "priority": 50, "owner": None, "outcome": None, "version": 1,
            "due": None, "time_worked": 0, "time_estimated": 0, "merged_into": None,
            "sla": {"first_response_due": None, "next_response_due": None, "resolution_due": None,
                    "first_responded": None, "breached": []}}
        assert without_times(records.article_dict(records.get_article(session, 1))) == {
            "id": 1, "ticket_id": 1, "direction": "in", "action": "correspond",
            "message_id": "<plain-1@example.net>", "from": "Alice Reporter <alice@example.net>",
            "to": ["CSIRT <csirt@example.org>", "bob@example.org"], "cc": ["Carol <carol@example.com>"],
            "subject": "Phishing site at 192.0.2.15", "date": "2025-11-25T10:15:00+01:00",
            "body_text": "Hello,\n\nthe host 192.0.2.15 serves a phishing kit since 09:00 CET.\n\nRegards, Alice\n",
            "body_html": None, "body_truncated": False, "raw_sha256": sha(PLAIN), "raw_size": len(PLAIN),
            "intake_id": contracts.intake_id(sha(PLAIN), "general", "correspond"), "attachments": [],
            "auto": {"automatic": False, "reasons": [], "bounce": False, "bounce_of": None},
            "author": None, "time_worked": 0, "security": None, "mime_sha256": None}
    assert ledger_rows(ledger)[0]["status"] == "delivered"


def test_attachments_reach_the_ticket_as_metadata(ledger, store, tickets_session):
    raw = (DATA / "attachments.eml").read_bytes()
    mail = parse_mail(raw, 1024 * 1024)
    assert deliver(ledger, store, tickets_session, raw)["status"] == "delivered"
    with tickets_session() as session:
        stored = [{k: v for k, v in a.items() if k != "id"}
                  for a in records.article_dict(records.get_article(session, 1))["attachments"]]
    assert stored == mail.attachments
    assert [a["part"] for a in stored] == ["1.2", "2", "3", "4"]


def test_tagged_follow_up_is_added_to_its_ticket(ledger, store, tickets_session):
    deliver(ledger, store, tickets_session, PLAIN)
    assert deliver(ledger, store, tickets_session, FOLLOW_UP) == received(
        FOLLOW_UP, status="delivered", message_id="<plain-2@example.net>",
        subject="Re: [Osprey #1] Phishing site", **{"from": "Alice Reporter <alice@example.net>"},
        ticket_id=1, article_id=2)
    with tickets_session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalars(select(Article.ticket_id).order_by(Article.id)).all() == [1, 1]


def test_tag_naming_a_missing_ticket_opens_a_new_one(ledger, store, tickets_session):
    raw = FOLLOW_UP.replace(b"[Osprey #1]", b"[Osprey #99]")
    assert deliver(ledger, store, tickets_session, raw)["ticket_id"] == 1
    with tickets_session() as session:
        assert records.get_ticket(session, 1).subject == "Re: [Osprey #99] Phishing site"


def test_unparseable_mail_is_quarantined_with_a_reason(ledger, store, tickets_session):
    assert deliver(ledger, store, tickets_session, NOT_A_MAIL) == received(
        NOT_A_MAIL, status="quarantined",
        reason="not an RFC 5322 message: none of From, Sender, To, Subject, Date, Message-ID in its header")
    with tickets_session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
    assert store.get(sha(NOT_A_MAIL)) == NOT_A_MAIL


def test_empty_mail_is_quarantined_with_a_reason(ledger, store, tickets_session):
    assert deliver(ledger, store, tickets_session, b"\r\n")["reason"] == "empty message: no bytes besides whitespace"


def test_tickets_refusal_crosses_as_remote_error(tickets_session):
    payload = {"intake_id": "i" * 64, "queue": "x", "subject": "s"}
    with pytest.raises(RemoteError) as caught:
        TicketsOverSQLite(tickets_session).add_mail(payload)
    assert (caught.value.exc_type, caught.value.value) == ("UnknownQueue", "no queue named 'x'")


def test_mail_for_an_unknown_queue_is_quarantined(ledger, store, tickets_session):
    assert deliver(ledger, store, tickets_session, PLAIN, queue="x") == received(
        PLAIN, queue="x", status="quarantined", reason="tickets refused it: UnknownQueue: no queue named 'x'",
        message_id="<plain-1@example.net>", subject="Phishing site at 192.0.2.15",
        **{"from": "Alice Reporter <alice@example.net>"})
    with tickets_session() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0


def test_repeated_delivery_after_processing_is_not_processed_again(ledger, store, tickets_session):
    deliver(ledger, store, tickets_session, PLAIN)
    assert deliver(ledger, store, tickets_session, PLAIN) == received(
        PLAIN, status="delivered", deliveries=2, message_id="<plain-1@example.net>",
        subject="Phishing site at 192.0.2.15", **{"from": "Alice Reporter <alice@example.net>"},
        ticket_id=1, article_id=1)
    with tickets_session() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 1


def test_processing_again_after_a_lost_ledger_commit_makes_no_second_article(ledger, store, tickets_session):
    # tickets committed the article, ingest died before recording "delivered":
    # the redelivered mail is processed again and tickets answers with the same ids
    deliver(ledger, store, tickets_session, PLAIN)
    intake = ledger.get(Intake, contracts.intake_id(sha(PLAIN), "general", "correspond"))
    intake.status, intake.ticket_id, intake.article_id = contracts.INTAKE_RECEIVED, None, None
    ledger.commit()
    ctx = pipeline.Context(intake=intake, raw=PLAIN, tickets=TicketsOverSQLite(tickets_session),
                           ticket_tag="Osprey", max_body_chars=1024 * 1024)
    intake = pipeline.process(ledger, ctx)
    assert (intake.status, intake.ticket_id, intake.article_id) == ("delivered", 1, 1)
    assert ctx.result == {"ticket_id": 1, "article_id": 1, "created_ticket": False, "duplicate": True,
                          "held_from_ticket": None}
    with tickets_session() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 1


def test_a_parser_bug_quarantines_instead_of_looping(ledger, store, monkeypatch):
    """An exception the parser should never raise becomes a quarantine entry (and an
    ERROR in the log), not an exception that would requeue the message for ever."""
    from services.ingest import pipeline as pl

    def broken(raw, max_body_chars):
        raise KeyError("bug")
    monkeypatch.setattr(pl, "parse_mail", broken)
    intake, _ = pl.receive(ledger, store, pl.Delivery(PLAIN, "general", "correspond", "test"))
    ctx = pl.Context(intake=intake, raw=PLAIN, tickets=None, ticket_tag="Osprey", max_body_chars=1000)
    row = pl.process(ledger, ctx)
    assert (row.status, row.reason) == ("quarantined",
                                       "the parser failed (KeyError: 'bug'); kept for re-processing after a fix")
