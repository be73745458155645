"""Outbound mail: how fast Osprey renders, composes and hands mail to an SMTP server.

1. In process (no broker): render a reply template (introduction + body + signature),
   compose the bytes and queue them in a real SQLite outbox; then the delivery
   worker (services/notify/outbox.Deliverer) sends them through one SMTP
   conversation to a local aiosmtpd server. Also forwards with a 64 KiB original
   attached byte-exact.
2. End to end (the whole system, osprey.testing.Stack): POST /api/v1/tickets/N/send,
   sequential and from 8 client threads, until the SMTP server received every mail
   and every mail is an article on its ticket.

    .venv/bin/python bench/notify.py [--mails 2000] [--api-mails 200] [--no-stack]

Not a test: prints figures and exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench._common import print_machine, running_stack, token_for  # noqa: E402
from osprey.db import make_engine, prepare  # noqa: E402
from services.notify import compose, templates  # noqa: E402
from services.notify.config import notify_settings  # noqa: E402
from services.notify.models import MIGRATIONS, Outbox  # noqa: E402
from services.notify.outbox import Deliverer  # noqa: E402
from services.notify.smtp import Relay  # noqa: E402
from tests.helpers import make_mail, wait_for  # noqa: E402
from tests.notify.smtpd import SmtpServer  # noqa: E402

TICKET = {"id": 4242, "subject": "Scanning from 203.0.113.9", "state": "open", "queue": "abuse", "priority": 50,
          "owner": "alice", "requestor": "soc@reporter.example", "created": "2026-11-25T10:00:00+00:00",
          "fields": {"Affected": ["203.0.113.9", "198.51.100.0/24"], "Constituency": "Example ISP"},
          "people": {"requestor": ["soc@reporter.example"], "cc": [], "admincc": []}}
ARTICLE = {"id": 1, "direction": "in", "from": "SOC <soc@reporter.example>", "to": ["abuse@csirt.example"], "cc": [],
           "subject": "Scanning", "date": "Wed, 25 Nov 2026 10:00:00 +0000", "message_id": "<r1@reporter.example>",
           "body_text": "We saw 203.0.113.9 scanning our network.\n" * 20}


TICKETS = 10


def in_process(n: int) -> None:
    s = dataclasses.replace(notify_settings(), mail_domain="csirt.example", lease_seconds=60)
    with tempfile.TemporaryDirectory() as tmp, SmtpServer() as smtp:
        engine = make_engine(f"sqlite:///{tmp}/notify.db")
        prepare(engine, MIGRATIONS)
        make_session = sessionmaker(bind=engine, expire_on_commit=False)
        with make_session() as session:
            for name, kind, body in (("intro", "introduction", "Dear {{ constituency }},"),
                                     ("sig", "signature", "-- \n{{ user.username }}, CSIRT")):
                templates.save(session, "bench", name, kind, body)
            templates.save(session, "bench", "scan", "reply",
                           "we saw {{ ips | join(', ') }} in {{ netblocks | join(', ') }}.\n\n{{ article.quoted }}",
                           subject="Scan from {{ ips | first }}")
            session.commit()
            ctx = templates.build_context(TICKET, [ARTICLE], ARTICLE, {"username": "alice"}, {"Affected": "iprange"},
                                          "Osprey", "abuse@csirt.example")
            tpl = templates.find(session, "scan")
            original = make_mail("report", ("We saw 203.0.113.9 scanning. " * 2 + "\n") * 1100)   # ~64 KiB

            for label, attach in (("reply (template)", None), ("forward (64 KiB original attached)", original)):
                t0 = time.perf_counter()
                for i in range(n):
                    out = templates.compose(session, "abuse", None, tpl, ctx)
                    send_id = compose.new_send_id()
                    mid = compose.message_id(send_id, "csirt.example")
                    headers = compose.envelope_headers(
                        from_name="Osprey abuse", from_address="abuse@csirt.example", to=["noc@isp.example"], cc=[],
                        subject=compose.tag_subject(out["subject"], "Osprey", 4242), msg_id=mid,
                        date=datetime.now(timezone.utc), extra=compose.threading_headers(None, "<r1@reporter.example>"))
                    raw = compose.forward_attached(headers, out["body"], attach)[0] if attach else \
                        compose.text_mail(headers, out["body"])
                    session.add(Outbox(id=send_id, ticket_id=4242, actor="alice", action="reply", kind="reply",
                                       mail_from="abuse@csirt.example", recipients=["noc@isp.example"],
                                       pending=["noc@isp.example"], delivered=[], refused={}, message_id=mid,
                                       subject=out["subject"], raw=raw, raw_sha256="", size=len(raw), record={},
                                       state="queued", next_attempt=datetime.now(timezone.utc)))
                    session.commit()
                composed = time.perf_counter() - t0
                before = len(smtp.sink.received)
                t1 = time.perf_counter()
                d = Deliverer(make_session, Relay("127.0.0.1", smtp.port, timeout=30), s, worker="bench")
                sent = 0
                while sent < n:
                    sent += d.run(limit=500, budget=60)["sent"]
                delivered = time.perf_counter() - t1
                assert len(smtp.sink.received) - before == n
                size = len(smtp.sink.received[-1].data)
                print(f"{label}: {n} mails of {size} bytes — render+compose+queue {n / composed:.0f}/s "
                      f"({composed / n * 1000:.2f} ms each); delivered through one SMTP conversation "
                      f"{n / delivered:.0f}/s ({delivered / n * 1000:.2f} ms each, claim+send+commit)")
        engine.dispose()


def end_to_end(n: int) -> None:
    with SmtpServer() as smtp:
        env = {"OSPREY_SMTP_HOST": "127.0.0.1", "OSPREY_SMTP_PORT": str(smtp.port),
               "OSPREY_MAIL_DOMAIN": "csirt.example", "OSPREY_NOTIFY_POLL_SECONDS": "0.2"}
        with running_stack(env) as stack:
            token = token_for(stack)
            api = httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                               timeout=60)
            for t in range(TICKETS):
                raw = make_mail(f"bench ticket {t}", f"We saw 203.0.113.{t} scanning.")
                assert stack.mailgate(raw).returncode == 0
            tids = wait_for(lambda: (lambda ts: [t["id"] for t in ts] if len(ts) == TICKETS else None)(
                api.get("/tickets").json()["tickets"]), timeout=60, what="the tickets")
            local = threading.local()

            def client():
                if not hasattr(local, "c"):
                    local.c = httpx.Client(base_url=f"{stack.url}/api/v1",
                                           headers={"Authorization": f"Bearer {token}"}, timeout=60)
                return local.c

            def send(i):
                r = client().post(f"/tickets/{tids[i % TICKETS]}/send", json={"body": f"mail {i}\n"})
                r.raise_for_status()
                return r.json()["message_id"]

            recorded = 0
            for label, workers in (("sequential", 1), ("8 clients", 8)):
                before = len(smtp.sink.received)
                t0 = time.perf_counter()
                with ThreadPoolExecutor(workers) as pool:
                    ids = list(pool.map(send, range(n)))
                queued = time.perf_counter() - t0
                wait_for(lambda: len(smtp.sink.received) - before >= n, timeout=600, what="every mail delivered")
                delivered = time.perf_counter() - t0
                recorded += n
                wait_for(lambda: sum(len([a for a in api.get(f"/tickets/{t}/articles").json() if a["direction"] == "out"])
                                     for t in tids) >= recorded, timeout=600, interval=0.5, what="every mail recorded")
                on_ticket = time.perf_counter() - t0
                counts = smtp.sink.by_message_id()
                dupes = sum(1 for i in ids if counts[i] != 1)
                print(f"API send, {label}: {n} replies over {TICKETS} tickets — accepted (queued) {n / queued:.0f}/s; "
                      f"all received by the SMTP server after {delivered:.1f}s ({n / delivered:.0f}/s); "
                      f"all recorded as articles after {on_ticket:.1f}s ({n / on_ticket:.0f}/s); duplicates {dupes}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mails", type=int, default=2000)
    p.add_argument("--api-mails", type=int, default=200)
    p.add_argument("--no-stack", action="store_true", help="only the in-process figures")
    args = p.parse_args()
    print_machine("notify: outbound mail")
    in_process(args.mails)
    if not args.no_stack:
        end_to_end(args.api_mails)
    return 0


if __name__ == "__main__":
    sys.exit(main())
