"""Ingest throughput, end to end, and its single-core parse ceiling.

N generated, realistic abuse-report mails go through the real path: the
``osprey-mailgate`` MTA pipe (one process per mail, as an MTA runs it, several in
parallel) → RabbitMQ intake queue → ingest (raw store, ledger, parse) → tickets
(article + search index) → searchable through the gateway. Printed:

* mailgate hand-off rate: mails/s until every pipe exited 0, and per-pipe latency;
* end to end: first pipe started → last mail delivered and searchable, mails/s;
* verification: every mail delivered exactly once (one intake, one delivery, its
  own ticket; ticket count == N; a sample found by its unique word);
* the ceiling, on the same mails in this process on one core: Python's ``email``
  package (parse + walk every part) and Osprey's own ``parse_mail``.

    cd /work/main && .venv/bin/python bench/ingest.py [-n 500] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import email
import email.policy
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (check_quiet, cpu_snapshot, describe_mails, generate_mails, pct, print_cpu,  # noqa: E402
                     print_machine, running_stack, token_for)


def pipe_one(stack, raw: bytes, retries: int, timeout: float) -> dict:
    """One mail through osprey-mailgate, as an MTA would (retrying EX_TEMPFAIL)."""
    start = time.perf_counter()
    codes = []
    for _attempt in range(retries + 1):
        t = time.perf_counter()
        proc = stack.mailgate(raw, timeout=timeout)
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
        err = proc.stderr.decode(errors="replace").strip()
        print(f"  mailgate exit {proc.returncode} after {time.perf_counter() - t:.1f}s: {err[:300]}",
              file=sys.stderr)
        time.sleep(0.5)
    return {"start": start, "end": time.perf_counter(), "codes": codes,
            "last": time.perf_counter() - t}


def mailgate_floor(stack, n: int = 5) -> float:
    """Median wall time of ``osprey-mailgate --help``: interpreter + imports, no broker."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        stack.mailgate(b"", "--help")
        times.append(time.perf_counter() - t)
    return pct(times, 50)


def email_walk(raw: bytes) -> int:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    n = 0
    for part in msg.walk():
        part.get_content_type()
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        n += len(payload or b"")
    return n


def rate(fn, raws: list[bytes], min_seconds: float) -> tuple[float, float, int]:
    """(mails/s, MB/s, passes) of fn over raws, repeated until min_seconds passed."""
    fn(raws[0])  # warm imports and caches
    total_bytes = sum(len(r) for r in raws)
    passes, t0 = 0, time.perf_counter()
    while True:
        for raw in raws:
            fn(raw)
        passes += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return len(raws) * passes / elapsed, total_bytes * passes / elapsed / 1e6, passes


def ceilings(mails, min_seconds: float) -> dict:
    from osprey.config import settings
    from services.ingest.parse import parse_mail

    max_body = settings().max_body_chars
    raws = [m.raw for m in mails]
    previous = os.sched_getaffinity(0)
    core = min(previous)
    os.sched_setaffinity(0, {core})
    try:
        print(f"\nceiling: in this process, pinned to CPU {core}, the stack stopped")
        check_quiet("before the ceiling")
        e_rate, e_mb, e_passes = rate(email_walk, raws, min_seconds)
        print(f"  email.message_from_bytes(policy=default) + walk/decode every part: "
              f"{e_rate:,.0f} mails/s, {e_mb:.1f} MB/s ({e_passes} passes)")
        p_rate, p_mb, p_passes = rate(lambda raw: parse_mail(raw, max_body), raws, min_seconds)
        print(f"  services.ingest.parse.parse_mail:                                  "
              f"{p_rate:,.0f} mails/s, {p_mb:.1f} MB/s ({p_passes} passes)")
    finally:
        os.sched_setaffinity(0, previous)
    return {"email": (e_rate, e_mb), "parse_mail": (p_rate, p_mb), "core": core}


