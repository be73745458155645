"""osprey-lmtp: the LMTP intake listener, for sites with more mail than a process
per mail can carry. The MTA delivers over LMTP (RFC 2033) to this long-running
process; each mail is published to the intake queue exactly as ``osprey-mailgate``
does (same message, same headers, ``x-osprey-source: lmtp``), and the MTA gets one
reply per recipient after the DATA:

  250 2.0.0  taken: the broker confirmed a persistent copy for this recipient
  451 4.3.0  broker down, refused, or no confirm within OSPREY_MAILGATE_TIMEOUT;
             the MTA keeps the mail and retries (a repeated delivery of the same
             bytes for the same queue is recognised by ingest; no duplicate)
  552 5.3.4  larger than OSPREY_MAX_MAIL_BYTES; the MTA bounces it to its sender
  554 5.6.0  an empty message (an MTA never sends one)

Recipient → queue: the local part of the RCPT address is the queue name, exactly
as written; a ``+comment`` or ``-comment`` suffix makes the mail a comment
(staff-only) instead of correspondence (``+correspond``/``-correspond`` say the
default explicitly). ``general@csirt.example`` → queue ``general``, correspond;
``general+comment@…`` → ``general``, comment; ``abuse-de-comment@…`` → ``abuse-de``,
comment. The domain is ignored. An address whose queue part is empty is refused at
RCPT (550 5.1.1); a queue that does not exist is not checked here: that mail is
taken and ingest quarantines it with the reason, like the mailgate's ``--queue``.

Each delivery carries its envelope as evidence (envelope.py): the MAIL FROM, the
recipients that named its queue and action, the peer's address and its LHLO name.

One thread owns the broker connection (``publisher.Publisher`` is confined to a
thread); the asyncio loop running aiosmtpd hands each publish to it and waits,
bounded by the timeout. SIGTERM/SIGINT: stop accepting, let the deliveries being
published finish (at most the timeout), close the remaining sessions (their MTA
retries whatever got no 250), close the broker connection, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import queue
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from aiosmtpd.lmtp import LMTP

from osprey import contracts

from . import envelope as envelopes
from .publisher import Publisher

log = logging.getLogger("osprey.lmtp")

EX_OK, EX_USAGE, EX_OSERR = 0, 64, 71
SOURCE = "lmtp"
KEEPALIVE_SECONDS = 5     # how often the idle publisher answers the broker's heartbeats
HEARTBEAT_SECONDS = 15    # a silently dead broker connection is noticed after about this long

OK = "250 2.0.0 {queue}: taken ({action}), sha256 {sha}"
TEMPFAIL = "451 4.3.0 {queue}: broker did not take the mail ({why}); try again later"
TOO_BIG = "552 5.3.4 message larger than {limit} bytes (OSPREY_MAX_MAIL_BYTES); not taken"
EMPTY = "554 5.6.0 empty message; nothing delivered"
SMTP_LINE_LIMIT = LMTP.line_length_limit   # RFC 5321: 1000 octets + a stuffed dot


# --- recipient → queue -------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    queue: str
    action: str


_ACTION_SUFFIX = re.compile(r"[+-](%s)$" % "|".join(contracts.ACTIONS), re.IGNORECASE)


def route(address: str) -> Route | None:
    """The queue and action a RCPT address names (module docstring), or None when
    it names no queue."""
    local = address.rsplit("@", 1)[0]
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = local[1:-1]
    m = _ACTION_SUFFIX.search(local)
    queue_name, action = (local[:m.start()], m.group(1).lower()) if m else (local, "correspond")
    if not queue_name.strip():
        return None
    return Route(queue=queue_name, action=action)


# --- the broker side: one thread, one Publisher -----------------------------------------

class BrokerUnavailable(Exception):
    """The broker did not confirm the mail: a temporary failure."""


class Handover:
    """Publishes from asyncio through one ``Publisher`` living on a thread of its own
    (a daemon, so a publish stuck on a hung broker cannot hold up the exit). Jobs
    run one after the other; a job whose MTA was already told 451 (it waited past
    the timeout) is dropped unstarted. While idle, the thread answers the broker's
    heartbeats every few seconds."""

    def __init__(self, amqp_uri: str, timeout: float):
        self.timeout = timeout
        self._publisher = Publisher(amqp_uri, timeout, heartbeat=HEARTBEAT_SECONDS)
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def publish(self, raw: bytes, queue_name: str, action: str, envelope: dict | None = None) -> None:
        """Returns once the broker confirmed; raises BrokerUnavailable otherwise."""
        job: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, time.monotonic() + self.timeout, raw, queue_name, action, envelope))
        try:
            await asyncio.wait_for(asyncio.wrap_future(job), self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"no confirm within {self.timeout:g}s") from None
        except BrokerUnavailable:
            raise
        except Exception as exc:
            raise BrokerUnavailable(_describe(exc)) from exc

    async def close(self) -> None:
        """Finish the jobs queued so far, close the connection; gives up waiting
        after the timeout (the thread is a daemon)."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, self.timeout + 1)

    # --- on the publisher thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            self._publisher.connect()
        except Exception as exc:
            log.warning("broker not reachable yet (%s); mail gets 451 until it is", _describe(exc))
        connects = 0
        while True:
            if self._publisher.connects != connects:
                connects = self._publisher.connects
                log.info("connected to the broker%s", " again" if connects > 1 else "")
            try:
                item = self._jobs.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                self._publisher.keepalive()
                continue
            if item is None:
                break
            job, deadline, raw, queue_name, action, envelope = item
            if not job.set_running_or_notify_cancel():
                continue                      # its MTA got 451 while it waited
            try:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("waited too long behind earlier deliveries")
                self._publisher.publish(raw, queue_name, action, SOURCE, envelope=envelope)
            except BaseException as exc:
                job.set_exception(exc)
            else:
                job.set_result(None)
        self._publisher.close()


