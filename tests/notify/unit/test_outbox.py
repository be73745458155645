"""The outbox against a real SMTP server: claims are atomic, 4xx retries with
backoff and never duplicates, 5xx fails for good with a mail_failed event, a partly
refused mail is retried only for the refused recipients, a dead worker's claim is
taken over after its lease."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from services.notify import compose
from services.notify.models import Event, Outbox
from services.notify.outbox import Deliverer, backoff, claim, outgoing_payload, unrecorded
from services.notify.smtp import Relay

from ..smtpd import SmtpServer

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def clock():
    return Clock()


def queue_mail(session, n=1, recipients=("noc@isp.example",), ticket_id=42):
    ids = []
    for i in range(n):
        send_id = compose.new_send_id()
        mid = compose.message_id(send_id, "csirt.example")
        raw = compose.text_mail(compose.envelope_headers(
            from_name="Osprey abuse", from_address="abuse@csirt.example", to=list(recipients), cc=[],
            subject=f"[Osprey #{ticket_id}] mail {i}", msg_id=mid, date=T0), f"text {i}\n")
        session.add(Outbox(id=send_id, ticket_id=ticket_id, actor="alice", action="reply", kind="reply",
                           mail_from="abuse@csirt.example", recipients=list(recipients), pending=list(recipients),
                           delivered=[], refused={}, message_id=mid, subject=f"mail {i}", raw=raw,
                           raw_sha256="0" * 64, size=len(raw), record={"to": list(recipients), "body_text": "t"},
                           state="queued", next_attempt=T0, created=T0, queued_at=T0))
        ids.append(send_id)
    session.commit()
    return ids


def deliverer(make_session, smtp, nsettings, clock, worker="w1"):
    return Deliverer(make_session, Relay("127.0.0.1", smtp.port, timeout=5), nsettings, worker=worker, clock=clock)


def test_backoff_doubles_up_to_the_maximum():
    assert [backoff(n, 60, 3600) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_queued_mail_is_delivered_once_and_waits_for_recording(make_session, session, smtp, nsettings, clock):
    ids = queue_mail(session, 3)
    assert deliverer(make_session, smtp, nsettings, clock).run() == {"sent": 3, "retry": 0, "failed": 0}
    assert deliverer(make_session, smtp, nsettings, clock).run() == {"sent": 0, "retry": 0, "failed": 0}
    assert sorted(smtp.sink.by_message_id().values()) == [1, 1, 1]
    rows = [session.get(Outbox, i) for i in ids]
    for row in rows:
        session.refresh(row)
    assert [(r.state, r.attempts, r.delivered, r.pending, r.claimed_by) for r in rows] == \
        [("sent", 1, ["noc@isp.example"], [], None)] * 3
    assert {r.id for r in unrecorded(session)} == set(ids)
    payload = outgoing_payload(rows[0], "ab" * 32)
    assert (payload["send_id"], payload["action"], payload["message_id"], payload["raw_sha256"]) == (
        rows[0].id, "reply", rows[0].message_id, "ab" * 32)
    assert smtp.sink.received[0].data == rows[0].raw    # the relay got exactly the stored bytes


def test_a_4xx_is_retried_with_backoff_and_never_duplicated(make_session, session, smtp, nsettings, clock):
    [row_id] = queue_mail(session)
    smtp.sink.data_replies = ["451 4.3.0 try again later", "452 4.3.1 still full"]
    d = deliverer(make_session, smtp, nsettings, clock)
    assert d.run() == {"sent": 0, "retry": 1, "failed": 0}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert (row.state, row.attempts, row.last_error) == ("retry", 1, "451 4.3.0 try again later")
    assert row.next_attempt.replace(tzinfo=timezone.utc) == T0 + timedelta(seconds=60)
    assert d.run() == {"sent": 0, "retry": 0, "failed": 0}          # not due yet
    clock.advance(60)
    assert d.run() == {"sent": 0, "retry": 1, "failed": 0}
    session.refresh(row)
    assert row.next_attempt.replace(tzinfo=timezone.utc) == clock.now + timedelta(seconds=120)
    clock.advance(120)
    assert d.run() == {"sent": 1, "retry": 0, "failed": 0}
    session.refresh(row)
    assert (row.state, row.attempts) == ("sent", 3)
    assert smtp.sink.by_message_id() == {row.message_id: 1}
    assert smtp.sink.data_seen == 3


def test_a_5xx_fails_for_good_with_a_mail_failed_event(make_session, session, smtp, nsettings, clock):
    [row_id] = queue_mail(session)
    smtp.sink.data_replies = ["554 5.7.1 rejected as spam"]
    assert deliverer(make_session, smtp, nsettings, clock).run() == {"sent": 0, "retry": 0, "failed": 1}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert (row.state, row.refused, row.pending) == ("failed", {"noc@isp.example": "554 5.7.1 rejected as spam"}, [])
    assert row.recorded_at is not None      # nothing went out: nothing to put on the ticket
    [event] = session.scalars(select(Event)).all()
    assert event.event_type == "mail_failed"
    assert {k: v for k, v in event.payload.items() if k != "event_id"} == {
        "schema": 1, "ticket_id": 42, "outbox_id": row_id, "message_id": row.message_id, "action": "reply",
        "recipients": ["noc@isp.example"], "reasons": {"noc@isp.example": "554 5.7.1 rejected as spam"},
        "final": True}
    clock.advance(10 ** 6)
    assert deliverer(make_session, smtp, nsettings, clock).run() == {"sent": 0, "retry": 0, "failed": 0}


def test_partly_refused_mail_is_retried_only_for_the_refused(make_session, session, smtp, nsettings, clock):
    [row_id] = queue_mail(session, recipients=("noc@isp.example", "full@isp.example", "gone@isp.example"))
    smtp.sink.refuse_rcpt = {"full@isp.example": "452 4.2.2 mailbox full", "gone@isp.example": "550 5.1.1 no such user"}
    d = deliverer(make_session, smtp, nsettings, clock)
    assert d.run() == {"sent": 0, "retry": 1, "failed": 0}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert (row.state, row.delivered, row.pending, row.refused) == (
        "retry", ["noc@isp.example"], ["full@isp.example"], {"gone@isp.example": "550 5.1.1 no such user"})
    assert row.sent_at is not None and [r.id for r in unrecorded(session)] == [row_id]   # on the ticket already
    smtp.sink.refuse_rcpt = {}
    clock.advance(60)
    assert d.run() == {"sent": 1, "retry": 0, "failed": 0}
    session.refresh(row)
    assert (row.state, row.delivered, row.pending) == ("sent", ["noc@isp.example", "full@isp.example"], [])
    assert [r.rcpt_tos for r in smtp.sink.received] == [["noc@isp.example"], ["full@isp.example"]]
    events = session.scalars(select(Event)).all()
    assert [(e.event_type, e.payload["recipients"], e.payload["final"]) for e in events] == [
        ("mail_failed", ["gone@isp.example"], False)]


def test_relay_down_means_retry(make_session, session, nsettings, clock):
    from osprey.broker import free_port
    [row_id] = queue_mail(session)
    d = Deliverer(make_session, Relay("127.0.0.1", free_port(), timeout=2), nsettings, worker="w1", clock=clock)
    assert d.run() == {"sent": 0, "retry": 1, "failed": 0}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert row.state == "retry" and "ConnectionRefusedError" in row.last_error


def test_giving_up_after_the_configured_hours(make_session, session, smtp, nsettings, clock):
    [row_id] = queue_mail(session)
    smtp.sink.data_replies = ["421 4.3.2 shutting down"] * 2
    d = deliverer(make_session, smtp, nsettings, clock)
    assert d.run()["retry"] == 1
    clock.advance(49 * 3600)
    assert d.run() == {"sent": 0, "retry": 0, "failed": 1}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert row.state == "failed" and row.refused["noc@isp.example"].startswith("gave up after 2 attempts: 421")
    assert [e.event_type for e in session.scalars(select(Event))] == ["mail_failed"]


def test_a_claim_is_taken_by_exactly_one_worker(make_session, session):
    ids = queue_mail(session, 20)
    wins: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def worker(name):
        with make_session() as s:
            for row_id in ids:
                if claim(s, row_id, name, T0, 60):
                    wins[name].append(row_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in wins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sum(wins.values(), [])) == sorted(ids)      # each row once, none twice


def test_a_dead_workers_claim_is_taken_over_after_its_lease(make_session, session, smtp, nsettings, clock):
    [row_id] = queue_mail(session)
    with make_session() as s:
        assert claim(s, row_id, "dead-replica", clock(), 60)   # claimed, then the replica died
    d = deliverer(make_session, smtp, nsettings, clock)
    assert d.run() == {"sent": 0, "retry": 0, "failed": 0}     # still leased
    clock.advance(61)
    assert d.run() == {"sent": 1, "retry": 0, "failed": 0}
    row = session.get(Outbox, row_id)
    session.refresh(row)
    assert (row.state, row.attempts) == ("sent", 2)
    assert smtp.sink.by_message_id() == {row.message_id: 1}