def run_pipeline(stack, mails, args) -> dict:
    n = len(mails)
    api = httpx.Client(base_url=f"{stack.url}/api/v1", timeout=60,
                       headers={"Authorization": f"Bearer {token_for(stack)}"})
    floor = mailgate_floor(stack)
    print(f"mailgate process floor (`osprey-mailgate --help`, no broker): {floor * 1000:.0f} ms median")

    def total_tickets() -> int:
        r = api.get("/tickets", params={"limit": 1})
        r.raise_for_status()
        return r.json()["total"]

    def quarantined() -> int:
        r = api.get("/intake", params={"status": "quarantined", "limit": 1000})
        r.raise_for_status()
        return len(r.json())

    def found(token: str) -> list[dict]:
        r = api.get("/search", params={"q": token})
        r.raise_for_status()
        return r.json()["results"]

    base_total = total_tickets()
    assert base_total == 0, f"fresh stack has {base_total} tickets"

    print(f"\npiping {n} mails through osprey-mailgate, {args.concurrency} in parallel ...")
    sys.stdout.flush()
    cpu0 = cpu_snapshot(stack)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="mailgate")
    futures = [pool.submit(pipe_one, stack, m.raw, args.retries, args.mailgate_timeout) for m in mails]
    t_handed = t_delivered = None
    timeline, next_print, last_q = [], t0 + args.progress, 0.0
    quarantine_count = 0
    try:
        while True:
            now = time.perf_counter()
            done = sum(f.done() for f in futures)
            if done == n and t_handed is None:
                t_handed = max(f.result()["end"] for f in futures)
            total = total_tickets()
            timeline.append((now - t0, done, total))
            if now - last_q > 2:
                quarantine_count, last_q = quarantined(), now
            if now >= next_print:
                print(f"  t={now - t0:6.1f}s  pipes done {done:5d}/{n}  tickets {total:5d}"
                      + (f"  quarantined {quarantine_count}" if quarantine_count else ""))
                sys.stdout.flush()
                next_print += args.progress
            if t_handed is not None and total + quarantine_count >= n:
                # delivered; searchable too? (the index is written in the article's
                # transaction, so this should hold at once): the last-piped mails' words
                results = [f.result() for f in futures]
                order = sorted(range(n), key=lambda i: results[i]["end"])
                probe = order[-3:] + random.Random(1).sample(range(n), min(5, n))
                if all(found(mails[i].token) for i in probe):
                    t_delivered = time.perf_counter()
                    break
            if now - t0 > args.timeout:
                print(f"  TIMEOUT after {args.timeout}s: {total} tickets of {n}")
                break
            time.sleep(args.poll)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    wall = (t_delivered or time.perf_counter()) - t0
    cpu1 = cpu_snapshot(stack)
    print(f"  t={wall:6.1f}s  all delivered and searchable" if t_delivered else "  NOT all delivered")
    cpu_used = print_cpu(cpu0, cpu1, wall, "the ingest run")

    results = [f.result() for f in futures]
    lat = [r["last"] for r in results]                     # the successful attempt's pipe time
    failed = [i for i, r in enumerate(results) if r["codes"][-1] != 0]
    retried = sum(len(r["codes"]) > 1 for r in results)
    first_start = min(r["start"] for r in results)
    last_exit = max(r["end"] for r in results)

    # delivery rate while pipes ran vs. draining the backlog after the last pipe exited
    handed_at = (t_handed or last_exit) - t0
    at_handoff = max((tot for (t, _d, tot) in timeline if t <= handed_at), default=0)

    # --- verification: every mail exactly once ----------------------------------
    print("\nverifying every mail via GET /api/v1/intake/{sha256} ...")
    bad, ticket_ids, deliveries_gt1 = [], [], 0
    for i, m in enumerate(mails):
        r = api.get(f"/intake/{m.sha256}")
        if r.status_code != 200:
            bad.append((i, f"HTTP {r.status_code}"))
            continue
        intakes = r.json()["intakes"]
        if len(intakes) != 1:
            bad.append((i, f"{len(intakes)} intake records"))
        for it in intakes:
            if it["status"] != "delivered":
                bad.append((i, f"{it['status']}: {it['reason']}"))
            if it["deliveries"] != 1:
                deliveries_gt1 += 1
            if it["ticket_id"] is not None:
                ticket_ids.append(it["ticket_id"])
    final_total = total_tickets()
    dup_tickets = len(ticket_ids) - len(set(ticket_ids))
    sample = random.Random(2).sample(range(n), min(args.sample, n))
    search_ok = 0
    for i in sample:
        hits = found(mails[i].token)
        if len(hits) == 1:
            search_ok += 1
        else:
            bad.append((i, f"search for its word found {len(hits)} tickets"))
    for i, why in bad[:10]:
        print(f"  mail {i} ({mails[i].sha256[:12]}): {why}")
    exactly_once = (not bad and not failed and final_total == n and len(set(ticket_ids)) == n
                    and dup_tickets == 0 and deliveries_gt1 == 0)
    print(f"  {len(set(ticket_ids))} distinct tickets for {n} mails, /tickets total {final_total}, "
          f"{dup_tickets} duplicate ticket ids, {deliveries_gt1} intakes with deliveries > 1, "
          f"{len(bad)} problems; search: {search_ok}/{len(sample)} words found exactly once")
    api.close()
    return {
        "n": n, "wall": wall, "delivered": t_delivered is not None,
        "handoff_wall": last_exit - first_start, "failed": len(failed), "retried": retried,
        "lat": lat, "floor": floor, "after_handoff": wall - handed_at, "at_handoff": at_handoff,
        "handed_at": handed_at, "exactly_once": exactly_once, "final_total": final_total,
        "distinct_tickets": len(set(ticket_ids)), "dup_tickets": dup_tickets, "deliveries_gt1": deliveries_gt1,
        "problems": len(bad), "search_ok": search_ok, "sample": len(sample), "cpu": cpu_used,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--mails", type=int, default=500, help="mails to generate and deliver (default 500)")
    ap.add_argument("--concurrency", type=int, default=8, help="parallel osprey-mailgate processes (default 8)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed of the generated mails (default 1)")
    ap.add_argument("--sample", type=int, default=25, help="mails verified by searching their word (default 25)")
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between delivery polls (default 0.1)")
    ap.add_argument("--progress", type=float, default=5, help="seconds between progress lines (default 5)")
    ap.add_argument("--timeout", type=float, default=900, help="give up waiting for delivery after (default 900 s)")
    ap.add_argument("--retries", type=int, default=3, help="mailgate retries on a non-zero exit (default 3)")
    ap.add_argument("--mailgate-timeout", type=float, default=120, help="kill a pipe after (default 120 s)")
    ap.add_argument("--ceiling-seconds", type=float, default=3, help="min seconds per ceiling measurement (default 3)")
    ap.add_argument("--skip-ceiling", action="store_true", help="only the end-to-end run")
    ap.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, databases)")
    args = ap.parse_args(argv)

    print_machine("bench/ingest.py")
    t = time.perf_counter()
    mails = generate_mails(args.mails, args.seed)
    total_mb = sum(len(m.raw) for m in mails) / 1e6
    print(f"corpus (seed {args.seed}, generated in {time.perf_counter() - t:.1f}s): {describe_mails(mails)}")
    sys.stdout.flush()

    with running_stack(keep=args.keep) as stack:
        check_quiet()
        res = run_pipeline(stack, mails, args)
    ceil = None if args.skip_ceiling else ceilings(mails, args.ceiling_seconds)

    n, lat = res["n"], res["lat"]
    e2e = n / res["wall"] if res["delivered"] else float("nan")
    handoff = (n - res["failed"]) / res["handoff_wall"]
    during = res["at_handoff"] / res["handed_at"] if res["handed_at"] else float("nan")
    after = (n - res["at_handoff"]) / res["after_handoff"] if res["after_handoff"] > 0 else float("nan")
    print("\n" + "=" * 78)
    print("SUMMARY bench/ingest.py")
    print(f"  mails                    {n} ({total_mb:.2f} MB, seed {args.seed}), "
          f"{args.concurrency} parallel osprey-mailgate pipes")
    print(f"  mailgate hand-off        {handoff:7.1f} mails/s  ({n - res['failed']}/{n} pipes exited 0 in "
          f"{res['handoff_wall']:.1f}s; {res['retried']} retried, {res['failed']} failed)")
    print(f"  mailgate latency         p50 {pct(lat, 50) * 1000:.0f} ms  p95 {pct(lat, 95) * 1000:.0f} ms  "
          f"max {max(lat) * 1000:.0f} ms  (process floor, --help: {res['floor'] * 1000:.0f} ms)")
    print(f"  end to end               {e2e:7.1f} mails/s  ({res['wall']:.1f}s first pipe start → last mail "
          f"delivered and searchable; {total_mb / res['wall']:.2f} MB/s)")
    print(f"  delivery                 {during:7.1f} tickets/s while pipes ran ({res['at_handoff']} by "
          f"{res['handed_at']:.1f}s), {after:.1f}/s draining the rest in {res['after_handoff']:.1f}s")
    cpu = res["cpu"]
    top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.1)
    ncpu = len(os.sched_getaffinity(0))
    print(f"  CPU-s by component       {top}  ({ncpu} cores x {res['wall']:.1f}s = "
          f"{ncpu * res['wall']:.0f} available; 'bench children' = the mailgate pipes)")
    verdict = "OK" if res["exactly_once"] and res["search_ok"] == res["sample"] else "FAILED"
    print(f"  exactly once             {verdict}: {res['distinct_tickets']} distinct tickets, /tickets total "
          f"{res['final_total']}, {res['dup_tickets']} duplicates, {res['deliveries_gt1']} redelivered, "
          f"{res['problems']} problems; {res['search_ok']}/{res['sample']} sampled words found once")
    if ceil:
        (er, emb), (pr, pmb) = ceil["email"], ceil["parse_mail"]
        print(f"  ceiling: email package   {er:7.0f} mails/s  {emb:6.1f} MB/s  (message_from_bytes + walk, "
              f"one core)")
        print(f"  ceiling: parse_mail      {pr:7.0f} mails/s  {pmb:6.1f} MB/s  (Osprey's ingest parse, one core)")
        print(f"  end to end vs ceiling    {e2e / er * 100:.1f}% of the email-package rate, "
              f"{e2e / pr * 100:.1f}% of parse_mail's")
    print("=" * 78)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stack stopped", file=sys.stderr)
        sys.exit(130)
