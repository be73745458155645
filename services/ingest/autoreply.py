"""Is this mail automatic? (RFC 3834 and the de-facto headers.) Such mail is
recorded with the reasons and never answered automatically; a delivery status
notification also names the mail that bounced, so it can join that mail's ticket."""
from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesHeaderParser

from .safe import parseaddr, text

LOOP_HEADER = "X-Osprey-Loop"   # set on every mail Osprey sends (notify)
_DAEMONS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailer_daemon)$", re.IGNORECASE)


def _get(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
        return "" if value is None else text(str(value)).strip()
    except Exception:
        return ""


def classify(msg: Message) -> dict:
    """{"automatic": bool, "reasons": [...], "bounce": bool, "bounce_of": Message-ID or None}."""
    reasons = []
    auto_submitted = _get(msg, "Auto-Submitted").lower()
    if auto_submitted and auto_submitted != "no":
        reasons.append(f"Auto-Submitted: {auto_submitted}")
    precedence = _get(msg, "Precedence").lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        reasons.append(f"Precedence: {precedence}")
    if _get(msg, "X-Auto-Response-Suppress"):
        reasons.append("X-Auto-Response-Suppress")
    if _get(msg, "List-Id"):
        reasons.append("List-Id")
    if _get(msg, LOOP_HEADER) or _get(msg, "X-Loop"):
        reasons.append("loop header")
    return_path = _get(msg, "Return-Path")
    if return_path and parseaddr(return_path)[1] == "" and "<>" in return_path.replace(" ", ""):
        reasons.append("null sender")
    local = parseaddr(_get(msg, "From"))[1].split("@")[0]
    if _DAEMONS.match(local):
        reasons.append("mailer daemon")
    bounce, bounce_of = False, None
    if msg.get_content_type() == "multipart/report" and \
            (msg.get_param("report-type") or "").lower() == "delivery-status":
        bounce = True
        reasons.append("delivery status notification")
        bounce_of = _original_message_id(msg)
    return {"automatic": bool(reasons), "reasons": reasons, "bounce": bounce, "bounce_of": bounce_of}


def _original_message_id(report: Message) -> str | None:
    """The Message-ID of the returned mail: its headers are the third part
    (text/rfc822-headers or message/rfc822) of a multipart/report."""
    for part in report.walk():
        ctype = part.get_content_type()
        try:
            if ctype == "message/rfc822":
                inner = part.get_payload()
                inner = inner[0] if isinstance(inner, list) and inner else inner
                mid = _get(inner, "Message-ID") if isinstance(inner, Message) else ""
            elif ctype == "text/rfc822-headers":
                payload = part.get_payload(decode=True) or b""
                mid = _get(BytesHeaderParser().parsebytes(payload), "Message-ID")
            else:
                continue
        except Exception:
            continue
        if mid:
            return mid
    return None

