"""The LMTP intake listener (``osprey-lmtp``, a real process) against the real broker
and services, driven by the stdlib LMTP client: one reply per recipient, 250 only
after the broker confirmed; recipient → queue and action; 451 while the broker is
unreachable and 250 again once it is back; the size limit; many mails over one
session, each a ticket exactly once; a clean stop on SIGTERM."""
from __future__ import annotations

import hashlib
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from osprey import contracts
from osprey.broker import free_port
from osprey.testing import BIN
from tests.helpers import make_mail, wait_for

MAX_BYTES = 100_000   # the module's listener: small, so the limit is cheap to cross


class Listener:
    """One ``osprey-lmtp`` process on a free port, its output in a log file."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([str(BIN / "osprey-lmtp")], env={**env, "OSPREY_LMTP_PORT": str(self.port)},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._accepting, timeout=30, what=f"osprey-lmtp on port {self.port}")

    def _accepting(self) -> bool:
        assert self.proc.poll() is None, f"osprey-lmtp exited {self.proc.returncode}:\n{self.text()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> smtplib.LMTP:
        client = smtplib.LMTP("127.0.0.1", self.port, timeout=60)
        code, _ = client.ehlo("mta.test")     # LHLO
        assert code == 250
        return client

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM; the exit status (the process is killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"osprey-lmtp did not stop within {timeout}s:\n{self.text()}")
        return self.proc.returncode


def transaction(client: smtplib.LMTP, rcpts: list[str], raw: bytes, sender: str = "mta-bounce@example.net",
                mail_options: tuple = ()) -> list[tuple[int, str]]:
    """One LMTP transaction; the replies after DATA, one per accepted recipient (RFC 2033 §4.2)."""
    code, msg = client.mail(sender, list(mail_options))
    assert code == 250, msg
    accepted = []
    for rcpt in rcpts:
        code, msg = client.rcpt(rcpt)
        assert code == 250, (rcpt, code, msg)
        accepted.append(rcpt)
    replies = [client.data(raw)]                       # smtplib reads the first reply...
    replies += [client.getreply() for _ in accepted[1:]]   # ...and the others are ours to read
    return [(code, msg.decode()) for code, msg in replies]


def intakes(api, raw: bytes, count: int = 1) -> list[dict]:
    """The intake records of ``raw`` once ``count`` of them exist and none is still
    being processed, by queue."""
    sha = hashlib.sha256(raw).hexdigest()

    def done():
        r = api.get(f"/intake/{sha}")
        if r.status_code != 200:
            return None
        records = r.json()["intakes"]
        if len(records) < count or any(i["status"] == contracts.INTAKE_RECEIVED for i in records):
            return None
        return sorted(records, key=lambda i: i["queue"])
    return wait_for(done, timeout=60, what=f"{count} processed intake(s) of {sha[:12]}")


@pytest.fixture(scope="module")
def listener(stack, tmp_path_factory):
    env = {**stack.env, "OSPREY_MAX_MAIL_BYTES": str(MAX_BYTES)}
    lst = Listener(env, tmp_path_factory.mktemp("lmtp") / "osprey-lmtp.log")
    try:
        yield lst
    finally:
        lst.stop()


@pytest.fixture
def client(listener):
    c = listener.client()
    yield c
    try:
        c.quit()
    except smtplib.SMTPException:
        pass


def test_one_mail_to_two_queues_gets_two_replies_after_the_confirm(stack, api, client, marker):
    lost = f"{marker}-nowhere"
    # without a Message-ID: tickets takes one Message-ID with the same content as one
    # mail (two aliases) and files a second copy as a duplicate of the first, so with
    # one the unknown queue's copy would be quarantined or a duplicate by timing
    raw = re.sub(rb"Message-ID: [^\r]*\r\n", b"",
                 make_mail(f"Two queues {marker}", f"for general and a queue that does not exist {marker}"))
    replies = transaction(client, ["general@csirt.example", f"{lost}@csirt.example"], raw)

    assert [code for code, _ in replies] == [250, 250]
    assert replies[0][1].startswith("2.0.0 general: taken (correspond)")
    assert replies[1][1].startswith(f"2.0.0 {lost}: taken (correspond)")

    delivered, quarantined = intakes(api, raw, count=2)     # sorted by queue: general < m…
    assert (delivered["queue"], delivered["status"], delivered["source"], delivered["action"],
            delivered["deliveries"]) == ("general", "delivered", "lmtp", "correspond", 1)
    assert (quarantined["queue"], quarantined["status"], quarantined["ticket_id"]) == (lost, "quarantined", None)
    assert quarantined["reason"] == f"tickets refused it: UnknownQueue: no queue named {lost!r}"

    ticket = api.get(f"/tickets/{delivered['ticket_id']}").json()
    assert (ticket["subject"], ticket["queue"]) == (f"Two queues {marker}", "general")
    (article,) = api.get(f"/tickets/{ticket['id']}/articles").json()
    assert api.get(f"/articles/{article['id']}/raw").content == raw      # byte-exact, CRLF kept


def test_plus_or_minus_comment_makes_the_mail_a_comment(stack, api, client, marker):
    plus = make_mail(f"Staff note {marker}", f"internal remark {marker}")
    minus = make_mail(f"Staff note two {marker}", f"another internal remark {marker}")
    assert [c for c, _ in transaction(client, ["general+comment@csirt.example"], plus)] == [250]
    assert [c for c, _ in transaction(client, ["general-comment@csirt.example"], minus)] == [250]

    for raw in (plus, minus):
        (record,) = intakes(api, raw)
        assert (record["queue"], record["action"], record["status"]) == ("general", "comment", "delivered")
        (article,) = api.get(f"/tickets/{record['ticket_id']}/articles").json()
        assert article["action"] == "comment"


def test_a_recipient_without_a_queue_is_refused_at_rcpt(client):
    code, msg = client.mail("someone@example.net")
    assert code == 250
    code, msg = client.rcpt("+comment@csirt.example")
    assert (code, msg[:5]) == (550, b"5.1.1")
    client.rset()


def test_the_same_bytes_again_is_one_delivery_counted_twice(stack, api, client, marker):
    raw = make_mail(f"Retried {marker}", f"the MTA sent it twice {marker}")
    assert [c for c, _ in transaction(client, ["general@csirt.example"], raw)] == [250]
    first = intakes(api, raw)[0]
    # the MTA did not see our 250 (say, the connection broke) and delivers again
    assert [c for c, _ in transaction(client, ["general@csirt.example", "general@other.example"], raw)] == [250, 250]
    record = wait_for(lambda: (lambda r: r if r["deliveries"] == 2 else None)(intakes(api, raw)[0]),
                      what="the second delivery counted")
    assert record["ticket_id"] == first["ticket_id"]
    assert len(api.get(f"/tickets/{record['ticket_id']}/articles").json()) == 1


def test_mail_over_the_size_limit_gets_552_per_recipient(stack, api, listener, client, marker):
    def sized(n: int, tag: str) -> bytes:
        head = make_mail(f"Sized {tag} {marker}", "")
        filler = (b"x" * 76 + b"\r\n") * (n // 78 + 1)
        return (head + filler)[:n - 2] + b"\r\n"

    too_big, just_fits = sized(MAX_BYTES + 1, "over"), sized(MAX_BYTES, "fits")
    assert (len(too_big), len(just_fits)) == (MAX_BYTES + 1, MAX_BYTES)

    # the MTA did not announce a size: refused after the data, once per recipient
    replies = transaction(client, ["general@csirt.example", "general+comment@csirt.example"], too_big)
    assert [(code, msg[:5]) for code, msg in replies] == [(552, "5.3.4"), (552, "5.3.4")]
    # the session is still in step: the next transaction on it gets its own replies
    assert [c for c, _ in transaction(client, ["general@csirt.example"], just_fits)] == [250]
    assert intakes(api, just_fits)[0]["status"] == "delivered"
    assert api.get(f"/intake/{hashlib.sha256(too_big).hexdigest()}").status_code == 404   # nothing published

    # an MTA that announces the size (MAIL FROM … SIZE=n) is refused at once
    code, msg = client.mail("mta-bounce@example.net", [f"SIZE={len(too_big)}"])
    assert code == 552
    client.rset()


def test_two_hundred_mails_over_one_session_become_tickets_exactly_once(stack, api, client, marker):
    mails = [make_mail(f"Burst {marker} {i}", f"burst {marker} n{i}") for i in range(200)]
    for raw in mails:
        assert [c for c, _ in transaction(client, ["general@csirt.example"], raw)] == [250]

    tickets = set()
    for raw in mails:
        (record,) = intakes(api, raw)
        assert (record["status"], record["deliveries"], record["source"]) == ("delivered", 1, "lmtp")
        tickets.add(record["ticket_id"])
    assert len(tickets) == 200
    found = api.get("/search", params={"q": marker, "limit": 200}).json()["results"]
    assert {h["id"] for h in found} <= tickets


def test_broker_unreachable_gets_451_per_recipient_and_the_listener_stays_up(stack, tmp_path, marker):
    closed = free_port()   # nothing listens there
    lst = Listener({**stack.env, "OSPREY_AMQP_URI": f"amqp://guest:guest@127.0.0.1:{closed}/"},
                   tmp_path / "osprey-lmtp.log")
    try:
        client = lst.client()
        for attempt in range(2):   # the session survives a failure; so does the listener
            raw = make_mail(f"Unreachable {marker} {attempt}", "the broker is down")
            replies = transaction(client, ["general@csirt.example", "general+comment@csirt.example"], raw)
            assert [(code, msg[:5]) for code, msg in replies] == [(451, "4.3.0"), (451, "4.3.0")]
            assert all("try again later" in msg for _, msg in replies)
        client.quit()
    finally:
        assert lst.stop() == 0
    assert "451" in lst.text() and "stopped" in lst.text()


class Relay:
    """A TCP relay in front of the broker that can drop every connection and stop
    accepting: a broker restart or outage as the listener sees it."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepting = threading.Event()
        self.accepting.set()
        self.closed = threading.Event()
        self.server.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            if not self.accepting.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop_connections(self):
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns = []

    def close(self):
        self.closed.set()
        self.drop_connections()
        self.server.close()


