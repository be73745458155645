"""Every change a person makes to a ticket. Each function validates everything
first, then applies; the caller commits once, so a refused change leaves nothing
behind. Each change writes history (who, what, old → new) and an outbox event."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, or_, select, update

from osprey import contracts

from . import fields, lifecycle, sla
from .exceptions import BadRequest, Conflict, Forbidden, NotFound
from .models import (Article, ArticleIP, AuditEntry, CustomField, ExternalRef, FieldValue, Link,
                     Queue, Reminder, Sla, Ticket, TicketPerson, User, iso, utcnow)
from .records import SYSTEM, audit, emit, queue_by_name, ticket_dict
from .rights import Rights

PEOPLE_ROLES = ("requestor", "cc", "admincc")
# stored link types (from → to) and how the other end shows them
LINK_TYPES = {"child-of": "parent-of", "depends-on": "depended-on-by", "refers-to": "referred-to-by"}
INVERSE = {v: k for k, v in LINK_TYPES.items()}
UPDATABLE = ("subject", "queue", "state", "outcome", "priority", "due", "time_estimated", "owner", "fields")


def get_ticket(session, ticket_id, follow_merge: bool = True) -> Ticket:
    """A ticket by number; a merged ticket's number resolves to the survivor."""
    try:
        ticket = session.get(Ticket, int(ticket_id))
    except (TypeError, ValueError):
        raise BadRequest(f"not a ticket number: {ticket_id!r}") from None
    if ticket is None:
        raise NotFound(f"no ticket #{ticket_id}")
    seen = set()
    while follow_merge and ticket.merged_into_id is not None and ticket.id not in seen:
        seen.add(ticket.id)
        ticket = session.get(Ticket, ticket.merged_into_id)
    return ticket


def check_version(ticket: Ticket, version) -> None:
    if version is None or version == "":
        return
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise BadRequest(f"not a version: {version!r}") from None
    if version != ticket.version:
        raise Conflict(f"ticket #{ticket.id} was changed since you loaded it (your version {version}, "
                       f"now {ticket.version}); reload it and make your change again")


def touch(ticket: Ticket) -> None:
    ticket.version = (ticket.version or 1) + 1
    ticket.updated = utcnow()


def _user(session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or user.disabled:
        raise NotFound(f"no active user {username!r}")
    return user


def _dt(value) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"not a date/time (ISO 8601): {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _minutes(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} is a whole number of minutes, not {value!r}") from None
    if not 0 <= n <= 10_000_000:
        raise BadRequest(f"{what} is 0 to 10,000,000 minutes")
    return n


# --- creating ------------------------------------------------------------------
def create_ticket(session, rights: Rights, queue_name: str, subject: str, text: str = "",
                  requestors=(), field_values: dict | None = None, priority=None) -> Ticket:
    queue = queue_by_name(session, queue_name)
    rights.require(queue, "create")
    subject = (subject or "").strip()
    if not subject:
        raise BadRequest("a ticket needs a subject")
    lc = lifecycle.for_queue(queue)
    ticket = Ticket(queue_id=queue.id, subject=subject[:1000], state=lc.initial,
                    requestor=(list(requestors)[0] if requestors else ""), queue=queue)
    if priority is not None:
        ticket.priority = _priority(priority)
    staged = _stage_fields(session, rights, ticket, queue, field_values or {}, new=True)
    session.add(ticket)
    session.flush()
    actor = rights.user.username
    audit(session, ticket.id, actor, "ticket_created", via="web", queue=queue.name)
    for field, rows in staged:
        fields.store(session, ticket.id, field, rows)
        audit(session, ticket.id, actor, "field_set", field=field.name, old=[], new=[r["value"] for r in rows])
    for address in requestors:
        _add_person(session, ticket, "requestor", address, actor)
    if text:
        article = Article(ticket_id=ticket.id, direction="internal", action="create", sender=actor, author=actor,
                          subject=ticket.subject, body_text=text)
        session.add(article)
        session.flush()
        from . import search
        search.index_article(session, article)
    start_sla(session, ticket)
    emit(session, contracts.EV_TICKET_CREATED, ticket_id=ticket.id, queue=queue.name, subject=ticket.subject)
    return ticket


def start_sla(session, ticket: Ticket) -> None:
    queue = ticket.queue or session.get(Queue, ticket.queue_id)
    target = session.get(Sla, queue.sla_id) if queue.sla_id else None
    for key, due in sla.due_times(target, ticket.created or utcnow()).items():
        setattr(ticket, key, due)


def _priority(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"priority is a number 0-100, not {value!r}") from None
    if not 0 <= n <= 100:
        raise BadRequest("priority is 0 (lowest) to 100 (highest)")
    return n


# --- updating ------------------------------------------------------------------
def _stage_fields(session, rights: Rights, ticket: Ticket, queue: Queue, given: dict, new: bool = False):
    if not isinstance(given, dict):
        raise BadRequest("fields is an object {name: value}")
    staged = []
    for name, value in given.items():
        field = fields.get(session, name)
        old = [] if new else fields.current(session, ticket.id, field)
        fields.check_rights(field, old, rights.admin, queue.id)
        staged.append((field, fields.normalise(field, value)))
    return staged


