"""Tickets and articles: every change is one transaction of row + audit entry +
outbox event, so an event exists if and only if its change was committed."""
from __future__ import annotations

import uuid
from email.utils import parseaddr

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from osprey import contracts

from . import search
from .exceptions import BadRequest, Conflict, NotFound, UnknownQueue
from .models import Article, Attachment, AuditEntry, ExternalRef, Link, OutboxEvent, Queue, Ticket, iso, utcnow

SYSTEM = "system"


def audit(session, ticket_id: int | None, actor: str, action: str, **detail) -> None:
    session.add(AuditEntry(ticket_id=ticket_id, actor=actor, action=action, detail=detail))


def emit(session, event_type: str, **payload) -> None:
    event_id = str(uuid.uuid4())
    session.add(OutboxEvent(event_id=event_id, event_type=event_type,
                            payload={"schema": contracts.SCHEMA, "event_id": event_id, **payload}))


def ensure_queues(session, names) -> None:
    from . import lifecycle, rights
    for name in names:
        if session.scalars(select(Queue).where(Queue.name == name)).first() is None:
            queue = Queue(name=name)
            session.add(queue)
            session.flush()
            rights.grant(session, queue, "role:agent", list(rights.AGENT_DEFAULT))
            audit(session, None, SYSTEM, "queue_created", queue=name)
    lifecycle.ensure_outcomes(session)


_QUEUE_NAME = __import__("re").compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


FOLLOWUP_POLICIES = ("new-linked", "accept")


def create_queue(session, name: str, description: str = "", followup_policy: str = "new-linked") -> Queue:
    if not _QUEUE_NAME.match(name or ""):
        raise BadRequest("a queue name is 1-100 lower-case letters, digits, '.', '_' or '-' "
                         "(it is also the local part of the queue's mail address)")
    if followup_policy not in FOLLOWUP_POLICIES:
        raise BadRequest(f"follow-up policy is one of {', '.join(FOLLOWUP_POLICIES)}")
    if session.scalars(select(Queue).where(Queue.name == name)).first() is not None:
        raise Conflict(f"queue {name!r} exists")
    from . import rights
    queue = Queue(name=name, description=description or "", followup_policy=followup_policy)
    session.add(queue)
    session.flush()
    # deny by default, except that agents work every new queue until an administrator says otherwise
    rights.grant(session, queue, "role:agent", list(rights.AGENT_DEFAULT))
    audit(session, None, SYSTEM, "queue_created", queue=name, granted={"role:agent": list(rights.AGENT_DEFAULT)})
    return queue


def queue_by_name(session, name: str) -> Queue:
    queue = session.scalars(select(Queue).where(Queue.name == name)).first()
    if queue is None:
        raise UnknownQueue(f"no queue named {name!r}")
    return queue


def find_duplicate(session, mail: dict) -> Article | None:
    """The article this delivery already is: the same intake id (a redelivery), or
    the same Message-ID with the same content (one mail through two aliases)."""
    article = session.scalars(select(Article).where(Article.intake_id == mail["intake_id"])).first()
    if article is None and mail.get("message_id") and mail.get("content_hash"):
        article = session.scalars(select(Article).where(Article.message_id == mail["message_id"],
                                                        Article.content_hash == mail["content_hash"])).first()
    return article


