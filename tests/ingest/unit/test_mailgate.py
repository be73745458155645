"""The mailgate's light hot path, held to what it stands in for: its command-line
reading to argparse's, its settings to osprey.config's, its JSON to the json
module's, its timestamp to datetime's, its AMQP URI reading to pika's; and what it
imports, to the short list that keeps a run under 45 CPU-ms."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pika
import pytest

from osprey import config, contracts
from services.ingest import amqp_lite, envelope, headers, mailgate

# --- the command line --------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [],
    ["--queue", "abuse"],
    ["--queue=abuse", "--action=comment"],
    ["--action", "comment", "--ticket", "42"],
    ["--extension", "queue"],
    ["--sender=", "--recipient=abuse@example.org"],               # a bounce: the null sender
    ["--sender", "bounce@example.net", "--recipient", "a@example.org", "--recipient=b@example.org"],
    ["--client-address=2001:db8::25", "--timeout", "2.5", "--amqp-uri", "amqp://u:p@h:1/v"],
    ["--queue", "x=y"],                                            # a value with "="
])
def test_quick_reading_of_the_command_line_is_argparse_s(argv):
    quick = mailgate.quick_args(argv, "amqp://default/", 30.0)
    assert quick is not None
    assert vars(quick) == vars(mailgate.parser("amqp://default/", 30.0).parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["--help"], ["-h"], ["--bogus"], ["--queue"], ["--action", "forward"], ["--ticket", "x"],
    ["--que", "abuse"],                # an abbreviation: argparse's business
    ["--sender", "-"], ["general"],
])
def test_anything_else_goes_to_argparse(argv):
    assert mailgate.quick_args(argv, "amqp://default/", 30.0) is None


def test_the_mailgate_knows_every_action_and_option():
    assert mailgate.ACTIONS == contracts.ACTIONS
    options = {a.option_strings[-1] for a in mailgate.parser("u", 1.0)._actions if a.option_strings != ["-h", "--help"]}
    assert options == set(mailgate.OPTIONS)


# --- settings ------------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    {},
    {"OSPREY_BROKER_PORT": "5999"},
    {"OSPREY_AMQP_URI": "amqp://u:p@broker.example:5672/osprey", "OSPREY_BROKER_PORT": "5999"},
    {"OSPREY_MAILGATE_TIMEOUT": "2.5", "OSPREY_MAX_MAIL_BYTES": "1000"},
])
def test_settings_are_read_as_osprey_config_reads_them(monkeypatch, env):
    for name in ("OSPREY_AMQP_URI", "OSPREY_BROKER_PORT", "OSPREY_MAILGATE_TIMEOUT", "OSPREY_MAX_MAIL_BYTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = config.settings()
    assert mailgate._settings() == (s.amqp_uri, s.mailgate_timeout, s.max_mail_bytes)


# --- what it imports ---------------------------------------------------------------------

def test_a_delivery_imports_no_heavy_module(tmp_path):
    """The modules whose import made a run cost 124 CPU-ms stay out of the hot path
    (measured: osprey.config 12 ms, argparse and what it pulls 7, pika 67, json 1.5,
    datetime 1.4, socket 3.5)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "from services.ingest import mailgate, amqp_lite\n"
        "published = []\n"
        "amqp_lite.publish = lambda *a, **k: published.append(a)\n"
        "code = mailgate.main(['--queue', 'general', '--sender=a@example.net', '--recipient=b@example.org'])\n"
        "assert code == 0 and len(published) == 1, (code, published)\n"
        "heavy = {'osprey.config', 'argparse', 'pika', 'json', 'datetime', 'socket', 'ssl', 'dataclasses',\n"
        "         'nameko', 'kombu', 'sqlalchemy', 'shutil', 'locale', 'encodings.idna', 'asyncio'}\n"
        "print(sorted(heavy & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, str(probe)], input=b"From: a@example.net\n\nx\n", capture_output=True,
                          cwd=os.getcwd(), env={**os.environ, "OSPREY_AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "[]"


# --- the envelope ----------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    {"mail_from": "", "rcpt_to": ["abuse@example.org"]},
    {"mail_from": 'a"b\\c\n\t\x01@example.net', "client_address": "192.0.2.7"},
    {"mail_from": "jörg@bücher.example", "rcpt_to": ["😀@example.org", "x@example.org"]},
    {"account": "abuse", "mailbox": "imap://u@h:993/INBOX", "uid": 17, "uidvalidity": 1732540000},
    {"mail_from": "\udcff-undecodable-byte@example.net"},      # argv with a non-UTF-8 byte
    {},
])
def test_envelope_json_is_the_json_module_s(env):
    text = envelope.encode(env)
    assert text == json.dumps(env, separators=(",", ":"), sort_keys=True)
    assert text.isascii()
    assert envelope.decode(text) == json.loads(text)


