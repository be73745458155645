"""The intake ledger: one row per delivery (intake id), what became of it."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# this service's Alembic migrations (applied on start by osprey.db.Database)
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class Intake(Base):
    __tablename__ = "intake"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)   # contracts.intake_id
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    message_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    sender: Mapped[str | None] = mapped_column(Text, nullable=True)
    envelope_ticket: Mapped[int | None] = mapped_column(Integer, nullable=True)  # --ticket / --extension
    # what the front end knew besides the bytes (envelope.py): MAIL FROM, RCPT TO, the
    # LMTP peer, the mailbox and UID it was fetched from; of the first delivery
    envelope: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    article_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    def as_dict(self) -> dict:
        return {
            "intake_id": self.id, "sha256": self.sha256, "size": self.size, "queue": self.queue,
            "action": self.action, "source": self.source, "status": self.status, "reason": self.reason,
            "deliveries": self.deliveries, "message_id": self.message_id, "subject": self.subject,
            "from": self.sender, "envelope_ticket": self.envelope_ticket, "envelope": self.envelope,
            "ticket_id": self.ticket_id, "article_id": self.article_id,
            "received_at": _iso(self.received_at), "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; values are stored as UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()