def resolve_ticket(session, mail: dict) -> tuple[Ticket | None, tuple[str, str] | None]:
    """The ticket a mail follows up, and by which rule, (kind, description) (ingest's
    followup.py gives the candidates in order): subject tag, referenced Message-ID,
    another team's number."""
    if mail.get("ticket_hint"):
        ticket = session.get(Ticket, int(mail["ticket_hint"]))
        if ticket is not None:
            rule = ("tag", "subject tag")
            while ticket.merged_into_id is not None:      # a merged ticket's number names the survivor
                rule = ("tag", f"subject tag of #{ticket.id}, merged into #{ticket.merged_into_id}")
                ticket = session.get(Ticket, ticket.merged_into_id)
            return ticket, rule
    ids = [i for i in mail.get("referenced_ids") or [] if i]
    if ids:
        rows = session.execute(select(Article.message_id, Article.ticket_id)
                               .where(Article.message_id.in_(ids))).all()
        by_id = {mid: tid for mid, tid in rows}
        for mid in ids:   # nearest ancestor first
            if mid in by_id:
                return session.get(Ticket, by_id[mid]), ("references", f"references {mid}")
    domain = mail.get("sender_domain") or ""
    for ref in mail.get("external_refs") or []:
        row = session.scalars(select(ExternalRef).where(ExternalRef.system == ref["system"],
                                                        ExternalRef.ref == ref["ref"],
                                                        ExternalRef.sender_domain == domain)).first()
        if row is not None:
            return session.get(Ticket, row.ticket_id), ("external", f"{ref['system']} number {ref['ref']}")
    return None, None


def add_mail(session, mail: dict) -> dict:
    """Make an article of one delivered mail: on the ticket it follows up
    (``resolve_ticket``), else on a new ticket in its queue. The intake id is the
    idempotency key: the same delivery applied twice returns the first result with
    duplicate=True (so does the same mail arriving through a second alias)."""
    existing = find_duplicate(session, mail)
    if existing is not None:
        if existing.intake_id != mail["intake_id"]:
            audit(session, existing.ticket_id, SYSTEM, "duplicate_delivery", article_id=existing.id,
                  intake_id=mail["intake_id"], queue=mail.get("queue"))
        return {"ticket_id": existing.ticket_id, "article_id": existing.id, "created_ticket": False,
                "duplicate": True, "held_from_ticket": None}
    ticket, rule = resolve_ticket(session, mail)
    held_from = None
    if ticket is not None and not accepts_followup(session, ticket, rule, mail):
        held_from, ticket, rule = ticket, None, None
    created = ticket is None
    if created:
        from . import changes, lifecycle
        queue = queue_by_name(session, mail["queue"])
        ticket = Ticket(queue_id=queue.id, queue=queue, subject=(mail.get("subject") or "(no subject)")[:1000],
                        state=lifecycle.for_queue(queue).initial,
                        requestor=mail.get("sender_address") or mail.get("sender") or "")
        session.add(ticket)
        session.flush()
        audit(session, ticket.id, SYSTEM, "ticket_created", via=mail.get("source"), intake_id=mail["intake_id"])
        changes.start_sla(session, ticket)
    if held_from is not None:
        session.add(Link(from_ticket_id=ticket.id, to_ticket_id=held_from.id, type="refers-to"))
        for tid, other in ((ticket.id, held_from.id), (held_from.id, ticket.id)):
            audit(session, tid, SYSTEM, "followup_from_unknown_sender", sender=mail.get("sender_address"),
                  new_ticket=ticket.id, named_ticket=held_from.id, other_ticket=other)
    remember_external_refs(session, ticket, mail)
    article = Article(
        ticket_id=ticket.id, intake_id=mail["intake_id"], direction="in", action=mail.get("action", "correspond"),
        raw_sha256=mail.get("raw_sha256"), raw_size=mail.get("raw_size"), message_id=mail.get("message_id"),
        sender=mail.get("sender") or "", recipients={"to": mail.get("to", []), "cc": mail.get("cc", [])},
        subject=mail.get("subject") or "", date=mail.get("date"), body_text=mail.get("body_text") or "",
        body_html=mail.get("body_html"), body_truncated=bool(mail.get("body_truncated")),
        content_hash=mail.get("content_hash"), auto=mail.get("auto") or {},
        security=mail.get("security") or None, mime_sha256=mail.get("mime_sha256") or None,
    )
    session.add(article)
    session.flush()
    for att in mail.get("attachments", []):
        session.add(Attachment(article_id=article.id, part=att["part"], filename=att["filename"],
                               content_type=att["content_type"], size=att["size"], sha256=att["sha256"]))
    search.index_article(session, article)
    ticket.updated = utcnow()
    if not created:
        from . import changes
        changes.on_incoming(session, ticket, article, mail)
        changes.apply_mail_commands(session, ticket, article, mail)
    from . import changes as _changes
    _changes.on_bounce(session, ticket, article, mail)
    audit(session, ticket.id, SYSTEM, "article_added", article_id=article.id, intake_id=mail["intake_id"],
          **({"threaded_by": rule[1]} if rule else {}))
    if created:
        emit(session, contracts.EV_TICKET_CREATED, ticket_id=ticket.id, queue=mail["queue"],
             subject=ticket.subject)
    emit(session, contracts.EV_ARTICLE_ADDED, ticket_id=ticket.id, article_id=article.id,
         raw_sha256=article.raw_sha256)
    return {"ticket_id": ticket.id, "article_id": article.id, "created_ticket": created, "duplicate": False,
            "held_from_ticket": held_from.id if held_from is not None else None}