def test_make_leaves_out_what_is_unknown_and_bounds_the_rest():
    assert envelope.make(mail_from=None, rcpt_to=[], client_address=None) == {}
    assert envelope.make(mail_from="", rcpt_to=["a@x"]) == {"mail_from": "", "rcpt_to": ["a@x"]}
    many = envelope.make(rcpt_to=[f"r{i}@example.org" for i in range(250)], mail_from="x" * 5000)
    assert (len(many["rcpt_to"]), many["rcpt_to_count"], len(many["mail_from"])) == (100, 250, 1000)


@pytest.mark.parametrize("value, expected", [
    (None, None),
    (b'{"mail_from":"a@b"}', {"mail_from": "a@b"}),
    ('{"mail_from":"a@b"}', {"mail_from": "a@b"}),
    ({"mail_from": b"a@b"}, {"mail_from": "b'a@b'"}),        # an AMQP table from another client
    ("not json", {"unreadable": "not json"}),
    ("[1, 2]", {"unreadable": "[1, 2]"}),
    ("x" * 70000, {"unreadable": "70000 characters, over 65536"}),
])
def test_decode_never_raises(value, expected):
    assert envelope.decode(value) == expected


@pytest.mark.parametrize("address, expected", [
    (("127.0.0.1", 4242), "127.0.0.1:4242"), (("::1", 4242, 0, 0), "[::1]:4242"), (None, None)])
def test_peer(address, expected):
    assert envelope.peer(address) == expected


# --- the intake message's headers ----------------------------------------------------------

def test_received_timestamp_is_datetime_s_isoformat():
    for t in (0.0, 1.25, 1764087269.916251, 1764087269.9999996, 1764087270.0):
        assert headers.utc_iso(t) == datetime.fromtimestamp(t, timezone.utc).isoformat()


def test_intake_headers_carry_the_envelope_only_when_there_is_one():
    raw = b"From: a@example.net\n\nx\n"
    plain = headers.intake_headers(raw, "general", "correspond", "mailgate")
    assert set(plain) == {contracts.H_QUEUE, contracts.H_ACTION, contracts.H_SOURCE, contracts.H_SHA256,
                          contracts.H_RECEIVED}
    assert plain[contracts.H_SHA256] == contracts.sha256_hex(raw)
    full = headers.intake_headers(raw, "general", "comment", "mailgate", ticket=7, envelope={"mail_from": ""})
    assert (full[contracts.H_TICKET], full[envelope.H_ENVELOPE]) == ("7", '{"mail_from":""}')


# --- the broker URI ------------------------------------------------------------------------

@pytest.mark.parametrize("uri", [
    "amqp://guest:guest@127.0.0.1:5673/",
    "amqp://guest:guest@127.0.0.1:5673",
    "amqp://osprey:s%40cret%2F@broker.example/osprey",
    "amqp://u:p@broker.example:5672/%2F",
    "amqp://broker.example",
    "amqps://u:p@broker.example/vh",
    "amqp://u:p@[::1]:5673/",
])
def test_uri_is_read_as_pika_reads_it(uri):
    ours = amqp_lite.parse_uri(uri)
    theirs = pika.URLParameters(uri)
    assert amqp_lite.supports(uri)
    assert (ours["host"], ours["port"], ours["vhost"], ours["user"], ours["password"], ours["tls"]) == (
        theirs.host, theirs.port, theirs.virtual_host, theirs.credentials.username, theirs.credentials.password,
        theirs.ssl_options is not None)


@pytest.mark.parametrize("uri", ["amqps://u:p@h/?cafile=/etc/ca.pem", "amqp://h/?heartbeat=10", "http://h/",
                                 "amqp://h:notaport/", "amqp:///"])
def test_uris_with_options_are_left_to_pika(uri):
    assert not amqp_lite.supports(uri)


def test_frames_and_tables_are_encoded_as_the_spec_says():
    assert amqp_lite.shortstr("abc") == b"\x03abc"
    assert amqp_lite.longstr("abc") == b"\x00\x00\x00\x03abc"
    assert amqp_lite.table({"a": "b", "t": True, "n": {"x": "y"}}) == (
        b"\x00\x00\x00\x1b" b"\x01aS\x00\x00\x00\x01b" b"\x01tt\x01" b"\x01nF\x00\x00\x00\x08\x01xS\x00\x00\x00\x01y")
    # a headers table as pika writes it
    sample = {"x-osprey-queue": "général", "x-osprey-envelope": '{"mail_from":""}'}
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, sample)
    assert amqp_lite.table(sample) == b"".join(pieces)
    assert amqp_lite.method_frame(1, (20, 10), b"\x00") == b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x0a\x00\xce"
    with pytest.raises(amqp_lite.AMQPError):
        amqp_lite.shortstr("q" * 256)


def test_a_closed_port_is_an_os_error():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OSError):
        amqp_lite.publish(f"amqp://guest:guest@127.0.0.1:{port}/", 5, "q", b"x", {}, "application/data", "binary")