def test_the_listener_reconnects_after_the_broker_connection_is_lost(stack, api, tmp_path, marker):
    relay = Relay(stack.broker.port)
    lst = Listener({**stack.env, "OSPREY_AMQP_URI": f"amqp://guest:guest@127.0.0.1:{relay.port}/",
                    "OSPREY_MAILGATE_TIMEOUT": "5"}, tmp_path / "osprey-lmtp.log")
    try:
        client = lst.client()
        before = make_mail(f"Before {marker}", "first connection")
        assert [c for c, _ in transaction(client, ["general@csirt.example"], before)] == [250]

        relay.drop_connections()                  # the broker restarted: the connection is gone
        time.sleep(0.2)
        after_drop = make_mail(f"After drop {marker}", "a new connection")
        assert [c for c, _ in transaction(client, ["general@csirt.example"], after_drop)] == [250]

        relay.accepting.clear()                   # the broker is down for a while
        relay.drop_connections()
        time.sleep(0.2)
        down = make_mail(f"While down {marker}", "no broker")
        assert [c for c, _ in transaction(client, ["general@csirt.example"], down)] == [451]

        relay.accepting.set()                     # and back
        back = make_mail(f"Back {marker}", "the broker is back")
        assert [c for c, _ in transaction(client, ["general@csirt.example"], back)] == [250]
        client.quit()
    finally:
        assert lst.stop() == 0
        relay.close()
    for raw in (before, after_drop, back):
        assert intakes(api, raw)[0]["status"] == "delivered"
    assert api.get(f"/intake/{hashlib.sha256(down).hexdigest()}").status_code == 404


