"""services/notify: templates, the SMTP outbox, replies, forwards and automatic mail.

RPCs compose mail (sending.py) and put it in the outbox; the ``deliver`` timer hands
it to the SMTP relay (outbox.py), then records it on its ticket (ingest keeps the raw
bytes, tickets adds the article) and publishes this service's events. Event handlers
turn tickets' facts into automatic mail (automatic.py).
"""
from __future__ import annotations

import logging

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy, rpc
from nameko.timer import timer
from sqlalchemy import select

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import outbox as outbox_mod
from . import templates as templates_mod
from .automatic import Automatic
from .config import notify_settings, poll_seconds
from .dependencies import SmtpRelay
from .entrypoints import RequestId, keyed_rpc
from .exceptions import BadRequest, Conflict, Forbidden, NotFound, TemplateFailed
from .models import FAILED, MIGRATIONS, QUEUED, STATES, Base, Event, Outbox, QueuePolicy, Template, utcnow
from .sending import Composer, policy_dict

log = logging.getLogger(__name__)

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, Forbidden, NotFound, Conflict))

# a refusal by another service, passed on as ours (the gateway maps these once)
_PASS_ON = {"NotFound": NotFound, "Forbidden": Forbidden, "Conflict": Conflict, "BadRequest": BadRequest,
            "UnknownQueue": BadRequest, "NoUsableKey": BadRequest}


class Unavailable(Exception):
    """Another service did not answer in time."""


