"""The outbox: mail waits here until the relay accepted it, and is never delivered twice.

States: ``queued`` → ``sending`` (claimed) → ``sent`` | ``retry`` (→ ``sending`` …) |
``failed``. A delivery worker (any replica) claims one row with a single conditional
UPDATE — only one claimer's UPDATE matches — and commits before talking SMTP; once
the relay has accepted, the row is marked ``sent`` in one commit. A row whose claim
outlived its lease (the replica died) is claimed again.

The one window for a duplicate: the process dies (or the database is unreachable)
after the relay answered 250 to DATA and before the ``sent`` commit. The mail is then
sent again after the lease with the **same Message-ID**, so receivers (and Osprey's
own intake, which deduplicates by Message-ID and content) see one mail. Everything
else — a 4xx, a refused connection, a timeout before DATA's answer, a crash while
sending — retries without a duplicate.

After delivery the row is *recorded*: its raw bytes stored by ingest and an article
added by tickets (both idempotent: content-addressed bytes, the send id as key), retried
by the worker until both answered.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import and_, or_, select, update

from osprey import contracts

from .models import FAILED, QUEUED, RETRY, SENDING, SENT, Event, Outbox, aware, iso, utcnow
from .smtp import Outcome, PermanentFailure, Relay, TemporaryFailure

log = logging.getLogger(__name__)

EV_MAIL_FAILED = contracts.EV_MAIL_FAILED


def backoff(attempts: int, base: float, maximum: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base, 2·base, 4·base … ≤ maximum."""
    return min(base * (2 ** max(0, attempts - 1)), maximum)


def outbox_dict(row: Outbox, with_raw: bool = False) -> dict:
    out = {"id": row.id, "ticket_id": row.ticket_id, "actor": row.actor, "action": row.action, "kind": row.kind,
           "state": row.state, "message_id": row.message_id, "subject": row.subject, "from": row.mail_from,
           "recipients": row.recipients, "pending": row.pending, "delivered": row.delivered, "refused": row.refused,
           "attempts": row.attempts, "next_attempt": iso(row.next_attempt) if row.state in (QUEUED, RETRY) else None,
           "last_error": row.last_error, "created": iso(row.created), "sent_at": iso(row.sent_at),
           "recorded_at": iso(row.recorded_at), "article_id": row.article_id, "raw_sha256": row.raw_sha256,
           "size": row.size}
    if with_raw:
        out["raw"] = contracts.b64(row.raw)
    return out


def emit(session, event_type: str, **payload) -> None:
    event_id = str(uuid.uuid4())
    session.add(Event(event_id=event_id, event_type=event_type,
                      payload={"schema": contracts.SCHEMA, "event_id": event_id, **payload}))


def _claimable(now: datetime):
    return or_(and_(Outbox.state.in_((QUEUED, RETRY)), Outbox.next_attempt <= now),
               and_(Outbox.state == SENDING, Outbox.claimed_until < now))


def due(session, now: datetime, limit: int) -> list[str]:
    return list(session.scalars(select(Outbox.id).where(_claimable(now))
                                .order_by(Outbox.next_attempt, Outbox.created).limit(limit)))


