"""services/tickets/changes.py and rights/lifecycle/fields/sla: every change a person
makes to a ticket, on a real tickets database (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from services.tickets import accounts, changes, fields, lifecycle, records, rights, sla
from services.tickets.exceptions import BadRequest, Conflict, Forbidden, NotFound
from services.tickets.models import (MIGRATIONS, Article, Attachment, ExternalRef, Link, OutboxEvent, Queue, Sla,
                                     Ticket)
from services.tickets.rights import Rights
from tests.tickets.unit.test_records import mail
from tests.unit_fixtures import tickets_db


@pytest.fixture
def session(databases):
    engine, make_session = tickets_db(databases.url("tickets", MIGRATIONS), queues=("general", "abuse"))
    with make_session() as session:
        for name, role in (("root", "admin"), ("alice", "agent"), ("bob", "agent"), ("carol", "customer")):
            accounts.create_user(session, name, None, role=role)
        session.commit()
        yield session
    engine.dispose()


def who(session, name) -> Rights:
    return Rights(session, accounts.get_user(session, name))


def ticket_from_mail(session, n, **kw) -> Ticket:
    result = records.add_mail(session, mail(n, **kw))
    session.commit()
    return session.get(Ticket, result["ticket_id"])


def events(session, event_type) -> list[dict]:
    return [e.payload for e in session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == event_type)
                                               .order_by(OutboxEvent.seq))]


def actions(session, ticket) -> list[str]:
    return [h["action"] for h in changes.history(session, ticket)]


# --- rights ----------------------------------------------------------------------
def test_rights_are_denied_by_default_and_granted_per_role_and_group(session):
    queue = session.scalars(select(Queue).where(Queue.name == "abuse")).one()
    rights.revoke(session, queue, "role:agent", list(rights.RIGHTS))
    session.commit()
    t = ticket_from_mail(session, 1, queue="abuse")
    with pytest.raises(Forbidden, match="lacks the right 'modify' in queue 'abuse'"):
        changes.update_ticket(session, who(session, "alice"), t, {"priority": 80})
    assert who(session, "carol").queues_with(session, "see") == []       # customers get nothing by default
    group = rights.create_group(session, "tier2")
    rights.set_member(session, group, accounts.get_user(session, "alice"), True)
    rights.grant(session, queue, "group:tier2", ["see", "modify"])
    session.commit()
    alice, bob = who(session, "alice"), who(session, "bob")
    assert alice.on(queue.id) == ["see", "modify"] and bob.on(queue.id) == []
    assert changes.update_ticket(session, alice, t, {"priority": 80}) == {"priority": {"old": 50, "new": 80}}
    assert who(session, "root").has(queue.id, "delete")                 # administrators: everything
    with pytest.raises(BadRequest, match="unknown right"):
        rights.grant(session, queue, "role:agent", ["fly"])
    with pytest.raises(NotFound):
        rights.grant(session, queue, "group:nobody", ["see"])


# --- lifecycle and outcome ----------------------------------------------------------
def test_closing_needs_a_known_outcome_and_reopening_clears_it(session):
    t = ticket_from_mail(session, 1)
    alice = who(session, "alice")
    with pytest.raises(BadRequest, match="closing a ticket needs an outcome"):
        changes.update_ticket(session, alice, t, {"state": "resolved"})
    with pytest.raises(BadRequest, match="unknown outcome 'meh'"):
        changes.update_ticket(session, alice, t, {"state": "resolved", "outcome": "meh"})
    with pytest.raises(BadRequest, match="unknown state 'flying'"):
        changes.update_ticket(session, alice, t, {"state": "flying"})
    assert t.state == "new" and t.version == 1                         # refused changes left nothing
    done = changes.update_ticket(session, alice, t, {"state": "resolved", "outcome": "no-response"})
    session.commit()
    assert done["state"] == {"old": "new", "new": "resolved"} and t.outcome == "no-response"
    assert [e["outcome"] for e in events(session, "ticket_closed")] == ["no-response"]
    with pytest.raises(BadRequest, match="cannot go from 'resolved' to 'stalled'"):
        changes.update_ticket(session, alice, t, {"state": "stalled"})
    changes.update_ticket(session, alice, t, {"state": "open"})
    assert (t.state, t.outcome) == ("open", None)


def test_a_queue_lifecycle_of_its_own_with_a_right_per_transition(session):
    lc = lifecycle.save(session, "incident", {
        "states": [{"name": "reported", "category": "initial"}, {"name": "handling", "category": "active"},
                   {"name": "closed", "category": "closed"}],
        "transitions": {"reported": ["handling", "closed"], "handling": ["closed"], "closed": ["handling"]},
        "rights": {"closed->handling": "admin"}})
    queue = session.scalars(select(Queue).where(Queue.name == "abuse")).one()
    queue.lifecycle_id = lc.id
    session.commit()
    t = ticket_from_mail(session, 1, queue="abuse")
    assert t.state == "reported"
    alice = who(session, "alice")
    changes.update_ticket(session, alice, t, {"state": "closed", "outcome": "solved"})
    with pytest.raises(Forbidden, match="'admin'"):
        changes.update_ticket(session, alice, t, {"state": "handling"})
    changes.update_ticket(session, who(session, "root"), t, {"state": "handling"})
    assert t.state == "handling"
    with pytest.raises(BadRequest, match="exactly one initial state"):
        lifecycle.validate({"states": [{"name": "a", "category": "active"}, {"name": "b", "category": "closed"}]})


def test_a_correspondent_writing_again_reopens_a_resolved_ticket(session):
    t = ticket_from_mail(session, 1)
    changes.update_ticket(session, who(session, "alice"), t, {"state": "resolved", "outcome": "solved"})
    session.commit()
    records.add_mail(session, mail(2, subject="Re: [Osprey #1] Incident", ticket_hint=t.id))
    session.commit()
    assert (t.state, t.outcome) == ("open", None)
    assert changes.history(session, t)[-2]["detail"] == {"field": "state", "old": "resolved", "new": "open"}


# --- optimistic locking -----------------------------------------------------------
def test_a_change_made_against_an_old_version_is_refused(session):
    t = ticket_from_mail(session, 1)
    seen = t.version
    changes.check_version(t, seen)
    changes.update_ticket(session, who(session, "bob"), t, {"priority": 70})
    with pytest.raises(Conflict, match=f"changed since you loaded it \\(your version {seen}, now {seen + 1}\\)"):
        changes.check_version(t, seen)


# --- fields ----------------------------------------------------------------------
def test_ip_range_field_takes_addresses_cidr_short_forms_and_ranges(session):
    fields.create(session, "Affected", "iprange")
    t = ticket_from_mail(session, 1)
    changes.update_ticket(session, who(session, "alice"), t, {"fields": {
        "Affected": "192.0.2.7, 10/8 198.51.100.0-198.51.100.255;2001:db8::/32 192.0.2.1-192.0.2.9"}})
    assert fields.values(session, t.id) == {"Affected": ["192.0.2.7", "10.0.0.0/8", "198.51.100.0/24",
                                                         "2001:db8::/32", "192.0.2.1-192.0.2.9"]}


@pytest.mark.parametrize("type_, options, value, message", [
    ("iprange", None, "192.0.2.300", "is not an IP address"),
    ("iprange", None, "192.0.2.9-192.0.2.1", "is not an IP address"),
    ("number", None, "ten", "is not a number"),
    ("date", None, "25.11.2026", "is not a date"),
    ("select", ["spam", "scan"], "ddos", "is not one of spam, scan"),
    ("text", None, ["a", "b"], "holds one value"),
])
def test_invalid_field_values_are_refused_and_nothing_changes(session, type_, options, value, message):
    fields.create(session, "F", type_, options)
    fields.create(session, "Note", "text")
    t = ticket_from_mail(session, 1)
    with pytest.raises(BadRequest, match=message):
        changes.update_ticket(session, who(session, "alice"), t, {"priority": 99, "fields": {"Note": "x", "F": value}})
    session.rollback()
    assert t.priority == 50 and fields.values(session, t.id) == {}


def test_field_rights_read_only_after_set_and_admin_only(session):
    fields.create(session, "Classification", "select", ["spam", "scan"], read_only_after_set=True)
    fields.create(session, "Severity", "number", admin_only=True)
    t = ticket_from_mail(session, 1)
    alice = who(session, "alice")
    changes.update_ticket(session, alice, t, {"fields": {"Classification": "spam"}})
    with pytest.raises(Forbidden, match="read-only once set"):
        changes.update_ticket(session, alice, t, {"fields": {"Classification": "scan"}})
    with pytest.raises(Forbidden, match="only administrators"):
        changes.update_ticket(session, alice, t, {"fields": {"Severity": 3}})
    changes.update_ticket(session, who(session, "root"), t, {"fields": {"Classification": "scan", "Severity": 3}})
    assert fields.values(session, t.id) == {"Classification": "scan", "Severity": "3"}


# --- people and ownership -----------------------------------------------------------
def test_take_steal_and_give(session):
    t = ticket_from_mail(session, 1)
    alice, bob = who(session, "alice"), who(session, "bob")
    assert changes.take(session, alice, t) == {"owner": {"old": None, "new": "alice"}}
    with pytest.raises(Conflict, match="owned by alice; steal it"):
        changes.take(session, bob, t)
    with pytest.raises(Forbidden, match="'steal'"):                    # agents may not steal by default
        changes.take(session, bob, t, steal=True)
    queue = t.queue
    rights.grant(session, queue, "role:agent", ["steal"])
    session.commit()
    changes.take(session, who(session, "bob"), t, steal=True)
    assert t.owner.username == "bob"
    with pytest.raises(Forbidden, match="carol may not own tickets"):
        changes.update_ticket(session, who(session, "bob"), t, {"owner": "carol"})
    changes.update_ticket(session, who(session, "bob"), t, {"owner": "alice"})
    assert t.owner.username == "alice"


def test_requestors_cc_and_admincc(session):
    t = ticket_from_mail(session, 1)
    alice = who(session, "alice")
    assert changes.set_people(session, alice, t, "cc", add=["Noc <NOC@example.net>", "noc@example.net"]) == {
        "added": ["Noc <NOC@example.net>"], "removed": []}
    changes.set_people(session, alice, t, "admincc", add=["bob"])
    changes.set_people(session, alice, t, "cc", remove=["noc@example.net"])
    assert changes.people(session, t.id) == {"requestor": [], "cc": [], "admincc": ["bob"]}
    with pytest.raises(BadRequest, match="a role is one of"):
        changes.set_people(session, alice, t, "boss", add=["x@example.net"])


# --- links -----------------------------------------------------------------------
def test_links_show_on_both_tickets(session):
    a, b = ticket_from_mail(session, 1), ticket_from_mail(session, 2)
    alice = who(session, "alice")
    changes.add_link(session, alice, a, "parent-of", b.id)
    changes.add_link(session, alice, a, "depends-on", b.id)
    assert [(x["label"], x["ticket_id"]) for x in records.links(session, a.id)] == [
        ("parent-of", b.id), ("depends-on", b.id)]
    assert [(x["label"], x["ticket_id"]) for x in records.links(session, b.id)] == [
        ("child-of", a.id), ("depended-on-by", a.id)]
    with pytest.raises(BadRequest, match="cannot link to itself"):
        changes.add_link(session, alice, a, "refers-to", a.id)
    changes.remove_link(session, alice, b, "child-of", a.id)
    assert [x["label"] for x in records.links(session, a.id)] == ["depends-on"]


# --- merge -------------------------------------------------------------------------
def test_merge_carries_everything_and_the_old_number_still_resolves(session):
    fields.create(session, "Affected", "iprange")
    fields.create(session, "Classification", "select", ["spam", "scan"])
    src = ticket_from_mail(session, 1)
    dst = ticket_from_mail(session, 2)
    other = ticket_from_mail(session, 3)
    alice = who(session, "alice")
    changes.add_comment(session, alice, src, "worked on it", time_worked=30)
    changes.add_comment(session, alice, dst, "and here", time_worked=15)
    changes.add_link(session, alice, src, "refers-to", other.id)          # Zammad: links lost on merge
    changes.add_link(session, alice, other, "depends-on", src.id)
    changes.add_link(session, alice, src, "refers-to", dst.id)            # becomes a self link: dropped
    changes.set_people(session, alice, src, "cc", add=["noc@example.net"])
    changes.update_ticket(session, alice, src, {"fields": {"Affected": "192.0.2.0/24", "Classification": "scan"}})
    changes.update_ticket(session, alice, dst, {"fields": {"Affected": "198.51.100.7", "Classification": "spam"}})
    session.add(ExternalRef(ticket_id=src.id, system="RT", ref="4711", sender_domain="example.net"))
    session.commit()
    src_articles = session.scalars(select(Article.id).where(Article.ticket_id == src.id)).all()

    result = changes.merge(session, alice, src, dst)
    session.commit()
    assert result == {"ticket_id": dst.id, "merged_ticket_id": src.id, "articles_moved": 2, "links_moved": 2,
                      "time_worked": 45}
    assert dst.time_worked == 45                                           # Zammad: time not summed
    assert set(src_articles) <= set(session.scalars(select(Article.id).where(Article.ticket_id == dst.id)))
    assert {(x["label"], x["ticket_id"]) for x in records.links(session, dst.id)} == {
        ("refers-to", other.id), ("depended-on-by", other.id)}
    assert changes.people(session, dst.id)["cc"] == ["noc@example.net"]
    assert fields.values(session, dst.id) == {"Affected": ["192.0.2.0/24", "198.51.100.7"],   # united
                                              "Classification": "spam"}                      # survivor's kept
    assert records.external_refs(session, dst.id) == [{"system": "RT", "ref": "4711", "sender_domain": "example.net"}]
    history = changes.history(session, dst)                               # Zammad: no history entry
    assert "merged" in [h["action"] for h in history]
    assert "comment_added" in [h["action"] for h in history if h["ticket_id"] == src.id]   # src's history shown
    assert changes.get_ticket(session, src.id).id == dst.id and src.state == "merged"
    # mail tagged with the old number, or answering an old Message-ID, threads to the survivor
    assert records.add_mail(session, mail(9, subject=f"Re: [Osprey #{src.id}] x", ticket_hint=src.id))["ticket_id"] == dst.id
    assert records.add_mail(session, mail(10, references=["<m1@example.net>"],
                                          referenced_ids=["<m1@example.net>"]))["ticket_id"] == dst.id
    assert [e["merged_ticket_id"] for e in events(session, "ticket_merged")] == [src.id]


def test_merge_refusals(session):
    a, b = ticket_from_mail(session, 1), ticket_from_mail(session, 2)
    alice = who(session, "alice")
    with pytest.raises(BadRequest, match="cannot be merged into itself"):
        changes.merge(session, alice, a, a)
    changes.merge(session, alice, a, b)
    with pytest.raises(Conflict, match="already merged"):
        changes.merge(session, alice, a, b)
    with pytest.raises(Conflict, match="was merged into"):
        changes.update_ticket(session, alice, a, {"priority": 1})


# --- split -------------------------------------------------------------------------
def test_split_moves_articles_with_attachments_and_links_both(session):
    fields.create(session, "Classification", "select", ["spam", "scan"])
    t = ticket_from_mail(session, 1)
    records.add_mail(session, mail(2, ticket_hint=t.id, subject="second"))
    records.add_mail(session, mail(3, ticket_hint=t.id, subject="third"))
    alice = who(session, "alice")
    changes.update_ticket(session, alice, t, {"fields": {"Classification": "scan"}})
    session.commit()
    ids = session.scalars(select(Article.id).where(Article.ticket_id == t.id).order_by(Article.id)).all()
    with pytest.raises(BadRequest, match="every article"):
        changes.split(session, alice, t, ids)
    with pytest.raises(BadRequest, match="not on ticket"):
        changes.split(session, alice, t, [ids[1], 99999])
    result = changes.split(session, alice, t, [ids[1]], copy_fields=["Classification"])
    session.commit()
    new = session.get(Ticket, result["ticket_id"])
    assert new.subject == "second" and new.requestor == "Alice <alice@example.net>"
    assert session.scalars(select(Article.ticket_id).where(Article.id == ids[1])).one() == new.id
    assert session.scalar(select(func.count()).select_from(Attachment).where(Attachment.article_id == ids[1])) == 1
    assert fields.values(session, new.id) == {"Classification": "scan"}
    assert [(x["label"], x["ticket_id"]) for x in records.links(session, new.id)] == [("refers-to", t.id)]
    assert "split_into" in actions(session, t) and "split_from" in actions(session, new)


# --- previous incidents ---------------------------------------------------------------
def test_previous_incidents_by_ip_netblock_and_field_range(session):
    fields.create(session, "Affected", "iprange")
    old_same = ticket_from_mail(session, 1, body_text="scan from 192.0.2.10")
    old_block = ticket_from_mail(session, 2, body_text="scan from 192.0.2.200")
    unrelated = ticket_from_mail(session, 3, body_text="scan from 203.0.113.5")
    ranged = ticket_from_mail(session, 4, body_text="no address here")
    changes.update_ticket(session, who(session, "alice"), ranged, {"fields": {"Affected": "192.0.0.0/16"}})
    session.commit()
    now = ticket_from_mail(session, 5, body_text="again 192.0.2.10")
    found = changes.previous_incidents(session, who(session, "alice"), now)
    assert [(x["id"], x["same_ip"], x["netblock"]) for x in found] == [
        (ranged.id, [], ["192.0.0.0/16"]),
        (old_block.id, [], ["192.0.2.200"]),
        (old_same.id, ["192.0.2.10"], []),
    ]
    assert unrelated.id not in [x["id"] for x in found]


# --- SLA and reminders -----------------------------------------------------------------
BERLIN = {"tz": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00",
          "holidays": ["2026-12-25"]}


@pytest.mark.parametrize("start, minutes, due", [
    ("2026-11-25T10:00:00+01:00", 60, "2026-11-25T11:00:00+01:00"),       # inside business hours
    ("2026-11-25T16:30:00+01:00", 60, "2026-11-26T09:30:00+01:00"),       # runs over the evening
    ("2026-11-27T16:00:00+01:00", 120, "2026-11-30T10:00:00+01:00"),      # Friday → Monday
    ("2026-11-28T12:00:00+01:00", 30, "2026-11-30T09:30:00+01:00"),       # starts on a Saturday
    ("2026-12-24T16:00:00+01:00", 120, "2026-12-28T10:00:00+01:00"),      # over a holiday and a weekend
    ("2026-11-25T07:00:00+01:00", 480, "2026-11-25T17:00:00+01:00"),      # a whole business day
])
def test_business_minutes(start, minutes, due):
    got = sla.add_business_minutes(datetime.fromisoformat(start), minutes, sla.validate_calendar(BERLIN))
    assert got == datetime.fromisoformat(due)


def test_sla_breach_raises_priority_once_and_tells_the_bus(session):
    target = Sla(name="abuse", first_response_minutes=60, resolution_minutes=600, calendar={}, escalate_priority=90)
    session.add(target)
    session.flush()
    session.scalars(select(Queue).where(Queue.name == "general")).one().sla_id = target.id
    session.commit()
    t = ticket_from_mail(session, 1)
    created = t.created if t.created.tzinfo else t.created.replace(tzinfo=timezone.utc)
    assert abs((changes._aware(t.first_response_due) - created) - timedelta(minutes=60)) < timedelta(seconds=2)
    assert changes.escalate(session, now=created + timedelta(minutes=30)) == []
    later = created + timedelta(minutes=61)
    assert changes.escalate(session, now=later) == [{"ticket_id": t.id, "target": "first_response"}]
    assert changes.escalate(session, now=later) == []                                # once per target
    session.commit()
    assert t.priority == 90 and [e["target"] for e in events(session, "sla_breached")] == ["first_response"]
    changes.on_response(session, t)
    assert t.first_response_due is None and t.first_responded is not None


def test_reminder_fires_when_due_and_ends_when_the_third_party_answers(session):
    t = ticket_from_mail(session, 1)
    alice = who(session, "alice")
    changes.set_people(session, alice, t, "cc", add=["noc@example.net"])   # as a forward to the NOC makes it
    due = datetime.now(timezone.utc) + timedelta(hours=1)
    answered = changes.add_reminder(session, alice, t, due.isoformat(), "chase the NOC", awaiting="noc@example.net")
    silent = changes.add_reminder(session, alice, t, due.isoformat(), "chase the ISP", awaiting="isp@example.com")
    session.commit()
    assert changes.fire_reminders(session, now=due - timedelta(minutes=1)) == []
    records.add_mail(session, mail(2, ticket_hint=t.id, sender="noc@example.net", sender_address="noc@example.net"))
    assert changes.fire_reminders(session, now=due + timedelta(minutes=1)) == [silent.id]
    session.commit()
    assert (answered.status, silent.status) == ("done", "fired")
    assert [(e["reminder_id"], e["owner"], e["awaiting"]) for e in events(session, "reminder_due")] == [
        (silent.id, "alice", "isp@example.com")]


def test_a_manual_ticket_with_fields_requestors_and_text(session):
    fields.create(session, "Affected", "iprange")
    t = changes.create_ticket(session, who(session, "alice"), "abuse", "Scanning from our net", "see 192.0.2.44",
                              ["reporter@example.net"], {"Affected": "192.0.2.44"}, priority=70)
    session.commit()
    assert (t.queue.name, t.state, t.priority) == ("abuse", "new", 70)
    assert changes.people(session, t.id)["requestor"] == ["reporter@example.net"]
    assert records.search_tickets(session, "192.0.2.44", 10)[0]["id"] == t.id
    with pytest.raises(Forbidden):
        changes.create_ticket(session, who(session, "carol"), "abuse", "x")


# --- mail out ----------------------------------------------------------------------------
def test_an_outgoing_reply_and_forward_are_recorded_once_and_make_correspondents(session):
    t = ticket_from_mail(session, 1)
    alice = who(session, "alice")
    sent = {"send_id": "n-1", "action": "forward", "to": ["noc@isp.example"], "subject": "Fwd: Incident 1",
            "message_id": "<out-1@osprey.example>", "raw_sha256": "ef" * 32, "raw_size": 900, "body_text": "FYI",
            "remind_after": 60}
    article, created = changes.add_outgoing(session, alice, t, sent)
    again, created_again = changes.add_outgoing(session, alice, t, sent)
    session.commit()
    assert created and not created_again and again.id == article.id
    assert (article.direction, article.action, article.author) == ("out", "forward", "alice")
    assert "noc@isp.example" in records.correspondents(session, t)
    (reminder,) = session.scalars(select(changes.Reminder).where(changes.Reminder.ticket_id == t.id)).all()
    assert reminder.awaiting == "noc@isp.example"
    # the NOC answers our Message-ID: the answer threads to the ticket and ends the reminder
    result = records.add_mail(session, mail(2, sender="noc@isp.example", sender_address="noc@isp.example",
                                            referenced_ids=["<out-1@osprey.example>"]))
    assert result["ticket_id"] == t.id and result["held_from_ticket"] is None
    assert reminder.status == "done"
    with pytest.raises(BadRequest, match="send_id"):
        changes.add_outgoing(session, alice, t, {"action": "reply"})
    with pytest.raises(Forbidden):
        changes.add_outgoing(session, who(session, "carol"), t, {"send_id": "n-2", "action": "reply"})


def test_a_reply_stops_the_response_clock(session):
    target = Sla(name="fast", first_response_minutes=30, calendar={})
    session.add(target)
    session.flush()
    session.scalars(select(Queue).where(Queue.name == "general")).one().sla_id = target.id
    session.commit()
    t = ticket_from_mail(session, 1)
    assert t.first_response_due is not None
    changes.add_outgoing(session, who(session, "alice"), t, {"send_id": "r-1", "action": "reply", "to": ["a@x.example"]})
    assert t.first_response_due is None and t.first_responded is not None


def test_the_breached_filter_lists_open_tickets_past_a_target(session):
    late, fine, closed = ticket_from_mail(session, 1), ticket_from_mail(session, 2), ticket_from_mail(session, 3)
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    late.first_response_due = past
    fine.resolution_due = datetime.now(timezone.utc) + timedelta(hours=5)
    closed.resolution_due = past
    changes.update_ticket(session, who(session, "alice"), closed, {"state": "resolved", "outcome": "solved"})
    closed.resolution_due = past          # a closed ticket's clocks do not count even if set
    session.commit()
    page = records.list_tickets(session, None, "active", 50, 0, sla="breached")
    assert [t["id"] for t in page["tickets"]] == [late.id]


def test_enrichment_lands_once_as_indicators_fields_and_history(session):
    t = ticket_from_mail(session, 1)
    article = session.scalars(select(Article).where(Article.ticket_id == t.id)).one()
    result = {"indicators": [{"type": "ipv4", "value": "62.7.1.1", "class": "global"},
                             {"type": "ipv4", "value": "10.0.0.1", "class": "private"},
                             {"type": "domain", "value": "evil.example"}],
              "networks": {"62.7.1.1": {"status": "ok", "name": "BT-CENTRAL-PLUS", "cidr": ["62.7.0.0/16"],
                                        "asn": 2856, "abuse_contact": "abuse@bt.example", "country": "GB"}},
              "skipped": [], "constituency": {"name": "uk-isps"}}
    out = changes.add_enrichment(session, article, result)
    session.commit()
    assert out["indicators"] == 3 and set(out["changed"]) == {"IP addresses", "Network", "ASN", "Abuse contact",
                                                              "Country", "Constituency"}
    assert fields.values(session, t.id) == {"IP addresses": ["62.7.1.1"], "Network": "BT-CENTRAL-PLUS 62.7.0.0/16",
                                            "ASN": "AS2856", "Abuse contact": "abuse@bt.example", "Country": "GB",
                                            "Constituency": "uk-isps"}
    assert changes.add_enrichment(session, article, result) == {"duplicate": True}
    assert [i["value"] for i in changes.indicators(session, t.id)] == ["evil.example", "10.0.0.1", "62.7.1.1"]
    assert [h["actor"] for h in changes.history(session, t) if h["action"] == "enriched"] == ["enrich"]
    assert [e["indicators"][0]["value"] for e in events(session, "indicator_found")] == ["62.7.1.1"]


def test_a_new_ticket_is_routed_to_its_constituency_queue_once(session):
    t = ticket_from_mail(session, 1)
    article = session.scalars(select(Article).where(Article.ticket_id == t.id)).one()
    result = {"indicators": [{"type": "ipv4", "value": "192.0.2.1", "class": "documentation"}], "networks": {},
              "constituency": {"name": "campus", "contact": "noc@campus.example", "queue": "abuse",
                               "matched": {"by": "netblock", "value": "192.0.2.0/24", "indicator": "192.0.2.1"}}}
    out = changes.add_enrichment(session, article, result)
    session.commit()
    assert out["changed"]["queue"] == {"old": "general", "new": "abuse"} and t.queue.name == "abuse"
    assert fields.values(session, t.id)["Constituency contact"] == "noc@campus.example"
    assert [h["detail"]["constituency"] for h in changes.history(session, t) if h["action"] == "routed"] == ["campus"]
    # a later article never moves a ticket again
    second = records.add_mail(session, mail(2, ticket_hint=t.id))
    later = session.get(Article, second["article_id"])
    result["constituency"]["queue"] = "general"
    assert "queue" not in changes.add_enrichment(session, later, result)["changed"]
    assert t.queue.name == "abuse"


# --- commands by mail ----------------------------------------------------------------------
VERIFIED = {"verdict": "verified", "signature": "good", "covers_all": True, "signer_matches_from": True}


def staff_mail(n, ticket, body, security=VERIFIED, sender="alice@csirt.example"):
    return mail(n, ticket_hint=ticket.id, sender=sender, sender_address=sender, body_text=body, security=security)


@pytest.fixture
def staff(session):
    for name in ("alice", "bob"):
        accounts.get_user(session, name).email = f"{name}@csirt.example"
    fields.create(session, "Classification", "select", ["spam", "scan"])
    session.commit()


def test_parse_commands_reads_only_the_leading_lines():
    assert changes.parse_commands("Status: resolved\nOutcome: solved\nCF.Classification: spam\n\nthanks\nOwner: x") \
        == [("status", "resolved"), ("outcome", "solved"), ("cf.Classification", "spam")]
    assert changes.parse_commands("Hello\nStatus: resolved") == []
    assert changes.parse_commands("> Status: resolved") == []


@pytest.mark.parametrize("body, check", [
    ("Status: open", lambda t, f: t.state == "open"),
    ("Status: resolved\nOutcome: solved", lambda t, f: (t.state, t.outcome) == ("resolved", "solved")),
    ("Owner: bob", lambda t, f: t.owner.username == "bob"),
    ("Queue: abuse", lambda t, f: t.queue.name == "abuse"),
    ("Priority: 90", lambda t, f: t.priority == 90),
    ("CF.Classification: spam", lambda t, f: f == {"Classification": "spam"}),
])
def test_each_command_applies_from_a_verified_staff_mail(session, staff, body, check):
    t = ticket_from_mail(session, 1)
    records.add_mail(session, staff_mail(2, t, body + "\n\nDone, see above."))
    session.commit()
    assert check(t, fields.values(session, t.id))
    assert "mail_commands_applied" in actions(session, t)


@pytest.mark.parametrize("security, sender, reason", [
    ({"verdict": "unverified", "signature": "unknown-key"}, "alice@csirt.example", "signature is not verified"),
    ({"verdict": "signed-partially", "signature": "good"}, "alice@csirt.example", "signed-partially"),
    (None, "alice@csirt.example", "not signed"),
    (VERIFIED, "mallory@evil.example", "not a staff member"),
])
def test_commands_are_ignored_and_flagged_unless_verified_and_from_staff(session, staff, security, sender, reason):
    t = ticket_from_mail(session, 1)
    changes.set_people(session, who(session, "root"), t, "cc", add=[sender])     # a known correspondent
    result = records.add_mail(session, staff_mail(2, t, "Status: resolved\nOutcome: solved", security, sender))
    session.commit()
    article = session.get(Article, result["article_id"])
    assert t.state == "new" and article.auto["commands"]["applied"] is False
    assert reason in article.auto["commands"]["reason"]
    assert "mail_commands_ignored" in actions(session, t)


def test_a_command_the_staff_member_has_no_right_for_is_refused_whole(session, staff):
    t = ticket_from_mail(session, 1)
    result = records.add_mail(session, staff_mail(2, t, "Priority: 80\nStatus: resolved"))   # no outcome
    session.commit()
    article = session.get(Article, result["article_id"])
    assert article.auto["commands"]["applied"] is False and "needs an outcome" in article.auto["commands"]["reason"]
    assert (t.priority, t.state) == (50, "new")                          # all or nothing
