"""The keyring's truth: every key, certificate and CRL the crypto service uses.

Each replica materialises a private GnuPG home and PEM files from these rows
(keys.py); nothing a replica needs lives anywhere else. Secret keys are stored as
they were imported (still protected by their own passphrase); a passphrase is never
stored, only where to find it (``passphrase_env``).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Boolean, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# this service's Alembic migrations (applied on start by osprey.db.Database)
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class Key(Base):
    """An OpenPGP key (kind ``openpgp``) or an X.509 certificate (kind ``x509``)."""
    __tablename__ = "keys"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)   # OpenPGP v4 / sha256 of the DER
    kind: Mapped[str] = mapped_column(String(10), index=True)
    public: Mapped[bytes] = mapped_column(LargeBinary)                       # binary OpenPGP key / PEM certificate
    secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # as imported, still protected
    uids: Mapped[str] = mapped_column(Text, default="[]")                    # JSON: user ids / [subject]
    addresses: Mapped[str] = mapped_column(Text, default="[]")               # JSON: lower-case mail addresses
    algorithm: Mapped[str | None] = mapped_column(String(40), nullable=True)
    usage: Mapped[str] = mapped_column(String(60), default="")               # sign,encrypt,certify,authenticate
    issuer: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_ca: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)            # vouched for by an admin
    queue: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)  # signs this queue's mail
    passphrase_env: Mapped[str | None] = mapped_column(String(300), nullable=True)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    @property
    def uid_list(self) -> list[str]:
        return json.loads(self.uids or "[]")

    @property
    def address_list(self) -> list[str]:
        return json.loads(self.addresses or "[]")


class Crl(Base):
    """A certificate revocation list (PEM), used when checking S/MIME chains."""
    __tablename__ = "crls"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)   # sha256 of the PEM
    issuer: Mapped[str] = mapped_column(Text)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    last_update: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_update: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeyringState(Base):
    """One row: a counter every change to keys or CRLs raises, in the same
    transaction. A replica rebuilds its GnuPG home when the counter moved."""
    __tablename__ = "keyring_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