def claim(session, row_id: str, worker: str, now: datetime, lease: float) -> bool:
    """Take one row for delivery, atomically: True for exactly one claimer."""
    result = session.execute(update(Outbox).where(Outbox.id == row_id, _claimable(now))
                             .values(state=SENDING, claimed_by=worker, claimed_until=now + timedelta(seconds=lease),
                                     attempts=Outbox.attempts + 1)
                             .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount == 1


class Deliverer:
    """Delivers due rows through one relay conversation per round."""

    def __init__(self, make_session: Callable, relay: Relay, settings, worker: str | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.make_session = make_session
        self.relay = relay
        self.s = settings
        self.worker = worker or uuid.uuid4().hex[:16]
        self.clock = clock

    def lease(self, size: int) -> float:
        return self.s.lease_seconds + size / 100_000      # a big mail may take a while to transfer

    def run(self, limit: int = 100, budget: float = 20.0) -> dict:
        """One round: deliver what is due (at most ``limit`` rows, about ``budget`` s)."""
        import time
        stats = {"sent": 0, "retry": 0, "failed": 0}
        started = time.monotonic()
        conversation = None
        try:
            with self.make_session() as session:
                ids = due(session, self.clock(), limit)
                for row_id in ids:
                    if time.monotonic() - started > budget:
                        break
                    row = session.get(Outbox, row_id)
                    if row is None or not claim(session, row_id, self.worker, self.clock(), self.lease(row.size)):
                        continue
                    session.refresh(row)
                    if conversation is None or conversation.broken:
                        if conversation is not None:
                            conversation.close()
                        try:
                            conversation = self.relay.session()
                        except TemporaryFailure as exc:
                            conversation = None
                            stats[self._failed_temporarily(session, row, str(exc))] += 1
                            break      # the relay is unreachable: the rest waits for the next round
                    stats[self._deliver(session, row, conversation)] += 1
        finally:
            if conversation is not None:
                conversation.close()
        return stats

    def _deliver(self, session, row: Outbox, conversation) -> str:
        recipients = list(row.pending or row.recipients)
        try:
            outcome = conversation.send(row.mail_from, recipients, row.raw, row.eight_bit)
        except TemporaryFailure as exc:
            return self._failed_temporarily(session, row, str(exc))
        except PermanentFailure as exc:
            outcome = Outcome(permanent={r: str(exc) for r in recipients})
        return self._settle(session, row, outcome)

    def _mine(self, session, row: Outbox) -> bool:
        """Is the claim still ours? (A lease that ran out may have been taken over.)"""
        session.refresh(row)
        return row.claimed_by == self.worker and row.state == SENDING

    def _settle(self, session, row: Outbox, outcome: Outcome) -> str:
        now = self.clock()
        if not self._mine(session, row):
            log.warning("outbox %s: the claim ran out while sending; another worker has it", row.id)
        row.delivered = list(dict.fromkeys([*(row.delivered or []), *outcome.accepted]))
        row.refused = {**(row.refused or {}), **outcome.permanent}
        row.pending = list(outcome.temporary)
        row.claimed_by, row.claimed_until = None, None
        if row.delivered:
            row.sent_at = row.sent_at or now
        if outcome.temporary:
            result = self._schedule_retry(row, "; ".join(f"{r}: {why}" for r, why in outcome.temporary.items()), now)
        else:
            row.state = SENT if row.delivered else FAILED
            if outcome.permanent:    # else the last temporary error stays, for the record
                row.last_error = "; ".join(f"{r}: {why}" for r, why in outcome.permanent.items())
            result = "sent" if row.delivered else "failed"
        if outcome.permanent:
            log.warning("outbox %s (ticket %s): refused for good: %s", row.id, row.ticket_id, row.last_error)
            emit(session, EV_MAIL_FAILED, ticket_id=row.ticket_id, outbox_id=row.id, message_id=row.message_id,
                 action=row.action, recipients=sorted(outcome.permanent), reasons=outcome.permanent,
                 final=not row.pending)
        if row.state == FAILED and not row.delivered:
            row.recorded_at = row.recorded_at or now      # nothing went out: nothing to record on the ticket
        session.commit()
        return result

    def _schedule_retry(self, row: Outbox, reason: str, now: datetime) -> str:
        row.last_error = reason
        if now - aware(row.queued_at or row.created) > timedelta(hours=self.s.give_up_hours):
            row.state = FAILED
            row.refused = {**(row.refused or {}), **{r: f"gave up after {row.attempts} attempts: {reason}"
                                                     for r in (row.pending or row.recipients)}}
            row.pending = []
            return "failed"
        row.state = RETRY
        row.next_attempt = now + timedelta(seconds=backoff(row.attempts, self.s.retry_seconds,
                                                           self.s.retry_max_seconds))
        return "retry"

    def _failed_temporarily(self, session, row: Outbox, reason: str) -> str:
        now = self.clock()
        if not row.pending:
            row.pending = [r for r in row.recipients if r not in (row.delivered or []) and r not in (row.refused or {})]
        row.claimed_by, row.claimed_until = None, None
        result = self._schedule_retry(row, reason, now)
        log.warning("outbox %s (ticket %s): attempt %d failed (%s); %s", row.id, row.ticket_id, row.attempts, reason,
                    "giving up" if result == "failed" else f"next at {iso(row.next_attempt)}")
        if result == "failed":
            emit(session, EV_MAIL_FAILED, ticket_id=row.ticket_id, outbox_id=row.id, message_id=row.message_id,
                 action=row.action, recipients=sorted(row.refused), reasons=row.refused, final=True)
            if not row.delivered:
                row.recorded_at = row.recorded_at or now
        session.commit()
        return result


def unrecorded(session, limit: int = 50) -> list[Outbox]:
    """Rows that went out (to at least one recipient) and are not on their ticket yet."""
    return list(session.scalars(select(Outbox).where(Outbox.recorded_at.is_(None),
                                                     Outbox.state.in_((SENT, RETRY, FAILED)),
                                                     Outbox.sent_at.is_not(None))
                                .order_by(Outbox.sent_at).limit(limit)))


def outgoing_payload(row: Outbox, raw_sha256: str) -> dict:
    """What tickets.add_outgoing records (see services/tickets/changes.add_outgoing)."""
    rec = dict(row.record or {})
    return {"send_id": row.id, "action": row.action, "to": rec.get("to", []), "cc": rec.get("cc", []),
            "bcc": rec.get("bcc", []), "subject": row.subject, "message_id": row.message_id,
            "raw_sha256": raw_sha256, "raw_size": row.size, "body_text": rec.get("body_text", ""),
            "sender": rec.get("sender", row.mail_from), "date": rec.get("date"), "security": rec.get("security"),
            "time_worked": rec.get("time_worked", 0), "remind_after": rec.get("remind_after"),
            "remind_third_party": rec.get("remind_third_party", False), "author": rec.get("author")}