def correspondents(session, ticket: Ticket) -> set[str]:
    """Every address the ticket's mail came from or went to (lower-case)."""
    from .models import TicketPerson
    known = {ticket.requestor.lower()} if ticket.requestor else set()
    known.update(session.scalars(select(TicketPerson.address).where(TicketPerson.ticket_id == ticket.id,
                                                                    TicketPerson.role.in_(("requestor", "cc")))))
    for sender, recipients in session.execute(select(Article.sender, Article.recipients)
                                              .where(Article.ticket_id == ticket.id)):
        for value in [sender, *(recipients or {}).get("to", []), *(recipients or {}).get("cc", [])]:
            try:
                address = parseaddr(value or "")[1].lower()
            except (RecursionError, ValueError):  # the stdlib recurses on pathological headers
                continue
            if address:
                known.add(address)
    return known


def accepts_followup(session, ticket: Ticket, rule: tuple[str, str], mail: dict) -> bool:
    """Does this mail join the ticket it names? Yes from a known correspondent, for a
    bounce (the returned mail is ours), for another team's number (already scoped to
    the sender's domain), or where the queue's policy is "accept". Otherwise the mail
    starts a new ticket linked to the one it names (Zammad issue 5064)."""
    if ticket.queue.followup_policy == "accept" or rule[0] == "external":
        return True
    if (mail.get("auto") or {}).get("bounce"):
        return True
    sender = (mail.get("sender_address") or "").lower()
    if not sender:
        return False
    if sender in correspondents(session, ticket):
        return True
    from .models import User     # staff write to any ticket (their own commands are checked apart)
    return session.scalars(select(User.id).where(func.lower(User.email) == sender, User.disabled.is_(False),
                                                 User.role.in_(("agent", "admin")))).first() is not None


def remember_external_refs(session, ticket: Ticket, mail: dict) -> None:
    domain = mail.get("sender_domain") or ""
    for ref in mail.get("external_refs") or []:
        exists = session.scalars(select(ExternalRef).where(ExternalRef.system == ref["system"],
                                                           ExternalRef.ref == ref["ref"],
                                                           ExternalRef.sender_domain == domain)).first()
        if exists is None:
            session.add(ExternalRef(ticket_id=ticket.id, system=ref["system"], ref=ref["ref"], sender_domain=domain))
            audit(session, ticket.id, SYSTEM, "external_ref_added", system=ref["system"], ref=ref["ref"],
                  sender_domain=domain)


