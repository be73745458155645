"""Mail nobody composed: auto-replies to new tickets, and the notices the tickets
service's clocks ask for (SLA breached, reminder due).

Each is keyed by the event that caused it (``event:<event_id>:<what>``, the outbox's
idempotency key): an event delivered twice, or to two replicas, makes one mail.
Templates by well-known names replace the built-in texts: ``sla-breached``,
``reminder``, ``reminder-third-party`` (kind notification); a queue's auto-reply is
the template of kind ``auto-reply`` for that queue (or for every queue).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from email.utils import parseaddr

from sqlalchemy import func, select

from . import templates
from .exceptions import NotFound, TemplateFailed
from .models import AutoReply, Outbox, utcnow
from .sending import Composer, queue_policy

log = logging.getLogger(__name__)

DEFAULTS = {
    "sla-breached": (
        "SLA breached: {{ event.target | replace('_', ' ') }} of #{{ ticket.id }}",
        "The {{ event.target | replace('_', ' ') }} target of ticket #{{ ticket.id }} ({{ ticket.subject }}) "
        "was due at {{ event.due }} and has passed.\nIts priority is now {{ event.priority }}.\n"),
    "reminder": (
        "Reminder: #{{ ticket.id }} {{ ticket.subject }}",
        "Your reminder on ticket #{{ ticket.id }} ({{ ticket.subject }}) is due:\n\n{{ event.text }}\n"
        "{% if event.awaiting %}\nStill no answer from {{ event.awaiting }}.\n{% endif %}"),
    "reminder-third-party": (
        "Re: {{ ticket.subject }}",
        "Hello,\n\nwe are still waiting for your answer regarding {{ ticket.tag }} {{ ticket.subject }}.\n"
        "Please reply to this mail, keeping the subject as it is.\n"),
}


def _already(session, key: str) -> bool:
    return session.scalars(select(Outbox.id).where(Outbox.idempotency_key == key)).first() is not None


class Automatic:
    def __init__(self, session, call, settings):
        self.session = session
        self.s = settings
        self.composer = Composer(session, call, settings)
        self.call = call

    def _text(self, name: str, lang: str, ctx: dict) -> dict:
        try:
            tpl = templates.find(self.session, name, lang)
        except NotFound:
            tpl = None
        if tpl is not None:
            out = templates.compose(self.session, ctx["ticket"]["queue"], lang, tpl, ctx, parts=False)
            return {"subject": out["subject"] or ctx["ticket"]["subject"], "body": out["body"]}
        subject, body = DEFAULTS[name]
        return {"subject": templates.render(subject, ctx, name), "body": templates.render(body, ctx, name)}

    def _owner_address(self, username: str | None) -> str | None:
        user = self.composer.user(username)
        return (user or {}).get("email") or None

    def notify_owner(self, name: str, event: dict) -> Outbox | None:
        key = f"event:{event.get('event_id')}:owner"
        if _already(self.session, key):
            return None
        address = self._owner_address(event.get("owner"))
        if not address:
            log.info("%s for #%s: the owner %r has no mail address; no notice", name, event.get("ticket_id"),
                     event.get("owner"))
            return None
        return self._notice(name, event, address, key, answered=None)

    def remind_third_party(self, event: dict) -> Outbox | None:
        address = event.get("awaiting")
        key = f"event:{event.get('event_id')}:third-party"
        if not (event.get("notify_third_party") and address and "@" in address) or _already(self.session, key):
            return None
        return self._notice("reminder-third-party", event, address, key, answered="last-to")

    def _notice(self, name: str, event: dict, address: str, key: str, answered) -> Outbox | None:
        ticket, articles = self.composer.ticket_view(self.s.actor, event["ticket_id"])
        policy = queue_policy(self.session, ticket["queue"], self.s)
        article = None
        if answered == "last-to":
            sent_to = [a for a in articles if a.get("direction") == "out"
                       and address.lower() in [parseaddr(x)[1].lower() for x in a.get("to") or []]]
            article = sent_to[-1] if sent_to else None
        lang = self.composer.lang_of(ticket, None)
        ctx = self.composer.context(None, ticket, articles, article, policy, {"event": event})
        try:
            text = self._text(name, lang, ctx)
        except TemplateFailed as exc:
            log.warning("%s for #%s not sent: template %s line %s: %s", name, ticket["id"], exc.template, exc.line, exc)
            return None
        from .compose import tag_subject
        return self.composer.enqueue(
            ticket=ticket, actor=None, action="notification", kind=name, policy=policy, to=[address], cc=[], bcc=[],
            subject=tag_subject(text["subject"], self.s.ticket_tag, ticket["id"]), text=text["body"],
            answered=article, key=key, auto="auto-generated", record={})

    def auto_reply(self, event: dict) -> Outbox | None:
        """The queue's auto-reply to the sender of a new ticket's first mail — never to
        automatic mail (the article's ``auto`` verdict: auto-submitted, bulk, list,
        bounce, loop, daemon), never to ourselves, at most N per address a day."""
        queue = event.get("queue") or ""
        key = f"event:{event.get('event_id')}:auto-reply"
        if _already(self.session, key):
            return None
        if templates.queue_part(self.session, "auto-reply", queue, None) is None:
            return None
        ticket, articles = self.composer.ticket_view(self.s.actor, event["ticket_id"])
        first = next((a for a in articles if a.get("direction") == "in"), None)
        if first is None or not first.get("raw_sha256"):
            return None       # opened by hand, not by mail
        auto = first.get("auto") or {}
        if auto.get("automatic"):
            log.info("no auto-reply for #%s: the mail is automatic (%s)", ticket["id"],
                     ", ".join(auto.get("reasons") or []))
            return None
        address = parseaddr(first.get("from") or "")[1].lower()
        if not address or "@" not in address:
            return None
        if address.rpartition("@")[2] == self.s.mail_domain:
            log.info("no auto-reply for #%s: %s is one of our own addresses", ticket["id"], address)
            return None
        since = utcnow() - timedelta(hours=24)
        count = self.session.scalar(select(func.count()).select_from(AutoReply)
                                    .where(AutoReply.address == address, AutoReply.sent_at >= since))
        if count >= self.s.autoreply_daily_limit:
            log.info("no auto-reply for #%s: %s had %d in 24 h (OSPREY_AUTOREPLY_DAILY_LIMIT)", ticket["id"],
                     address, count)
            return None
        lang = self.composer.lang_of(ticket, None)
        tpl = templates.queue_part(self.session, "auto-reply", ticket["queue"], lang)
        policy = queue_policy(self.session, ticket["queue"], self.s)
        ctx = self.composer.context(None, ticket, articles, first, policy)
        try:
            out = templates.compose(self.session, ticket["queue"], lang, tpl, ctx, parts=False)
        except TemplateFailed as exc:
            log.warning("auto-reply for #%s not sent: template %s line %s: %s", ticket["id"], exc.template, exc.line,
                        exc)
            return None
        from .compose import reply_subject, tag_subject
        subject = tag_subject(out["subject"] or reply_subject(first.get("subject") or ticket["subject"]),
                              self.s.ticket_tag, ticket["id"])
        self.session.add(AutoReply(address=address, ticket_id=ticket["id"]))
        original = None   # In-Reply-To from the article's Message-ID is enough for an auto-reply
        return self.composer.enqueue(
            ticket=ticket, actor=None, action="notification", kind="auto-reply", policy=policy, to=[address], cc=[],
            bcc=[], subject=subject, text=out["body"], answered=first, original=original, key=key,
            auto="auto-replied", record={})
