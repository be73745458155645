"""osprey-poller against a real dovecot (IMAP, POP3, both with TLS), the real broker
and services: messages become tickets, leave the server only after the broker took
them, resume by UID, refuse oversized mail into the failed folder, survive a server
that hangs mid-download, and a message published twice is one article."""
from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import time

import pytest
import yaml

from osprey.broker import free_port
from osprey.testing import BIN
from tests.helpers import make_mail, wait_for
from tests.ingest.dovecot import Dovecot, StallingProxy

USERS = {name: f"pw-{name}-7q" for name in (
    "fresh", "deleter", "keeper", "twice", "big", "popper", "locked", "good", "slow", "nobroker", "secure", "secure2",
    "starttls", "daemon")}


@pytest.fixture(scope="module")
def dovecot():
    server = Dovecot(USERS)
    try:
        yield server.start()
    finally:
        server.stop()


def account(dovecot: Dovecot, user: str, protocol: str = "imap", **extra) -> dict:
    return {"name": user, "protocol": protocol, "host": "127.0.0.1", "port": dovecot.ports[protocol],
            "username": user, "password": USERS[user], "queue": "general", **extra}


def poller_env(stack, tmp_path, accounts: list[dict], **env) -> dict:
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    path.chmod(0o600)
    # the poller's own state (poller.db) per test, under the test's folder
    return {**stack.env, "OSPREY_MAIL_ACCOUNTS": str(path), "OSPREY_DATA_DIR": str(tmp_path / "data"), **env}


def poll_once(stack, tmp_path, accounts: list[dict], **env) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "osprey-poller"), "--once"], env=poller_env(stack, tmp_path, accounts, **env),
                          capture_output=True, timeout=60)
    proc.log = proc.stderr.decode()
    return proc


def intake(api, raw: bytes, deliveries: int = 1) -> dict:
    """The intake record of ``raw`` once ingest processed it ``deliveries`` times."""
    sha = hashlib.sha256(raw).hexdigest()

    def done():
        r = api.get(f"/intake/{sha}")
        if r.status_code != 200:
            return None
        (record,) = r.json()["intakes"]
        return record if record["status"] != "received" and record["deliveries"] >= deliveries else None
    return wait_for(done, timeout=60, what=f"intake {sha[:12]} processed {deliveries}x")


def not_taken(api, raw: bytes) -> bool:
    return api.get(f"/intake/{hashlib.sha256(raw).hexdigest()}").status_code == 404


def folder(dovecot: Dovecot, user: str, name: str) -> list[bytes]:
    """The exact bytes of every message in a folder, in UID order (read with PEEK)."""
    with dovecot.imap(user) as box:
        box.select_folder(name, readonly=True)
        uids = sorted(box.search())
        return [box.fetch([u], ["BODY.PEEK[]"])[u][b"BODY[]"] for u in uids]


def append(dovecot: Dovecot, user: str, *mails: bytes) -> None:
    with dovecot.imap(user) as box:
        for raw in mails:
            box.append("INBOX", raw)


def raw_of_ticket(api, ticket_id: int) -> list[bytes]:
    return [api.get(f"/articles/{a['id']}/raw").content for a in api.get(f"/tickets/{ticket_id}/articles").json()]


def test_imap_mail_becomes_tickets_and_moves_to_the_done_folder(stack, api, dovecot, tmp_path, marker):
    mails = [make_mail(f"Polled {marker} {i}", f"fetched by IMAP {marker} n{i}") for i in range(3)]
    append(dovecot, "fresh", *mails)

    proc = poll_once(stack, tmp_path, [account(dovecot, "fresh")])
    assert proc.returncode == 0, proc.log
    assert proc.log.count(" delivered (") == 3

    with dovecot.imap("fresh") as box:
        uidvalidity = box.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    uids = []
    for i, raw in enumerate(mails):
        record = intake(api, raw)
        assert (record["status"], record["source"], record["queue"], record["deliveries"]) == \
            ("delivered", "imap:fresh", "general", 1)
        assert api.get(f"/tickets/{record['ticket_id']}").json()["subject"] == f"Polled {marker} {i}"
        assert raw_of_ticket(api, record["ticket_id"]) == [raw]          # byte-exact
        # where it was fetched from, kept as its envelope
        env = record["envelope"]
        assert {k: v for k, v in env.items() if k != "uid"} == {
            "account": "fresh", "mailbox": f"imap://fresh@127.0.0.1:{dovecot.ports['imap']}/INBOX",
            "folder": "INBOX", "uidvalidity": uidvalidity}
        uids.append(env["uid"])
    assert uids == sorted(uids) and len(set(uids)) == 3 and all(isinstance(u, int) and u > 0 for u in uids)
    assert folder(dovecot, "fresh", "INBOX") == []
    assert folder(dovecot, "fresh", "Osprey-done") == mails


