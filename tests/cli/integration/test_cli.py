"""The osprey command against the running system."""
from __future__ import annotations

import hashlib
import json

from tests.helpers import make_mail, wait_for


def run_json(stack, *args):
    proc = stack.cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_status_lists_every_component_up(stack):
    proc = stack.cli("status")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == ["broker", "ingest", "tickets", "crypto", "enrich", "notify"]
    assert all(line.split()[1] == "up" for line in lines)
    status = run_json(stack, "status")
    crypto = next(c for c in status["components"] if c["component"] == "crypto")
    assert "gpg (GnuPG)" in crypto["detail"] and "OpenSSL" in crypto["detail"]


def test_status_says_down_and_exits_1_without_a_broker(stack):
    proc = stack.cli("status")  # sanity: up first
    assert proc.returncode == 0
    import subprocess
    env = {**stack.env, "OSPREY_AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"}
    proc = subprocess.run([stack.env["PATH"].split(":")[0] + "/osprey", "status"], env=env, capture_output=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.decode().split()[:2] == ["broker", "DOWN"]


def test_tickets_ticket_search_intake_and_quarantine(stack, marker):
    raw = make_mail(f"CLI {marker}", f"seen from 192.0.2.200 {marker}")
    assert stack.mailgate(raw).returncode == 0
    sha = hashlib.sha256(raw).hexdigest()

    def delivered():
        proc = stack.cli("intake", sha)
        return json.loads(proc.stdout) if proc.returncode == 0 and b'"delivered"' in proc.stdout else None
    info = wait_for(delivered, what="delivery")
    tid = info["intakes"][0]["ticket_id"]

    assert tid in [t["id"] for t in run_json(stack, "tickets", "--queue", "general")["tickets"]]
    shown = run_json(stack, "ticket", str(tid))
    assert shown["ticket"]["subject"] == f"CLI {marker}"
    assert shown["articles"][0]["raw_sha256"] == sha
    assert [r["id"] for r in run_json(stack, "search", marker)] == [tid]
    assert tid in [r["id"] for r in run_json(stack, "search", "192.0.2.200")]
    plain = stack.cli("search", marker)
    assert plain.returncode == 0 and f"#{tid}" in plain.stdout.decode()

    blob = b"\x00\x00 definitely not mail " + marker.encode()
    assert stack.mailgate(blob).returncode == 0
    blob_sha = hashlib.sha256(blob).hexdigest()
    wait_for(lambda: blob_sha in [r["sha256"] for r in run_json(stack, "quarantine")], what="quarantine")


def test_unknown_ticket_is_a_clear_error(stack):
    proc = stack.cli("ticket", "999999")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == "osprey: NotFound: no ticket #999999"


def test_user_commands(stack, marker):
    name = f"u{marker}"
    assert stack.cli("user", "add", name, "--password-stdin", input=b"a-long-password\n").returncode == 0
    again = stack.cli("user", "add", name, "--password-stdin", input=b"a-long-password\n")
    assert again.returncode == 1 and b"Conflict" in again.stderr
    short = stack.cli("user", "passwd", name, "--password-stdin", input=b"short\n")
    assert short.returncode == 1 and b"at least 8 characters" in short.stderr
    users = {u["username"]: u for u in run_json(stack, "user", "list")}
    assert users[name]["is_admin"] is False and users["admin"]["is_admin"] is True


def test_quarantined_mail_is_processed_again_after_its_queue_exists(stack, api, marker):
    queue = f"late-{marker}"
    raw = make_mail(f"Early {marker}", f"for a queue made later {marker}")
    assert stack.mailgate(raw, "--queue", queue).returncode == 0
    sha = hashlib.sha256(raw).hexdigest()
    record = wait_for(lambda: next((r for r in run_json(stack, "quarantine") if r["sha256"] == sha), None),
                      what="quarantine")
    assert record["reason"] == f"tickets refused it: UnknownQueue: no queue named '{queue}'"

    # the raw bytes are downloadable, byte-exact, while in quarantine
    assert stack.cli("intake", sha, "--raw").stdout == raw
    assert api.get(f"/intake/{sha}/raw").content == raw

    still = stack.cli("quarantine", "retry", record["intake_id"])
    assert still.returncode == 1 and b"quarantined" in still.stdout
    assert stack.cli("queue", "add", queue, "--description", "made late").returncode == 0
    assert queue in [q["name"] for q in run_json(stack, "queue", "list")]
    done = stack.cli("quarantine", "retry", record["intake_id"])
    assert done.returncode == 0, done.stdout + done.stderr
    (after,) = run_json(stack, "intake", sha)["intakes"]
    assert after["status"] == "delivered" and after["reason"] is None
    assert run_json(stack, "ticket", str(after["ticket_id"]))["ticket"]["queue"] == queue
    again = stack.cli("quarantine", "retry", record["intake_id"])
    assert again.returncode == 1 and b"is delivered, not quarantined" in again.stderr


def test_retry_through_the_api_needs_an_administrator(stack, api, marker):
    raw = make_mail(f"Q {marker}", "x")
    assert stack.mailgate(raw, "--queue", f"nope-{marker}").returncode == 0
    sha = hashlib.sha256(raw).hexdigest()
    wait_for(lambda: api.get(f"/intake/{sha}").status_code == 200 and
             api.get(f"/intake/{sha}").json()["intakes"][0]["status"] == "quarantined", what="quarantine")
    intake_id = api.get(f"/intake/{sha}").json()["intakes"][0]["intake_id"]
    name = f"v{marker}"
    assert stack.cli("user", "add", name, "--password-stdin", input=b"viewer-password\n").returncode == 0
    tok = stack.cli("token", "create", "--user", name).stdout.decode().strip()
    import httpx
    r = httpx.post(f"{stack.url}/api/v1/intake/{intake_id}/retry", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 403
    r = api.post(f"/intake/{intake_id}/retry")
    assert r.status_code == 200 and r.json()["status"] == "quarantined"   # the queue still does not exist


def test_ticket_core_from_the_command_line(stack, marker):
    queue = f"cli-{marker}"
    assert stack.cli("queue", "add", queue).returncode == 0
    assert run_json(stack, "field", "add", f"Net{marker}", "iprange")["type"] == "iprange"
    a = run_json(stack, "create", queue, "first", "--text", "from 203.0.113.9", "--field",
                 f"Net{marker}=203.0.113/24", "--idempotency-key", f"k-{marker}")
    again = run_json(stack, "create", queue, "first", "--idempotency-key", f"k-{marker}")
    assert again["id"] == a["id"] and again["replayed"] is True
    b = run_json(stack, "create", queue, "second", "--text", "again 203.0.113.9")
    proc = stack.cli("update", str(b["id"]), "--state", "resolved")
    assert proc.returncode != 0 and b"closing a ticket needs an outcome" in proc.stderr
    changed = run_json(stack, "update", str(b["id"]), "--state", "resolved", "--outcome", "solved", "--priority", "70")
    assert changed["changed"]["state"] == {"old": "new", "new": "resolved"}
    assert run_json(stack, "take", str(a["id"]))["ticket"]["owner"] == "admin"
    assert [t["id"] for t in run_json(stack, "previous", str(b["id"]))] == [a["id"]]
    proc = stack.cli("previous", str(b["id"]))
    assert f"#{a['id']}".encode() in proc.stdout and b"same IP 203.0.113.9" in proc.stdout
    merged = run_json(stack, "merge", str(a["id"]), str(b["id"]))
    assert merged["ticket_id"] == b["id"]
    shown = stack.cli("ticket", str(a["id"]))
    assert f"(#{a['id']} was merged into #{b['id']})".encode() in shown.stdout
    assert run_json(stack, "group", "add", f"g{marker}")["name"] == f"g{marker}"
    grants = run_json(stack, "rights", "grant", queue, f"group:g{marker}", "see", "take")["grants"]
    assert grants[f"group:g{marker}"] == ["see", "take"]
    assert stack.cli("rights", "grant", queue, "role:agent", "fly").returncode != 0