def ticket_dict(ticket: Ticket, articles: int | None = None) -> dict:
    out = {"id": ticket.id, "queue": ticket.queue.name, "subject": ticket.subject, "state": ticket.state,
           "requestor": ticket.requestor, "created": iso(ticket.created), "updated": iso(ticket.updated),
           "priority": ticket.priority, "owner": ticket.owner.username if ticket.owner_id else None,
           "outcome": ticket.outcome, "version": ticket.version, "due": iso(ticket.due),
           "time_worked": ticket.time_worked, "time_estimated": ticket.time_estimated,
           "sla": {"first_response_due": iso(ticket.first_response_due),
                   "next_response_due": iso(ticket.next_response_due),
                   "resolution_due": iso(ticket.resolution_due),
                   "first_responded": iso(ticket.first_responded), "breached": sorted(ticket.escalated or {})},
           "merged_into": ticket.merged_into_id}
    if articles is not None:
        out["articles"] = articles
    return out


def article_dict(article: Article) -> dict:
    return {
        "id": article.id, "ticket_id": article.ticket_id, "direction": article.direction,
        "action": article.action, "message_id": article.message_id, "from": article.sender,
        "to": article.recipients.get("to", []), "cc": article.recipients.get("cc", []),
        "subject": article.subject, "date": article.date, "created": iso(article.created),
        "body_text": article.body_text, "body_html": article.body_html,
        "body_truncated": article.body_truncated, "raw_sha256": article.raw_sha256,
        "raw_size": article.raw_size, "intake_id": article.intake_id, "auto": article.auto or {},
        "author": article.author, "time_worked": article.time_worked,
        "security": article.security, "mime_sha256": article.mime_sha256,
        "attachments": [{"id": a.id, "part": a.part, "filename": a.filename, "content_type": a.content_type,
                         "size": a.size, "sha256": a.sha256} for a in article.attachments],
    }


def get_ticket(session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, int(ticket_id))
    if ticket is None:
        raise NotFound(f"no ticket #{ticket_id}")
    return ticket


def get_article(session, article_id: int) -> Article:
    article = session.get(Article, int(article_id))
    if article is None:
        raise NotFound(f"no article {article_id}")
    return article


COUNT_CAP = 10_000
ORDERS = {
    "newest": (Ticket.id.desc(),),
    "oldest": (Ticket.id.asc(),),
    "priority": (Ticket.priority.desc(), Ticket.created.asc(), Ticket.id.asc()),   # the queue view
    "updated": (Ticket.updated.desc(), Ticket.id.desc()),
}


def list_tickets(session, queue: str | None, state: str | None, limit: int, offset: int,
                 visible: list[int] | None = None, owner: str | None = None, order: str | None = None,
                 me: str | None = None, sla: str | None = None) -> dict:
    """Tickets the caller may see. ``state``: one state, a comma list, or "active"
    (not closed); ``owner``: a user name, "me" or "nobody"; ``order``: see ORDERS."""
    from .models import User
    q = select(Ticket)
    if state != "active":      # merged tickets are closed, so the queue view needs no second test
        q = q.where(Ticket.state != "merged")
    if visible is not None:
        q = q.where(Ticket.queue_id.in_(visible))
    if queue:
        q = q.where(Ticket.queue_id == queue_by_name(session, queue).id)
    if state == "active":
        q = q.where(Ticket.closed.is_(False))
    elif state:
        q = q.where(Ticket.state.in_([s.strip() for s in state.split(",") if s.strip()]))
    if sla == "breached":     # a response or resolution target has passed
        now = utcnow()
        q = q.where(Ticket.closed.is_(False), (Ticket.first_response_due < now) | (Ticket.next_response_due < now)
                    | (Ticket.resolution_due < now))
    if owner == "nobody":
        q = q.where(Ticket.owner_id.is_(None))
    elif owner:
        name = me if owner == "me" else owner
        q = q.where(Ticket.owner_id == select(User.id).where(User.username == name).scalar_subquery())
    if order and order not in ORDERS:
        raise BadRequest(f"order is one of {', '.join(ORDERS)}")
    # counting a million rows costs more than the page itself: exact up to COUNT_CAP, then "more than"
    # (only the id, so that the index answers without reading the rows)
    total = session.scalar(select(func.count()).select_from(
        q.with_only_columns(Ticket.id).limit(COUNT_CAP + 1).subquery()))
    rows = session.scalars(q.options(joinedload(Ticket.queue), joinedload(Ticket.owner))
                           .order_by(*ORDERS[order or "newest"]).limit(limit).offset(offset)).all()
    return {"total": min(total, COUNT_CAP), "total_exact": total <= COUNT_CAP, "limit": limit, "offset": offset,
            "tickets": [ticket_dict(t) for t in rows]}


