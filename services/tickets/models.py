"""The system of record: queues, tickets, articles, people, audit, outbox."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        Text, UniqueConstraint, false)
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
    # the queue's lifecycle (None: the built-in default, lifecycle.DEFAULT)
    lifecycle_id: Mapped[int | None] = mapped_column(ForeignKey("lifecycle.id"), nullable=True)
    sla_id: Mapped[int | None] = mapped_column(ForeignKey("sla.id"), nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lifecycle: Mapped["Lifecycle | None"] = relationship()
    sla: Mapped["Sla | None"] = relationship()


class Lifecycle(Base):
    """States and allowed transitions for the queues that use it (lifecycle.py)."""
    __tablename__ = "lifecycle"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # {"states": [{"name", "category": initial|active|inactive|closed}], "transitions": {from: [to, ...]},
    #  "rights": {"from->to": right}}
    definition: Mapped[dict] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Outcome(Base):
    """Why a ticket was closed (solved, no solution needed, …): admin-defined."""
    __tablename__ = "outcome"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Sla(Base):
    """Response and resolution targets in business minutes, with the business hours
    they count in: {"tz": "Europe/Berlin", "days": [0..6], "start": "09:00", "end": "17:00",
    "holidays": ["2026-12-25"]} (an empty calendar means around the clock)."""
    __tablename__ = "sla"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    first_response_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_response_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resolution_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    calendar: Mapped[dict] = mapped_column(JSON, default=dict)
    # priority an escalated ticket is raised to
    escalate_priority: Mapped[int] = mapped_column(Integer, default=90)


class Ticket(Base):
    __tablename__ = "ticket"
    # the queue view (a queue's open tickets by priority, then age) reads this index in order
    __table_args__ = (Index("ix_ticket_queue_open", "queue_id", "closed", "priority", "created", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(40), default="new", index=True)
    # the state's category is "closed" (or the ticket was merged away): kept with every state change
    closed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    requestor: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # optimistic locking: every change bumps it; a change made against an older one is refused
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    priority: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), nullable=True, index=True)
    outcome: Mapped[str | None] = mapped_column(String(100), nullable=True)
    due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    time_estimated: Mapped[int] = mapped_column(Integer, default=0, server_default="0")   # minutes
    time_worked: Mapped[int] = mapped_column(Integer, default=0, server_default="0")      # minutes, summed
    # SLA clocks (computed from the queue's SLA; None: no target running)
    first_response_due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_response_due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolution_due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_responded: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    escalated: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")   # which targets already escalated
    # a merged ticket keeps its row (its number still resolves) and points at the survivor
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), nullable=True, index=True)
    queue: Mapped[Queue] = relationship()
    owner: Mapped["User | None"] = relationship(foreign_keys=[owner_id])


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
    # crypto's status of this mail (verdict, signature, signer, covers_all, …; None: no cryptography)
    security: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # decrypted/unwrapped MIME kept beside the original (derived data); parts number into it
    mime_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # who wrote it (a staff member for comments/replies; None for mail in)
    author: Mapped[str | None] = mapped_column(String(200), nullable=True)
    time_worked: Mapped[int] = mapped_column(Integer, default=0, server_default="0")   # minutes
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


class TicketPerson(Base):
    """Requestors, Cc and AdminCc (watchers) of a ticket: an address, or a staff user."""
    __tablename__ = "ticket_person"
    __table_args__ = (UniqueConstraint("ticket_id", "role", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))          # requestor | cc | admincc
    address: Mapped[str] = mapped_column(String(320))      # lower-case mail address or username
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CustomField(Base):
    """A typed ticket field: text, select, multiselect, date, number, iprange."""
    __tablename__ = "custom_field"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    options: Mapped[list] = mapped_column(JSON, default=list)       # for select / multiselect
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queue.id"), nullable=True)   # None: every queue
    read_only_after_set: Mapped[bool] = mapped_column(Boolean, default=False)
    admin_only: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")


class FieldValue(Base):
    """One value of a custom field on a ticket (a multi-value field has several rows).
    Typed copies make values searchable: number/date in ``num``, an IP range as two
    16-byte keys so that overlap with any address or netblock is an indexed query."""
    __tablename__ = "field_value"
    __table_args__ = (Index("ix_field_value_ip", "field_id", "ip_lo", "ip_hi"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    field_id: Mapped[int] = mapped_column(ForeignKey("custom_field.id"), index=True)
    value: Mapped[str] = mapped_column(Text)
    num: Mapped[float | None] = mapped_column(Float, nullable=True)
    ip_lo: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    ip_hi: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)


class Group(Base):
    __tablename__ = "user_group"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class GroupMember(Base):
    __tablename__ = "group_member"
    __table_args__ = (UniqueConstraint("group_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("user_group.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)


class QueueRight(Base):
    """A right on a queue granted to a role ("role:agent") or a group ("group:tier2")."""
    __tablename__ = "queue_right"
    __table_args__ = (UniqueConstraint("queue_id", "grantee", "right"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id"), index=True)
    grantee: Mapped[str] = mapped_column(String(120))
    right: Mapped[str] = mapped_column(String(40))


class Reminder(Base):
    """Something to chase by a time: set by staff, or by a forward to a third party
    that has not answered (``awaiting``: the address whose answer ends it)."""
    __tablename__ = "reminder"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    owner: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text, default="")
    due: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    awaiting: Mapped[str | None] = mapped_column(String(320), nullable=True)
    notify_third_party: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)   # open | fired | done
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(Base):
    """The result of a mutation made with a client's idempotency key: a retry gets it back."""
    __tablename__ = "idempotency_key"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(100))
    result: Mapped[dict] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Indicator(Base):
    """An indicator the enrich service found in an article (IP, network, domain, URL,
    address, hash, CVE), normalised, with the class of an IP (global, private, …)."""
    __tablename__ = "indicator"
    __table_args__ = (UniqueConstraint("article_id", "type", "value"), Index("ix_indicator_value", "type", "value"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), index=True)
    type: Mapped[str] = mapped_column(String(20))
    value: Mapped[str] = mapped_column(String(2000))
    ip_class: Mapped[str | None] = mapped_column(String(20), nullable=True)
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
    # customer | agent | admin (is_admin mirrors role == "admin")
    role: Mapped[str] = mapped_column(String(20), default="agent", server_default="agent")
    email: Mapped[str] = mapped_column(String(320), default="", server_default="")
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