def _describe(exc: Exception) -> str:
    """A short reason for the 451 reply and the log."""
    import pika.exceptions as pe

    known = ((pe.UnroutableError, "unroutable"), (pe.NackError, "refused (nack)"),
             (pe.StreamLostError, "connection lost"), (pe.ConnectionClosed, "connection closed"),
             (pe.ChannelClosed, "channel closed"), (pe.AMQPConnectionError, "cannot connect"))
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    for kind, label in known:
        if isinstance(exc, kind):
            return f"{label}, {text}"
    return text


# --- the LMTP side ---------------------------------------------------------------------

class IntakeHandler:
    """aiosmtpd handler: checks recipients at RCPT, publishes once per distinct
    (queue, action) after DATA and answers each recipient."""

    def __init__(self, handover: Handover, max_bytes: int):
        self.handover = handover
        self.max_bytes = max_bytes
        self.busy = 0     # DATA transactions being published right now

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if route(address) is None:
            return f"550 5.1.1 <{address}>: no queue in the local part"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        if not raw or len(raw) > self.max_bytes:
            log.warning("%d bytes from %s, MAIL FROM <%s> to %s: refused (%s)", len(raw), session.peer,
                        envelope.mail_from, ", ".join(f"<{a}>" for a in rcpts), "empty" if not raw else "too big")
            reply = EMPTY if not raw else TOO_BIG.format(limit=self.max_bytes)
            return "\r\n".join([reply] * len(rcpts))
        sha = contracts.sha256_hex(raw)
        routes = [route(r) for r in rcpts]
        distinct = list(dict.fromkeys(routes))   # the same queue twice is one delivery
        self.busy += 1
        try:
            results = await asyncio.gather(*(self.handover.publish(raw, r.queue, r.action,
                                                                   delivery_envelope(session, envelope, r))
                                             for r in distinct),
                                           return_exceptions=True)
        finally:
            self.busy -= 1
        outcome = dict(zip(distinct, results))
        replies = []
        for r in routes:
            failure = outcome[r]
            if failure is None:
                replies.append(OK.format(queue=r.queue, action=r.action, sha=sha[:12]))
            else:
                replies.append(TEMPFAIL.format(queue=r.queue, why=_why(failure)))
        level = logging.INFO if all(v is None for v in results) else logging.WARNING
        log.log(level, "%s %d bytes from %s, MAIL FROM <%s>: %s", sha[:12], len(raw), session.peer,
                envelope.mail_from, "; ".join(f"<{a}> {reply[:3]} {reply[10:]}" for a, reply in zip(rcpts, replies)))
        return "\r\n".join(replies)


def delivery_envelope(session, envelope, for_route: Route) -> dict:
    """What the LMTP transaction tells about this delivery (envelope.py): the MAIL
    FROM, the recipients that named this queue and action, the client and its LHLO."""
    return envelopes.make(
        mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,    # "": the null sender
        rcpt_to=[r for r in envelope.rcpt_tos if route(r) == for_route],
        peer=envelopes.peer(session.peer),
        lhlo=session.host_name or None,
    )


