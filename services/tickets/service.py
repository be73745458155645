"""services/tickets: the system of record."""
from __future__ import annotations

import logging

from nameko.events import EventDispatcher
from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import accounts, records
from .bootstrap import bootstrap
from .exceptions import BadRequest, Conflict, Forbidden, NotFound
from .models import MIGRATIONS, Article, Attachment, Base, User, utcnow

log = logging.getLogger(__name__)

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, Forbidden, NotFound, Conflict))


def _limit(value, default=50, maximum=500) -> int:
    try:
        return max(1, min(int(value if value is not None else default), maximum))
    except (TypeError, ValueError):
        raise BadRequest(f"not a number: {value!r}") from None


class TicketsService:
    name = contracts.TICKETS

    db = Database(Base, url=lambda: settings().tickets_db_url, migrations=MIGRATIONS, after_create=bootstrap)
    dispatch = EventDispatcher()

    # --- who is asking ----------------------------------------------------------
    def _actor(self, session, username, admin=False):
        user = accounts.find_user(session, username or "")
        if user is None or user.disabled:
            raise Forbidden(f"unknown or disabled user {username!r}")
        if admin and not user.is_admin:
            raise Forbidden(f"{username} is not an administrator")
        return user

    @api
    def ping(self):
        return {"service": self.name, "ok": True}

    # --- mail in ------------------------------------------------------------------
    @api
    def add_mail(self, mail):
        if mail.get("schema") != contracts.SCHEMA or not mail.get("intake_id"):
            raise BadRequest("add_mail needs a schema-1 payload with an intake_id")
        with self.db.get_session() as session:
            try:
                result = records.add_mail(session, mail)
                session.commit()
                return result
            except IntegrityError:
                # another replica applied the same intake id concurrently
                session.rollback()
                return records.add_mail(session, mail)

    # --- reading ------------------------------------------------------------------
    @api
    def list_queues(self, actor):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return records.queue_counts(session)

    @api
    def create_queue(self, name, description="", followup_policy="new-linked"):
        """A new queue (operators: osprey queue add)."""
        with self.db.get_session() as session:
            records.create_queue(session, name, description, followup_policy)
            session.commit()
            return next(q for q in records.queue_counts(session) if q["name"] == name)

    @api
    def list_tickets(self, actor, queue=None, state=None, limit=50, offset=0):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return records.list_tickets(session, queue, state, _limit(limit), max(0, int(offset or 0)))

    @api
    def get_ticket(self, actor, ticket_id):
        with self.db.get_session() as session:
            self._actor(session, actor)
            ticket = records.get_ticket(session, ticket_id)
            out = records.ticket_dict(ticket)
            out["external_refs"] = records.external_refs(session, ticket.id)
            out["links"] = records.links(session, ticket.id)
            out["history"] = records.history(session, ticket.id)
            return out

    @api
    def list_articles(self, actor, ticket_id):
        with self.db.get_session() as session:
            self._actor(session, actor)
            ticket = records.get_ticket(session, ticket_id)
            rows = session.scalars(select(Article).where(Article.ticket_id == ticket.id).order_by(Article.id))
            return [records.article_dict(a) for a in rows]

    @api
    def get_article(self, actor, article_id):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return records.article_dict(records.get_article(session, article_id))

    @api
    def get_attachment(self, actor, attachment_id):
        """Where an attachment's bytes are: (raw sha256, part) in ingest's raw store."""
        with self.db.get_session() as session:
            self._actor(session, actor)
            att = session.get(Attachment, int(attachment_id))
            if att is None:
                raise NotFound(f"no attachment {attachment_id}")
            article = records.get_article(session, att.article_id)
            return {"id": att.id, "article_id": article.id, "ticket_id": article.ticket_id,
                    "raw_sha256": article.raw_sha256, "part": att.part, "filename": att.filename,
                    "content_type": att.content_type, "size": att.size, "sha256": att.sha256}

    @api
    def search(self, actor, q, limit=50):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return records.search_tickets(session, q or "", _limit(limit))

    # --- people and tokens ----------------------------------------------------------
    @api
    def authenticate(self, username, password):
        """The user for this name and password, or None."""
        with self.db.get_session() as session:
            user = accounts.authenticate(session, username, password)
            session.commit()
            return accounts.user_dict(user) if user else None

    @api
    def login_token(self, username, password, days=None, name="api"):
        """A new API token for a user who proves the password (POST /api/v1/tokens)."""
        with self.db.get_session() as session:
            user = accounts.authenticate(session, username, password)
            if user is None:
                raise Forbidden("wrong username or password")
            return self._issue_token(session, user, days, name)

    @api
    def create_token(self, username, days=None, name="cli"):
        """A new API token for a user, for operators (osprey token create)."""
        with self.db.get_session() as session:
            return self._issue_token(session, accounts.get_user(session, username), days, name)

    @staticmethod
    def _issue_token(session, user, days, name):
        token, row = accounts.create_token(session, user, int(days or settings().token_days), name)
        records.audit(session, None, records.SYSTEM, "token_created", username=user.username, name=name,
                      expires=row.expires.isoformat())
        session.commit()
        return {"token": token, "expires": row.expires.isoformat(), "user": accounts.user_dict(user)}

    @api
    def verify_token(self, token):
        with self.db.get_session() as session:
            user = accounts.verify_token(session, token)
            session.commit()
            return accounts.user_dict(user) if user else None

    @api
    def list_users(self):
        with self.db.get_session() as session:
            return [accounts.user_dict(u) for u in session.scalars(select(User).order_by(User.username))]

    @api
    def create_user(self, username, password=None, is_admin=False):
        with self.db.get_session() as session:
            if password is not None and len(password) < 8:
                raise BadRequest("a password has at least 8 characters")
            user = accounts.create_user(session, username, password, bool(is_admin))
            records.audit(session, None, records.SYSTEM, "user_created", username=username, is_admin=bool(is_admin))
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_password(self, username, password):
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            accounts.set_password(user, password)
            records.audit(session, None, records.SYSTEM, "password_set", username=username)
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_disabled(self, username, disabled):
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            user.disabled = bool(disabled)
            records.audit(session, None, records.SYSTEM, "user_disabled" if disabled else "user_enabled",
                          username=username)
            session.commit()
            return accounts.user_dict(user)

    # --- the outbox relay -----------------------------------------------------------
    @timer(interval=0.5)
    def relay_outbox(self):
        """Publish committed events, oldest first; mark each after the broker took it."""
        with self.db.get_session() as session:
            for event in records.pending_events(session):
                self.dispatch(event.event_type, event.payload)
                event.published = utcnow()
                session.commit()
