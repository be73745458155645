"""Ticket core through the REST API against the running system: rights, lifecycle,
optimistic locking, idempotency keys, merge, split, previous incidents, admin."""
from __future__ import annotations

import uuid

import httpx
import pytest


@pytest.fixture
def queue(api, marker):
    r = api.post("/queues", json={"name": f"q-{marker}", "description": "ticket core tests"})
    assert r.status_code == 201, r.text
    return r.json()["name"]


def agent_client(stack, api, name, role="agent"):
    password = "pw-" + uuid.uuid4().hex
    r = api.post("/users", json={"username": name, "password": password, "role": role})
    assert r.status_code == 201, r.text
    token = httpx.post(f"{stack.url}/api/v1/tokens", json={"username": name, "password": password}).json()["token"]
    return httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def new_ticket(api, queue, subject="Scan", text="", **extra):
    r = api.post("/tickets", json={"queue": queue, "subject": subject, "text": text, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_idempotency_key_makes_a_retried_create_harmless(api, queue, marker):
    key = {"Idempotency-Key": f"create-{marker}"}
    first = api.post("/tickets", json={"queue": queue, "subject": "once"}, headers=key)
    again = api.post("/tickets", json={"queue": queue, "subject": "once"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    assert api.get("/tickets", params={"queue": queue}).json()["total"] == 1


def test_stale_version_is_refused_and_closing_needs_an_outcome(api, queue):
    t = new_ticket(api, queue)
    r = api.get(f"/tickets/{t['id']}")
    etag = r.headers["etag"]
    assert api.patch(f"/tickets/{t['id']}", json={"priority": 80}, headers={"If-Match": etag}).status_code == 200
    r = api.patch(f"/tickets/{t['id']}", json={"priority": 10}, headers={"If-Match": etag})
    assert r.status_code == 409 and "changed since you loaded it" in r.json()["detail"]
    r = api.patch(f"/tickets/{t['id']}", json={"state": "resolved"})
    assert r.status_code == 400 and r.json()["detail"].startswith("closing a ticket needs an outcome: one of solved")
    r = api.patch(f"/tickets/{t['id']}", json={"state": "resolved", "outcome": "solved"})
    assert r.status_code == 200 and r.json()["changed"]["state"] == {"old": "new", "new": "resolved"}
    got = api.get(f"/tickets/{t['id']}").json()
    assert (got["state"], got["outcome"], got["priority"]) == ("resolved", "solved", 80)
    assert [(h["action"], h["detail"]) for h in got["history"]][-2:] == [
        ("changed", {"field": "priority", "old": 50, "new": 80}),
        ("state_changed", {"field": "state", "old": "new", "new": "resolved", "outcome": "solved"})]
    assert got["lifecycle"]["next"] == ["open"]


def test_fields_with_ip_ranges_and_previous_incidents(api, queue, marker):
    field = f"Affected{marker}"
    assert api.post("/fields", json={"name": field, "type": "iprange"}).status_code == 201
    old = new_ticket(api, queue, "old scan", "scanner at 198.51.100.77")
    t = new_ticket(api, queue, "new scan", "again 198.51.100.77", fields={field: "198.51.100.0/24"})
    r = api.patch(f"/tickets/{t['id']}", json={"fields": {field: "198.51.100.0/33"}})
    assert r.status_code == 400 and "is not an IP address" in r.json()["detail"]
    previous = api.get(f"/tickets/{t['id']}/previous").json()
    assert [(p["id"], p["same_ip"]) for p in previous if p["id"] == old["id"]] == [(old["id"], ["198.51.100.77"])]


def test_merge_keeps_the_old_number_and_split_links_back(api, queue):
    a = new_ticket(api, queue, "first", "from a")
    b = new_ticket(api, queue, "second", "from b")
    api.post(f"/tickets/{a['id']}/comments", json={"text": "worked", "time_worked": 20})
    api.post(f"/tickets/{b['id']}/comments", json={"text": "worked too", "time_worked": 10})
    r = api.post(f"/tickets/{a['id']}/merge", json={"into": a["id"]})
    assert r.status_code == 400
    r = api.post(f"/tickets/{a['id']}/merge", json={"into": b["id"]})
    assert r.status_code == 200 and r.json()["time_worked"] == 30
    got = api.get(f"/tickets/{a['id']}").json()
    assert got["id"] == b["id"] and got["merged_from"] == a["id"]
    articles = api.get(f"/tickets/{b['id']}/articles").json()
    assert len(articles) == 4
    r = api.post(f"/tickets/{b['id']}/split", json={"article_ids": [articles[0]["id"]]})
    assert r.status_code == 201
    new_id = r.json()["ticket_id"]
    links = api.get(f"/tickets/{new_id}").json()["links"]
    assert [(x["label"], x["ticket_id"]) for x in links] == [("refers-to", b["id"])]


def test_rights_deny_by_default_for_a_group_queue(stack, api, queue, marker):
    agent = agent_client(stack, api, f"agent-{marker}")
    t = new_ticket(api, queue, "secret")
    assert agent.get(f"/tickets/{t['id']}").status_code == 200          # agents work new queues by default
    every = api.get("/admin/config").json()["rights"]
    r = api.put(f"/queues/{queue}/rights", json={"grantee": "role:agent", "rights": every, "revoke": True})
    assert r.status_code == 200 and "role:agent" not in r.json()["grants"]
    assert agent.get(f"/tickets/{t['id']}").status_code == 403
    assert queue not in [q["name"] for q in agent.get("/queues").json()]
    assert agent.get("/admin/config").status_code == 403
    assert agent.post("/queues", json={"name": f"x-{marker}"}).status_code == 403
    assert api.post("/groups", json={"name": f"g-{marker}"}).status_code == 201
    assert api.put(f"/groups/g-{marker}/members/agent-{marker}").status_code == 200
    api.put(f"/queues/{queue}/rights", json={"grantee": f"group:g-{marker}", "rights": ["see", "take"]})
    assert agent.get(f"/tickets/{t['id']}").status_code == 200
    r = agent.post(f"/tickets/{t['id']}/take")
    assert r.status_code == 200 and r.json()["ticket"]["owner"] == f"agent-{marker}"
    r = agent.patch(f"/tickets/{t['id']}", json={"priority": 1})
    assert r.status_code == 403 and "lacks the right 'modify'" in r.json()["detail"]
    agent.close()


def test_admin_lifecycle_sla_and_outcome(api, queue, marker):
    r = api.put(f"/lifecycles/lc-{marker}", json={"states": [{"name": "triage", "category": "initial"}]})
    assert r.status_code == 400 and "closed state" in r.json()["detail"]
    r = api.put(f"/lifecycles/lc-{marker}", json={
        "states": [{"name": "triage", "category": "initial"}, {"name": "done", "category": "closed"}],
        "transitions": {"triage": ["done"]}})
    assert r.status_code == 200
    assert api.put(f"/slas/sla-{marker}", json={"first_response_minutes": 60,
                                               "calendar": {"tz": "Mars/Olympus"}}).status_code == 400
    assert api.put(f"/slas/sla-{marker}", json={"first_response_minutes": 60}).status_code == 200
    assert api.put(f"/outcomes/phish-{marker}", json={"description": "phish taken down"}).status_code == 200
    r = api.patch(f"/queues/{queue}", json={"lifecycle": f"lc-{marker}", "sla": f"sla-{marker}"})
    assert r.status_code == 200 and (r.json()["lifecycle"], r.json()["sla"]) == (f"lc-{marker}", f"sla-{marker}")
    t = new_ticket(api, queue)
    assert t["state"] == "triage" and t["sla"]["first_response_due"] is not None
    r = api.patch(f"/tickets/{t['id']}", json={"state": "done", "outcome": f"phish-{marker}"})
    assert r.status_code == 200
    config = api.get("/admin/config").json()
    assert f"lc-{marker}" in [lc["name"] for lc in config["lifecycles"]]
