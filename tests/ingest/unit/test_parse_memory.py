"""Memory of parsing a big mail: parse_bytes and part_bytes without the stdlib's
whole-mail copies, held to give exactly what the stdlib gives (the parsed tree, the
decoded attachment bytes, whose sha256 tickets has stored), and the peak itself."""
from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from email.parser import BytesParser

import pytest

from osprey.testing import corpora_dir
from services.ingest import parse

CORPORA = corpora_dir()
FILES = sorted(p for d in ("flanker", "mimekit", "cpython-email", "smime-rfc4134") if (CORPORA / d).is_dir()
               for p in (CORPORA / d).rglob("*") if p.is_file() and p.stat().st_size < 4_000_000)


def test_parse_bytes_builds_the_tree_bytesparser_builds():
    compared = 0
    for path in FILES:
        raw = path.read_bytes()
        theirs = BytesParser(policy=parse._POLICY).parsebytes(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
        ours = parse.parse_bytes(raw)
        try:
            expected = parse._as_bytes(theirs)
        except RecursionError:            # nested too deep to write back (stack-overflow.txt)
            continue
        assert parse._as_bytes(ours) == expected, path
        assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects], path
        compared += 1
    assert compared > 250


def base64_leaves():
    for path in FILES:
        msg = parse.parse_bytes(path.read_bytes())
        for number, part in parse.walk_leaves(msg):
            if str(part.get("content-transfer-encoding", "")).lower() == "base64" and not part.is_multipart():
                yield f"{path.relative_to(CORPORA)}#{number}", part


def test_quick_base64_decoding_gives_get_payload_s_bytes_for_every_corpus_part():
    quick = 0
    for where, part in base64_leaves():
        ours = parse._plain_base64(part)
        if ours is not None:
            quick += 1
            assert ours == part.get_payload(decode=True), where
        assert parse.part_bytes(part) == part.get_payload(decode=True), where
    assert quick >= 30              # of 37 base64 parts in these corpora


def leaf(body: str) -> "parse.Message":
    raw = ("From: a@example.org\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
           + body).encode("utf-8")
    return parse.parse_bytes(raw)


@pytest.mark.parametrize("seed", range(300))
def test_quick_base64_decoding_agrees_on_odd_bodies(seed):
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 200))
    text = base64.b64encode(data).decode()
    width = rng.choice([4, 60, 76, 77, 1000])
    eol = rng.choice(["\n", "\r\n", "\r"])
    body = eol.join(text[i:i + width] for i in range(0, len(text), width)) + rng.choice(["", eol, eol * 2])
    mutation = rng.randrange(8)
    if mutation == 1 and body:                      # a stray character
        i = rng.randrange(len(body))
        body = body[:i] + rng.choice("!*- .\t\x00é") + body[i:]
    elif mutation == 2:                             # padding lost or doubled
        body = body.rstrip("=\r\n") if rng.random() < 0.5 else body + "=="
    elif mutation == 3 and len(body) > 3:           # cut short
        body = body[:rng.randrange(len(body))]
    elif mutation == 4:                             # padding inside
        i = rng.randrange(len(body) + 1)
        body = body[:i] + "=" + body[i:]
    part = leaf(body)
    ours = parse._plain_base64(part)
    if ours is not None:
        assert ours == part.get_payload(decode=True)
    assert parse.part_bytes(part) == part.get_payload(decode=True)
    if mutation == 0:
        assert ours == data


def test_a_big_mail_is_parsed_in_less_than_four_times_its_size(tmp_path):
    """Peak RSS growth while parse_mail takes a 20 MB mail apart, in a process of its
    own: it was 7.8 times the mail (BytesParser's whole-mail str and StringIO, then
    get_payload's copies), it is about 2.8 now."""
    script = tmp_path / "peak.py"
    script.write_text(
        "import base64, random, sys\n"
        "from services.ingest.parse import parse_mail\n"
        "payload = random.Random(1).randbytes(15_000_000)\n"
        "raw = (b'From: a@example.org\\nSubject: big\\nContent-Type: multipart/mixed; boundary=B\\n\\n'\n"
        "       b'--B\\nContent-Type: text/plain\\n\\nsee attached\\n--B\\nContent-Type: application/octet-stream\\n'\n"
        "       b'Content-Transfer-Encoding: base64\\n\\n' + base64.encodebytes(payload) + b'--B--\\n')\n"
        "def kib(field):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field + ':'))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kib('VmRSS')\n"
        "mail = parse_mail(raw, 1 << 20)\n"
        "assert mail.attachments[0]['size'] == len(payload)\n"
        "print(len(raw), (kib('VmHWM') - before) * 1024)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr.decode()
    size, grown = map(int, proc.stdout.split())
    assert size > 20_000_000
    assert grown < 4 * size, f"peak grew by {grown / size:.1f} times the mail"
