"""The enrich service's own data: the RDAP/whois cache and the constituencies."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# this service's Alembic migrations (applied on start by osprey.db.Database)
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class IpLookup(Base):
    """One cached lookup answer per address (lookup.cached_lookup)."""
    __tablename__ = "ip_lookup"

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)   # normal form (str(ip_address))
    status: Mapped[str] = mapped_column(String(20))
    result: Mapped[str] = mapped_column(Text)                        # the result dict as JSON
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Constituency(Base):
    __tablename__ = "constituency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    contact: Mapped[str] = mapped_column(String(320))
    # where its tickets go, and how to write to it (routing is data, not code)
    queue: Mapped[str | None] = mapped_column(String(100), nullable=True)
    language: Mapped[str] = mapped_column(String(20), default="", server_default="")
    encryption: Mapped[str] = mapped_column(String(20), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    netblocks: Mapped[list["ConstituencyNetblock"]] = relationship(
        back_populates="constituency", cascade="all, delete-orphan", order_by="ConstituencyNetblock.id")
    domains: Mapped[list["ConstituencyDomain"]] = relationship(
        back_populates="constituency", cascade="all, delete-orphan", order_by="ConstituencyDomain.id")
    asns: Mapped[list["ConstituencyAsn"]] = relationship(
        back_populates="constituency", cascade="all, delete-orphan", order_by="ConstituencyAsn.id")


class ConstituencyNetblock(Base):
    """A CIDR network or a-b range as the closed key range [low, high]
    (osprey.contracts.ip_key: 16 bytes, byte order is address order)."""
    __tablename__ = "constituency_netblock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    constituency_id: Mapped[int] = mapped_column(ForeignKey("constituency.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(String(100))
    low: Mapped[bytes] = mapped_column(LargeBinary(16), index=True)
    high: Mapped[bytes] = mapped_column(LargeBinary(16), index=True)
    constituency: Mapped[Constituency] = relationship(back_populates="netblocks")


class ConstituencyDomain(Base):
    __tablename__ = "constituency_domain"
    __table_args__ = (UniqueConstraint("constituency_id", "domain"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    constituency_id: Mapped[int] = mapped_column(ForeignKey("constituency.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    constituency: Mapped[Constituency] = relationship(back_populates="domains")


class ConstituencyAsn(Base):
    __tablename__ = "constituency_asn"
    __table_args__ = (UniqueConstraint("constituency_id", "asn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    constituency_id: Mapped[int] = mapped_column(ForeignKey("constituency.id", ondelete="CASCADE"), index=True)
    asn: Mapped[int] = mapped_column(BigInteger, index=True)   # 4-byte ASNs exceed a 32-bit int
    constituency: Mapped[Constituency] = relationship(back_populates="asns")