def update_ticket(session, rights: Rights, ticket: Ticket, changes: dict) -> dict:
    """Apply ``changes`` ({subject, queue, state, outcome, priority, due,
    time_estimated, owner, fields}) all or nothing; returns {what: {old, new}}."""
    if not isinstance(changes, dict) or not changes:
        raise BadRequest(f"nothing to change; give any of: {', '.join(UPDATABLE)}")
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise BadRequest(f"cannot change {', '.join(unknown)}; changeable: {', '.join(UPDATABLE)}")
    if ticket.state == lifecycle.MERGED:
        raise Conflict(f"ticket #{ticket.id} was merged into #{ticket.merged_into_id}; change that one")
    queue = ticket.queue
    actor = rights.user.username
    plan: dict = {}
    # validate everything first
    if "subject" in changes:
        rights.require(queue, "modify", "subject")
        subject = str(changes["subject"] or "").strip()
        if not subject:
            raise BadRequest("a ticket needs a subject")
        plan["subject"] = subject[:1000]
    target_queue = queue
    if "queue" in changes and changes["queue"] != queue.name:
        target_queue = queue_by_name(session, str(changes["queue"]))
        rights.require(queue, "modify", "move out")
        rights.require(target_queue, "create", "move in")
        plan["queue"] = target_queue
    lc_new = lifecycle.for_queue(target_queue)
    new_state = changes.get("state")
    if target_queue is not queue and ticket.state not in lc_new.category and not new_state:
        raise BadRequest(f"queue {target_queue.name!r} has no state {ticket.state!r}; give a state too")
    if new_state and new_state != ticket.state:
        lc = lifecycle.for_queue(queue) if target_queue is queue else lc_new
        if target_queue is queue:
            lc.check(ticket.state, new_state)
        elif new_state not in lc.category:
            raise BadRequest(f"unknown state {new_state!r} in queue {target_queue.name!r}")
        rights.require(target_queue, lc.right_for(ticket.state, new_state), f"{ticket.state} → {new_state}")
        plan["state"] = new_state
        if lc.is_closed(new_state):
            plan["outcome"] = lifecycle.check_outcome(session, changes.get("outcome"))
        elif changes.get("outcome"):
            raise BadRequest("an outcome is recorded only when a ticket is closed")
    elif changes.get("outcome") and changes.get("outcome") != ticket.outcome:
        if not lifecycle.for_queue(queue).is_closed(ticket.state):
            raise BadRequest("an outcome is recorded only when a ticket is closed")
        rights.require(queue, "modify", "outcome")
        plan["outcome"] = lifecycle.check_outcome(session, changes["outcome"])
    if "priority" in changes:
        rights.require(queue, "modify", "priority")
        plan["priority"] = _priority(changes["priority"])
    if "due" in changes:
        rights.require(queue, "modify", "due date")
        plan["due"] = _dt(changes["due"])
    if "time_estimated" in changes:
        rights.require(queue, "modify", "time estimated")
        plan["time_estimated"] = _minutes(changes["time_estimated"], "time estimated")
    if "owner" in changes:
        plan["owner"] = _plan_owner(session, rights, ticket, target_queue, changes["owner"])
    staged = _stage_fields(session, rights, ticket, target_queue, changes.get("fields") or {})
    if staged:
        rights.require(target_queue, "modify", "fields")
    # then apply
    done: dict = {}
    for key in ("subject", "priority", "due", "time_estimated"):
        if key in plan and plan[key] != getattr(ticket, key):
            old = getattr(ticket, key)
            setattr(ticket, key, plan[key])
            done[key] = {"old": iso(old) if isinstance(old, datetime) else old,
                         "new": iso(plan[key]) if isinstance(plan[key], datetime) else plan[key]}
    if "queue" in plan:
        done["queue"] = {"old": queue.name, "new": plan["queue"].name}
        ticket.queue_id, ticket.queue = plan["queue"].id, plan["queue"]
        ticket.closed = lc_new.is_closed(ticket.state)
    if "owner" in plan and plan["owner"] != ticket.owner_id:
        old = ticket.owner.username if ticket.owner else None
        new_owner = session.get(User, plan["owner"]) if plan["owner"] else None
        ticket.owner_id, ticket.owner = plan["owner"], new_owner
        done["owner"] = {"old": old, "new": new_owner.username if new_owner else None}
    for field, rows in staged:
        old = fields.current(session, ticket.id, field)
        new = [r["value"] for r in rows]
        if old != new:
            fields.store(session, ticket.id, field, rows)
            done[f"fields.{field.name}"] = {"old": old, "new": new}
    if "state" in plan:
        done["state"] = {"old": ticket.state, "new": plan["state"]}
        _set_state(session, ticket, plan["state"], plan.get("outcome"), actor, lc_new)
        if "outcome" in plan:
            done["outcome"] = {"old": None, "new": plan["outcome"]}
    elif "outcome" in plan and plan["outcome"] != ticket.outcome:
        done["outcome"] = {"old": ticket.outcome, "new": plan["outcome"]}
        ticket.outcome = plan["outcome"]
    if not done:
        return {}
    touch(ticket)
    for what, change in done.items():
        if what != "state" and not (what == "outcome" and "state" in done):   # the state entry names it
            audit(session, ticket.id, actor, "changed", field=what, old=change["old"], new=change["new"])
    others = {k: v for k, v in done.items() if k not in ("state", "outcome")}
    if others:
        emit(session, contracts.EV_TICKET_UPDATED, ticket_id=ticket.id, actor=actor, changes=others)
    return done


def _set_state(session, ticket: Ticket, new: str, outcome: str | None, actor: str, lc) -> None:
    old = ticket.state
    ticket.state = new
    ticket.closed = lc.is_closed(new)
    audit(session, ticket.id, actor, "state_changed", field="state", old=old, new=new,
          **({"outcome": outcome} if outcome else {}))
    emit(session, contracts.EV_TICKET_STATE_CHANGED, ticket_id=ticket.id, actor=actor, old=old, new=new)
    if lc.is_closed(new):
        ticket.outcome = outcome
        ticket.first_response_due = ticket.next_response_due = ticket.resolution_due = None
        emit(session, contracts.EV_TICKET_CLOSED, ticket_id=ticket.id, actor=actor, state=new, outcome=outcome)
        for reminder in session.scalars(select(Reminder).where(Reminder.ticket_id == ticket.id,
                                                               Reminder.status == "open")):
            reminder.status = "done"
    elif lc.is_closed(old):
        ticket.outcome = None
        target = session.get(Sla, ticket.queue.sla_id) if ticket.queue.sla_id else None
        if target is not None and target.resolution_minutes:
            ticket.resolution_due = sla.add_business_minutes(utcnow(), target.resolution_minutes, target.calendar)


def _plan_owner(session, rights: Rights, ticket: Ticket, queue: Queue, username) -> int | None:
    """Giving a ticket: to nobody, to myself (take/steal) or to someone with 'own'."""
    if not username:
        if ticket.owner_id not in (None, rights.user.id):
            rights.require(queue, "steal", "release another's ticket")
        return None
    user = _user(session, str(username))
    if user.id == rights.user.id:
        need = "take" if ticket.owner_id is None else "steal"
        if ticket.owner_id != user.id:
            rights.require(queue, need, "take the ticket" if need == "take" else "take it from its owner")
        return user.id
    rights.require(queue, "modify", "give the ticket")
    if ticket.owner_id not in (None, rights.user.id):
        rights.require(queue, "steal", "give away another's ticket")
    if not Rights(session, user).has(queue.id, "own"):
        raise Forbidden(f"{user.username} may not own tickets in queue {queue.name!r}")
    return user.id