class NotifyService:
    name = contracts.NOTIFY

    db = Database(Base, url=lambda: notify_settings().db_url, migrations=MIGRATIONS)
    smtp = SmtpRelay()
    tickets = RpcProxy(contracts.TICKETS)
    ingest = RpcProxy(contracts.INGEST)
    crypto = RpcProxy(contracts.CRYPTO)
    dispatch = EventDispatcher()
    request_id = RequestId()

    # --- calling other services ----------------------------------------------------------
    def _call(self, service: str, method: str, *args):
        """An RPC with a deadline (OSPREY_RPC_TIMEOUT); their refusals become ours."""
        proxy = {contracts.TICKETS: self.tickets, contracts.INGEST: self.ingest, contracts.CRYPTO: self.crypto}[service]
        reply = getattr(proxy, method).call_async(*args)
        try:
            with eventlet.Timeout(settings().rpc_timeout):
                return reply.result()
        except eventlet.Timeout:
            raise Unavailable(f"{service}.{method} did not answer in {settings().rpc_timeout:.0f}s") from None
        except RemoteError as exc:
            passed = _PASS_ON.get(exc.exc_type)
            if passed is None:
                raise
            raise passed(exc.value) from None

    def _admin(self, actor) -> str:
        for user in self._call(contracts.TICKETS, "list_users"):
            if user["username"] == actor and not user["disabled"]:
                if not user["is_admin"]:
                    raise Forbidden(f"{actor} is not an administrator")
                return actor
        raise Forbidden(f"unknown or disabled user {actor!r}")

    def _known(self, actor) -> str:
        for user in self._call(contracts.TICKETS, "list_users"):
            if user["username"] == actor and not user["disabled"]:
                return actor
        raise Forbidden(f"unknown or disabled user {actor!r}")

    @rpc
    def ping(self):
        return {"service": self.name, "ok": True}

    # --- templates -----------------------------------------------------------------------
    @api
    def save_template(self, actor, name, kind, body, subject="", lang="", queue="", description=""):
        """Create or replace a template (administrators). A syntax error is refused
        with its line; nothing is stored."""
        self._admin(actor)
        with self.db.get_session() as session:
            try:
                row = templates_mod.save(session, actor, name, kind, body, subject or "", lang or "", queue or "",
                                         description or "")
            except TemplateFailed as exc:
                raise BadRequest(f"template {name!r} line {exc.line}: {exc}") from None
            session.commit()
            return templates_mod.template_dict(row)

    @api
    def list_templates(self, actor, kind=None, queue=None):
        self._known(actor)
        with self.db.get_session() as session:
            q = select(Template).order_by(Template.kind, Template.name, Template.lang)
            if kind:
                q = q.where(Template.kind == kind)
            if queue is not None:
                q = q.where(Template.queue.in_((queue, "")))
            return [templates_mod.template_dict(t) for t in session.scalars(q)]

    @api
    def get_template(self, actor, name, lang=""):
        self._known(actor)
        with self.db.get_session() as session:
            row = session.scalars(select(Template).where(Template.name == name, Template.lang == (lang or ""))).first()
            if row is None:
                raise NotFound(f"no template {name!r}" + (f" in language {lang!r}" if lang else ""))
            return templates_mod.template_dict(row)

    @api
    def delete_template(self, actor, name, lang=""):
        self._admin(actor)
        with self.db.get_session() as session:
            row = session.scalars(select(Template).where(Template.name == name, Template.lang == (lang or ""))).first()
            if row is None:
                raise NotFound(f"no template {name!r}" + (f" in language {lang!r}" if lang else ""))
            out = templates_mod.template_dict(row)
            session.delete(row)
            session.commit()
            return out

    @api
    def preview(self, actor, ticket_id, template, lang=None, article_id=None):
        """``template``: a saved template's name (rendered with the queue's introduction
        and signature) or an unsaved one ``{"subject", "body", "kind"}`` (the editor).
        Returns {subject, body, template, lang} or {error, line, template}."""
        if not template:
            raise BadRequest("give a template name or {subject, body}")
        with self.db.get_session() as session:
            return Composer(session, self._call, notify_settings()).preview(actor, ticket_id, template, lang,
                                                                            article_id)

    # --- queue policy --------------------------------------------------------------------
    @api
    def get_queue_policy(self, actor, queue):
        self._known(actor)
        with self.db.get_session() as session:
            return policy_dict(queue, session.get(QueuePolicy, queue), notify_settings())

    @api
    def set_queue_policy(self, actor, queue, from_address=None, from_name=None, sign=None, encrypt=None,
                         scheme=None):
        """How a queue's mail goes out (administrators): its From address and name,
        whether it is signed (with the queue's key) and encrypted (to every recipient)."""
        self._admin(actor)
        if scheme is not None and scheme not in ("pgp-mime", "pgp-inline", "smime"):
            raise BadRequest("scheme is pgp-mime, pgp-inline or smime")
        if from_address and "@" not in str(from_address):
            raise BadRequest(f"not a mail address: {from_address!r}")
        with self.db.get_session() as session:
            row = session.get(QueuePolicy, queue)
            if row is None:
                row = QueuePolicy(queue=queue, from_address="", from_name="", sign=False, encrypt=False,
                                  scheme="pgp-mime")
                session.add(row)
            for attr, value in (("from_address", from_address), ("from_name", from_name), ("scheme", scheme)):
                if value is not None:
                    setattr(row, attr, str(value).strip())
            if sign is not None:
                row.sign = bool(sign)
            if encrypt is not None:
                row.encrypt = bool(encrypt)
            row.updated_by = actor
            session.commit()
            return policy_dict(queue, row, notify_settings())

    # --- sending -------------------------------------------------------------------------
    @keyed_rpc(expected_exceptions=(BadRequest, Forbidden, NotFound, Conflict))
    def send(self, actor, ticket_id, action="reply", to=None, cc=None, bcc=None, subject=None, body=None,
             template=None, lang=None, article_id=None, forward_mode="attach", sign=None, encrypt=None,
             remind_after=None, remind_third_party=False, time_worked=0, idempotency_key=None):
        """Reply, forward or comment-to-staff: compose and queue one mail (see
        sending.Composer.send). Returns the outbox row (``replayed`` for a repeated
        idempotency key); delivery follows within OSPREY_NOTIFY_POLL_SECONDS. Without
        an idempotency key, the request's own id is one: a redelivered request (the
        worker died before acknowledging it) sends nothing twice."""
        if not idempotency_key and self.request_id:
            idempotency_key = f"rpc:{self.request_id}"
        with self.db.get_session() as session:
            done = Composer(session, self._call, notify_settings()).send(
                actor, ticket_id, action, to, cc, bcc, subject, body, template, lang, article_id,
                forward_mode or "attach", sign, encrypt, remind_after, remind_third_party, time_worked,
                idempotency_key)
            return {**outbox_mod.outbox_dict(done["outbox"]), "replayed": done["replayed"]}

    @api
    def list_outbox(self, actor, state=None, ticket_id=None, limit=100):
        """The outbox, newest first: every mail (administrators), or one ticket's
        (whoever may see the ticket) — how its delivery went, refusals included."""
        if ticket_id not in (None, ""):
            ticket_id = self._call(contracts.TICKETS, "get_ticket", actor, ticket_id)["id"]
        else:
            self._admin(actor)
        if state and state not in STATES:
            raise BadRequest(f"a state is one of {', '.join(STATES)}")
        with self.db.get_session() as session:
            q = select(Outbox).order_by(Outbox.created.desc()).limit(max(1, min(int(limit or 100), 1000)))
            if state:
                q = q.where(Outbox.state == state)
            if ticket_id not in (None, ""):
                q = q.where(Outbox.ticket_id == int(ticket_id))
            return [outbox_mod.outbox_dict(r) for r in session.scalars(q)]

    @api
    def get_outbox(self, actor, outbox_id, raw=False):
        self._admin(actor)
        with self.db.get_session() as session:
            row = session.get(Outbox, str(outbox_id))
            if row is None:
                raise NotFound(f"no outbox entry {outbox_id}")
            return outbox_mod.outbox_dict(row, with_raw=bool(raw))

    @api
    def retry_outbox(self, actor, outbox_id):
        """Queue a failed mail again, for the recipients that refused it (administrators)."""
        self._admin(actor)
        with self.db.get_session() as session:
            row = session.get(Outbox, str(outbox_id))
            if row is None:
                raise NotFound(f"no outbox entry {outbox_id}")
            if row.state != FAILED:
                raise Conflict(f"outbox entry {outbox_id} is {row.state}, not failed")
            row.pending = [r for r in row.recipients if r not in (row.delivered or [])]
            row.refused, row.state, row.next_attempt, row.queued_at = {}, QUEUED, utcnow(), utcnow()
            if row.article_id is None:      # nothing went out before: record it when it does
                row.recorded_at = None
            row.last_error = f"re-queued by {actor}; before: {row.last_error}"
            session.commit()
            return outbox_mod.outbox_dict(row)

    # --- delivery ------------------------------------------------------------------------
    @timer(interval=poll_seconds())
    def deliver(self):
        """Deliver what is due, record what went out, publish events."""
        s = notify_settings()
        outbox_mod.Deliverer(self.db.get_session, self.smtp.relay, s, worker=self.smtp.worker).run()
        self._record()
        self._publish()

    def _record(self):
        with self.db.get_session() as session:
            for row in outbox_mod.unrecorded(session):
                if row.ticket_id is None:
                    row.recorded_at = utcnow()
                    session.commit()
                    continue
                try:
                    stored = self._call(contracts.INGEST, "store_raw", contracts.b64(row.raw))
                    payload = outbox_mod.outgoing_payload(row, stored["sha256"])
                    try:
                        article = self._call(contracts.TICKETS, "add_outgoing", row.actor, row.ticket_id, payload)
                    except Forbidden:
                        # the sender lost the right since: the mail went out all the same
                        article = self._call(contracts.TICKETS, "add_outgoing", None, row.ticket_id,
                                             {**payload, "author": row.actor})
                except NotFound as exc:
                    log.warning("outbox %s: cannot record it on ticket %s: %s", row.id, row.ticket_id, exc)
                    row.recorded_at = utcnow()
                    row.last_error = f"not recorded: {exc}"
                    session.commit()
                    continue
                except (Unavailable, BadRequest, RemoteError) as exc:
                    log.warning("outbox %s: recording on ticket %s failed, will retry: %s", row.id, row.ticket_id, exc)
                    session.rollback()
                    return
                row.recorded_at, row.article_id = utcnow(), article["id"]
                session.commit()

    def _publish(self):
        with self.db.get_session() as session:
            for event in session.scalars(select(Event).where(Event.published.is_(None)).order_by(Event.id).limit(100)):
                self.dispatch(event.event_type, event.payload)
                event.published = utcnow()
                session.commit()

    # --- automatic mail --------------------------------------------------------------------
    def _automatic(self, what: str, payload: dict, fn) -> None:
        if not isinstance(payload, dict) or not payload.get("ticket_id"):
            log.warning("%s: ignored a malformed event %r", what, payload)
            return
        with self.db.get_session() as session:
            try:
                fn(Automatic(session, self._call, notify_settings()), payload)
            except (Unavailable, NotFound, Forbidden, BadRequest) as exc:
                log.warning("%s for ticket %s: no mail: %s", what, payload.get("ticket_id"), exc)

    @event_handler(contracts.TICKETS, contracts.EV_TICKET_CREATED)
    def handle_ticket_created(self, payload):
        self._automatic("auto-reply", payload, lambda a, p: a.auto_reply(p))

    @event_handler(contracts.TICKETS, contracts.EV_SLA_BREACHED)
    def handle_sla_breached(self, payload):
        self._automatic("sla notice", payload, lambda a, p: a.notify_owner("sla-breached", p))

    @event_handler(contracts.TICKETS, contracts.EV_REMINDER_DUE)
    def handle_reminder_due(self, payload):
        def both(a, p):
            a.notify_owner("reminder", p)
            a.remind_third_party(p)
        self._automatic("reminder", payload, both)
