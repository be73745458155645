#!/usr/bin/env python3
"""Fuzz the parse-and-store path of ingest with atheris (libFuzzer for Python).

Per input, the path a mail takes through ingest, minus the RPC to tickets:

1. ``RawStore.put`` then ``get``: the stored bytes are exactly the input;
2. ``pipeline.receive`` into a real SQLite intake ledger (Alembic-migrated, as the
   service makes it), committed;
3. the ``parse`` step (``parse_mail``; ``Unparseable`` → ``Quarantine`` is an allowed
   outcome, any other exception is a crash) and the ``thread`` step (followup's
   ticket_tag / referenced_ids / external_refs / sender_domain / content_hash), the
   ledger row updated and committed as ``pipeline.process`` does;
4. what ``deliver`` would send is valid UTF-8 JSON (nameko's wire, tickets' SQLite);
5. ``parse.get_part`` for every attachment listed returns the bytes the listing
   describes (same size and sha256): a download gives what the ticket shows;
6. ``gateway.sanitize.clean_html`` on the HTML body.

Any exception that escapes is a crash; an input that takes longer than
``-timeout`` seconds (10 unless given) is a hang, and the process growing past
``-rss_limit_mb`` (2048 unless given) an out-of-memory crash. Usage::

    .venv/bin/python fuzz/fuzz_ingest.py -max_total_time=600     # or: make fuzz
    .venv/bin/python fuzz/fuzz_ingest.py var/fuzz/artifacts/crash-…   # replay one input

Without corpus arguments it works in ``var/fuzz`` (gitignored): ``seeds/`` is rebuilt
on every run from the mail corpora in /work/shared/corpora (OSPREY_FUZZ_CORPORA),
files of at most 1 MiB; ``corpus/`` keeps what the fuzzer found interesting between
runs; crashes and hangs land in ``artifacts/``. Nothing is copied into the repository.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Coverage feedback from our code and from the stdlib email package that does the
# parsing (imported here first, so it is instrumented; nothing imported it before).
with atheris.instrument_imports(include=["email", "services", "gateway", "osprey"]):
    import email.parser  # noqa: F401
    import email.policy  # noqa: F401
    import email.headerregistry  # noqa: F401
    import email._header_value_parser  # noqa: F401
    import email.contentmanager  # noqa: F401
    import email.utils  # noqa: F401
    from gateway.sanitize import clean_html
    from osprey import contracts
    from osprey.testing import corpora_dir
    from osprey.db import make_engine, prepare
    from services.ingest import followup, pipeline
    from services.ingest.models import MIGRATIONS, Intake
    from services.ingest.parse import get_part
    from services.ingest.rawstore import RawStore

from sqlalchemy.orm import sessionmaker  # noqa: E402

CORPORA = Path(os.environ["OSPREY_FUZZ_CORPORA"]) if os.environ.get("OSPREY_FUZZ_CORPORA") else corpora_dir()
SEED_SOURCES = ("cpython-email", "flanker", "mimekit", "smime-rfc4134", "ripe-ncc-whois/testMail")
SEED_MAX_BYTES = 1024 * 1024
WORKDIR = ROOT / "var" / "fuzz"
TICKET_TAG = "Osprey"                 # the default OSPREY_TICKET_TAG
MAX_BODY_CHARS = 1024 * 1024          # the default OSPREY_MAX_BODY_CHARS
HANG_SECONDS = 10                     # one input taking longer is a hang
RSS_LIMIT_MB = 2048                   # the process growing past this is a crash (OOM)

_store: RawStore | None = None
_session = None


def build_seeds(dest: Path) -> int:
    """A fresh seed folder from the corpora: every regular file up to 1 MiB, named by
    its sha256 (so one content is one seed). Returns the number of seeds."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for source in SEED_SOURCES:
        base = CORPORA / source
        if not base.is_dir():
            print(f"fuzz_ingest: no corpus at {base}, skipped", file=sys.stderr)
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.is_symlink() and 0 < path.stat().st_size <= SEED_MAX_BYTES:
                data = path.read_bytes()
                (dest / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return sum(1 for _ in dest.iterdir())


def setup_targets(scratch: Path) -> None:
    """The raw store and the intake ledger, made once per fuzzing process."""
    global _store, _session
    _store = RawStore(scratch / "raw")
    engine = make_engine(f"sqlite:///{scratch / 'ingest.db'}")
    prepare(engine, MIGRATIONS)
    _session = sessionmaker(bind=engine, expire_on_commit=False)()


def test_one_input(raw: bytes) -> None:
    store, session = _store, _session
    # 1. the raw store keeps the exact bytes
    sha256 = store.put(raw)
    if sha256 != hashlib.sha256(raw).hexdigest():
        raise AssertionError(f"put named the blob {sha256}, not by its sha256")
    if store.get(sha256) != raw:
        raise AssertionError("the raw store returned other bytes than were put")
    if store.put(raw) != sha256:
        raise AssertionError("putting the same bytes again gave another name")

    try:
        # 2. durable intake: blob + ledger row, committed
        intake, _new = pipeline.receive(session, store, pipeline.Delivery(raw, "general", "correspond", "fuzz"))
        if session.get(Intake, contracts.intake_id(sha256, "general", "correspond")) is not intake:
            raise AssertionError("the ledger has no row for the delivery")
        ctx = pipeline.Context(intake=intake, raw=raw, tickets=None, ticket_tag=TICKET_TAG,
                               max_body_chars=MAX_BODY_CHARS)
        # 3. parse + thread, the ledger row written as pipeline.process writes it
        try:
            pipeline.parse(ctx)
        except pipeline.ParserFailure:
            raise   # a parser bug: the service would quarantine it, the fuzzer reports it
        except pipeline.Quarantine as exc:
            intake.status, intake.reason = contracts.INTAKE_QUARANTINED, str(exc)
            session.commit()
            return
        pipeline.thread(ctx)
        session.commit()
    finally:
        session.rollback()              # a failed commit must not poison the next input
        os.unlink(store.path(sha256))   # keep the scratch disk small; the ledger stays

    mail = ctx.mail
    # the thread step's pure functions, on the parsed fields
    if ctx.ticket_hint != followup.ticket_tag(mail.subject, TICKET_TAG):
        raise AssertionError("ticket_tag is not deterministic")
    followup.external_refs(mail.subject, TICKET_TAG)
    followup.referenced_ids(mail.in_reply_to, mail.references, mail.auto.get("bounce_of"))
    followup.content_hash(mail.subject, mail.body_text, mail.body_html,
                          [a["sha256"] for a in mail.attachments])

    # 4. the deliver payload crosses to tickets as JSON (nameko) and its text ends up
    # in SQLite, which takes only valid UTF-8 (no lone surrogates)
    payload = {"ticket_hint": ctx.ticket_hint, **ctx.threading, **asdict(mail)}
    json.loads(json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    # 5. every listed attachment can be downloaded, and is what the listing says
    for att in mail.attachments:
        part = get_part(raw, att["part"])
        if (len(part.payload), hashlib.sha256(part.payload).hexdigest()) != (att["size"], att["sha256"]):
            raise AssertionError(f"part {att['part']}: get_part gives other bytes than parse_mail listed")

    # 6. the HTML body as the gateway shows it
    clean_html(mail.body_html)


def main() -> None:
    args = sys.argv[1:]
    flags = [a for a in args if a.startswith("-")]
    inputs = [a for a in args if not a.startswith("-")]
    if not any(f.startswith("-timeout=") for f in flags):
        flags.append(f"-timeout={HANG_SECONDS}")
    if not any(f.startswith("-rss_limit_mb=") for f in flags):
        flags.append(f"-rss_limit_mb={RSS_LIMIT_MB}")
    if not inputs:
        (WORKDIR / "corpus").mkdir(parents=True, exist_ok=True)
        (WORKDIR / "artifacts").mkdir(parents=True, exist_ok=True)
        n = build_seeds(WORKDIR / "seeds")
        print(f"fuzz_ingest: {n} seed files (≤ {SEED_MAX_BYTES} bytes) from {CORPORA}", file=sys.stderr)
        inputs = [str(WORKDIR / "corpus"), str(WORKDIR / "seeds")]
        if not any(f.startswith("-artifact_prefix=") for f in flags):
            flags.append(f"-artifact_prefix={WORKDIR / 'artifacts'}/")
    # libFuzzer ends the process with exit(), past any Python cleanup: the scratch
    # folder (raw store + ledger) is wiped at the start of the next run instead
    scratch = WORKDIR / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    setup_targets(scratch)
    atheris.Setup([sys.argv[0], *flags, *inputs], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