def take(session, rights: Rights, ticket: Ticket, steal: bool = False) -> dict:
    if ticket.owner_id == rights.user.id:
        return {}
    if ticket.owner_id is not None and not steal:
        raise Conflict(f"ticket #{ticket.id} is owned by {ticket.owner.username}; steal it to take it over")
    return update_ticket(session, rights, ticket, {"owner": rights.user.username})


# --- people --------------------------------------------------------------------
def people(session, ticket_id: int) -> dict[str, list[str]]:
    out = {role: [] for role in PEOPLE_ROLES}
    for role, address in session.execute(select(TicketPerson.role, TicketPerson.address)
                                          .where(TicketPerson.ticket_id == ticket_id).order_by(TicketPerson.id)):
        out[role].append(address)
    return out


def _norm_address(address: str) -> str:
    from email.utils import parseaddr
    text = str(address or "").strip()
    if "@" in text:
        text = parseaddr(text)[1] or text
    text = text.lower()
    if not text or len(text) > 320 or any(c.isspace() for c in text):
        raise BadRequest(f"not a mail address or user name: {address!r}")
    return text


def _add_person(session, ticket: Ticket, role: str, address: str, actor: str) -> bool:
    address = _norm_address(address)
    exists = session.scalars(select(TicketPerson).where(TicketPerson.ticket_id == ticket.id,
                                                        TicketPerson.role == role,
                                                        TicketPerson.address == address)).first()
    if exists is not None:
        return False
    session.add(TicketPerson(ticket_id=ticket.id, role=role, address=address))
    audit(session, ticket.id, actor, "person_added", role=role, address=address)
    return True


def set_people(session, rights: Rights, ticket: Ticket, role: str, add=(), remove=()) -> dict:
    if role not in PEOPLE_ROLES:
        raise BadRequest(f"a role is one of {', '.join(PEOPLE_ROLES)}")
    rights.require(ticket.queue, "modify", "people")
    actor = rights.user.username
    added = [a for a in add if _add_person(session, ticket, role, a, actor)]
    removed = []
    for address in remove:
        address = _norm_address(address)
        row = session.scalars(select(TicketPerson).where(TicketPerson.ticket_id == ticket.id,
                                                         TicketPerson.role == role,
                                                         TicketPerson.address == address)).first()
        if row is not None:
            session.delete(row)
            audit(session, ticket.id, actor, "person_removed", role=role, address=address)
            removed.append(address)
    if added or removed:
        touch(ticket)
        emit(session, contracts.EV_TICKET_UPDATED, ticket_id=ticket.id, actor=actor,
             changes={f"people.{role}": {"added": added, "removed": removed}})
    return {"added": added, "removed": removed}


# --- comments and time -----------------------------------------------------------
def add_comment(session, rights: Rights, ticket: Ticket, text: str, time_worked=0) -> Article:
    rights.require(ticket.queue, "comment")
    text = str(text or "").strip()
    minutes = _minutes(time_worked or 0, "time worked")
    if not text and not minutes:
        raise BadRequest("a comment needs text (or time worked)")
    actor = rights.user.username
    article = Article(ticket_id=ticket.id, direction="internal", action="comment", sender=actor, author=actor,
                      subject=ticket.subject, body_text=text, time_worked=minutes)
    session.add(article)
    session.flush()
    from . import search
    search.index_article(session, article)
    if minutes:
        ticket.time_worked = (ticket.time_worked or 0) + minutes
    touch(ticket)
    audit(session, ticket.id, actor, "comment_added", article_id=article.id, time_worked=minutes)
    emit(session, contracts.EV_ARTICLE_ADDED, ticket_id=ticket.id, article_id=article.id, raw_sha256=None)
    return article


# --- links ---------------------------------------------------------------------
def add_link(session, rights: Rights, ticket: Ticket, type_: str, other_id) -> dict:
    other = get_ticket(session, other_id)
    if type_ in INVERSE:                  # "parent-of" is stored as the other's "child-of"
        type_, frm, to = INVERSE[type_], other, ticket
    elif type_ in LINK_TYPES:
        frm, to = ticket, other
    else:
        raise BadRequest(f"a link type is one of {', '.join([*LINK_TYPES, *INVERSE])}")
    if frm.id == to.id:
        raise BadRequest("a ticket cannot link to itself")
    rights.require(ticket.queue, "modify", "links")
    rights.require(other.queue, "see", "the linked ticket")
    exists = session.scalars(select(Link).where(Link.from_ticket_id == frm.id, Link.to_ticket_id == to.id,
                                                Link.type == type_)).first()
    if exists is not None:
        return {"added": False}
    session.add(Link(from_ticket_id=frm.id, to_ticket_id=to.id, type=type_))
    actor = rights.user.username
    audit(session, frm.id, actor, "link_added", type=type_, other_ticket=to.id, direction="out")
    audit(session, to.id, actor, "link_added", type=LINK_TYPES[type_], other_ticket=frm.id, direction="in")
    touch(ticket)
    emit(session, contracts.EV_TICKET_UPDATED, ticket_id=ticket.id, actor=actor,
         changes={"links": {"added": {"from": frm.id, "to": to.id, "type": type_}}})
    return {"added": True}


def remove_link(session, rights: Rights, ticket: Ticket, type_: str, other_id) -> dict:
    other = get_ticket(session, other_id)
    if type_ in INVERSE:
        type_, frm, to = INVERSE[type_], other, ticket
    else:
        frm, to = ticket, other
    rights.require(ticket.queue, "modify", "links")
    row = session.scalars(select(Link).where(Link.from_ticket_id == frm.id, Link.to_ticket_id == to.id,
                                             Link.type == type_)).first()
    if row is None:
        raise NotFound(f"no {type_} link from #{frm.id} to #{to.id}")
    session.delete(row)
    actor = rights.user.username
    audit(session, frm.id, actor, "link_removed", type=type_, other_ticket=to.id, direction="out")
    audit(session, to.id, actor, "link_removed", type=LINK_TYPES.get(type_, type_), other_ticket=frm.id,
          direction="in")
    touch(ticket)
    return {"removed": True}


