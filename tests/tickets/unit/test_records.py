"""services/tickets/records.py: add_mail (idempotent, audited, with outbox events),
queue counts and ticket lists, on a real tickets database: SQLite and PostgreSQL."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from osprey import contracts
from services.tickets import records
from services.tickets.exceptions import NotFound, UnknownQueue
from services.tickets.models import MIGRATIONS, Article, ArticleIP, Attachment, AuditEntry, OutboxEvent, Ticket
from tests.unit_fixtures import tickets_db

RAW_SHA = "ab" * 32
DEFAULT_STATES = [{"name": "new", "category": "initial"}, {"name": "open", "category": "active"},
                  {"name": "stalled", "category": "inactive"}, {"name": "resolved", "category": "closed"},
                  {"name": "rejected", "category": "closed"}]


def mail(n: int = 1, queue: str = "general", **changes) -> dict:
    """An add_mail payload as ingest's deliver step sends it."""
    return {
        "schema": 1, "intake_id": f"{n:064x}", "queue": queue, "action": "correspond", "source": "mailgate",
        "raw_sha256": RAW_SHA, "raw_size": 1234, "ticket_hint": None,
        "message_id": f"<m{n}@example.net>", "in_reply_to": None, "references": [],
        "subject": f"Incident {n}", "sender": "Alice <alice@example.net>", "sender_address": "alice@example.net",
        "to": ["csirt@example.org"], "cc": [], "date": "2025-11-25T10:15:00+01:00",
        "body_text": f"Report number {n} about 192.0.2.{n}.", "body_html": None, "body_truncated": False,
        "attachments": [{"part": "2", "filename": "evidence.txt", "content_type": "text/plain",
                         "size": 5, "sha256": "cd" * 32}],
        "defects": [], **changes}


@pytest.fixture
def session(databases):
    engine, make_session = tickets_db(databases.url("tickets", MIGRATIONS), queues=("general", "abuse"))
    with make_session() as session:
        yield session
    engine.dispose()


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def without(row: dict, *keys) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def test_add_mail_creates_a_ticket_with_one_article(session):
    assert records.add_mail(session, mail(1)) == {"ticket_id": 1, "article_id": 1, "created_ticket": True,
                                                  "duplicate": False, "held_from_ticket": None}
    session.commit()
    assert without(records.ticket_dict(records.get_ticket(session, 1), articles=1), "created", "updated") == {
        "id": 1, "queue": "general", "subject": "Incident 1", "state": "new", "requestor": "alice@example.net",
        "articles": 1, "priority": 50, "owner": None, "outcome": None, "version": 1, "due": None,
        "time_worked": 0, "time_estimated": 0, "merged_into": None,
        "sla": {"first_response_due": None, "next_response_due": None, "resolution_due": None,
                "first_responded": None, "breached": []}}
    assert without(records.article_dict(records.get_article(session, 1)), "created") == {
        "id": 1, "ticket_id": 1, "direction": "in", "action": "correspond", "message_id": "<m1@example.net>",
        "from": "Alice <alice@example.net>", "to": ["csirt@example.org"], "cc": [], "subject": "Incident 1",
        "date": "2025-11-25T10:15:00+01:00", "body_text": "Report number 1 about 192.0.2.1.", "body_html": None,
        "body_truncated": False, "raw_sha256": RAW_SHA, "raw_size": 1234, "intake_id": f"{1:064x}", "auto": {},
        "author": None, "time_worked": 0, "security": None, "mime_sha256": None, "attachments": [{"id": 1, "part": "2", "filename": "evidence.txt", "content_type": "text/plain",
                         "size": 5, "sha256": "cd" * 32}]}


def test_add_mail_twice_with_the_same_intake_id_is_a_duplicate(session):
    records.add_mail(session, mail(1))
    session.commit()
    assert records.add_mail(session, mail(1, subject="changed")) == {
        "ticket_id": 1, "article_id": 1, "created_ticket": False, "duplicate": True, "held_from_ticket": None}
    session.commit()
    assert {m.__name__: count(session, m) for m in (Ticket, Article, Attachment, ArticleIP, OutboxEvent)} == {
        "Ticket": 1, "Article": 1, "Attachment": 1, "ArticleIP": 1, "OutboxEvent": 2}
    assert [h["action"] for h in records.history(session, 1)] == ["ticket_created", "article_added"]


def test_add_mail_writes_the_audit_trail(session):
    records.add_mail(session, mail(1))
    session.commit()
    assert [without(h, "id", "created") for h in records.history(session, 1)] == [
        {"actor": "system", "action": "ticket_created", "detail": {"via": "mailgate", "intake_id": f"{1:064x}"}},
        {"actor": "system", "action": "article_added", "detail": {"article_id": 1, "intake_id": f"{1:064x}"}},
    ]


def test_queue_creation_is_audited_without_a_ticket(session):
    rows = session.execute(select(AuditEntry.ticket_id, AuditEntry.actor, AuditEntry.action, AuditEntry.detail)
                           .order_by(AuditEntry.id)).all()
    assert [tuple(r) for r in rows] == [(None, "system", "queue_created", {"queue": "general"}),
                                        (None, "system", "queue_created", {"queue": "abuse"})]


def test_add_mail_writes_outbox_events_with_schema_and_event_id(session):
    records.add_mail(session, mail(1))
    session.commit()
    events = records.pending_events(session)
    assert [(e.event_type, e.published) for e in events] == [("ticket_created", None), ("article_added", None)]
    assert [e.payload for e in events] == [
        {"schema": contracts.SCHEMA, "event_id": events[0].event_id, "ticket_id": 1, "queue": "general",
         "subject": "Incident 1"},
        {"schema": contracts.SCHEMA, "event_id": events[1].event_id, "ticket_id": 1, "article_id": 1,
         "raw_sha256": RAW_SHA},
    ]
    assert len({str(uuid.UUID(e.event_id)) for e in events}) == 2


