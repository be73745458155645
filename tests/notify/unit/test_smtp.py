"""The relay conversation: STARTTLS with a verified certificate and AUTH, against a
real aiosmtpd server; what each kind of failure is."""
from __future__ import annotations

import pytest

from osprey.broker import free_port
from services.notify.smtp import PermanentFailure, Relay, TemporaryFailure

from ..smtpd import SmtpServer

MAIL = b"From: a@csirt.example\r\nTo: b@isp.example\r\nMessage-ID: <tls1@csirt.example>\r\nSubject: x\r\n\r\nhi\r\n"


def test_starttls_and_auth(tmp_path):
    with SmtpServer(tls_dir=tmp_path / "tls", users={"osprey": "s3cret-pw"}) as smtp:
        relay = Relay("127.0.0.1", smtp.port, security="starttls", cafile=smtp.cafile, user="osprey",
                      password="s3cret-pw", timeout=5)
        with relay.session() as conv:
            out = conv.send("a@csirt.example", ["b@isp.example"], MAIL)
        assert out.accepted == ["b@isp.example"]
        [got] = smtp.sink.received
        assert (got.tls, got.auth, got.message_id) == (True, "osprey", "<tls1@csirt.example>")

        wrong = Relay("127.0.0.1", smtp.port, security="starttls", cafile=smtp.cafile, user="osprey",
                      password="wrong", timeout=5)
        with pytest.raises(TemporaryFailure, match="535"):
            wrong.session()
        untrusted = Relay("127.0.0.1", smtp.port, security="starttls", timeout=5)   # system CAs only
        with pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.session()


def test_starttls_required_but_not_offered():
    with SmtpServer() as smtp:
        with pytest.raises(TemporaryFailure, match="offers no STARTTLS"):
            Relay("127.0.0.1", smtp.port, security="starttls", timeout=5).session()


def test_nobody_listening_is_temporary():
    with pytest.raises(TemporaryFailure, match="ConnectionRefused"):
        Relay("127.0.0.1", free_port(), timeout=2).session()


def test_refusals():
    with SmtpServer() as smtp:
        smtp.sink.data_replies = ["550 5.7.1 no", "451 4.7.1 later"]
        with Relay("127.0.0.1", smtp.port, timeout=5).session() as conv:
            with pytest.raises(PermanentFailure, match="550 5.7.1 no"):
                conv.send("a@csirt.example", ["b@isp.example"], MAIL)
            with pytest.raises(TemporaryFailure, match="451 4.7.1 later"):
                conv.send("a@csirt.example", ["b@isp.example"], MAIL)
            smtp.sink.refuse_rcpt = {"b@isp.example": "550 5.1.1 unknown"}
            out = conv.send("a@csirt.example", ["b@isp.example"], MAIL)
            assert (out.accepted, out.permanent) == ([], {"b@isp.example": "550 5.1.1 unknown"})