def _why(failure: BaseException) -> str:
    text = str(failure) if isinstance(failure, BrokerUnavailable) else type(failure).__name__
    return text.replace("\r", " ").replace("\n", " ")[:200]


class IntakeLMTP(LMTP):
    """aiosmtpd's LMTP, corrected for RFC 2033 §4.2: when aiosmtpd itself answers
    the data (too much, a line past the reader's limit, a handler exception) it
    answers once, but an LMTP client waits for one reply per recipient; such a
    reply is repeated. The server also keeps a registry of its sessions, so that a
    stop can close them."""

    def __init__(self, handler, sessions: set, max_bytes: int, **kwargs):
        # lines longer than RFC 5321's 1000 octets are taken (evidence is kept as
        # sent); only the mail size limits them
        self.line_length_limit = max(SMTP_LINE_LIMIT, max_bytes + 2)
        super().__init__(handler, data_size_limit=max_bytes, **kwargs)
        self._sessions = sessions
        self._data_rcpts = 0
        self._max_bytes = max_bytes

    def connection_made(self, transport):
        super().connection_made(transport)
        self._sessions.add(self)

    def connection_lost(self, exc):
        self._sessions.discard(self)
        super().connection_lost(exc)

    async def smtp_DATA(self, arg):
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_rcpts = 0

    async def push(self, status):
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text.startswith("354") and self.envelope is not None:
            self._data_rcpts = len(self.envelope.rcpt_tos)      # the next reply ends the DATA
        elif self._data_rcpts:
            count, self._data_rcpts = self._data_rcpts, 0
            if text.startswith(("552 Error: Too much mail data", "500 Line too long")):
                text = TOO_BIG.format(limit=self._max_bytes)
            lines = text.split("\r\n")
            if len(lines) < count:          # aiosmtpd's own single reply: one per recipient
                lines = [lines[0]] * count
            status = "\r\n".join(lines)
        await super().push(status)

    def close_session(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- running it -------------------------------------------------------------------------

async def serve(host: str, port: int, amqp_uri: str, timeout: float, max_bytes: int,
                stop: asyncio.Event | None = None) -> None:
    """Listen until ``stop`` is set (or SIGTERM/SIGINT), then stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handover = Handover(amqp_uri, timeout)
    handler = IntakeHandler(handover, max_bytes)
    sessions: set[IntakeLMTP] = set()
    hostname = socket.gethostname()
    server = await loop.create_server(
        lambda: IntakeLMTP(handler, sessions, max_bytes, hostname=hostname, enable_SMTPUTF8=True, loop=loop),
        host=host, port=port, reuse_address=True)
    handover.start()
    log.info("listening on %s:%d (LMTP), publishing to %s", host, port, _safe_uri(amqp_uri))
    try:
        await stop.wait()
    finally:
        log.info("stopping: no new sessions; %d open, %d deliveries being published", len(sessions), handler.busy)
        server.close()
        deadline = loop.time() + timeout + 1
        while handler.busy and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(sessions):
            session.close_session()
        await server.wait_closed()
        await handover.close()
        log.info("stopped")


def _safe_uri(uri: str) -> str:
    """The broker URI without its password, for the log."""
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def main(argv: list[str] | None = None) -> int:
    from osprey.config import settings

    s = settings()
    parser = argparse.ArgumentParser(
        prog="osprey-lmtp", description="The LMTP intake listener: mail delivered over LMTP becomes Osprey intake.")
    parser.add_argument("--host", default=s.lmtp_host, help=f"address to listen on (default OSPREY_LMTP_HOST, {s.lmtp_host})")
    parser.add_argument("--port", type=int, default=s.lmtp_port, help=f"port (default OSPREY_LMTP_PORT, {s.lmtp_port})")
    parser.add_argument("--timeout", type=float, default=s.mailgate_timeout,
                        help=f"seconds to wait for the broker's confirm before answering 451 "
                             f"(default OSPREY_MAILGATE_TIMEOUT, {s.mailgate_timeout:g})")
    parser.add_argument("--amqp-uri", default=s.amqp_uri, help="broker URI (default: OSPREY_AMQP_URI)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK

    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd logs every command at INFO
    logging.getLogger("pika").setLevel(logging.CRITICAL)      # our own line says what failed
    try:
        asyncio.run(serve(args.host, args.port, args.amqp_uri, args.timeout, s.max_mail_bytes))
    except OSError as exc:
        print(f"osprey-lmtp: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EX_OSERR
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
