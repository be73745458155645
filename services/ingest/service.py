"""services/ingest: raw store, intake ledger, quarantine; the path of a mail in."""
from __future__ import annotations

import logging

from nameko.rpc import RpcProxy, rpc
from sqlalchemy import select

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import pipeline
from .dependencies import ExternalPatterns, RawBlobs
from .entrypoints import intake
from .exceptions import BadRequest, NotFound
from .models import MIGRATIONS, Base, Intake
from .parse import get_part
from .rawstore import BlobNotFound

log = logging.getLogger(__name__)

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, NotFound))


class IngestService:
    name = contracts.INGEST

    db = Database(Base, url=lambda: settings().ingest_db_url, migrations=MIGRATIONS)
    store = RawBlobs()
    external_patterns = ExternalPatterns()
    tickets = RpcProxy(contracts.TICKETS)
    crypto = RpcProxy(contracts.CRYPTO)

    @intake
    def handle_intake(self, body, headers):
        if not isinstance(body, (bytes, bytearray)):
            body = str(body).encode("utf-8", "surrogateescape")
        delivery = pipeline.Delivery.from_headers(bytes(body), headers)
        with self.db.get_session() as session:
            intake_row, _new = pipeline.receive(session, self.store, delivery)
            if intake_row.status != contracts.INTAKE_RECEIVED:
                return intake_row.as_dict()  # already delivered or quarantined
            return self._process(session, intake_row, delivery.raw)

    def _process(self, session, intake_row, raw):
        s = settings()
        ctx = pipeline.Context(intake=intake_row, raw=raw, tickets=self.tickets,
                               ticket_tag=s.ticket_tag, max_body_chars=s.max_body_chars,
                               external_patterns=self.external_patterns, crypto=self.crypto, store=self.store)
        return pipeline.process(session, ctx).as_dict()

    @api
    def retry(self, intake_id, actor=None):
        """Process a quarantined mail again (after a fix, or after its queue was made),
        from the stored raw bytes. Returns the new outcome."""
        with self.db.get_session() as session:
            row = session.get(Intake, str(intake_id))
            if row is None:
                raise NotFound(f"no intake {intake_id}")
            if row.status != contracts.INTAKE_QUARANTINED:
                raise BadRequest(f"intake {intake_id} is {row.status}, not quarantined")
            try:
                raw = self.store.get(row.sha256)
            except BlobNotFound:
                raise NotFound(f"the raw mail {row.sha256} is missing from the store") from None
            log.info("intake %s re-processed by %s (was: %s)", row.id, actor or "an operator", row.reason)
            row.status, row.reason = contracts.INTAKE_RECEIVED, None
            session.commit()
            return self._process(session, row, raw)

    @api
    def ping(self):
        return {"service": self.name, "ok": True}

    @api
    def intake_status(self, sha256):
        """Every delivery of these bytes and what became of it."""
        sha256 = (sha256 or "").lower()
        with self.db.get_session() as session:
            rows = session.scalars(select(Intake).where(Intake.sha256 == sha256)
                                   .order_by(Intake.received_at)).all()
            if not rows:
                raise NotFound(f"no mail with sha256 {sha256} was delivered")
            return {"sha256": sha256, "size": rows[0].size, "stored": self.store.exists(sha256),
                    "intakes": [r.as_dict() for r in rows]}

    @api
    def list_intake(self, status=None, limit=100, offset=0):
        with self.db.get_session() as session:
            q = select(Intake).order_by(Intake.received_at.desc()).limit(min(int(limit), 1000)).offset(int(offset))
            if status:
                if status not in contracts.INTAKE_STATES:
                    raise BadRequest(f"unknown status {status!r}")
                q = q.where(Intake.status == status)
            return [r.as_dict() for r in session.scalars(q)]

    @api
    def store_raw(self, data_b64):
        """Keep the exact bytes of a mail Osprey sent (notify's replies and forwards) as
        evidence beside the mail received; returns its sha256. Storing the same bytes
        twice is harmless (content-addressed)."""
        try:
            data = contracts.unb64(data_b64)
        except (ValueError, TypeError, AttributeError):
            raise BadRequest("data is base64") from None
        if not data:
            raise BadRequest("no bytes to store")
        return {"sha256": self.store.put(data), "size": len(data)}

    @api
    def get_raw(self, sha256):
        """The exact stored bytes, base64."""
        try:
            return {"sha256": sha256, "data": contracts.b64(self.store.get(sha256))}
        except BlobNotFound:
            raise NotFound(f"no raw mail {sha256}") from None

    @api
    def get_part(self, sha256, part):
        """One leaf part of a stored mail, decoded (an attachment's bytes), base64."""
        try:
            found = get_part(self.store.get(sha256), str(part))
        except (BlobNotFound, KeyError):
            raise NotFound(f"no part {part} in raw mail {sha256}") from None
        return {"part": found.part, "content_type": found.content_type, "filename": found.filename,
                "data": contracts.b64(found.payload)}