def test_sigterm_while_a_session_is_open_stops_cleanly(stack, tmp_path):
    lst = Listener(stack.env, tmp_path / "osprey-lmtp.log")
    client = lst.client()                          # an MTA holding a cached connection
    t = time.monotonic()
    assert lst.stop() == 0
    assert time.monotonic() - t < 5
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        client.noop()
    assert "stopped" in lst.text()


def test_the_envelope_is_kept_with_each_delivery(stack, api, listener, client, marker):
    """MAIL FROM, the recipients that named the queue, the LMTP peer and its LHLO name
    are stored on the intake record, per delivery (queue and action)."""
    raw = re.sub(rb"Message-ID: [^\r]*\r\n", b"", make_mail(f"Envelope {marker}", f"kept as evidence {marker}"))
    rcpts = ["general@csirt.example", "general@alias.example", "general+comment@csirt.example"]
    assert [c for c, _ in transaction(client, rcpts, raw, sender="")] == [250, 250, 250]   # a null sender
    comment, correspond = sorted(intakes(api, raw, count=2), key=lambda i: i["action"])
    port = client.sock.getsockname()[1]
    assert correspond["envelope"] == {"mail_from": "", "rcpt_to": ["general@csirt.example", "general@alias.example"],
                                      "peer": f"127.0.0.1:{port}", "lhlo": "mta.test"}
    assert comment["envelope"] == {"mail_from": "", "rcpt_to": ["general+comment@csirt.example"],
                                   "peer": f"127.0.0.1:{port}", "lhlo": "mta.test"}
    # and in the intake log
    logged = {r["intake_id"]: r for r in api.get("/intake", params={"limit": 1000}).json()}
    assert logged[correspond["intake_id"]]["envelope"] == correspond["envelope"]
