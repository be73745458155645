"""A real SMTP server for notify's tests (aiosmtpd on a free loopback port): it keeps
every mail it accepted, counts them by Message-ID, and can be told to answer a
coming DATA with a temporary or permanent refusal, refuse a recipient, or hold one
mail's DATA until released (to kill the client mid-conversation)."""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from osprey.broker import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str
    tls: bool
    auth: str | None

    @property
    def message(self):
        return email.parser.BytesParser(policy=email.policy.default).parsebytes(self.data)


@dataclass
class Sink:
    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)      # next DATA answers, e.g. "451 4.3.0 later"
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    hold_index: int | None = None     # hold the DATA of the n-th mail (0-based, counting DATA commands)
    data_seen: int = 0
    delay: float = 0.0                # seconds before answering each DATA

    def __post_init__(self):
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release: asyncio.Event | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.refuse_rcpt.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            index = self.data_seen
            self.data_seen += 1
            reply = self.data_replies.pop(0) if self.data_replies else None
        if self.hold_index is not None and index == self.hold_index:
            self.release = asyncio.Event()
            self.held.set()
            await self.release.wait()        # cancelled when the client goes away
        if self.delay:
            await asyncio.sleep(self.delay)
        if reply:
            return reply
        data = envelope.original_content or envelope.content
        m = re.search(rb"^Message-ID:\s*(<[^>]+>)", data, re.IGNORECASE | re.MULTILINE)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data,
                                          m.group(1).decode() if m else "", session.ssl is not None,
                                          getattr(session, "auth_data", None) and session.auth_data.login.decode()))
        return "250 2.0.0 queued"

    def by_message_id(self) -> Counter:
        with self.lock:
            return Counter(r.message_id for r in self.received)

    def wait(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"the SMTP server got {len(self.received)} mail(s), not {count}, in {timeout}s")


class SmtpServer:
    """``with SmtpServer() as smtp:`` … ``smtp.port``, ``smtp.sink``."""

    def __init__(self, tls_dir: Path | None = None, users: dict | None = None):
        self.sink = Sink()
        self.port = free_port()
        kwargs = {}
        self.cafile = None
        if tls_dir is not None:
            import ssl
            cert, key = make_certificate(tls_dir)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            kwargs.update(tls_context=ctx, require_starttls=True)
            self.cafile = str(cert)
        if users is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and users.get(auth_data.login.decode()) == \
                    auth_data.password.decode()
                return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
            kwargs.update(authenticator=authenticator, auth_require_tls=tls_dir is not None)
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.sink.release is not None:
            self.controller.loop.call_soon_threadsafe(self.sink.release.set)
        self.controller.stop()

    def release(self):
        self.controller.loop.call_soon_threadsafe(self.sink.release.set)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (openssl req)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