# --- merge and split -------------------------------------------------------------
def merge(session, rights: Rights, source: Ticket, target: Ticket) -> dict:
    """Merge ``source`` into ``target``: articles (with their Message-IDs,
    attachments and time), links, people, fields, time, external numbers and
    reminders move; history stays where it was written and is shown on the survivor;
    the old number resolves to the survivor."""
    if source.id == target.id:
        raise BadRequest(f"ticket #{source.id} cannot be merged into itself")
    if source.state == lifecycle.MERGED:
        raise Conflict(f"ticket #{source.id} was already merged into #{source.merged_into_id}")
    rights.require(source.queue, "merge", f"merge #{source.id} away")
    rights.require(target.queue, "merge", f"merge into #{target.id}")
    actor = rights.user.username
    moved = session.execute(update(Article).where(Article.ticket_id == source.id)
                            .values(ticket_id=target.id)).rowcount
    # links: repoint both ends; drop the ones that would link the survivor to itself or repeat one
    existing = {(l.from_ticket_id, l.to_ticket_id, l.type)
                for l in session.scalars(select(Link).where(or_(Link.from_ticket_id == target.id,
                                                                Link.to_ticket_id == target.id)))}
    links_moved = 0
    for link in session.scalars(select(Link).where(or_(Link.from_ticket_id == source.id,
                                                       Link.to_ticket_id == source.id))).all():
        frm = target.id if link.from_ticket_id == source.id else link.from_ticket_id
        to = target.id if link.to_ticket_id == source.id else link.to_ticket_id
        if frm == to or (frm, to, link.type) in existing:
            session.delete(link)
            continue
        link.from_ticket_id, link.to_ticket_id = frm, to
        existing.add((frm, to, link.type))
        links_moved += 1
    # people
    have = {(p.role, p.address) for p in session.scalars(select(TicketPerson)
                                                         .where(TicketPerson.ticket_id == target.id))}
    for person in session.scalars(select(TicketPerson).where(TicketPerson.ticket_id == source.id)).all():
        if (person.role, person.address) in have:
            session.delete(person)
        else:
            person.ticket_id = target.id
    if source.requestor and not target.requestor:
        target.requestor = source.requestor
    elif source.requestor and source.requestor.lower() != (target.requestor or "").lower():
        if ("requestor", source.requestor.lower()) not in have:
            session.add(TicketPerson(ticket_id=target.id, role="requestor", address=source.requestor.lower()))
    # fields: multi-value fields are united; a single-value field keeps the survivor's value if it has one
    field_ids = session.scalars(select(FieldValue.field_id).where(FieldValue.ticket_id == source.id).distinct()).all()
    for field in session.scalars(select(CustomField).where(CustomField.id.in_(field_ids))).all():
        target_values = fields.current(session, target.id, field)
        rows = session.scalars(select(FieldValue).where(FieldValue.ticket_id == source.id,
                                                        FieldValue.field_id == field.id)).all()
        for row in rows:
            if row.value in target_values or (field.type not in fields.MULTI and target_values):
                session.delete(row)
            else:
                row.ticket_id = target.id
                target_values.append(row.value)
    # time, external numbers, reminders
    target.time_worked = (target.time_worked or 0) + (source.time_worked or 0)
    target.time_estimated = (target.time_estimated or 0) + (source.time_estimated or 0)
    target_refs = {(r.system, r.ref, r.sender_domain)
                   for r in session.scalars(select(ExternalRef).where(ExternalRef.ticket_id == target.id))}
    for ref in session.scalars(select(ExternalRef).where(ExternalRef.ticket_id == source.id)).all():
        if (ref.system, ref.ref, ref.sender_domain) not in target_refs:
            ref.ticket_id = target.id
    session.execute(update(Reminder).where(Reminder.ticket_id == source.id).values(ticket_id=target.id))
    # the survivor's SLA clocks: the earlier deadline of the two counts
    for clock in ("first_response_due", "next_response_due", "resolution_due"):
        a, b = getattr(target, clock), getattr(source, clock)
        if b is not None and (a is None or _aware(b) < _aware(a)):
            setattr(target, clock, b)
    target.priority = max(target.priority or 0, source.priority or 0)
    old_state = source.state
    source.state, source.merged_into_id, source.closed = lifecycle.MERGED, target.id, True
    source.time_worked = 0
    source.time_estimated = 0
    touch(source)
    touch(target)
    # merged-away tickets' own merged tickets now resolve through the chain to the survivor
    detail = dict(source_ticket=source.id, target_ticket=target.id, articles=moved, links=links_moved,
                  time_worked=target.time_worked, source_state=old_state, source_subject=source.subject)
    audit(session, source.id, actor, "merged_into", **detail)
    audit(session, target.id, actor, "merged", **detail)
    emit(session, contracts.EV_TICKET_MERGED, ticket_id=target.id, merged_ticket_id=source.id, actor=actor,
         articles=moved)
    return {"ticket_id": target.id, "merged_ticket_id": source.id, "articles_moved": moved,
            "links_moved": links_moved, "time_worked": target.time_worked}


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def split(session, rights: Rights, ticket: Ticket, article_ids, copy_fields=(), subject: str | None = None,
          queue_name: str | None = None) -> dict:
    """Move some articles (with their attachments and time) out into a new ticket
    linked to this one; copy the fields named in ``copy_fields``."""
    try:
        wanted = sorted({int(a) for a in article_ids or []})
    except (TypeError, ValueError):
        raise BadRequest("article ids are numbers") from None
    if not wanted:
        raise BadRequest("name the articles to split out")
    rights.require(ticket.queue, "split")
    mine = set(session.scalars(select(Article.id).where(Article.ticket_id == ticket.id)))
    foreign = [a for a in wanted if a not in mine]
    if foreign:
        raise BadRequest(f"articles {', '.join(map(str, foreign))} are not on ticket #{ticket.id}")
    if len(wanted) == len(mine):
        raise BadRequest("splitting every article out would leave an empty ticket; move the ticket instead")
    queue = queue_by_name(session, queue_name) if queue_name else ticket.queue
    rights.require(queue, "create", "the new ticket")
    copy = [fields.get(session, name) for name in copy_fields or []]
    first = session.get(Article, wanted[0])
    actor = rights.user.username
    lc = lifecycle.for_queue(queue)
    new = Ticket(queue_id=queue.id, queue=queue, subject=(subject or first.subject or ticket.subject)[:1000],
                 state=lc.initial, requestor=first.sender if first.direction == "in" else ticket.requestor,
                 priority=ticket.priority)
    session.add(new)
    session.flush()
    minutes = session.scalar(select(func.coalesce(func.sum(Article.time_worked), 0))
                             .where(Article.id.in_(wanted))) or 0
    session.execute(update(Article).where(Article.id.in_(wanted)).values(ticket_id=new.id))
    new.time_worked = minutes
    ticket.time_worked = max(0, (ticket.time_worked or 0) - minutes)
    for field in copy:
        rows = [{"value": r.value, "num": r.num, "ip_lo": r.ip_lo, "ip_hi": r.ip_hi}
                for r in session.scalars(select(FieldValue).where(FieldValue.ticket_id == ticket.id,
                                                                  FieldValue.field_id == field.id))]
        fields.store(session, new.id, field, rows)
    session.add(Link(from_ticket_id=new.id, to_ticket_id=ticket.id, type="refers-to"))
    start_sla(session, new)
    touch(ticket)
    audit(session, new.id, actor, "split_from", source_ticket=ticket.id, articles=wanted,
          fields=[f.name for f in copy])
    audit(session, ticket.id, actor, "split_into", new_ticket=new.id, articles=wanted,
          fields=[f.name for f in copy])
    emit(session, contracts.EV_TICKET_CREATED, ticket_id=new.id, queue=queue.name, subject=new.subject)
    emit(session, contracts.EV_TICKET_SPLIT, ticket_id=ticket.id, new_ticket_id=new.id, articles=wanted,
         actor=actor)
    return {"ticket_id": new.id, "source_ticket_id": ticket.id, "articles": wanted}


