"""Enrichment figures: indicator extraction throughput, and lookup latency against
the local servers that replay the recorded RDAP/whois answers (tests/enrich/replay.py).

* extraction: seeded generated report text (prose with IPs, defanged IPs, CIDRs,
  URLs, hxxp URLs, domains, e-mail addresses, hashes, CVE ids, and distractors:
  version numbers, dates, file names), one core, in this process: KB/s and
  indicators/s (every occurrence counted), for plain text and for HTML;
* lookups: the 10 recorded addresses, uncached (RDAP only; RDAP completed by whois;
  whois only, via whois.iana.org's referral) and cached (the SQLite cache), p50/p95.
  Loopback servers: this measures Osprey's own cost, not a registry's.

    cd /work/main && .venv/bin/python bench/enrich.py [--kb 1024] [--rounds 20]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _common import pct, print_machine  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from osprey.db import make_engine, prepare  # noqa: E402
from services.enrich.indicators import extract  # noqa: E402
from services.enrich.lookup import Gate, cached_lookup  # noqa: E402
from services.enrich.models import MIGRATIONS  # noqa: E402
from tests.enrich.replay import IPS, RdapReplay, WhoisReplay, lookups_for  # noqa: E402

WORDS = ("the host was seen scanning our network during the night and we kindly ask you to investigate "
         "this activity which appears to originate from a compromised machine in your range").split()
TLDS = ("com", "net", "org", "de", "co.uk", "io", "nl", "fr", "info", "ru")


def _indicator(rng: random.Random) -> str:
    ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    host = f"{rng.choice(['mail', 'www', 'cdn', 'vpn'])}.{rng.choice(WORDS)}{rng.randint(1, 999)}.{rng.choice(TLDS)}"
    return rng.choice([
        ip, ip, ip.replace(".", "[.]", 1), f"{ip}/24", f"http://{host}/login.php?id={rng.randint(1, 9999)}",
        f"hxxps[:]//{host.replace('.', '[.]')}/x", host, f"abuse@{host}", f"user[at]{host}",
        "%032x" % rng.getrandbits(128), "%064x" % rng.getrandbits(256), f"CVE-20{rng.randint(10, 26)}-{rng.randint(1000, 49999)}",
        f"2001:db8:{rng.randint(0, 65535):x}::{rng.randint(1, 65535):x}",
        # distractors: must not become indicators
        f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        f"2026.{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}", f"report{rng.randint(1, 99)}.pdf", "README.md",
    ])


def generate_text(kb: int, seed: int = 8) -> str:
    rng = random.Random(seed)
    lines, size = [], 0
    while size < kb * 1024:
        words = [rng.choice(WORDS) if rng.random() > 0.12 else _indicator(rng) for _ in range(rng.randint(8, 20))]
        line = " ".join(words) + "."
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def bench_extraction(kb: int) -> None:
    text = generate_text(kb)
    html = "<html><body>" + "".join(f"<p>{escape(line)}</p>" for line in text.splitlines()) + "</body></html>"
    for label, args in (("text", (text, None)), ("html", ("", html))):
        extract(*[a[:5000] if a else a for a in args])  # warm up (PSL load, regex compile)
        started = time.perf_counter()
        found = extract(*args)
        wall = time.perf_counter() - started
        size = len(args[0] or args[1]) / 1024
        occurrences = sum(i["count"] for i in found)
        print(f"extract {label:4}: {size:8.0f} KB in {wall:6.2f} s  {size / wall:8.0f} KB/s  "
              f"{occurrences / wall:8.0f} indicators/s  ({occurrences} occurrences, {len(found)} distinct)")


def _latencies(fn, ips, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        for ip in ips:
            started = time.perf_counter()
            result = fn(ip)
            times.append(time.perf_counter() - started)
            assert result["status"] == "ok", result
    return times


def _row(label: str, times: list[float]) -> None:
    print(f"{label:34} n={len(times):4}  p50 {pct(times, 50) * 1000:7.2f} ms  p95 {pct(times, 95) * 1000:7.2f} ms  "
          f"max {max(times) * 1000:7.2f} ms")


def bench_lookups(rounds: int) -> None:
    rdap, whois = RdapReplay().start(), WhoisReplay().start()
    fast = dict(rate=1e6, burst=10 ** 6)
    try:
        for label, client in (
                ("uncached, RDAP only", lookups_for(rdap, whois, gate=Gate(**fast), complete=False)),
                ("uncached, RDAP completed by whois", lookups_for(rdap, whois, gate=Gate(**fast))),
                ("uncached, whois only (IANA refer)", lookups_for(None, whois, gate=Gate(**fast)))):
            with client:
                _row(label, _latencies(client.lookup, IPS, rounds))
        with tempfile.TemporaryDirectory() as tmp, lookups_for(rdap, whois, gate=Gate(**fast)) as client:
            engine = make_engine(f"sqlite:///{tmp}/enrich.db")
            prepare(engine, MIGRATIONS)
            make_session = sessionmaker(bind=engine, expire_on_commit=False)
            _row("cache miss (lookup + store)", _latencies(
                lambda ip: cached_lookup(make_session, client, ip, refresh=True), IPS, max(1, rounds // 4)))
            _row("cache hit (SQLite)", _latencies(lambda ip: cached_lookup(make_session, client, ip), IPS, rounds))
            engine.dispose()
    finally:
        rdap.stop()
        whois.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kb", type=int, default=1024, help="size of the generated text (KB)")
    p.add_argument("--rounds", type=int, default=20, help="lookups of each of the 10 addresses per row")
    args = p.parse_args(argv)
    print_machine("enrich: extraction and lookups")
    bench_extraction(args.kb)
    bench_lookups(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
