"""The notify service's own data: templates, per-queue sending policy, the outbox
of mail to deliver, the auto-reply ledger and the outbox of events to publish."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import JSON, Boolean, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:            # SQLite gives naive datetimes back: they are UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


# this service's Alembic migrations (applied on start by osprey.db.Database)
MIGRATIONS = Path(__file__).parent / "migrations"

# outbox states: queued → sending → sent | retry (→ sending …) | failed
QUEUED, SENDING, SENT, RETRY, FAILED = "queued", "sending", "sent", "retry", "failed"
STATES = (QUEUED, SENDING, SENT, RETRY, FAILED)


class Base(DeclarativeBase):
    pass


class Template(Base):
    """One template text: a body chosen when composing (reply, forward, notification,
    bulk, auto-reply) or a queue's introduction / signature (OTRS's model). ``queue``
    "" applies to every queue, ``lang`` "" is the default language."""
    __tablename__ = "template"
    __table_args__ = (UniqueConstraint("name", "lang"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    lang: Mapped[str] = mapped_column(String(20), default="")
    kind: Mapped[str] = mapped_column(String(20), index=True)
    queue: Mapped[str] = mapped_column(String(100), default="", index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    updated_by: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class QueuePolicy(Base):
    """How a queue's mail goes out: sender address, signing, encryption."""
    __tablename__ = "queue_policy"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    from_address: Mapped[str] = mapped_column(String(320), default="")     # "" = QUEUE@OSPREY_MAIL_DOMAIN
    from_name: Mapped[str] = mapped_column(String(200), default="")        # "" = OSPREY_MAIL_FROM_NAME QUEUE
    sign: Mapped[bool] = mapped_column(Boolean, default=False)
    encrypt: Mapped[bool] = mapped_column(Boolean, default=False)
    scheme: Mapped[str] = mapped_column(String(20), default="pgp-mime")
    updated_by: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Outbox(Base):
    """One mail to deliver. ``id`` is the send id (the idempotency key of
    tickets.add_outgoing); ``idempotency_key`` is the caller's, unique."""
    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True, nullable=True)
    ticket_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)     # None: automatic mail
    action: Mapped[str] = mapped_column(String(20))          # as tickets records it: reply|forward|notification|bulk
    kind: Mapped[str] = mapped_column(String(20))            # what made it: reply|forward|comment|notification|auto-reply
    mail_from: Mapped[str] = mapped_column(String(320))      # envelope sender
    recipients: Mapped[list] = mapped_column(JSON, default=list)     # every envelope recipient
    pending: Mapped[list] = mapped_column(JSON, default=list)        # not yet accepted by the relay
    delivered: Mapped[list] = mapped_column(JSON, default=list)      # accepted by the relay
    refused: Mapped[dict] = mapped_column(JSON, default=dict)        # permanently refused: {address: reason}
    message_id: Mapped[str] = mapped_column(String(400), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    raw_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    eight_bit: Mapped[bool] = mapped_column(Boolean, default=False)
    record: Mapped[dict] = mapped_column(JSON, default=dict)         # the rest of tickets.add_outgoing's mail
    state: Mapped[str] = mapped_column(String(10), default=QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)   # the give-up clock
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    article_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AutoReply(Base):
    """One auto-reply sent to an address (the per-address daily limit)."""
    __tablename__ = "auto_reply"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    ticket_id: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Event(Base):
    """An event to publish (``notify.events``): written in the transaction of the
    change it reports, published by the relay, marked then (like tickets' outbox)."""
    __tablename__ = "event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