# --- history -------------------------------------------------------------------
def history(session, ticket: Ticket) -> list[dict]:
    """The ticket's history and that of every ticket merged into it, in order."""
    ids = {ticket.id}
    frontier = [ticket.id]
    while frontier:
        merged = session.scalars(select(Ticket.id).where(Ticket.merged_into_id.in_(frontier))).all()
        frontier = [m for m in merged if m not in ids]
        ids.update(frontier)
    rows = session.scalars(select(AuditEntry).where(AuditEntry.ticket_id.in_(ids)).order_by(AuditEntry.id))
    return [{"id": r.id, "ticket_id": r.ticket_id, "actor": r.actor, "action": r.action, "detail": r.detail,
             "created": iso(r.created)} for r in rows]


# --- previous incidents ----------------------------------------------------------
V4_BLOCK, V6_BLOCK = 24, 48


def ticket_ip_ranges(session, ticket_id: int, limit: int = 256) -> list[tuple[bytes, bytes]]:
    """The ticket's addresses (from its articles) and its IP-range field values."""
    ips = session.scalars(select(ArticleIP.ip).join(Article, Article.id == ArticleIP.article_id)
                          .where(Article.ticket_id == ticket_id).distinct().limit(limit)).all()
    ranges = [(ip, ip) for ip in ips]
    ranges += session.execute(select(FieldValue.ip_lo, FieldValue.ip_hi)
                              .where(FieldValue.ticket_id == ticket_id, FieldValue.ip_lo.is_not(None))
                              .limit(limit)).all()
    return [tuple(r) for r in ranges]


def _block(lo: bytes, hi: bytes) -> tuple[bytes, bytes]:
    """Widen an address to its /24 (IPv4) or /48 (IPv6) netblock; ranges stay as they are."""
    import ipaddress
    if lo != hi:
        return lo, hi
    addr = contracts.key_to_ip(lo)
    net = ipaddress.ip_network(f"{addr}/{V4_BLOCK if addr.version == 4 else V6_BLOCK}", strict=False)
    return contracts.ip_key(net.network_address), contracts.ip_key(net.broadcast_address)


def previous_incidents(session, rights: Rights, ticket: Ticket, limit: int = 50) -> list[dict]:
    """Other tickets sharing an IP address with this one, or in the same netblock
    (the address's /24 or /48, or an IP-range field), newest first."""
    mine = ticket_ip_ranges(session, ticket.id)
    if not mine:
        return []
    exact = {lo for lo, hi in mine if lo == hi}
    blocks = sorted({_block(lo, hi) for lo, hi in mine})
    found: dict[int, dict] = {}

    def note(tid, key, kind):
        entry = found.setdefault(tid, {"same_ip": set(), "netblock": set()})
        entry[kind].add(contracts.format_ip_range(*key) if isinstance(key, tuple) else str(contracts.key_to_ip(key)))

    conds = [ArticleIP.ip.between(lo, hi) for lo, hi in blocks]
    for i in range(0, len(conds), 64):
        rows = session.execute(select(Article.ticket_id, ArticleIP.ip).join(Article, Article.id == ArticleIP.article_id)
                               .where(or_(*conds[i:i + 64]), Article.ticket_id != ticket.id)
                               .order_by(Article.ticket_id.desc()).limit(2000))
        for tid, ip in rows:
            note(tid, ip, "same_ip" if ip in exact else "netblock")
    fconds = [(FieldValue.ip_lo <= hi) & (FieldValue.ip_hi >= lo) for lo, hi in blocks]
    for i in range(0, len(fconds), 64):
        rows = session.execute(select(FieldValue.ticket_id, FieldValue.ip_lo, FieldValue.ip_hi)
                               .where(FieldValue.ip_lo.is_not(None), or_(*fconds[i:i + 64]),
                                      FieldValue.ticket_id != ticket.id).limit(2000))
        for tid, lo, hi in rows:
            note(tid, (lo, hi), "same_ip" if lo == hi and lo in exact else "netblock")
    if not found:
        return []
    visible = rights.queues_with(session, "see")
    q = select(Ticket).where(Ticket.id.in_(list(found)), Ticket.state != lifecycle.MERGED)
    if visible is not None:
        q = q.where(Ticket.queue_id.in_(visible))
    out = []
    for t in session.scalars(q.order_by(Ticket.created.desc(), Ticket.id.desc()).limit(limit)):
        entry = found[t.id]
        out.append({**ticket_dict(t), "same_ip": sorted(entry["same_ip"]), "netblock": sorted(entry["netblock"])})
    return out