def test_imap_delete_true_deletes_what_was_delivered(stack, api, dovecot, tmp_path, marker):
    raw = make_mail(f"Deleted {marker}", f"deleted after delivery {marker}")
    append(dovecot, "deleter", raw)
    proc = poll_once(stack, tmp_path, [account(dovecot, "deleter", delete=True)])
    assert proc.returncode == 0, proc.log
    assert intake(api, raw)["status"] == "delivered"
    with dovecot.imap("deleter") as box:
        assert sorted(name for _flags, _sep, name in box.list_folders()) == ["INBOX", "Osprey-failed"]
    assert folder(dovecot, "deleter", "INBOX") == []


def test_keep_account_resumes_by_uid_after_a_restart(stack, api, dovecot, tmp_path, marker):
    acct = account(dovecot, "keeper", keep=True)
    first = make_mail(f"Kept {marker} 1", f"stays on the server {marker}")
    append(dovecot, "keeper", first)
    proc = poll_once(stack, tmp_path, [acct])
    assert proc.returncode == 0, proc.log
    assert intake(api, first)["deliveries"] == 1

    again = poll_once(stack, tmp_path, [acct])        # a restart: a new process, the same state file
    assert again.returncode == 0, again.log
    assert " delivered (" not in again.log

    second = make_mail(f"Kept {marker} 2", f"arrived later {marker}")
    append(dovecot, "keeper", second)
    third = poll_once(stack, tmp_path, [acct])
    assert third.returncode == 0, third.log
    assert third.log.count(" delivered (") == 1 and "uid 2 in INBOX delivered" in third.log
    assert intake(api, second)["deliveries"] == 1
    wait_for(lambda: stack.intake_backlog() == 0, what="an empty intake queue")
    assert intake(api, first)["deliveries"] == 1      # never published again
    assert folder(dovecot, "keeper", "INBOX") == [first, second]
    with dovecot.imap("keeper") as box:               # fetched with PEEK: still unread for people
        box.select_folder("INBOX", readonly=True)
        assert box.search(["UNSEEN"]) == [1, 2]


def test_a_message_published_twice_is_one_article(stack, api, dovecot, tmp_path, marker):
    """A crash after the publish and before the message left the server (or lost
    state) means the same bytes are published again: one delivery counted twice."""
    acct = account(dovecot, "twice", keep=True)
    raw = make_mail(f"Twice {marker}", f"polled twice {marker}")
    append(dovecot, "twice", raw)
    assert poll_once(stack, tmp_path, [acct]).returncode == 0
    record = intake(api, raw)

    for f in (tmp_path / "data" / "ingest").glob("poller.db*"):
        f.unlink()                                    # the poller forgets it ever took it
    proc = poll_once(stack, tmp_path, [acct])
    assert proc.returncode == 0, proc.log
    assert "delivered (" in proc.log                  # published again, really

    second = intake(api, raw, deliveries=2)
    assert second["ticket_id"] == record["ticket_id"]
    assert raw_of_ticket(api, record["ticket_id"]) == [raw]
    assert len(api.get("/search", params={"q": marker}).json()["results"]) == 1


def test_a_message_over_the_size_limit_goes_to_the_failed_folder(stack, api, dovecot, tmp_path, marker):
    big = make_mail(f"Huge {marker}", "x" * 6000)
    small = make_mail(f"Small {marker}", f"fits {marker}")
    append(dovecot, "big", big, small)

    proc = poll_once(stack, tmp_path, [account(dovecot, "big")], OSPREY_MAX_MAIL_BYTES="4000")
    assert proc.returncode == 0, proc.log                 # refused mail is data, not a failure
    assert f"uid 1 in INBOX not delivered: it is {len(big)} bytes, over OSPREY_MAX_MAIL_BYTES (4000); " \
           "moved to Osprey-failed" in proc.log
    assert intake(api, small)["status"] == "delivered"
    assert not_taken(api, big)
    assert folder(dovecot, "big", "Osprey-failed") == [big]
    assert folder(dovecot, "big", "Osprey-done") == [small]
    assert folder(dovecot, "big", "INBOX") == []


