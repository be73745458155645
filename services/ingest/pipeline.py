"""The path of one mail through ingest, top to bottom.

``receive`` makes the delivery durable (raw bytes + ledger row, committed); only
after it returns is the broker message acknowledged. ``process`` then runs the
steps in ``STEPS`` in order; a step that finds the mail unusable raises
``Quarantine`` and the mail stays stored, visible, with the reason.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable

from nameko.exceptions import RemoteError

from osprey import contracts

from . import envelope as envelopes
from . import followup
from .models import Intake
from .parse import ParsedMail, Unparseable, parse_mail
from .rawstore import RawStore

log = logging.getLogger(__name__)


class Quarantine(Exception):
    """Stop processing; keep the mail, show the reason."""


class ParserFailure(Quarantine):
    """The parser raised something it should not (a bug, found e.g. by the fuzzer):
    the mail is quarantined rather than redelivered for ever, and logged as an ERROR."""


@dataclass
class Delivery:
    """What arrived: the bytes and the envelope the sender put in AMQP headers."""
    raw: bytes
    queue: str
    action: str
    source: str
    ticket: int | None = None
    envelope: dict | None = None      # envelope.py: MAIL FROM, RCPT TO, peer, mailbox/UID

    @classmethod
    def from_headers(cls, raw: bytes, headers: dict) -> "Delivery":
        def text(name, default):
            value = (headers or {}).get(name, default)
            return value.decode() if isinstance(value, bytes) else str(value)
        ticket = text(contracts.H_TICKET, "")
        return cls(raw=raw, queue=text(contracts.H_QUEUE, "general"),
                   action=text(contracts.H_ACTION, "correspond"), source=text(contracts.H_SOURCE, "unknown"),
                   ticket=int(ticket) if ticket.isdigit() else None,
                   envelope=envelopes.decode((headers or {}).get(envelopes.H_ENVELOPE)))


@dataclass
class Context:
    intake: Intake
    raw: bytes
    tickets: object                         # RPC proxy to the tickets service
    ticket_tag: str
    max_body_chars: int
    mail: ParsedMail | None = None
    ticket_hint: int | None = None
    threading: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    external_patterns: tuple = ()           # followup.Pattern: the site's per-sender numbers
    crypto: object = None                   # RPC proxy to the crypto service (None: no unwrapping)
    store: RawStore | None = None           # where derived (decrypted) MIME is kept beside the original
    display: bytes | None = None            # the MIME to show when crypto unwrapped the mail
    display_sha256: str | None = None
    security: dict | None = None            # crypto's honest status (verdict, signer, covers_all, …)


def receive(session, store: RawStore, delivery: Delivery) -> tuple[Intake, bool]:
    """Store the bytes and record the delivery; commit. Returns (intake, is_new).
    A repeated delivery (same bytes, queue, action) only counts up ``deliveries``
    (the envelope kept is the first delivery's)."""
    sha256 = store.put(delivery.raw)
    key = contracts.intake_id(sha256, delivery.queue, delivery.action)
    intake = session.get(Intake, key)
    if intake is not None:
        intake.deliveries += 1
        session.commit()
        return intake, False
    problem = None
    if delivery.action not in contracts.ACTIONS:
        problem = f"unknown action {delivery.action!r} (expected one of {', '.join(contracts.ACTIONS)})"
    intake = Intake(id=key, sha256=sha256, size=len(delivery.raw), queue=delivery.queue,
                    action=delivery.action, source=delivery.source, envelope_ticket=delivery.ticket,
                    envelope=delivery.envelope,
                    status=contracts.INTAKE_QUARANTINED if problem else contracts.INTAKE_RECEIVED,
                    reason=problem, deliveries=1)
    session.add(intake)
    session.commit()
    return intake, True


# --- the steps -----------------------------------------------------------------

_PROTECTED = (b"multipart/signed", b"multipart/encrypted", b"pkcs7-mime", b"pkcs7-signature")


def looks_protected(raw: bytes) -> bool:
    """Cheap: could crypto find a signature or encryption here? (PGP armour anywhere, or a
    PGP/MIME or S/MIME content type); mail without any is not sent to crypto at all."""
    if b"-----BEGIN PGP " in raw:
        return True
    lowered = raw.lower()
    return any(marker in lowered for marker in _PROTECTED)


def unwrap(ctx: Context) -> None:
    """crypto.unwrap: decrypt and verify. The original stays the evidence; decrypted MIME
    is derived data, stored content-addressed beside it and shown with its status. A
    failure is a status ("error" with the reason), never a lost or stuck mail."""
    if ctx.crypto is None or not looks_protected(ctx.raw):
        return
    try:
        out = ctx.crypto.unwrap(contracts.b64(ctx.raw))
    except RemoteError as exc:
        ctx.security = {"verdict": "error", "signature": "error", "encrypted": None, "decrypted": False,
                        "warnings": [], "errors": [f"crypto refused it: {exc.exc_type}: {exc.value}"]}
        log.warning("intake %s: crypto failed: %s", ctx.intake.id, exc)
        return
    ctx.security = out.get("security")
    if out.get("changed") and out.get("mime"):
        ctx.display = contracts.unb64(out["mime"])
        if ctx.store is not None:
            ctx.display_sha256 = ctx.store.put(ctx.display)


def parse(ctx: Context) -> None:
    try:
        ctx.mail = parse_mail(ctx.display if ctx.display is not None else ctx.raw, ctx.max_body_chars)
    except Unparseable as exc:
        raise Quarantine(str(exc)) from exc
    except Exception as exc:  # a parser bug must not make the message a poison message
        log.exception("intake %s: the parser failed", ctx.intake.id)
        raise ParserFailure(f"the parser failed ({type(exc).__name__}: {exc}); "
                            "kept for re-processing after a fix") from exc
    ctx.intake.message_id = ctx.mail.message_id
    ctx.intake.subject = ctx.mail.subject[:1000]
    ctx.intake.sender = ctx.mail.sender[:1000]


def thread(ctx: Context) -> None:
    """Follow-up detection (followup.py): the candidates, in order; tickets decides."""
    mail = ctx.mail
    ctx.ticket_hint = followup.ticket_tag(mail.subject, ctx.ticket_tag) or ctx.intake.envelope_ticket
    ctx.threading = {
        "referenced_ids": followup.referenced_ids(mail.in_reply_to, mail.references, mail.auto.get("bounce_of")),
        "external_refs": followup.external_refs(mail.subject, ctx.ticket_tag, mail.sender_address,
                                                ctx.external_patterns),
        "sender_domain": followup.sender_domain(mail.sender_address),
        "content_hash": followup.content_hash(mail.subject, mail.body_text, mail.body_html,
                                              [a["sha256"] for a in mail.attachments]),
    }


def deliver(ctx: Context) -> None:
    payload = {
        "schema": contracts.SCHEMA,
        "intake_id": ctx.intake.id,
        "queue": ctx.intake.queue,
        "action": ctx.intake.action,
        "source": ctx.intake.source,
        "raw_sha256": ctx.intake.sha256,
        "raw_size": ctx.intake.size,
        "ticket_hint": ctx.ticket_hint,
        "security": ctx.security,
        "mime_sha256": ctx.display_sha256,
        **ctx.threading,
        **asdict(ctx.mail),
    }
    try:
        ctx.result = ctx.tickets.add_mail(payload)
    except RemoteError as exc:
        # tickets refused this mail (e.g. unknown queue): data, not a crash
        raise Quarantine(f"tickets refused it: {exc.exc_type}: {exc.value}") from exc


STEPS: tuple[Callable[[Context], None], ...] = (unwrap, parse, thread, deliver)


def process(session, ctx: Context) -> Intake:
    intake = ctx.intake
    try:
        for step in STEPS:
            step(ctx)
    except Quarantine as exc:
        intake.status, intake.reason = contracts.INTAKE_QUARANTINED, str(exc)
        log.warning("intake %s quarantined: %s", intake.id, exc)
    else:
        intake.status, intake.reason = contracts.INTAKE_DELIVERED, None
        intake.ticket_id = ctx.result.get("ticket_id")
        intake.article_id = ctx.result.get("article_id")
    session.commit()
    return intake