# --- mail in: what a new article does to its ticket ----------------------------------
def on_bounce(session, ticket: Ticket, article: Article, mail: dict) -> list[str]:
    """A delivery status notification for mail of this ticket: each failed recipient is
    recorded (history, the ticket's ``failed_recipients``) so staff see who never got it."""
    auto = mail.get("auto") or {}
    if not auto.get("bounce"):
        return []
    marked = []
    for failed in auto.get("failed_recipients") or []:
        address = str(failed.get("address") or "").lower()
        if not address:
            continue
        audit(session, ticket.id, SYSTEM, "recipient_failed", address=address, status=failed.get("status"),
              diagnostic=failed.get("diagnostic"), article_id=article.id, bounce_of=auto.get("bounce_of"))
        marked.append(address)
    return marked


def failed_recipients(session, ticket_id: int) -> list[dict]:
    rows = session.scalars(select(AuditEntry).where(AuditEntry.ticket_id == ticket_id,
                                                    AuditEntry.action == "recipient_failed").order_by(AuditEntry.id))
    return [{"address": r.detail.get("address"), "status": r.detail.get("status"),
             "diagnostic": r.detail.get("diagnostic"), "article_id": r.detail.get("article_id"),
             "when": iso(r.created)} for r in rows]


def on_incoming(session, ticket: Ticket, article: Article, mail: dict) -> None:
    """A correspondent wrote: a stalled or closed ticket comes back; the next-response
    clock starts; a reminder waiting for this sender is done."""
    if article.action != "correspond" or (mail.get("auto") or {}).get("automatic"):
        return
    lc = lifecycle.for_queue(ticket.queue)
    if lc.is_closed(ticket.state) or lc.category.get(ticket.state) == "inactive":
        _set_state(session, ticket, lc.reopen_state, None, SYSTEM, lc)
    target = session.get(Sla, ticket.queue.sla_id) if ticket.queue.sla_id else None
    if target is not None and target.next_response_minutes and ticket.first_responded is not None:
        ticket.next_response_due = sla.add_business_minutes(utcnow(), target.next_response_minutes, target.calendar)
        ticket.escalated = {k: v for k, v in (ticket.escalated or {}).items() if k != "next_response"}
    sender = (mail.get("sender_address") or "").lower()
    if sender:
        for reminder in session.scalars(select(Reminder).where(Reminder.ticket_id == ticket.id,
                                                               Reminder.status.in_(("open", "fired")),
                                                               Reminder.awaiting == sender)):
            reminder.status = "done"
            audit(session, ticket.id, SYSTEM, "reminder_answered", reminder_id=reminder.id, address=sender)
    ticket.version = (ticket.version or 1) + 1


def on_response(session, ticket: Ticket) -> None:
    """Staff answered the correspondent (a reply went out): the response clocks stop."""
    now = utcnow()
    if ticket.first_responded is None:
        ticket.first_responded = now
    ticket.first_response_due = None
    ticket.next_response_due = None


# --- commands by mail -----------------------------------------------------------------------
import re as _re

_COMMAND = _re.compile(r"^(status|owner|queue|outcome|priority|due|cf\.[^:]{1,100}):[ \t]*(.*?)[ \t]*$", _re.I)


def parse_commands(text: str) -> list[tuple[str, str]]:
    """The commands at the top of a mail's text (RT's CommandByMail): ``Name: value`` lines
    up to the first line that is not one. Quoted or later lines never count."""
    found = []
    lines = (text or "").lstrip("\r\n").splitlines()
    if lines and lines[0].strip() == "-----BEGIN PGP SIGNED MESSAGE-----":   # inline PGP shown as it came
        lines = lines[1:]
        while lines and lines[0].lower().startswith("hash:"):
            lines = lines[1:]
        while lines and not lines[0].strip():
            lines = lines[1:]
    for line in lines:
        m = _COMMAND.match(line)
        if not m:
            break
        found.append((m.group(1).lower() if not m.group(1).lower().startswith("cf.") else "cf." + m.group(1)[3:],
                      m.group(2)))
    return found


def apply_mail_commands(session, ticket: Ticket, article: Article, mail: dict) -> dict | None:
    """Apply the commands of a staff member's mail — only when crypto verified the mail's
    signature as covering everything shown and made by the sender, the sender is an
    active staff user (their e-mail), and they hold the rights. Otherwise nothing is
    applied and the article says why (the lines stay plain text)."""
    commands = parse_commands(article.body_text)
    if not commands:
        return None
    security = mail.get("security") or {}
    sender = (mail.get("sender_address") or "").lower()
    user = session.scalars(select(User).where(func.lower(User.email) == sender, User.disabled.is_(False))
                           ).first() if sender else None
    outcome: dict = {"commands": [f"{k}: {v}" for k, v in commands], "applied": False}
    if security.get("verdict") != "verified":
        outcome["reason"] = f"the signature is not verified ({security.get('verdict') or 'not signed'})"
    elif user is None or user.role not in ("agent", "admin"):
        outcome["reason"] = f"{sender or 'the sender'} is not a staff member's address"
    else:
        changes_: dict = {"fields": {}}
        for name, value in commands:
            if name.startswith("cf."):
                changes_["fields"][name[3:]] = value
            elif name == "status":
                changes_["state"] = value.lower()
            elif name == "owner":
                changes_["owner"] = "" if value.lower() in ("nobody", "") else value
            else:
                changes_[name] = value
        if not changes_["fields"]:
            del changes_["fields"]
        try:
            with session.begin_nested():
                done = update_ticket(session, Rights(session, user), ticket, changes_)
            outcome.update(applied=True, by=user.username, changed=done)
        except (BadRequest, Forbidden, Conflict, NotFound) as exc:
            outcome["reason"] = f"{type(exc).__name__}: {exc}"
    article.auto = {**(article.auto or {}), "commands": outcome}
    audit(session, ticket.id, outcome.get("by") or SYSTEM,
          "mail_commands_applied" if outcome["applied"] else "mail_commands_ignored",
          article_id=article.id, **{k: v for k, v in outcome.items() if k not in ("applied", "by")})
    return outcome


# --- mail out: what notify sent -----------------------------------------------------------
OUTGOING_ACTIONS = {"reply": "reply", "forward": "forward", "notification": "comment", "bulk": "reply"}