def test_pop3_account_delivers_and_deletes(stack, api, dovecot, tmp_path, marker):
    long_line = "y" * 5000                  # longer than poplib's own 2048-byte line limit
    mails = [make_mail(f"Popped {marker}", f"by POP3 {marker}\r\n.a line starting with a dot\r\n..two"),
             make_mail(f"Popped long {marker}", f"{long_line} {marker}")]
    append(dovecot, "popper", *mails)

    proc = poll_once(stack, tmp_path, [account(dovecot, "popper", "pop3")])
    assert proc.returncode == 0, proc.log
    uidls = []
    for raw in mails:
        record = intake(api, raw)
        assert (record["status"], record["source"]) == ("delivered", "pop3:popper")
        assert raw_of_ticket(api, record["ticket_id"]) == [raw]      # dot-unstuffed, byte-exact
        env = record["envelope"]
        assert (env["account"], env["mailbox"], set(env)) == (
            "popper", f"pop3://popper@127.0.0.1:{dovecot.ports['pop3']}", {"account", "mailbox", "uidl"})
        uidls.append(env["uidl"])
    assert len(set(uidls)) == 2 and all(isinstance(u, str) and u for u in uidls)
    assert folder(dovecot, "popper", "INBOX") == []


def test_a_wrong_password_is_a_clear_error_and_loses_nothing(stack, api, dovecot, tmp_path, marker):
    kept = make_mail(f"Locked {marker}", f"behind a wrong password {marker}")
    fine = make_mail(f"Fine {marker}", f"another account {marker}")
    append(dovecot, "locked", kept)
    append(dovecot, "good", fine)
    accounts = [account(dovecot, "locked", password="wrong"),
                account(dovecot, "locked", "pop3", name="locked-pop", password="wrong"),
                account(dovecot, "good")]

    proc = poll_once(stack, tmp_path, accounts)
    assert proc.returncode == 1
    imap_port, pop_port = dovecot.ports["imap"], dovecot.ports["pop3"]
    assert (f"ERROR osprey.poller: account locked: login as 'locked' refused by imap://127.0.0.1:{imap_port}: "
            "[AUTHENTICATIONFAILED] Authentication failed.") in proc.log
    assert (f"ERROR osprey.poller: account locked-pop: login as 'locked' refused by pop3://127.0.0.1:{pop_port}: "
            "-ERR [AUTH] Authentication failed.") in proc.log
    assert intake(api, fine)["status"] == "delivered"      # one account's failure stops no other
    assert folder(dovecot, "locked", "INBOX") == [kept]
    assert not_taken(api, kept)


def test_a_server_hanging_mid_download_costs_a_round_not_a_duplicate(stack, api, dovecot, tmp_path, marker):
    body = "\r\n".join(f"line {i:07d} of a long report {marker}" for i in range(80_000))   # ~3.4 MB
    raw = make_mail(f"Slow {marker}", body)
    assert len(raw) > 3 * 1024 * 1024
    append(dovecot, "slow", raw)
    proxy = StallingProxy(dovecot.ports["imap"])
    try:
        acct = {**account(dovecot, "slow"), "port": proxy.port, "timeout": 1}
        proxy.stall_after = 1_500_000                   # the server goes silent 1.5 MB into the mail
        started = time.monotonic()
        hung = poll_once(stack, tmp_path, [acct])
        assert hung.returncode == 1
        assert "account slow: the server did not answer within 1s (the account's `timeout`)" in hung.log
        assert time.monotonic() - started < 20
        assert folder(dovecot, "slow", "INBOX") == [raw]    # still there, untouched

        proxy.stall_after = None                        # the next round: the server answers
        proc = poll_once(stack, tmp_path, [acct])
        assert proc.returncode == 0, proc.log
    finally:
        proxy.close()
    record = intake(api, raw)
    assert (record["status"], record["deliveries"]) == ("delivered", 1)
    assert raw_of_ticket(api, record["ticket_id"]) == [raw]
    assert folder(dovecot, "slow", "Osprey-done") == [raw]


