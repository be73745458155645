"""services/crypto/mime.py: MIME on the exact bytes. Its tree must be the one the
stdlib (and so ingest) sees, or a verdict could describe a different mail than the
one displayed: checked on every sample mail of the corpora."""
from __future__ import annotations

import time
from email import policy
from email.parser import BytesParser

import pytest

from osprey.testing import corpora_dir
from services.crypto import mime

CORPORA = corpora_dir()
FOLDERS = ("cpython-email", "flanker", "mimekit/messages", "mimekit/smime", "mimekit/openpgp", "mimekit/partial",
           "mimekit/dkim", "mimekit/mbox", "ripe-ncc-whois/testMail", "smime-rfc4134")
SKIP = (".pem", ".pfx", ".key", ".cfg", ".tnef", ".list", ".crt", ".cnf", ".pub", ".gpg", ".sec", ".conf", ".dat",
        ".bin", ".cer", ".pri", ".crl", ".json", ".md", ".tinydns", ".bind9")


def samples():
    out = []
    for folder in FOLDERS:
        for path in sorted((CORPORA / folder).rglob("*")):
            if path.is_file() and not path.name.endswith(SKIP) and path.name != "PROVENANCE.md":
                out.append(path)
    return out


def stdlib_leaves(raw: bytes) -> list[tuple[str, str]]:
    out = []

    def walk(m, prefix=""):
        if m.is_multipart() and m.get_content_maintype() == "multipart":
            for i, sub in enumerate(m.get_payload(), start=1):
                walk(sub, f"{prefix}{i}." if prefix else f"{i}.")
            return
        out.append((prefix[:-1] if prefix else "1", m.get_content_type()))
    walk(BytesParser(policy=policy.compat32).parsebytes(raw))
    return out


def test_same_tree_as_the_stdlib_on_every_sample():
    files = samples()
    assert len(files) > 150
    differ = []
    for path in files:
        raw = path.read_bytes()
        ours = [(num, ent.content_type) for num, ent in mime.leaves(mime.parse(raw))]
        if ours != stdlib_leaves(raw):
            differ.append(path.name)
    assert differ == []


@pytest.mark.parametrize("raw,expected", [
    (b"A: b\r\nC: d\r\n\r\nbody", (b"A: b\r\nC: d\r\n", b"body")),
    (b"\r\nbody only", (b"", b"body only")),
    (b"A: b\nnot a header line\nmore", (b"A: b\n", b"not a header line\nmore")),
    (b"A: b\n", (b"A: b\n", b"")),
    (b"From x@y Mon\nA: b\n\nbody", (b"From x@y Mon\nA: b\n", b"body")),
])
def test_header_and_body(raw, expected):
    ent = mime.parse(raw)
    assert (ent.header, ent.body) == expected
    assert ent.raw == raw


def test_multipart_parts_keep_their_exact_bytes():
    raw = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\npreamble\r\n--x\r\nContent-Type: text/plain\r\n\r\n"
           b"hello  \r\n\r\n--x \r\n\r\nno header part\r\n--x--\r\nepilogue")
    ent = mime.parse(raw)
    assert [c.raw for c in ent.children] == [b"Content-Type: text/plain\r\n\r\nhello  \r\n",
                                            b"\r\nno header part"]
    assert mime.canonical(b"a\nb\r\nc") == b"a\r\nb\r\nc"


def test_deep_and_large_mail_is_parsed_without_copies_per_level():
    body = b"x" * (8 * 1024 * 1024)
    raw = b"Content-Type: text/plain\r\n\r\n" + body
    for i in range(mime.MAX_DEPTH + 5):
        raw = f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode() + raw + f"\r\n--b{i}--\r\n".encode()
    t = time.monotonic()
    ent = mime.parse(raw)
    assert time.monotonic() - t < 10
    depth = 0
    while ent.children:
        assert ent.buf is not None and ent.children[0].buf is ent.buf      # one buffer, offsets only
        ent = ent.children[0]
        depth += 1
    assert depth == mime.MAX_DEPTH