def add_outgoing(session, rights: Rights | None, ticket: Ticket, mail: dict) -> tuple[Article, bool]:
    """Record a mail Osprey sent for this ticket (notify calls this after the SMTP relay
    took it): an article with direction "out", the raw bytes' sha256 (kept by ingest),
    our Message-ID (answers thread back by it) and the recipients (who thereby become
    known correspondents). ``mail["send_id"]`` is the idempotency key: recording the same
    send twice returns the first article. A reply stops the SLA response clocks; a forward
    with ``remind_after`` minutes sets a reminder that the recipient's answer ends."""
    import hashlib
    action = mail.get("action") or "reply"
    if action not in OUTGOING_ACTIONS:
        raise BadRequest(f"an outgoing mail is one of {', '.join(OUTGOING_ACTIONS)}")
    if not mail.get("send_id"):
        raise BadRequest("an outgoing mail needs its send_id (the idempotency key)")
    key = hashlib.sha256(f"out\0{mail['send_id']}".encode()).hexdigest()
    existing = session.scalars(select(Article).where(Article.intake_id == key)).first()
    if existing is not None:
        return existing, False
    if rights is not None:
        rights.require(ticket.queue, OUTGOING_ACTIONS[action] if action != "notification" else "comment")
    author = rights.user.username if rights is not None else (mail.get("author") or SYSTEM)
    article = Article(ticket_id=ticket.id, intake_id=key, direction="out", action=action,
                      raw_sha256=mail.get("raw_sha256"), raw_size=mail.get("raw_size"),
                      message_id=mail.get("message_id"), sender=mail.get("sender") or "",
                      recipients={"to": list(mail.get("to") or []), "cc": list(mail.get("cc") or []),
                                  "bcc": list(mail.get("bcc") or [])},
                      subject=mail.get("subject") or "", date=mail.get("date"), body_text=mail.get("body_text") or "",
                      author=author, auto={"security": mail["security"]} if mail.get("security") else {},
                      time_worked=_minutes(mail.get("time_worked") or 0, "time worked"))
    session.add(article)
    session.flush()
    from . import search
    search.index_article(session, article)
    if article.time_worked:
        ticket.time_worked = (ticket.time_worked or 0) + article.time_worked
    if action == "reply":
        on_response(session, ticket)
    touch(ticket)
    audit(session, ticket.id, author, f"{action}_sent", article_id=article.id, to=article.recipients["to"],
          cc=article.recipients["cc"], message_id=article.message_id, raw_sha256=article.raw_sha256)
    if action == "forward" and mail.get("remind_after"):
        from datetime import timedelta
        for address in article.recipients["to"]:
            reminder = Reminder(ticket_id=ticket.id, owner=(ticket.owner.username if ticket.owner else author),
                                text=f"no answer from {address} to the forward", awaiting=_norm_address(address),
                                due=utcnow() + timedelta(minutes=_minutes(mail["remind_after"], "remind after")),
                                notify_third_party=bool(mail.get("remind_third_party")))
            session.add(reminder)
            session.flush()
            audit(session, ticket.id, author, "reminder_added", reminder_id=reminder.id, due=iso(reminder.due),
                  awaiting=reminder.awaiting)
    emit(session, contracts.EV_ARTICLE_ADDED, ticket_id=ticket.id, article_id=article.id,
         raw_sha256=article.raw_sha256, direction="out", action=action)
    return article, True


# --- enrichment: what the enrich service found ------------------------------------------
ENRICH = "enrich"
# the fields enrichment fills (created on first use; an administrator may rename nothing here)
ENRICH_FIELDS = {"IP addresses": "iprange", "Network": "text", "ASN": "text", "Abuse contact": "text",
                 "Country": "text", "Constituency": "text", "Constituency contact": "text"}
IP_TYPES = ("ipv4", "ipv6", "cidr", "range")


def _enrich_field(session, name: str, type_: str):
    from .models import CustomField
    field = session.scalars(select(CustomField).where(CustomField.name == name)).first()
    if field is None:
        field = fields.create(session, name, type_, description="filled by the enrich service")
    return field


def _merge_text(old: list[str], new: list[str]) -> str:
    items = [x.strip() for x in ", ".join(old).split(",") if x.strip()]
    for value in new:
        if value and value not in items:
            items.append(value)
    return ", ".join(items)[:fields.MAX_TEXT]


def add_enrichment(session, article: Article, result: dict) -> dict:
    """Record enrich's findings for one article (enrich_text's result): the indicators,
    and the ticket fields they fill — public IP addresses and networks into "IP
    addresses", and network name, ASN, abuse contact, country and constituency — with
    a history entry by "enrich". Applying the same article twice changes nothing."""
    from .models import Indicator
    if session.scalars(select(Indicator.id).where(Indicator.article_id == article.id).limit(1)).first() is not None:
        return {"duplicate": True}
    ticket = session.get(Ticket, article.ticket_id)
    seen, found = set(), []
    for ind in (result or {}).get("indicators") or []:
        key = (str(ind.get("type", ""))[:20], str(ind.get("value", ""))[:2000])
        if not all(key) or key in seen:
            continue
        seen.add(key)
        session.add(Indicator(ticket_id=ticket.id, article_id=article.id, type=key[0], value=key[1],
                              ip_class=ind.get("class")))
        found.append({"type": key[0], "value": key[1], "class": ind.get("class")})
    public_ips = [i["value"] for i in found if i["type"] in IP_TYPES and i.get("class") == "global"]
    networks = [n for n in ((result or {}).get("networks") or {}).values() if n.get("status") == "ok"]
    values = {
        "IP addresses": public_ips,
        "Network": [" ".join(x for x in (n.get("name"), (n.get("cidr") or [""])[0]) if x) for n in networks],
        "ASN": [f"AS{n['asn']}" if str(n.get("asn", "")).isdigit() else str(n.get("asn") or "") for n in networks],
        "Abuse contact": [n.get("abuse_contact") or "" for n in networks],
        "Country": [n.get("country") or "" for n in networks],
        "Constituency": [((result or {}).get("constituency") or {}).get("name") or ""],
        "Constituency contact": [((result or {}).get("constituency") or {}).get("contact") or ""],
    }
    changed = {}
    for name, new in values.items():
        new = [v for v in new if v]
        if not new:
            continue
        field = _enrich_field(session, name, ENRICH_FIELDS[name])
        old = fields.current(session, ticket.id, field)
        if field.type == "iprange":
            rows = []
            for value in new:
                try:
                    rows += fields.normalise(field, value)
                except BadRequest:
                    continue
            fields.store(session, ticket.id, field, rows, add=True)
        else:
            fields.store(session, ticket.id, field, fields.normalise(field, _merge_text(old, new)))
        now = fields.current(session, ticket.id, field)
        if now != old:
            changed[name] = {"old": old, "new": now}
    for name, change in changed.items():
        audit(session, ticket.id, ENRICH, "changed", field=f"fields.{name}", old=change["old"], new=change["new"],
              article_id=article.id)
    audit(session, ticket.id, ENRICH, "enriched", article_id=article.id, indicators=len(found),
          looked_up=len(networks), skipped=len((result or {}).get("skipped") or []))
    routed = _route(session, ticket, article, (result or {}).get("constituency") or {})
    if routed:
        changed["queue"] = routed
    if changed:
        ticket.version = (ticket.version or 1) + 1
    emit(session, contracts.EV_INDICATOR_FOUND, ticket_id=ticket.id, article_id=article.id,
         indicators=found[:200], constituency=((result or {}).get("constituency") or {}).get("name"))
    return {"duplicate": False, "indicators": len(found), "changed": changed}


