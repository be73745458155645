"""The delivery envelope, kept as evidence: what the intake front end knew about a
mail besides its bytes. It travels in one AMQP header of the intake message, a JSON
object, and is stored on the intake ledger row (``Intake.envelope``); the intake
RPCs (``intake_status``, ``list_intake``) show it.

Keys, by front end (all optional; a front end sends what it knows):

* ``osprey-mailgate``: ``mail_from`` (the envelope sender; "" is the null sender
  ``<>`` of a bounce), ``rcpt_to`` (list), ``client_address`` (the SMTP client that
  handed the mail to the MTA) — from ``--sender``, ``--recipient``,
  ``--client-address``, which an MTA fills in (docs/intake.md);
* ``osprey-lmtp``: ``mail_from``, ``rcpt_to`` (the recipients that named this queue
  and action), ``peer`` (``address:port`` of the LMTP client, i.e. the MTA),
  ``lhlo`` (the name it gave);
* ``osprey-poller``: ``account``, ``mailbox`` (``imap://user@host:port/folder`` or
  ``pop3://user@host:port``), ``folder``, ``uid`` and ``uidvalidity`` (IMAP) or
  ``uidl`` (POP3).

The mailgate imports this module on its hot path (a process per mail), so it
imports nothing at the top: ``encode`` writes the JSON itself (``json`` costs 1.5
CPU-ms to import), ``decode`` (ingest) uses ``json``.
"""
from __future__ import annotations

# The AMQP header that carries the envelope: contracts.H_ENVELOPE, repeated here because the
# mailgate must not pay for importing osprey.contracts (a test keeps the two equal).
H_ENVELOPE = "x-osprey-envelope"

MAX_TEXT = 1000          # characters kept of one value (an address, a host name)
MAX_LIST = 100           # items kept of a list (recipients); the count is kept too
MAX_HEADER = 64 * 1024   # a larger header is not read (it is no envelope we made)


def make(**fields) -> dict:
    """An envelope of the given fields, None/empty lists left out, bounded in size."""
    out: dict = {}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            items = [_bounded(v) for v in value[:MAX_LIST]]
            out[key] = items
            if len(value) > MAX_LIST:
                out[f"{key}_count"] = len(value)
        else:
            out[key] = _bounded(value)
    return out


def _bounded(value):
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    return str(value)[:MAX_TEXT]


def encode(envelope: dict) -> str:
    """The header value: compact JSON, keys sorted, non-ASCII escaped (so any AMQP
    client can carry it) — what ``json.dumps(envelope, separators=(",", ":"),
    sort_keys=True)`` writes, for the values ``make`` keeps (strings, numbers,
    booleans, lists of those)."""
    return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in sorted(envelope.items())) + "}"


_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 ord("\b"): "\\b", ord("\f"): "\\f"})


def _json(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(v) for v in value) + "]"
    text = str(value).translate(_ESCAPES)
    if not text.isascii():
        text = "".join(c if ord(c) < 0x80 else _escape_non_ascii(c) for c in text)
    return f'"{text}"'


def _escape_non_ascii(c: str) -> str:
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000          # a UTF-16 surrogate pair, as JSON writes characters past the BMP
    return f"\\u{0xd800 | (code >> 10):04x}\\u{0xdc00 | (code & 0x3ff):04x}"


def decode(value) -> dict | None:
    """The envelope from a header value; None when there is none. A value that is no
    JSON object is kept as text under ``unreadable`` (evidence, not a crash)."""
    import json

    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):           # an AMQP table, from a client that sent one
        return json.loads(json.dumps(value, default=str))
    text = str(value)
    if len(text) > MAX_HEADER:
        return {"unreadable": f"{len(text)} characters, over {MAX_HEADER}"}
    try:
        found = json.loads(text)
    except ValueError:
        return {"unreadable": text[:MAX_TEXT]}
    return found if isinstance(found, dict) else {"unreadable": text[:MAX_TEXT]}


def peer(address) -> str | None:
    """``host:port`` (``[v6]:port``) of a socket peer as asyncio gives it."""
    if isinstance(address, (list, tuple)) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if address is None else str(address)
