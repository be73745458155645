"""Composing one outgoing mail for a ticket: who it is from and to, its text (a
template or the composer's own words), threading, a forward's original, signing and
encryption; the result is an outbox row (outbox.py delivers it).

``Composer`` asks other services through ``call(service, method, *args)`` (RPC with
a deadline, see service.py) and never opens their data.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from email.utils import formataddr, parseaddr

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from osprey import contracts

from . import compose, templates
from .exceptions import BadRequest, Conflict, Forbidden, NotFound, TemplateFailed
from .models import Outbox, QueuePolicy

log = logging.getLogger(__name__)

# what the composer asks for → (how tickets records it, the right it needs)
ACTIONS = {"reply": ("reply", "reply"), "forward": ("forward", "forward"), "comment": ("notification", "comment")}
FORWARD_MODES = ("attach", "inline")


def policy_dict(queue: str, row: QueuePolicy | None, s) -> dict:
    address = (row.from_address if row and row.from_address else f"{queue}@{s.mail_domain}")
    name = (row.from_name if row and row.from_name else f"{s.from_name} {queue}".strip())
    return {"queue": queue, "from_address": address, "from_name": name, "sign": bool(row and row.sign),
            "encrypt": bool(row and row.encrypt), "scheme": (row.scheme if row else "pgp-mime")}


def queue_policy(session, queue: str, s) -> dict:
    return policy_dict(queue, session.get(QueuePolicy, queue), s)


class Composer:
    def __init__(self, session, call, settings):
        self.session = session
        self.call = call
        self.s = settings

    # --- what a template sees --------------------------------------------------------
    def ticket_view(self, actor: str, ticket_id) -> tuple[dict, list[dict]]:
        ticket = self.call("tickets", "get_ticket", actor, ticket_id)
        articles = self.call("tickets", "list_articles", actor, ticket["id"])
        return ticket, articles

    def user(self, username: str | None) -> dict | None:
        if not username:
            return None
        for u in self.call("tickets", "list_users"):
            if u["username"] == username:
                return u
        return None

    def field_types(self, actor: str) -> dict:
        return {f["name"]: f["type"] for f in self.call("tickets", "list_fields", actor)}

    @staticmethod
    def pick_article(articles: list[dict], article_id, prefer: str) -> dict | None:
        if article_id not in (None, ""):
            for a in articles:
                if str(a["id"]) == str(article_id):
                    return a
            raise NotFound(f"article {article_id} is not on this ticket")
        incoming = [a for a in articles if a.get("direction") == "in"]
        if prefer == "first":      # a forward passes on the original report
            with_raw = [a for a in incoming if a.get("raw_sha256")]
            return (with_raw or incoming or [None])[0]
        return (incoming or articles or [None])[-1]

    def context(self, actor: str | None, ticket: dict, articles: list[dict], article: dict | None,
                policy: dict, extra: dict | None = None) -> dict:
        reader = actor or self.s.actor
        return templates.build_context(ticket, articles, article, self.user(actor), self.field_types(reader),
                                       self.s.ticket_tag, policy["from_address"], extra)

    def lang_of(self, ticket: dict, lang: str | None) -> str:
        return (lang or templates.field_value(ticket.get("fields") or {}, templates.LANG_FIELDS) or "").strip()

    # --- preview ---------------------------------------------------------------------
    def preview(self, actor: str, ticket_id, template, lang=None, article_id=None, parts=True) -> dict:
        ticket, articles = self.ticket_view(actor, ticket_id)
        lang = self.lang_of(ticket, lang)
        kind = template.get("kind", "reply") if isinstance(template, dict) else None
        article = self.pick_article(articles, article_id, "first" if kind == "forward" else "last")
        policy = queue_policy(self.session, ticket["queue"], self.s)
        ctx = self.context(actor, ticket, articles, article, policy)
        try:
            if isinstance(template, dict):
                out = templates.render_source(template, ctx)
                name = template.get("name") or "unsaved"
            else:
                tpl = templates.find(self.session, str(template), lang)
                out = templates.compose(self.session, ticket["queue"], lang, tpl, ctx, parts=parts,
                                        default_subject=ticket.get("subject") or "")
                name = tpl.name
        except TemplateFailed as exc:
            return {"error": str(exc), "line": exc.line, "template": exc.template}
        subject = compose.tag_subject(out["subject"] or ticket.get("subject") or "", self.s.ticket_tag, ticket["id"])
        return {"subject": subject, "body": out["body"], "template": name, "lang": lang}

    # --- sending -----------------------------------------------------------------------
    def send(self, actor: str, ticket_id, action: str = "reply", to=None, cc=None, bcc=None, subject=None,
             body=None, template=None, lang=None, article_id=None, forward_mode="attach", sign=None,
             encrypt=None, remind_after=None, remind_third_party=False, time_worked=0,
             idempotency_key=None) -> dict:
        if action not in ACTIONS:
            raise BadRequest(f"an action is one of {', '.join(ACTIONS)}")
        if forward_mode not in FORWARD_MODES:
            raise BadRequest(f"forward_mode is one of {', '.join(FORWARD_MODES)}")
        if body is not None and not isinstance(body, str):
            raise BadRequest("body is text")
        key = str(idempotency_key)[:300] if idempotency_key else None
        if key:
            done = self.session.scalars(select(Outbox).where(Outbox.idempotency_key == key)).first()
            if done is not None:
                if done.actor != actor:
                    raise Conflict("this idempotency key was used for another request")
                return {"outbox": done, "replayed": True}
        ticket = self.call("tickets", "get_ticket", actor, ticket_id)
        recorded_as, right = ACTIONS[action]
        if right not in (ticket.get("rights") or []):
            raise Forbidden(f"{actor} may not {action} in queue {ticket['queue']!r} (needs the {right} right)")
        policy = queue_policy(self.session, ticket["queue"], self.s)
        templated = not (body is not None and body.strip())
        if article_id not in (None, "") and not templated:
            # only the answered article is needed: not the whole (possibly long) ticket
            articles = [self.call("tickets", "get_article", actor, article_id)]
            if articles[0]["ticket_id"] != ticket["id"]:
                raise NotFound(f"article {article_id} is not on ticket #{ticket['id']}")
        else:
            articles = self.call("tickets", "list_articles", actor, ticket["id"])
        article = self.pick_article(articles, article_id, "first" if action == "forward" else "last")
        original = None
        if article is not None and article.get("raw_sha256") and (action == "forward" or
                                                                  (article.get("raw_size") or 0) < 5_000_000):
            original = contracts.unb64(self.call("ingest", "get_raw", article["raw_sha256"])["data"])
        if action == "forward" and forward_mode == "attach" and original is None:
            raise BadRequest("there is no original mail to attach (the article has no raw bytes); "
                             "forward it inline instead")

        # recipients
        to_list = self.recipients(to, "to")
        if action == "reply" and not to_list:
            to_list = self.default_reply_to(ticket, article, original)
        cc_list, bcc_list = self.recipients(cc, "cc"), self.recipients(bcc, "bcc")
        if not (to_list or cc_list or bcc_list):
            raise BadRequest(f"a {action} needs at least one recipient")

        # text
        lang = self.lang_of(ticket, lang)
        default_subject = self.default_subject(action, ticket, article)
        if not templated:
            text, subject_from_tpl = body if body.endswith("\n") else body + "\n", None
        else:
            ctx = self.context(actor, ticket, articles, article, policy)
            tpl = templates.find(self.session, str(template), lang) if template else None
            if tpl is None and action == "reply":
                raise BadRequest("a reply needs a body or a template")
            try:
                out = templates.compose(self.session, ticket["queue"], lang, tpl, ctx, default_subject="")
            except TemplateFailed as exc:
                where = f" line {exc.line}" if exc.line else ""
                raise BadRequest(f"template {exc.template}{where}: {exc}; nothing was sent") from None
            text, subject_from_tpl = out["body"], out["subject"] or None
        subject = compose.tag_subject(subject or subject_from_tpl or default_subject, self.s.ticket_tag, ticket["id"])
        if action == "forward" and forward_mode == "inline":
            text = compose.inline_forward_text(text, article or {})

        sender = self.user(actor) if action == "comment" else None
        return {"outbox": self.enqueue(
            ticket=ticket, actor=actor, action=recorded_as, kind=action, policy=policy, to=to_list, cc=cc_list,
            bcc=bcc_list, subject=subject, text=text, answered=article, original=original,
            attach=original if (action == "forward" and forward_mode == "attach") else None,
            sign=policy["sign"] if sign is None else bool(sign),
            encrypt=policy["encrypt"] if encrypt is None else bool(encrypt),
            key=key, record={"time_worked": time_worked or 0, "remind_after": remind_after,
                             "remind_third_party": bool(remind_third_party)},
            extra_headers=({"Reply-To": sender["email"]} if action == "comment" and sender and sender.get("email")
                           else {})), "replayed": False}

    def recipients(self, values, what: str) -> list[str]:
        """Addresses; a bare user name (comment-to-staff) becomes that user's address."""
        if values is None:
            return []
        if isinstance(values, str):
            values = [v for v in values.split(",")]
        out, names = [], []
        for v in values:
            v = str(v).strip()
            if not v:
                continue
            (out if "@" in v else names).append(v)
        if names:
            users = {u["username"]: u for u in self.call("tickets", "list_users")}
            for name in names:
                user = users.get(name)
                if user is None or not user.get("email"):
                    raise BadRequest(f"{what}: {name!r} is neither a mail address nor a user with one")
                out.append(user["email"])
        return compose.addresses(out, what)

    @staticmethod
    def default_reply_to(ticket: dict, article: dict | None, original: bytes | None) -> list[str]:
        if original is not None and article is not None and article.get("direction") == "in":
            from email.parser import BytesHeaderParser
            import email.policy
            head = BytesHeaderParser(policy=email.policy.compat32).parsebytes(original)
            reply_to = parseaddr(str(head.get("Reply-To") or ""))[1]
            if reply_to:
                return [reply_to]
        if article is not None and article.get("direction") == "in":
            address = parseaddr(article.get("from") or "")[1]
            if address:
                return [address]
        requestor = parseaddr(ticket.get("requestor") or "")[1]
        return [requestor] if requestor else []

    @staticmethod
    def default_subject(action: str, ticket: dict, article: dict | None) -> str:
        base = (article or {}).get("subject") or ticket.get("subject") or ""
        if action == "reply":
            return compose.reply_subject(base, "Re")
        if action == "forward":
            return compose.reply_subject(base, "Fwd")
        return ticket.get("subject") or base

    def enqueue(self, *, ticket: dict, actor: str | None, action: str, kind: str, policy: dict, to: list[str],
                cc: list[str], bcc: list[str], subject: str, text: str, answered: dict | None,
                original: bytes | None = None, attach: bytes | None = None, sign: bool = False,
                encrypt: bool = False, key: str | None = None, record: dict | None = None,
                extra_headers: dict | None = None, auto: str | None = None) -> Outbox:
        """Build the bytes, protect them if asked, and queue them (committed)."""
        send_id = compose.new_send_id()
        msg_id = compose.message_id(send_id, self.s.mail_domain)
        now = datetime.now(timezone.utc)
        extra = dict(compose.threading_headers(original, (answered or {}).get("message_id")))
        extra.update(extra_headers or {})
        if auto:
            # RFC 3834: automatic mail says so, and asks not to be answered automatically
            extra.update({"Auto-Submitted": auto, "X-Auto-Response-Suppress": "All"})
            # only automatic mail carries the loop header: ingest marks mail bearing it as
            # automatic, and a staff reply from another team's Osprey is a person writing
            extra[compose.LOOP_HEADER] = self.s.mail_domain
        headers = compose.envelope_headers(from_name=policy["from_name"], from_address=policy["from_address"],
                                           to=to, cc=cc, subject=subject, msg_id=msg_id, date=now, extra=extra)
        if attach is not None:
            raw, eight_bit = compose.forward_attached(headers, text, attach)
        else:
            raw, eight_bit = compose.text_mail(headers, text), False
        security = None
        if sign or encrypt:
            raw, security = self.protect(raw, ticket["queue"] if sign else None, [*to, *cc, *bcc] if encrypt else [],
                                         policy["scheme"])
            eight_bit = not raw.isascii()
        raw = compose.canonical(raw)
        recipients = list(dict.fromkeys([*to, *cc, *bcc]))
        row = Outbox(id=send_id, idempotency_key=key, ticket_id=ticket["id"], actor=actor, action=action, kind=kind,
                     mail_from=policy["from_address"], recipients=recipients, pending=recipients, delivered=[],
                     refused={}, message_id=msg_id, subject=subject, raw=raw, raw_sha256=contracts.sha256_hex(raw),
                     size=len(raw), eight_bit=eight_bit,
                     record={**(record or {}), "to": to, "cc": cc, "bcc": bcc, "body_text": text,
                             "sender": formataddr((policy["from_name"], policy["from_address"])),
                             "date": now.isoformat(), "security": security,
                             "author": None if actor else "notify"},
                     state="queued", next_attempt=now, created=now, queued_at=now)
        self.session.add(row)
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            if key:
                done = self.session.scalars(select(Outbox).where(Outbox.idempotency_key == key)).first()
                if done is not None:
                    return done
            raise
        log.info("outbox %s queued: %s for ticket %s to %s", send_id, kind, ticket["id"], ", ".join(recipients))
        return row

    def protect(self, raw: bytes, queue: str | None, recipients: list[str], scheme: str) -> tuple[bytes, dict]:
        what = " and ".join(w for w, on in (("sign", queue), ("encrypt", recipients)) if on)
        try:
            out = self.call("crypto", "protect", contracts.b64(raw), queue, recipients or None, scheme)
        except (BadRequest, NotFound) as exc:
            raise BadRequest(f"cannot {what} this mail: {exc}; nothing was sent") from None
        security = {"scheme": out.get("scheme"), "signed_by": out.get("signed_by"),
                    "encrypted_to": out.get("encrypted_to") or []}
        return contracts.unb64(out["mime"]), security