def _route(session, ticket: Ticket, article: Article, constituency: dict) -> dict | None:
    """A new ticket (its first article, still in its initial state) whose addresses fall
    in a constituency with a queue moves to that queue — the most specific netblock won
    in enrich. Later articles never move a ticket a person may already be working."""
    target_name = constituency.get("queue")
    if not target_name or target_name == ticket.queue.name:
        return None
    first = session.scalar(select(func.min(Article.id)).where(Article.ticket_id == ticket.id))
    lc = lifecycle.for_queue(ticket.queue)
    if first != article.id or ticket.state != lc.initial or ticket.owner_id is not None:
        return None
    target = session.scalars(select(Queue).where(Queue.name == target_name)).first()
    if target is None:
        audit(session, ticket.id, ENRICH, "routing_failed", constituency=constituency.get("name"),
              queue=target_name, reason="no such queue")
        return None
    lc_new = lifecycle.for_queue(target)
    old = ticket.queue.name
    ticket.queue_id, ticket.queue = target.id, target
    if ticket.state not in lc_new.category:
        ticket.state = lc_new.initial
    ticket.closed = lc_new.is_closed(ticket.state)
    audit(session, ticket.id, ENRICH, "routed", field="queue", old=old, new=target.name,
          constituency=constituency.get("name"), matched=constituency.get("matched"))
    emit(session, contracts.EV_TICKET_UPDATED, ticket_id=ticket.id, actor=ENRICH,
         changes={"queue": {"old": old, "new": target.name}})
    return {"old": old, "new": target.name}


def indicators(session, ticket_id: int) -> list[dict]:
    from .models import Indicator
    rows = session.execute(select(Indicator.type, Indicator.value, Indicator.ip_class, func.min(Indicator.article_id))
                           .where(Indicator.ticket_id == ticket_id)
                           .group_by(Indicator.type, Indicator.value, Indicator.ip_class)
                           .order_by(Indicator.type, Indicator.value))
    return [{"type": t, "value": v, "class": c, "article_id": a} for t, v, c, a in rows]


# --- reminders and escalation (the tickets service's timer) ---------------------------
def add_reminder(session, rights: Rights, ticket: Ticket, due, text: str = "", awaiting: str | None = None,
                 notify_third_party: bool = False, owner: str | None = None) -> Reminder:
    rights.require(ticket.queue, "comment", "reminders")
    when = _dt(due)
    if when is None:
        raise BadRequest("a reminder needs a due time")
    reminder = Reminder(ticket_id=ticket.id, owner=owner or rights.user.username, text=str(text or "")[:2000],
                        due=when, awaiting=_norm_address(awaiting) if awaiting else None,
                        notify_third_party=bool(notify_third_party))
    session.add(reminder)
    session.flush()
    audit(session, ticket.id, rights.user.username, "reminder_added", reminder_id=reminder.id, due=iso(when),
          awaiting=reminder.awaiting)
    return reminder


def reminder_dict(r: Reminder) -> dict:
    return {"id": r.id, "ticket_id": r.ticket_id, "owner": r.owner, "text": r.text, "due": iso(r.due),
            "awaiting": r.awaiting, "notify_third_party": r.notify_third_party, "status": r.status,
            "created": iso(r.created)}


def fire_reminders(session, now: datetime | None = None, limit: int = 200) -> list[int]:
    now = now or utcnow()
    fired = []
    for r in session.scalars(select(Reminder).where(Reminder.status == "open", Reminder.due <= now)
                             .order_by(Reminder.due).limit(limit)).all():
        r.status = "fired"
        audit(session, r.ticket_id, SYSTEM, "reminder_due", reminder_id=r.id, owner=r.owner, awaiting=r.awaiting)
        emit(session, contracts.EV_REMINDER_DUE, ticket_id=r.ticket_id, reminder_id=r.id, owner=r.owner,
             text=r.text, awaiting=r.awaiting, notify_third_party=r.notify_third_party)
        fired.append(r.id)
    return fired


def escalate(session, now: datetime | None = None, limit: int = 200) -> list[dict]:
    """Tickets past an SLA target: raise priority, record it, tell the bus (once per target)."""
    now = now or utcnow()
    out = []
    clocks = (("first_response", Ticket.first_response_due), ("next_response", Ticket.next_response_due),
              ("resolution", Ticket.resolution_due))
    for target_name, column in clocks:
        for ticket in session.scalars(select(Ticket).where(column.is_not(None), column <= now)
                                      .order_by(column).limit(limit)).all():
            if (ticket.escalated or {}).get(target_name):
                continue
            target = session.get(Sla, ticket.queue.sla_id) if ticket.queue.sla_id else None
            old = ticket.priority
            if target is not None and ticket.priority < target.escalate_priority:
                ticket.priority = target.escalate_priority
            ticket.escalated = {**(ticket.escalated or {}), target_name: iso(now)}
            ticket.version = (ticket.version or 1) + 1
            due = getattr(ticket, f"{target_name}_due")
            audit(session, ticket.id, SYSTEM, "sla_breached", target=target_name, due=iso(due),
                  old_priority=old, new_priority=ticket.priority)
            emit(session, contracts.EV_SLA_BREACHED, ticket_id=ticket.id, target=target_name, due=iso(due),
                 owner=ticket.owner.username if ticket.owner else None, priority=ticket.priority)
            out.append({"ticket_id": ticket.id, "target": target_name})
    return out

