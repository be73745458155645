"""The ticket core at a million tickets: the queue view and "previous incidents".

Generates N tickets (default 1,000,000) in the tickets schema, exactly as the
migrations make it, on SQLite and/or a private PostgreSQL (osprey.pgserver), each
ticket with one article and one or two IP addresses drawn with locality (a few
thousand busy /24 networks, so that earlier incidents exist), then times:

* queue view: the first page (50) of one queue's active tickets sorted by priority
  then age, with the total count — records.list_tickets, as the UI and API call it;
* previous incidents for a random ticket: changes.previous_incidents (same IP, same
  /24 or /48, overlapping IP-range fields), newest first.

    .venv/bin/python bench/tickets.py [--tickets 1000000] [--db sqlite,postgresql] [--queries 300]

Not a test: prints figures (p50/p95 in ms) and exits 0.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench._common import pct, print_machine  # noqa: E402
from osprey import contracts  # noqa: E402
from osprey.db import make_engine, prepare  # noqa: E402
from services.tickets import accounts, changes, records  # noqa: E402
from services.tickets.models import MIGRATIONS, Article, ArticleIP, Queue, Ticket  # noqa: E402
from services.tickets.rights import Rights  # noqa: E402

QUEUES = ["general", "abuse", "phishing", "malware", "ddos", "spam", "scan", "vuln", "noc", "cert"]
STATES = ["resolved"] * 60 + ["rejected"] * 5 + ["open"] * 15 + ["new"] * 12 + ["stalled"] * 8
CHUNK = 20_000


def networks(rng: random.Random, n: int) -> list[int]:
    """n busy public /24s (as integers of their first address)."""
    out = []
    while len(out) < n:
        a = rng.randrange(1, 224)
        if a in (10, 127, 169, 172, 192, 198, 203, 100):
            continue
        out.append((a << 24) | (rng.randrange(256) << 16) | (rng.randrange(256) << 8))
    return out


def load(engine, n: int, seed: int = 7) -> float:
    rng = random.Random(seed)
    prepare(engine, MIGRATIONS)
    make = sessionmaker(bind=engine)
    with make() as session:
        records.ensure_queues(session, QUEUES)
        accounts.create_user(session, "bench", None, role="admin")
        session.commit()
        queue_ids = [session.query(Queue.id).filter(Queue.name == q).scalar() for q in QUEUES]
    nets = networks(rng, 5000)
    start = datetime(2023, 1, 1, tzinfo=timezone.utc)
    span = 3 * 365 * 86400
    t0 = time.perf_counter()
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
    for base in range(0, n, CHUNK):
        tickets, articles, ips = [], [], []
        for i in range(base + 1, min(n, base + CHUNK) + 1):
            created = start + timedelta(seconds=span * i / n)
            state = rng.choice(STATES)
            tickets.append({"id": i, "queue_id": rng.choice(queue_ids), "subject": f"Incident {i}",
                            "state": state, "closed": state in ("resolved", "rejected"), "requestor": f"reporter{i % 997}@example.net",
                            "created": created, "updated": created, "priority": rng.randrange(101),
                            "version": 1, "time_estimated": 0, "time_worked": 0, "escalated": {}})
            articles.append({"id": i, "ticket_id": i, "direction": "in", "action": "correspond",
                             "sender": f"reporter{i % 997}@example.net", "recipients": {}, "subject": f"Incident {i}",
                             "body_text": "abuse report", "body_truncated": False, "auto": {}, "created": created,
                             "time_worked": 0})
            for _ in range(rng.choice((1, 1, 2))):
                if rng.random() < 0.7:
                    addr = ipaddress.IPv4Address(rng.choice(nets) | rng.randrange(256))
                else:
                    addr = ipaddress.IPv4Address(rng.choice(nets) + (rng.randrange(1, 40) << 8) | rng.randrange(256))
                ips.append({"article_id": i, "ip": contracts.ip_key(addr)})
        seen = set()
        ips = [r for r in ips if (r["article_id"], r["ip"]) not in seen and not seen.add((r["article_id"], r["ip"]))]
        with engine.begin() as conn:
            conn.execute(insert(Ticket), tickets)
            conn.execute(insert(Article), articles)
            conn.execute(insert(ArticleIP), ips)
        done = min(n, base + CHUNK)
        if done % 200_000 == 0 or done == n:
            print(f"  loaded {done:,} tickets ({time.perf_counter() - t0:.0f} s)", flush=True)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('ticket', 'id'), :n)"), {"n": n})
            conn.execute(text("SELECT setval(pg_get_serial_sequence('article', 'id'), :n)"), {"n": n})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # what autovacuum does on its own after a bulk load (visibility map for index-only scans)
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    return time.perf_counter() - t0


def measure(engine, n: int, queries: int, seed: int = 11) -> dict:
    rng = random.Random(seed)
    make = sessionmaker(bind=engine)
    out = {}
    with make() as session:
        rights = Rights(session, accounts.get_user(session, "bench"))
        for _ in range(5):   # warm the caches
            records.list_tickets(session, rng.choice(QUEUES), "active", 50, 0, order="priority")
        times, totals = [], []
        for _ in range(queries):
            q = rng.choice(QUEUES)
            t = time.perf_counter()
            page = records.list_tickets(session, q, "active", 50, 0, visible=rights.queues_with(session, "see"),
                                        order="priority")
            times.append(time.perf_counter() - t)
            totals.append(page["total"])
        out["queue view"] = (times, f"{sum(totals) / len(totals):,.0f} active tickets per queue counted "
                                    f"(capped at {records.COUNT_CAP:,})")
        times, hits = [], []
        for _ in range(queries):
            ticket = session.get(Ticket, rng.randrange(1, n + 1))
            t = time.perf_counter()
            found = changes.previous_incidents(session, rights, ticket)
            times.append(time.perf_counter() - t)
            hits.append(len(found))
        out["previous incidents"] = (times, f"{sum(hits) / len(hits):.1f} earlier tickets found on average")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    print_machine(f"tickets: {args.tickets:,} tickets")
    with tempfile.TemporaryDirectory(prefix="osprey-bench-tickets-") as tmp:
        for dialect in args.db.split(","):
            node = None
            if dialect == "sqlite":
                engine = make_engine(f"sqlite:///{tmp}/tickets.db")
            else:
                from osprey.pgserver import PostgresNode
                node = PostgresNode(Path(tmp) / "pg").start()
                engine = make_engine(node.url)
            try:
                print(f"--- {dialect}: generating ...", flush=True)
                seconds = load(engine, args.tickets)
                print(f"{dialect}: loaded {args.tickets:,} tickets, articles and their IPs in {seconds:.0f} s")
                for name, (times, note) in measure(engine, args.tickets, args.queries).items():
                    print(f"{dialect:<10} {name:<20} p50 {pct(times, 50) * 1000:7.2f} ms   "
                          f"p95 {pct(times, 95) * 1000:7.2f} ms   max {max(times) * 1000:7.2f} ms   ({note})")
            finally:
                engine.dispose()
                if node is not None:
                    node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
