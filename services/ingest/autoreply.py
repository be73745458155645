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
    out = {"automatic": bool(reasons), "reasons": reasons, "bounce": bounce, "bounce_of": bounce_of}
    if bounce:
        out["failed_recipients"] = _failed_recipients(msg)
    return out


def _failed_recipients(report: Message) -> list[dict]:
    """The recipients a delivery status notification reports as failed (RFC 3464: the
    per-recipient fields of its message/delivery-status part, Action: failed)."""
    failed = []
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        try:
            blocks = part.get_payload()
            if isinstance(blocks, str):     # some MTAs send it unparsed: split it into field blocks
                blocks = [BytesHeaderParser().parsebytes(b.encode("utf-8", "replace"))
                          for b in blocks.replace("\r\n", "\n").split("\n\n") if b.strip()]
            for block in blocks if isinstance(blocks, list) else []:
                action = _get(block, "Action").lower()
                recipient = _get(block, "Final-Recipient") or _get(block, "Original-Recipient")
                if action == "failed" and recipient:
                    address = recipient.split(";", 1)[-1].strip().strip("<>")
                    failed.append({"address": address[:320], "status": _get(block, "Status")[:20],
                                   "diagnostic": _get(block, "Diagnostic-Code")[:500]})
        except Exception:
            continue
    return failed[:100]


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