def test_follow_up_adds_an_article_and_only_an_article_added_event(session):
    records.add_mail(session, mail(1))
    assert records.add_mail(session, mail(2, ticket_hint=1)) == {
        "ticket_id": 1, "article_id": 2, "created_ticket": False, "duplicate": False, "held_from_ticket": None}
    session.commit()
    assert [(e.event_type, e.payload["article_id"] if "article_id" in e.payload else None)
            for e in records.pending_events(session)] == [
        ("ticket_created", None), ("article_added", 1), ("article_added", 2)]
    assert [h["action"] for h in records.history(session, 1)] == ["ticket_created", "article_added",
                                                                   "article_added"]


def test_ticket_hint_for_a_missing_ticket_opens_a_new_ticket(session):
    assert records.add_mail(session, mail(1, ticket_hint=99)) == {
        "ticket_id": 1, "article_id": 1, "created_ticket": True, "duplicate": False, "held_from_ticket": None}


def test_mail_without_subject_or_sender_address(session):
    records.add_mail(session, mail(1, subject="", sender_address="", sender="Nobody"))
    ticket = records.get_ticket(session, 1)
    assert (ticket.subject, ticket.requestor) == ("(no subject)", "Nobody")


def test_add_mail_for_an_unknown_queue_raises_and_writes_nothing(session):
    with pytest.raises(UnknownQueue, match="^no queue named 'x'$"):
        records.add_mail(session, mail(1, queue="x"))
    session.rollback()
    assert {m.__name__: count(session, m) for m in (Ticket, Article, OutboxEvent)} == {
        "Ticket": 0, "Article": 0, "OutboxEvent": 0}


@pytest.mark.parametrize("getter, message", [(records.get_ticket, "^no ticket #7$"),
                                             (records.get_article, "^no article 7$")])
def test_missing_ticket_or_article_is_not_found(session, getter, message):
    with pytest.raises(NotFound, match=message):
        getter(session, 7)


def test_queue_counts(session):
    for n, queue in enumerate(["general", "general", "abuse", "general"], start=1):
        records.add_mail(session, mail(n, queue=queue))
    records.get_ticket(session, 2).state = "open"
    session.commit()
    assert records.queue_counts(session) == [
        {"id": 2, "name": "abuse", "description": "", "followup_policy": "new-linked", "lifecycle": "default", "sla": None, "states": DEFAULT_STATES, "counts": {"new": 1}, "total": 1},
        {"id": 1, "name": "general", "description": "", "followup_policy": "new-linked", "lifecycle": "default", "sla": None, "states": DEFAULT_STATES, "counts": {"new": 2, "open": 1}, "total": 3},
    ]


def test_queue_counts_with_no_tickets(session):
    assert records.queue_counts(session) == [
        {"id": 2, "name": "abuse", "description": "", "followup_policy": "new-linked", "lifecycle": "default", "sla": None, "states": DEFAULT_STATES, "counts": {}, "total": 0},
        {"id": 1, "name": "general", "description": "", "followup_policy": "new-linked", "lifecycle": "default", "sla": None, "states": DEFAULT_STATES, "counts": {}, "total": 0},
    ]


def ids(page: dict) -> tuple:
    return page["total"], page["limit"], page["offset"], [t["id"] for t in page["tickets"]]


def test_list_tickets_pages_newest_first(session):
    for n in range(1, 6):
        records.add_mail(session, mail(n))
    session.commit()
    assert [ids(records.list_tickets(session, None, None, 2, offset)) for offset in (0, 2, 4, 6)] == [
        (5, 2, 0, [5, 4]), (5, 2, 2, [3, 2]), (5, 2, 4, [1]), (5, 2, 6, [])]


def test_list_tickets_filters_by_queue_and_state(session):
    for n, queue in enumerate(["general", "abuse", "general", "abuse"], start=1):
        records.add_mail(session, mail(n, queue=queue))
    records.get_ticket(session, 3).state = "resolved"
    session.commit()
    assert (ids(records.list_tickets(session, "general", None, 10, 0)),
            ids(records.list_tickets(session, "abuse", None, 10, 0)),
            ids(records.list_tickets(session, None, "resolved", 10, 0)),
            ids(records.list_tickets(session, "general", "new", 10, 0))) == (
        (2, 10, 0, [3, 1]), (2, 10, 0, [4, 2]), (1, 10, 0, [3]), (1, 10, 0, [1]))


def test_list_tickets_of_an_unknown_queue_raises(session):
    with pytest.raises(UnknownQueue):
        records.list_tickets(session, "nope", None, 10, 0)


def test_list_tickets_rows_are_ticket_dicts(session):
    records.add_mail(session, mail(1, queue="abuse"))
    session.commit()
    (row,) = records.list_tickets(session, None, None, 10, 0)["tickets"]
    assert without(row, "created", "updated") == {
        "id": 1, "queue": "abuse", "subject": "Incident 1", "state": "new", "requestor": "alice@example.net",
        "priority": 50, "owner": None, "outcome": None, "version": 1, "due": None, "time_worked": 0,
        "time_estimated": 0, "merged_into": None,
        "sla": {"first_response_due": None, "next_response_due": None, "resolution_due": None,
                "first_responded": None, "breached": []}}
    assert row["created"].endswith("+00:00")


def test_ensure_queues_is_idempotent(session):
    records.ensure_queues(session, ["general", "abuse", "phishing"])
    session.commit()
    assert [q["name"] for q in records.queue_counts(session)] == ["abuse", "general", "phishing"]
