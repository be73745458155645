"""Small total versions of stdlib helpers that real mail can make fail.

- ``parseaddr`` / ``getaddresses``: ``email.utils``' legacy address parser recurses
  once per group opened inside a group ("a: b: c: …"), so a header with about a
  thousand colons (encoded words full of times of day, say) raises RecursionError.
  Such a header names nobody usable; it stays whole in the raw mail.
- ``text``: what ingest hands on must be valid Unicode (tickets stores it in SQLite,
  which refuses lone surrogates). The parser keeps undecodable bytes as surrogate
  escapes, and some codecs (UTF-7) decode to lone surrogates.
"""
from __future__ import annotations

import re
from email import utils

_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")   # all but the escapes of bytes 0x80-0xff


def parseaddr(value: str) -> tuple[str, str]:
    """(name, address); ("", "") when there is none, as ``email.utils.parseaddr``."""
    try:
        return utils.parseaddr(value)
    except RecursionError:
        return "", ""


def getaddresses(values: list[str]) -> list[tuple[str, str]]:
    try:
        return utils.getaddresses(values)
    except RecursionError:
        return []


def text(value: str) -> str:
    """``value`` as valid Unicode: escaped bytes read as UTF-8 (as ``policy.default``
    reads a header with 8-bit bytes), anything undecodable as U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    value = _LONE_SURROGATE.sub("\ufffd", value)
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
