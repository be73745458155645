"""The system of record: queues, tickets, articles, people, audit, outbox."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; we only store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


# this service's Alembic migrations (applied on start by osprey.db.Database)
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


# the search index's FTS5 tables are raw DDL in the migrations, not models
Base.metadata.info["unmanaged_prefixes"] = ("article_fts",)


class Queue(Base):
    __tablename__ = "queue"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # a mail that names a ticket of this queue but comes from a stranger to it:
    # "new-linked" (a new ticket referring to it) or "accept" (joins the ticket)
    followup_policy: Mapped[str] = mapped_column(String(20), default="new-linked", server_default="new-linked")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Ticket(Base):
    __tablename__ = "ticket"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(40), default="new", index=True)
    requestor: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queue: Mapped[Queue] = relationship()


class Article(Base):
    __tablename__ = "article"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    # the idempotency key of the delivery that made this article (contracts.intake_id)
    intake_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    direction: Mapped[str] = mapped_column(String(10), default="in")
    action: Mapped[str] = mapped_column(String(20), default="correspond")
    raw_sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    raw_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message_id: Mapped[str | None] = mapped_column(Text, index=True, nullable=True)
    sender: Mapped[str] = mapped_column(Text, default="")
    recipients: Mapped[dict] = mapped_column(JSON, default=dict)
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[str | None] = mapped_column(String(40), nullable=True)
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # sha256 over subject, text, HTML and attachment hashes (ingest's followup.content_hash):
    # with the Message-ID it recognises one mail delivered twice through two aliases
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    # automatic mail: {"automatic": bool, "reasons": [...], "bounce": bool, "bounce_of": id}
    auto: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attachments: Mapped[list["Attachment"]] = relationship(order_by="Attachment.id")


class Attachment(Base):
    """Metadata only: the bytes stay in ingest's raw store, found by (raw sha256, part)."""
    __tablename__ = "attachment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), index=True)
    part: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)


class ArticleIP(Base):
    """Every IP address written in an article, as a 16-byte key (contracts.ip_key),
    so that a CIDR or range query is one indexed BETWEEN."""
    __tablename__ = "article_ip"
    __table_args__ = (UniqueConstraint("article_id", "ip"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), index=True)
    ip: Mapped[bytes] = mapped_column(LargeBinary(16), index=True)


class Link(Base):
    """A typed link between two tickets, shown on both (ticket-core issue: parent/child,
    depends-on, refers-to)."""
    __tablename__ = "link"
    __table_args__ = (UniqueConstraint("from_ticket_id", "to_ticket_id", "type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    to_ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExternalRef(Base):
    """Another team's ticket number for this incident (RT, OTRS/Znuny/Zammad,
    ServiceNow, …), scoped to the domain that sent it: later mail carrying it
    threads to this ticket."""
    __tablename__ = "external_ref"
    __table_args__ = (UniqueConstraint("system", "ref", "sender_domain"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    system: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str] = mapped_column(String(100))
    sender_domain: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxEvent(Base):
    """Written in the same transaction as the change it reports; the relay publishes it."""
    __tablename__ = "outbox"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)      # publication order
    event_id: Mapped[str] = mapped_column(String(36), unique=True)   # stable, for consumers to dedupe
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token
    name: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user: Mapped[User] = relationship()