def _states(queue: Queue) -> list[dict]:
    from . import lifecycle
    return list(lifecycle.for_queue(queue).data["states"])


def queue_counts(session, visible: list[int] | None = None) -> list[dict]:
    counts: dict[int, dict[str, int]] = {}
    for queue_id, state, n in session.execute(
            select(Ticket.queue_id, Ticket.state, func.count()).where(Ticket.state != "merged")
            .group_by(Ticket.queue_id, Ticket.state)):
        counts.setdefault(queue_id, {})[state] = n
    q = select(Queue).order_by(Queue.name)
    if visible is not None:
        q = q.where(Queue.id.in_(visible))
    return [{"id": q.id, "name": q.name, "description": q.description, "followup_policy": q.followup_policy,
             "lifecycle": q.lifecycle.name if q.lifecycle else "default", "sla": q.sla.name if q.sla else None,
             "states": _states(q),
             "counts": counts.get(q.id, {}),
             "total": sum(counts.get(q.id, {}).values())}
            for q in session.scalars(q)]


def search_tickets(session, q: str, limit: int, visible: list[int] | None = None) -> list[dict]:
    hits = search.search_articles(session, q, limit=limit)
    query = select(Ticket).options(joinedload(Ticket.queue)).where(Ticket.id.in_([h["ticket_id"] for h in hits]))
    if visible is not None:
        query = query.where(Ticket.queue_id.in_(visible))
    tickets = {t.id: t for t in session.scalars(query)}
    return [{**ticket_dict(tickets[h["ticket_id"]]), "article_id": h["article_id"], "snippet": h["snippet"]}
            for h in hits if h["ticket_id"] in tickets]


def links(session, ticket_id: int) -> list[dict]:
    """Both directions: {"type", "direction": "out"|"in", "ticket_id", "subject"}."""
    out = []
    for link in session.scalars(select(Link).where((Link.from_ticket_id == ticket_id) | (Link.to_ticket_id == ticket_id))
                                .order_by(Link.id)):
        outgoing = link.from_ticket_id == ticket_id
        other = session.get(Ticket, link.to_ticket_id if outgoing else link.from_ticket_id)
        inverse = {"child-of": "parent-of", "depends-on": "depended-on-by", "refers-to": "referred-to-by"}
        out.append({"type": link.type, "direction": "out" if outgoing else "in", "ticket_id": other.id,
                    "subject": other.subject, "state": other.state,
                    "label": link.type if outgoing else inverse.get(link.type, link.type)})
    return out


def external_refs(session, ticket_id: int) -> list[dict]:
    rows = session.scalars(select(ExternalRef).where(ExternalRef.ticket_id == ticket_id).order_by(ExternalRef.id))
    return [{"system": r.system, "ref": r.ref, "sender_domain": r.sender_domain} for r in rows]


def history(session, ticket_id: int) -> list[dict]:
    rows = session.scalars(select(AuditEntry).where(AuditEntry.ticket_id == ticket_id).order_by(AuditEntry.id))
    return [{"id": r.id, "actor": r.actor, "action": r.action, "detail": r.detail, "created": iso(r.created)}
            for r in rows]


def pending_events(session, limit: int = 100) -> list[OutboxEvent]:
    return session.scalars(select(OutboxEvent).where(OutboxEvent.published.is_(None))
                           .order_by(OutboxEvent.seq).limit(limit)).all()
