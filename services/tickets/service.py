"""services/tickets: the system of record."""
from __future__ import annotations

import logging

from nameko.events import EventDispatcher
from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import accounts, changes, fields, lifecycle, records
from . import rights as rights_mod
from . import sla as sla_mod
from .bootstrap import bootstrap
from .exceptions import BadRequest, Conflict, Forbidden, NotFound
from .models import (MIGRATIONS, Article, Attachment, Base, CustomField, IdempotencyKey, Lifecycle, Queue,
                     Reminder, Sla, Ticket, User, iso, utcnow)
from .rights import Rights

log = logging.getLogger(__name__)

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, Forbidden, NotFound, Conflict))


def sla_dict(row) -> dict:
    return {"name": row.name, "first_response_minutes": row.first_response_minutes,
            "next_response_minutes": row.next_response_minutes, "resolution_minutes": row.resolution_minutes,
            "calendar": row.calendar or {}, "escalate_priority": row.escalate_priority}


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
    def _rights(self, session, actor) -> Rights:
        return Rights(session, self._actor(session, actor))

    def _ticket(self, session, rights: Rights, ticket_id, right="see"):
        ticket = changes.get_ticket(session, ticket_id)
        rights.require(ticket.queue, right)
        return ticket

    @api
    def list_queues(self, actor):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            out = records.queue_counts(session, rights.queues_with(session, "see"))
            for q in out:
                q["rights"] = rights.on(q["id"])
            return out

    @api
    def create_queue(self, name, description="", followup_policy="new-linked", actor=None):
        """A new queue (operators: osprey queue add; administrators: the API)."""
        with self.db.get_session() as session:
            if actor is not None:
                self._actor(session, actor, admin=True)
            records.create_queue(session, name, description, followup_policy)
            session.commit()
            return next(q for q in records.queue_counts(session) if q["name"] == name)

    @api
    def list_tickets(self, actor, queue=None, state=None, limit=50, offset=0, owner=None, order=None, sla=None):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            return records.list_tickets(session, queue, state, _limit(limit), max(0, int(offset or 0)),
                                        visible=rights.queues_with(session, "see"), owner=owner, order=order,
                                        me=rights.user.username, sla=sla)

    @api
    def get_ticket(self, actor, ticket_id):
        """A ticket with everything the ticket page shows; a merged ticket's number
        gives the survivor (``merged_from`` says which number was asked for)."""
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            ticket = self._ticket(session, rights, ticket_id)
            out = records.ticket_dict(ticket)
            if str(ticket.id) != str(ticket_id):
                out["merged_from"] = int(ticket_id)
            out["external_refs"] = records.external_refs(session, ticket.id)
            out["links"] = records.links(session, ticket.id)
            out["history"] = changes.history(session, ticket)
            out["people"] = changes.people(session, ticket.id)
            out["indicators"] = changes.indicators(session, ticket.id)
            out["failed_recipients"] = changes.failed_recipients(session, ticket.id)
            out["fields"] = fields.values(session, ticket.id)
            out["rights"] = rights.on(ticket.queue_id)
            lc = lifecycle.for_queue(ticket.queue)
            out["lifecycle"] = {"name": lc.name, "states": lc.data["states"], "next": lc.allowed(ticket.state),
                                "closed": [n for n in lc.order if lc.is_closed(n)]}
            out["reminders"] = [changes.reminder_dict(r) for r in session.scalars(
                select(Reminder).where(Reminder.ticket_id == ticket.id).order_by(Reminder.due))]
            return out

    @api
    def previous_incidents(self, actor, ticket_id, limit=50):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            ticket = self._ticket(session, rights, ticket_id)
            return changes.previous_incidents(session, rights, ticket, _limit(limit, 50, 200))

    @api
    def list_articles(self, actor, ticket_id):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            ticket = self._ticket(session, rights, ticket_id)
            rows = session.scalars(select(Article).where(Article.ticket_id == ticket.id).order_by(Article.id))
            return [records.article_dict(a) for a in rows]

    @api
    def get_article(self, actor, article_id):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            article = records.get_article(session, article_id)
            self._ticket(session, rights, article.ticket_id)
            return records.article_dict(article)

    @api
    def get_attachment(self, actor, attachment_id):
        """Where an attachment's bytes are: (raw sha256, part) in ingest's raw store."""
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            att = session.get(Attachment, int(attachment_id))
            if att is None:
                raise NotFound(f"no attachment {attachment_id}")
            article = records.get_article(session, att.article_id)
            self._ticket(session, rights, article.ticket_id)
            return {"id": att.id, "article_id": article.id, "ticket_id": article.ticket_id,
                    # a decrypted mail's parts are numbered in its unwrapped MIME
                    "raw_sha256": article.mime_sha256 or article.raw_sha256, "part": att.part,
                    "original_sha256": article.raw_sha256, "filename": att.filename,
                    "content_type": att.content_type, "size": att.size, "sha256": att.sha256}

    @api
    def search(self, actor, q, limit=50):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            return records.search_tickets(session, q or "", _limit(limit), rights.queues_with(session, "see"))

    # --- changing tickets (each all-or-nothing, each with an optional idempotency key) ----
    def _mutate(self, actor, key, operation, fn):
        """Run ``fn(session, rights)`` in one transaction. With an idempotency key, a
        repeat of the same operation returns the first result instead of acting twice."""
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            if key:
                done = session.get(IdempotencyKey, str(key)[:200])
                if done is not None:
                    if done.actor != rights.user.username or done.operation != operation:
                        raise Conflict("this idempotency key was used for another request")
                    return {**done.result, "replayed": True}
            result = fn(session, rights)
            if key:
                session.add(IdempotencyKey(key=str(key)[:200], actor=rights.user.username, operation=operation,
                                           result=result))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                if key and session.get(IdempotencyKey, str(key)[:200]) is not None:
                    return self._mutate(actor, key, operation, fn)
                raise Conflict("a concurrent change collided with this one; try again") from None
            return result

    @api
    def create_ticket(self, actor, queue, subject, text="", requestors=None, fields=None, priority=None,
                      idempotency_key=None):
        def run(session, rights):
            ticket = changes.create_ticket(session, rights, queue, subject, text, list(requestors or []),
                                           fields or {}, priority)
            return records.ticket_dict(ticket)
        return self._mutate(actor, idempotency_key, "create_ticket", run)

    @api
    def update_ticket(self, actor, ticket_id, changes_, version=None, idempotency_key=None):
        """Change any of subject, queue, state (+outcome), priority, due, time_estimated,
        owner, fields — all or nothing; ``version`` guards against lost updates."""
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            changes.check_version(ticket, version)
            done = changes.update_ticket(session, rights, ticket, changes_)
            return {"ticket": records.ticket_dict(ticket), "changed": done}
        return self._mutate(actor, idempotency_key, f"update_ticket:{ticket_id}", run)

    @api
    def take_ticket(self, actor, ticket_id, steal=False, version=None, idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            changes.check_version(ticket, version)
            done = changes.take(session, rights, ticket, bool(steal))
            return {"ticket": records.ticket_dict(ticket), "changed": done}
        return self._mutate(actor, idempotency_key, f"take:{ticket_id}", run)

    @api
    def set_people(self, actor, ticket_id, role, add=None, remove=None, idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            done = changes.set_people(session, rights, ticket, role, list(add or []), list(remove or []))
            return {**done, "people": changes.people(session, ticket.id)}
        return self._mutate(actor, idempotency_key, f"people:{ticket_id}", run)

    @api
    def add_comment(self, actor, ticket_id, text, time_worked=0, idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            article = changes.add_comment(session, rights, ticket, text, time_worked)
            return records.article_dict(article)
        return self._mutate(actor, idempotency_key, f"comment:{ticket_id}", run)

    @api
    def add_link(self, actor, ticket_id, type, other_ticket_id, idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            changes.add_link(session, rights, ticket, type, other_ticket_id)
            return {"links": records.links(session, ticket.id)}
        return self._mutate(actor, idempotency_key, f"link:{ticket_id}", run)

    @api
    def remove_link(self, actor, ticket_id, type, other_ticket_id):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            changes.remove_link(session, rights, ticket, type, other_ticket_id)
            return {"links": records.links(session, ticket.id)}
        return self._mutate(actor, None, f"unlink:{ticket_id}", run)

    @api
    def merge_tickets(self, actor, source_id, target_id, idempotency_key=None):
        def run(session, rights):
            source = changes.get_ticket(session, source_id, follow_merge=False)
            target = changes.get_ticket(session, target_id)
            rights.require(source.queue, "see")
            rights.require(target.queue, "see")
            return changes.merge(session, rights, source, target)
        return self._mutate(actor, idempotency_key, f"merge:{source_id}", run)

    @api
    def split_ticket(self, actor, ticket_id, article_ids, copy_fields=None, subject=None, queue=None,
                     idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            return changes.split(session, rights, ticket, article_ids, list(copy_fields or []), subject, queue)
        return self._mutate(actor, idempotency_key, f"split:{ticket_id}", run)

    @api
    def add_reminder(self, actor, ticket_id, due, text="", awaiting=None, notify_third_party=False,
                     idempotency_key=None):
        def run(session, rights):
            ticket = self._ticket(session, rights, ticket_id)
            return changes.reminder_dict(changes.add_reminder(session, rights, ticket, due, text, awaiting,
                                                              bool(notify_third_party)))
        return self._mutate(actor, idempotency_key, f"reminder:{ticket_id}", run)

    @api
    def list_reminders(self, actor, mine=True, status="open"):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            q = select(Reminder).join(Ticket, Ticket.id == Reminder.ticket_id)
            visible = rights.queues_with(session, "see")
            if visible is not None:
                q = q.where(Ticket.queue_id.in_(visible))
            if mine:
                q = q.where(Reminder.owner == rights.user.username)
            if status:
                q = q.where(Reminder.status == status)
            return [changes.reminder_dict(r) for r in session.scalars(q.order_by(Reminder.due).limit(500))]

    @api
    def add_outgoing(self, actor, ticket_id, mail):
        """Record a mail the notify service sent (see changes.add_outgoing); ``actor`` is
        the staff member who sent it, or None for automatic mail (notifications,
        auto-replies, reminders to third parties)."""
        with self.db.get_session() as session:
            rights = self._rights(session, actor) if actor else None
            ticket = changes.get_ticket(session, ticket_id)
            if rights is not None:
                rights.require(ticket.queue, "see")
            try:
                article, created = changes.add_outgoing(session, rights, ticket, mail or {})
                session.commit()
            except IntegrityError:     # the same send recorded concurrently
                session.rollback()
                article, created = changes.add_outgoing(session, rights, ticket, mail or {})
            return {**records.article_dict(article), "duplicate": not created}

    # --- for other services on the bus (no person behind the call) -------------------------
    @api
    def get_article_text(self, article_id):
        """What enrich reads of an article: its text, HTML, direction and sender."""
        with self.db.get_session() as session:
            article = records.get_article(session, article_id)
            return {"id": article.id, "ticket_id": article.ticket_id, "direction": article.direction,
                    "action": article.action, "sender": article.sender, "subject": article.subject,
                    "body_text": article.body_text, "body_html": article.body_html, "auto": article.auto or {}}

    @api
    def add_enrichment(self, article_id, result):
        """Record enrich's findings for an article (changes.add_enrichment); idempotent."""
        with self.db.get_session() as session:
            article = records.get_article(session, article_id)
            try:
                out = changes.add_enrichment(session, article, result)
                session.commit()
            except IntegrityError:
                session.rollback()
                out = {"duplicate": True}
            return out

    @api
    def list_indicators(self, actor, ticket_id):
        with self.db.get_session() as session:
            rights = self._rights(session, actor)
            ticket = self._ticket(session, rights, ticket_id)
            return changes.indicators(session, ticket.id)

    # --- administration: rights, groups, lifecycles, outcomes, fields, SLAs ------------
    @api
    def admin_config(self, actor):
        """Everything an administrator configures, in one read."""
        with self.db.get_session() as session:
            self._actor(session, actor, admin=True)
            queues = session.scalars(select(Queue).order_by(Queue.name)).all()
            return {
                "rights": list(rights_mod.RIGHTS), "roles": list(rights_mod.ROLES),
                "queues": [{"name": q.name, "grants": rights_mod.queue_grants(session, q),
                            "lifecycle": q.lifecycle.name if q.lifecycle else "default",
                            "sla": q.sla.name if q.sla else None, "followup_policy": q.followup_policy}
                           for q in queues],
                "groups": rights_mod.list_groups(session),
                "lifecycles": [{"name": "default", "definition": lifecycle.DEFAULT}] + [
                    {"name": lc.name, "definition": lc.definition}
                    for lc in session.scalars(select(Lifecycle).order_by(Lifecycle.name))],
                "outcomes": lifecycle.outcomes(session, active_only=False),
                "fields": [fields.field_dict(f) for f in session.scalars(select(CustomField)
                                                                          .order_by(CustomField.name))],
                "slas": [sla_dict(x) for x in session.scalars(select(Sla).order_by(Sla.name))],
            }

    def _admin(self, actor, fn):
        with self.db.get_session() as session:
            user = self._actor(session, actor, admin=True)
            result = fn(session, user.username)
            session.commit()
            return result

    @api
    def grant_rights(self, actor, queue, grantee, rights, revoke=False):
        def run(session, who):
            q = records.queue_by_name(session, queue)
            fn = rights_mod.revoke if revoke else rights_mod.grant
            changed = fn(session, q, grantee, list(rights))
            records.audit(session, None, who, "rights_revoked" if revoke else "rights_granted", queue=queue,
                          grantee=grantee, rights=changed)
            return {"queue": queue, "grants": rights_mod.queue_grants(session, q)}
        return self._admin(actor, run)

    @api
    def create_group(self, actor, name, description=""):
        def run(session, who):
            rights_mod.create_group(session, name, description)
            records.audit(session, None, who, "group_created", group=name)
            return next(g for g in rights_mod.list_groups(session) if g["name"] == name)
        return self._admin(actor, run)

    @api
    def set_group_member(self, actor, group, username, member=True):
        def run(session, who):
            g = rights_mod.get_group(session, group)
            rights_mod.set_member(session, g, accounts.get_user(session, username), bool(member))
            records.audit(session, None, who, "group_member_added" if member else "group_member_removed",
                          group=group, username=username)
            return next(x for x in rights_mod.list_groups(session) if x["name"] == group)
        return self._admin(actor, run)

    @api
    def save_lifecycle(self, actor, name, definition):
        def run(session, who):
            if name == "default":
                raise BadRequest("the default lifecycle is built in; save yours under another name")
            row = lifecycle.save(session, name, definition)
            records.audit(session, None, who, "lifecycle_saved", lifecycle=name)
            return {"name": row.name, "definition": row.definition}
        return self._admin(actor, run)

    @api
    def configure_queue(self, actor, queue, lifecycle_name=None, sla_name=None, followup_policy=None,
                        description=None):
        """Set a queue's lifecycle ("default" for the built-in one), SLA ("" for none),
        follow-up policy or description."""
        def run(session, who):
            q = records.queue_by_name(session, queue)
            if lifecycle_name is not None:
                new = None if lifecycle_name == "default" else lifecycle.get(session, lifecycle_name)
                lc = lifecycle.Definition(new.definition) if new else lifecycle.Definition(lifecycle.DEFAULT)
                stray = session.scalars(select(Ticket.state).where(Ticket.queue_id == q.id,
                                                                   Ticket.state != lifecycle.MERGED,
                                                                   Ticket.state.not_in(lc.order)).distinct()).all()
                if stray:
                    raise Conflict(f"tickets of {queue!r} are in states the lifecycle {lifecycle_name!r} lacks: "
                                   f"{', '.join(stray)}")
                q.lifecycle_id, q.lifecycle = (new.id if new else None), new
                closed = [n for n in lc.order if lc.is_closed(n)]
                session.execute(update(Ticket).where(Ticket.queue_id == q.id, Ticket.state != lifecycle.MERGED)
                                .values(closed=Ticket.state.in_(closed)))
            if sla_name is not None:
                target = None
                if sla_name:
                    target = session.scalars(select(Sla).where(Sla.name == sla_name)).first()
                    if target is None:
                        raise NotFound(f"no SLA {sla_name!r}")
                q.sla_id, q.sla = (target.id if target else None), target
            if followup_policy is not None:
                if followup_policy not in records.FOLLOWUP_POLICIES:
                    raise BadRequest(f"follow-up policy is one of {', '.join(records.FOLLOWUP_POLICIES)}")
                q.followup_policy = followup_policy
            if description is not None:
                q.description = str(description)
            records.audit(session, None, who, "queue_configured", queue=queue, lifecycle=lifecycle_name,
                          sla=sla_name, followup_policy=followup_policy)
            return next(x for x in records.queue_counts(session) if x["name"] == queue)
        return self._admin(actor, run)

    @api
    def save_outcome(self, actor, name, description="", active=True):
        def run(session, who):
            row = lifecycle.save_outcome(session, name, description, active)
            records.audit(session, None, who, "outcome_saved", outcome=name, active=row.active)
            return {"name": row.name, "description": row.description, "active": row.active}
        return self._admin(actor, run)

    @api
    def create_field(self, actor, name, type, options=None, queue=None, read_only_after_set=False,
                     admin_only=False, description=""):
        def run(session, who):
            queue_id = records.queue_by_name(session, queue).id if queue else None
            row = fields.create(session, name, type, options, queue_id, read_only_after_set, admin_only,
                                description)
            records.audit(session, None, who, "field_created", field=name, type=type)
            return fields.field_dict(row)
        return self._admin(actor, run)

    @api
    def save_sla(self, actor, name, first_response_minutes=None, next_response_minutes=None,
                 resolution_minutes=None, calendar=None, escalate_priority=90):
        def run(session, who):
            row = session.scalars(select(Sla).where(Sla.name == name)).first()
            if row is None:
                row = Sla(name=name)
                session.add(row)
            for attr, value in (("first_response_minutes", first_response_minutes),
                                ("next_response_minutes", next_response_minutes),
                                ("resolution_minutes", resolution_minutes)):
                setattr(row, attr, changes._minutes(value, attr.replace("_", " ")) if value not in (None, "") else None)
            row.calendar = sla_mod.validate_calendar(calendar)
            row.escalate_priority = changes._priority(escalate_priority)
            session.flush()
            records.audit(session, None, who, "sla_saved", sla=name)
            return sla_dict(row)
        return self._admin(actor, run)

    @api
    def list_outcomes(self, actor):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return lifecycle.outcomes(session)

    @api
    def list_fields(self, actor):
        with self.db.get_session() as session:
            self._actor(session, actor)
            return [fields.field_dict(f) for f in session.scalars(select(CustomField).order_by(CustomField.name))]

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
    def create_user(self, username, password=None, is_admin=False, role=None, email="", actor=None):
        with self.db.get_session() as session:
            if password is not None and len(password) < 8:
                raise BadRequest("a password has at least 8 characters")
            user = accounts.create_user(session, username, password, bool(is_admin), role, email)
            records.audit(session, None, actor or records.SYSTEM, "user_created", username=username, role=user.role)
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_password(self, username, password, actor=None):
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            accounts.set_password(user, password)
            records.audit(session, None, actor or records.SYSTEM, "password_set", username=username)
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_disabled(self, username, disabled, actor=None):
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            user.disabled = bool(disabled)
            records.audit(session, None, actor or records.SYSTEM, "user_disabled" if disabled else "user_enabled",
                          username=username)
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_email(self, username, email, actor=None):
        """A staff member's mail address: their signed mail's commands apply (docs/intake.md)."""
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            email = str(email or "").strip().lower()
            if email and ("@" not in email or any(c.isspace() for c in email) or len(email) > 320):
                raise BadRequest(f"not a mail address: {email!r}")
            old, user.email = user.email, email
            records.audit(session, None, actor or records.SYSTEM, "user_email_set", username=username, old=old,
                          new=email)
            session.commit()
            return accounts.user_dict(user)

    @api
    def set_role(self, username, role, actor=None):
        with self.db.get_session() as session:
            user = accounts.get_user(session, username)
            old = user.role
            accounts.set_role(user, role)
            records.audit(session, None, actor or records.SYSTEM, "user_role_set", username=username, old=old, new=role)
            session.commit()
            return accounts.user_dict(user)

    # --- clocks: SLA escalation and reminders ------------------------------------------
    @timer(interval=15)
    def check_clocks(self):
        with self.db.get_session() as session:
            changes.escalate(session)
            changes.fire_reminders(session)
            session.commit()

    # --- the outbox relay -----------------------------------------------------------
    @timer(interval=0.5)
    def relay_outbox(self):
        """Publish committed events, oldest first; mark each after the broker took it."""
        with self.db.get_session() as session:
            for event in records.pending_events(session):
                self.dispatch(event.event_type, event.payload)
                event.published = utcnow()
                session.commit()
