"""Delivery to the configured SMTP relay, and what each answer means.

``Relay.session()`` opens one conversation (connect, EHLO, STARTTLS or implicit TLS,
AUTH) that sends several mails in turn; ``Conversation.send`` classifies the answer:
accepted recipients, recipients refused for now (4xx) or for good (5xx), or a failure
of the whole mail (``TemporaryFailure``: 4xx, timeout, lost connection, TLS or AUTH
trouble — a configuration problem is worth retrying once it is fixed;
``PermanentFailure``: 5xx to the sender or the data).
"""
from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)
    temporary: dict[str, str] = field(default_factory=dict)   # recipient -> reason
    permanent: dict[str, str] = field(default_factory=dict)


def _reason(code, msg) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return f"{code} {' '.join(text.split())}"


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    security: str = "none"          # none | starttls | tls
    cafile: str = ""
    user: str = ""
    password: str = ""
    timeout: float = 30.0
    local_hostname: str | None = None

    @classmethod
    def from_settings(cls, s) -> "Relay":
        return cls(s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_cafile, s.smtp_user, s.smtp_password,
                   s.smtp_timeout, s.mail_domain or None)

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile or None)

    def session(self) -> "Conversation":
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                        local_hostname=self.local_hostname, context=self._tls())
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname)
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise TemporaryFailure(f"{self.host}:{self.port} offers no STARTTLS (OSPREY_SMTP_SECURITY=starttls)")
                conn.starttls(context=self._tls())
                conn.ehlo()
            if self.user:
                conn.login(self.user, self.password)
        except TemporaryFailure:
            raise
        except smtplib.SMTPResponseException as exc:
            raise TemporaryFailure(f"relay {self.host}:{self.port}: {_reason(exc.smtp_code, exc.smtp_error)}") from None
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise TemporaryFailure(f"relay {self.host}:{self.port}: {type(exc).__name__}: {exc}") from None
        return Conversation(conn)


class Conversation:
    def __init__(self, conn: smtplib.SMTP):
        self.conn = conn
        self.broken = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            if not self.broken:
                self.conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            try:
                self.conn.close()
            except OSError:
                pass

    def send(self, mail_from: str, recipients: list[str], data: bytes, eight_bit: bool = False) -> Outcome:
        options = ["BODY=8BITMIME"] if eight_bit and self.conn.has_extn("8bitmime") else []
        try:
            refused = self.conn.sendmail(mail_from, recipients, data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            out = Outcome()
            for rcpt, (code, msg) in exc.recipients.items():
                (out.permanent if 500 <= code < 600 else out.temporary)[rcpt] = _reason(code, msg)
            return out
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            reason = _reason(exc.smtp_code, exc.smtp_error)
            if 500 <= exc.smtp_code < 600:
                raise PermanentFailure(reason) from None
            raise TemporaryFailure(reason) from None
        except smtplib.SMTPResponseException as exc:
            self.broken = exc.smtp_code == 421
            raise TemporaryFailure(_reason(exc.smtp_code, exc.smtp_error)) from None
        except (OSError, socket.timeout, smtplib.SMTPException) as exc:
            # lost connection or timeout: whether the relay took the mail is unknown
            # only if DATA's answer was lost (the documented duplicate window)
            self.broken = True
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from None
        out = Outcome()
        for rcpt in recipients:
            if rcpt in refused:
                code, msg = refused[rcpt]
                (out.permanent if 500 <= code < 600 else out.temporary)[rcpt] = _reason(code, msg)
            else:
                out.accepted.append(rcpt)
        return out