def test_broker_down_leaves_the_mail_on_the_server(stack, api, dovecot, tmp_path, marker):
    raw = make_mail(f"No broker {marker}", f"the broker is down {marker}")
    append(dovecot, "nobroker", raw)
    closed = free_port()            # nothing listens there
    proc = poll_once(stack, tmp_path, [account(dovecot, "nobroker")],
                     OSPREY_AMQP_URI=f"amqp://guest:guest@127.0.0.1:{closed}/")
    assert proc.returncode == 1
    assert "account nobroker: the broker did not take uid 1 in INBOX (AMQPConnectionError" in proc.log
    assert folder(dovecot, "nobroker", "INBOX") == [raw]
    assert folder(dovecot, "nobroker", "Osprey-done") == []

    proc = poll_once(stack, tmp_path, [account(dovecot, "nobroker")])      # the broker is back
    assert proc.returncode == 0, proc.log
    assert intake(api, raw)["status"] == "delivered"
    assert folder(dovecot, "nobroker", "INBOX") == []


def test_tls_is_verified(stack, api, dovecot, tmp_path, marker):
    """imaps and STARTTLS with the server's CA given deliver; pop3s without it refuses
    the self-signed certificate and touches nothing."""
    ok = make_mail(f"Over TLS {marker}", f"imaps {marker}")
    upgraded = make_mail(f"STARTTLS {marker}", f"imap + starttls {marker}")
    unverified = make_mail(f"Unverified {marker}", f"pop3s {marker}")
    append(dovecot, "secure", ok)
    append(dovecot, "starttls", upgraded)
    append(dovecot, "secure2", unverified)
    accounts = [account(dovecot, "secure", "imaps", ca_file=str(dovecot.ca_file)),
                account(dovecot, "starttls", "imap", starttls=True, ca_file=str(dovecot.ca_file)),
                account(dovecot, "secure2", "pop3s")]

    proc = poll_once(stack, tmp_path, accounts)
    assert proc.returncode == 1
    assert (f"account secure2: cannot connect to pop3s://127.0.0.1:{dovecot.ports['pop3s']}: "
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "self-signed certificate") in proc.log
    assert intake(api, ok)["source"] == "imap:secure"
    assert intake(api, upgraded)["source"] == "imap:starttls"
    for user in ("secure", "starttls"):              # the server saw the login over TLS
        assert re.search(rf"imap-login: Info: Login: user=<{user}>, .*, TLS,", dovecot.log()), user
    assert folder(dovecot, "secure2", "INBOX") == [unverified]


def test_the_long_running_poller_delivers_every_round_and_stops_on_sigterm(stack, api, dovecot, tmp_path, marker):
    env = poller_env(stack, tmp_path, [account(dovecot, "daemon")], OSPREY_POLL_SECONDS="0.3")
    log = open(tmp_path / "poller.log", "wb")
    proc = subprocess.Popen([str(BIN / "osprey-poller")], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        for i in range(2):
            raw = make_mail(f"Daemon {marker} {i}", f"round {i} {marker}")
            append(dovecot, "daemon", raw)
            assert intake(api, raw)["source"] == "imap:daemon"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "poller.log").read_text()
    assert "polling 1 account(s) every 0.3s: daemon (imap://127.0.0.1:" in text
    assert "stopped" in text
    assert folder(dovecot, "daemon", "INBOX") == []


def test_no_accounts_a_wrong_accounts_file_and_one_others_can_read(stack, tmp_path):
    proc = subprocess.run([str(BIN / "osprey-poller"), "--once"], env={**stack.env, "OSPREY_MAIL_ACCOUNTS": ""},
                          capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert b"no mail accounts configured (OSPREY_MAIL_ACCOUNTS is empty): nothing to poll" in proc.stderr

    bad = poll_once(stack, tmp_path, [{"name": "x", "protocol": "imap4", "host": "h", "username": "u",
                                       "password": "p"}])
    assert bad.returncode == 78
    assert "account 1 (x): `protocol` must be one of imap, imaps, pop3, pop3s" in bad.log

    env = poller_env(stack, tmp_path, [{"name": "nowhere", "protocol": "imap", "host": "127.0.0.1",
                                        "port": free_port(), "username": "u", "password": "p"}])
    (tmp_path / "accounts.yaml").chmod(0o644)
    readable = subprocess.run([str(BIN / "osprey-poller"), "--once"], env=env, capture_output=True, timeout=60)
    assert readable.returncode == 1
    assert (f"WARNING osprey.poller: {tmp_path / 'accounts.yaml'} holds passwords and every user of this "
            "machine can read it: chmod 600 it") in readable.stderr.decode()
    assert "account nowhere: cannot connect to imap://127.0.0.1:" in readable.stderr.decode()
