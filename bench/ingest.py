"""Ingest throughput, end to end, and its single-core parse ceiling.

N generated, realistic abuse-report mails go through the real path: an intake
front end → RabbitMQ intake queue → ingest (raw store, ledger, parse) → tickets
(article + search index) → searchable through the gateway. The front end
(``--via``) is the ``osprey-mailgate`` MTA pipe (one process per mail, as an MTA
runs it, several in parallel), the ``osprey-lmtp`` listener (one long-running
process, fed over N parallel LMTP connections that each carry many mails, as an
MTA's LMTP client does), or both, one after the other on other mails. Printed:

* hand-off rate: mails/s until every pipe exited 0 / every LMTP transaction got
  its 250, and the latency per mail;
* end to end: first mail handed over → last mail delivered and searchable, mails/s;
* verification: every mail delivered exactly once (one intake, one delivery, its
  own ticket; ticket count as expected; a sample found by its unique word);
* diagnostic (``--direct``, on by default with the mailgate): other mails handed
  over by ``services.ingest.publisher.publish()`` called in this process, i.e. the
  mailgate's path without a Python process per mail;
* CPU seconds by component for each run (the pipes or the LMTP listener, rabbitmq,
  each service, the gateway, and other processes on the machine);
* the ceiling, on the same mails in this process on one core: Python's ``email``
  package (parse + walk every part) and Osprey's own ``parse_mail``.

    cd /work/main && .venv/bin/python bench/ingest.py [-n 500] [--concurrency 8]
    cd /work/main && .venv/bin/python bench/ingest.py --via lmtp --feeders 4 [-n 1000]
"""
from __future__ import annotations

import argparse
import email
import email.policy
import os
import random
import resource
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (check_quiet, cpu_snapshot, describe_mails, generate_mails, pct, print_cpu,  # noqa: E402
                     print_machine, running_stack, token_for)


STOPPING = threading.Event()  # set on Ctrl-C / errors: no more pipes, no retries


def pipe_one(stack, raw: bytes, retries: int, timeout: float) -> dict:
    """One mail through osprey-mailgate, as an MTA would (retrying EX_TEMPFAIL)."""
    start = t = time.perf_counter()
    codes = []
    for _attempt in range(retries + 1):
        if STOPPING.is_set():
            codes.append(-1)
            break
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


LMTP_RCPT = "general@csirt.example"


class LmtpFeeders:
    """The MTA side of LMTP: one connection per feeder thread, reused for every mail
    it carries (an MTA's LMTP connection cache); a 451 is retried like an MTA would."""

    def __init__(self, port: int, retries: int):
        self.port = port
        self.retries = retries
        self.local = threading.local()
        self.clients: list[smtplib.LMTP] = []
        self.lock = threading.Lock()

    def _client(self) -> smtplib.LMTP:
        client = getattr(self.local, "client", None)
        if client is None:
            client = smtplib.LMTP("127.0.0.1", self.port, timeout=120)
            client.ehlo("bench.feeder")
            self.local.client = client
            with self.lock:
                self.clients.append(client)
        return client

    def _drop(self) -> None:
        client, self.local.client = getattr(self.local, "client", None), None
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def send(self, raw: bytes) -> dict:
        start = t = time.perf_counter()
        codes = []
        for _attempt in range(self.retries + 1):
            if STOPPING.is_set():
                codes.append(-1)
                break
            t = time.perf_counter()
            try:
                client = self._client()
                client.mail("bounces@feeder.example")
                code, _ = client.rcpt(LMTP_RCPT)
                if code == 250:
                    code, msg = client.data(raw)
                else:
                    msg = b"RCPT refused"
                    client.rset()
            except (smtplib.SMTPException, OSError) as exc:
                code, msg = -2, str(exc).encode()
                self._drop()
            codes.append(code)
            if code == 250:
                break
            print(f"  LMTP {code} after {time.perf_counter() - t:.1f}s: {msg.decode(errors='replace')[:300]}",
                  file=sys.stderr)
            time.sleep(0.5)
        return {"start": start, "end": time.perf_counter(), "codes": [0 if c == 250 else c for c in codes],
                "last": time.perf_counter() - t}

    def close(self) -> None:
        for client in self.clients:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass


def start_listener(stack, port: int) -> None:
    """``osprey-lmtp`` as the deployment runs it, one more process of the stack (so
    its CPU is counted and ``stack.stop()`` stops it)."""
    import socket

    from osprey.testing import BIN
    log = open(stack.log_path("lmtp"), "ab")
    proc = subprocess.Popen([str(BIN / "osprey-lmtp"), "--port", str(port)], env=stack.env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    stack.procs["lmtp"] = proc
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"osprey-lmtp exited {proc.returncode}:\n{stack.tail('lmtp')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"osprey-lmtp not listening after 30s:\n{stack.tail('lmtp')}")
            time.sleep(0.1)


def mailgate_floor(stack, n: int = 15) -> dict:
    """What a process per mail costs before it talks to the broker, median CPU-ms of a
    run: the interpreter alone (``python -c pass``), and ``osprey-mailgate`` given no
    mail (it reads its settings and command line and exits 65)."""
    def cpu_of(cmd: list[str], stdin: bytes = b"") -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, input=stdin, env=stack.env, capture_output=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000

    from osprey.testing import BIN
    return {"interpreter": pct([cpu_of([sys.executable, "-c", "pass"]) for _ in range(n)], 50),
            "no mail": pct([cpu_of([str(BIN / "osprey-mailgate"), "--queue", "general"]) for _ in range(n)], 50)}


def byte_compile() -> str:
    """Write the .pyc of Osprey's own modules, as an installation does (pip compiles
    what it installs; an editable install run by an MTA user that cannot write the
    source tree never gets them, and neither does a process run with
    PYTHONDONTWRITEBYTECODE=1): without them every mailgate run compiles the modules
    it imports from source again."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    ok = all(compileall.compile_dir(str(root / d), quiet=1) for d in ("osprey", "services"))
    return "byte-compiled osprey/ and services/" + ("" if ok else " (with errors)")


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


class Api:
    def __init__(self, stack):
        self.client = httpx.Client(base_url=f"{stack.url}/api/v1", timeout=60,
                                   headers={"Authorization": f"Bearer {token_for(stack)}"})

    def total_tickets(self) -> int:
        r = self.client.get("/tickets", params={"limit": 1})
        r.raise_for_status()
        return r.json()["total"]

    def quarantined(self) -> int:
        r = self.client.get("/intake", params={"status": "quarantined", "limit": 1000})
        r.raise_for_status()
        return len(r.json())

    def found(self, token: str) -> list[dict]:
        r = self.client.get("/search", params={"q": token})
        r.raise_for_status()
        return r.json()["results"]


def deliver(stack, api: Api, mails, submit, concurrency: int, args, label: str) -> dict:
    """Hand every mail over with ``submit(raw)`` from ``concurrency`` threads; poll
    until all are tickets and the last ones are found by search. Timings and CPU."""
    n = len(mails)
    base_total = api.total_tickets()
    base_q = api.quarantined()
    print(f"\n{label}: {n} mails, {concurrency} in parallel ...")
    sys.stdout.flush()
    cpu0 = cpu_snapshot(stack)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="handoff")
    futures = [pool.submit(submit, m.raw) for m in mails]
    t_delivered = None
    next_print, last_q, quarantine_count = t0 + args.progress, 0.0, 0
    try:
        while True:
            now = time.perf_counter()
            done = sum(f.done() for f in futures)
            total = api.total_tickets() - base_total
            if now - last_q > 2:
                quarantine_count, last_q = api.quarantined() - base_q, now
            if now >= next_print:
                print(f"  t={now - t0:6.1f}s  handed over {done:5d}/{n}  tickets {total:5d}"
                      + (f"  quarantined {quarantine_count}" if quarantine_count else ""))
                sys.stdout.flush()
                next_print += args.progress
            if done == n and total + quarantine_count >= n:
                # delivered; searchable too? (the index is written in the article's
                # transaction, so it should be): the words of the last mails handed over
                results = [f.result() for f in futures]
                order = sorted(range(n), key=lambda i: results[i]["end"])
                probe = order[-3:] + random.Random(1).sample(range(n), min(5, n))
                if all(api.found(mails[i].token) for i in probe):
                    t_delivered = time.perf_counter()
                    break
            if now - t0 > args.timeout:
                print(f"  TIMEOUT after {args.timeout}s: {total} tickets of {n}")
                break
            time.sleep(args.poll)
    except BaseException:
        STOPPING.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    wall = (t_delivered or time.perf_counter()) - t0
    cpu_used = print_cpu(cpu0, cpu_snapshot(stack), wall, label)
    results = [f.result() for f in futures]
    first_start = min(r["start"] for r in results)
    last_exit = max(r["end"] for r in results)
    return {
        "n": n, "wall": wall, "delivered": t_delivered is not None, "cpu": cpu_used,
        "handoff_wall": last_exit - first_start, "lag": (t_delivered or time.perf_counter()) - last_exit,
        "lat": [r["last"] for r in results],                 # the successful attempt's time
        "failed": sum(r["codes"][-1] != 0 for r in results), "retried": sum(len(r["codes"]) > 1 for r in results),
        "base_total": base_total,
    }


def verify(api: Api, mails, expected_total: int, sample_size: int) -> dict:
    """Every mail exactly once: one intake record, delivered once, its own ticket;
    /tickets total as expected; a sample found by its unique word, once."""
    print("verifying every mail via GET /api/v1/intake/{sha256} ...")
    bad, ticket_ids, redelivered = [], [], 0
    for i, m in enumerate(mails):
        r = api.client.get(f"/intake/{m.sha256}")
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
                redelivered += 1
            if it["ticket_id"] is not None:
                ticket_ids.append(it["ticket_id"])
    final_total = api.total_tickets()
    sample = random.Random(2).sample(range(len(mails)), min(sample_size, len(mails)))
    search_ok = 0
    for i in sample:
        hits = api.found(mails[i].token)
        if len(hits) == 1:
            search_ok += 1
        else:
            bad.append((i, f"search for its word found {len(hits)} tickets"))
    for i, why in bad[:10]:
        print(f"  mail {i} ({mails[i].sha256[:12]}): {why}")
    distinct = len(set(ticket_ids))
    dups = len(ticket_ids) - distinct
    ok = not bad and final_total == expected_total and distinct == len(mails) and dups == 0 and not redelivered
    print(f"  {distinct} distinct tickets for {len(mails)} mails, /tickets total {final_total} "
          f"(expected {expected_total}), {dups} duplicate ticket ids, {redelivered} intakes delivered more than "
          f"once, {len(bad)} problems; search: {search_ok}/{len(sample)} words found exactly once")
    return {"ok": ok and search_ok == len(sample), "distinct": distinct, "final_total": final_total,
            "expected_total": expected_total, "dups": dups, "redelivered": redelivered, "problems": len(bad),
            "search_ok": search_ok, "sample": len(sample)}


def run_all(stack, corpora: dict, args) -> dict:
    api = Api(stack)
    assert api.total_tickets() == 0, "a fresh stack has tickets"
    out, expected = {"gate": None, "direct": None, "lmtp": None}, 0

    # 1. the real pipe: one osprey-mailgate process per mail, as an MTA runs it
    if corpora.get("mailgate"):
        mails = corpora["mailgate"]
        if not args.no_compile:
            print(byte_compile())
        floor = mailgate_floor(stack)
        print(f"process floor, median CPU of a run: interpreter alone {floor['interpreter']:.1f} ms, "
              f"osprey-mailgate with no mail (settings, command line, exit 65) {floor['no mail']:.1f} ms"
              + ("" if not os.environ.get("PYTHONDONTWRITEBYTECODE") else
                 "  [PYTHONDONTWRITEBYTECODE is set: no .pyc is written by the runs themselves]"))
        gate = deliver(stack, api, mails, lambda raw: pipe_one(stack, raw, args.retries, args.mailgate_timeout),
                       args.concurrency, args, "end to end through osprey-mailgate")
        gate["floor"] = floor
        expected += len(mails)
        gate["verify"] = verify(api, mails, expected, args.sample)
        out["gate"] = gate

    # 2. the LMTP listener: one process, fed over N LMTP connections
    if corpora.get("lmtp"):
        mails = corpora["lmtp"]
        start_listener(stack, args.lmtp_port)
        feeders = LmtpFeeders(args.lmtp_port, args.retries)
        try:
            lmtp = deliver(stack, api, mails, feeders.send, args.feeders, args,
                           f"end to end through osprey-lmtp, {args.feeders} LMTP connection(s)")
        finally:
            feeders.close()
        expected += len(mails)
        lmtp["verify"] = verify(api, mails, expected, args.sample)
        out["lmtp"] = lmtp

    # 3. the mailgate's path without a process per mail: publisher.publish() called
    # in this process, to show what broker → ingest → tickets sustain
    if corpora.get("direct"):
        from services.ingest.publisher import publish
        direct_mails = corpora["direct"]

        def publish_one(raw: bytes) -> dict:
            start = t = time.perf_counter()
            codes = []
            for _attempt in range(args.retries + 1):
                if STOPPING.is_set():
                    codes.append(-1)
                    break
                t = time.perf_counter()
                try:
                    publish(raw, "general", "correspond", "bench-direct", stack.broker.uri, 30)
                    codes.append(0)
                    break
                except Exception as exc:
                    codes.append(75)
                    print(f"  publish failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    time.sleep(0.5)
            return {"start": start, "end": time.perf_counter(), "codes": codes, "last": time.perf_counter() - t}

        direct = deliver(stack, api, direct_mails, publish_one, args.concurrency, args,
                         "diagnostic: publisher.publish() in-process, no process per mail")
        expected += len(direct_mails)
        direct["verify"] = verify(api, direct_mails, expected, args.sample)
        out["direct"] = direct
    # 4. memory: one big mail through the mailgate, the ingest process's peak RSS
    if args.big_mail:
        out["memory"] = big_mail_memory(stack, api, args.big_mail)
    api.client.close()
    return out


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def big_mail(megabytes: float, token: str) -> bytes:
    """A mail of about ``megabytes`` MB: a text part and one base64 attachment (random
    bytes, so nothing compresses or dedups), as tests/ingest's 50 MB test builds it."""
    payload = random.Random(7).randbytes(int(megabytes * 1e6 * 0.74))
    import base64
    return (f"From: Big Sender <big@example.net>\r\nTo: abuse@csirt.example\r\nSubject: Big mail {token}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{token}@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=BOUND\r\n\r\n--BOUND\r\nContent-Type: text/plain\r\n\r\n"
            f"a packet capture, {token}\r\n--BOUND\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=\"capture.pcap\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ).encode() + base64.encodebytes(payload) + b"--BOUND--\r\n"


def big_mail_memory(stack, api: Api, megabytes: float) -> dict:
    """Peak resident memory (VmHWM, reset first through /proc/PID/clear_refs) of the
    ingest, tickets and gateway processes while one big mail goes through the
    mailgate until it is a ticket."""
    token = f"big{random.Random().randrange(10**9)}"
    raw = big_mail(megabytes, token)
    names = [n for n in ("ingest", "tickets", "gateway") if n in stack.procs]
    before = {}
    for name in names:
        pid = stack.procs[name].pid
        before[name] = _status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")      # peak RSS := current RSS
    print(f"\nmemory: one {len(raw) / 1e6:.1f} MB mail through osprey-mailgate ...")
    t0 = time.perf_counter()
    proc = stack.mailgate(raw, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"mailgate exit {proc.returncode}: {proc.stderr.decode(errors='replace')[:300]}")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        hits = api.found(token)
        if hits:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("the big mail did not become a ticket within 600 s")
    wall = time.perf_counter() - t0
    peaks = {name: _status_kib(stack.procs[name].pid, "VmHWM") for name in names}
    for name in names:
        print(f"  {name:<8} RSS before {before[name] / 1024:7.1f} MiB, peak while ingesting "
              f"{peaks[name] / 1024:7.1f} MiB (+{(peaks[name] - before[name]) / 1024:.1f} MiB)")
    print(f"  mail to ticket in {wall:.1f}s")
    return {"size": len(raw), "before": before, "peak": peaks, "wall": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--mails", type=int, default=500, help="mails to generate and deliver (default 500)")
    ap.add_argument("--via", choices=["mailgate", "lmtp", "both"], default="mailgate",
                    help="intake front end: the osprey-mailgate pipe, the osprey-lmtp listener, or both one after "
                         "the other on different mails (default mailgate)")
    ap.add_argument("--concurrency", type=int, default=8, help="parallel osprey-mailgate processes (default 8)")
    ap.add_argument("--feeders", type=int, default=4,
                    help="parallel LMTP connections into osprey-lmtp, each reused for many mails (default 4)")
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
    ap.add_argument("--big-mail", type=float, default=0, metavar="MB",
                    help="after the runs, send one mail of about MB megabytes through the mailgate and report the "
                         "peak resident memory of ingest, tickets and the gateway while it is ingested (0: skip; "
                         "-n 0 --big-mail 50 measures only that)")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile osprey/ and services/ first (where no .pyc files exist and "
                         "PYTHONDONTWRITEBYTECODE=1 is set, every mailgate run then compiles its modules again)")
    ap.add_argument("--direct", type=int, default=None,
                    help="mails for the diagnostic phase that calls publisher.publish() in-process, "
                         "without a process per mail (default: as many as -n with the mailgate, else 0; 0 skips it)")
    args = ap.parse_args(argv)
    vias = ["mailgate", "lmtp"] if args.via == "both" else [args.via]
    n_direct = (args.mails if "mailgate" in vias else 0) if args.direct is None else args.direct

    print_machine("bench/ingest.py")
    t = time.perf_counter()
    # the first front end gets the seed's corpus; others get their own (the same
    # bytes again would only be recognised as a repeated delivery)
    seeds = {"mailgate": args.seed, "lmtp": args.seed if vias == ["lmtp"] else args.seed + 2000,
             "direct": args.seed + 1000}
    corpora = {via: generate_mails(args.mails, seeds[via]) for via in vias}
    if n_direct:
        corpora["direct"] = generate_mails(n_direct, seeds["direct"])
    mails = corpora[vias[0]]
    total_mb = sum(len(m.raw) for m in mails) / 1e6
    for name, corpus in corpora.items():
        print(f"{name} corpus (seed {seeds[name]}, generated in {time.perf_counter() - t:.1f}s): "
              f"{describe_mails(corpus) if corpus else 'none'}")
    sys.stdout.flush()

    from osprey.broker import free_port
    args.lmtp_port = free_port()
    with running_stack(keep=args.keep) as stack:
        check_quiet()
        res = run_all(stack, corpora, args)
    ceil = None if args.skip_ceiling or not mails else ceilings(mails, args.ceiling_seconds)

    gate, lmtp, direct = res["gate"], res["lmtp"], res["direct"]
    ncpu = len(os.sched_getaffinity(0))

    def per_mail(cpu: dict, count: int) -> str:
        pipes = cpu.get("bench children", 0) + cpu.get("bench (this process)", 0)
        down = sum(cpu.get(k, 0) for k in ("rabbitmq", "ingest", "tickets", "gateway", "crypto", "enrich",
                                           "notify"))
        listener = (f"LMTP listener {cpu['lmtp'] / count * 1000:.1f} ms, feeders+polling "
                    if "lmtp" in cpu else "hand-off side ")
        return (f"{listener}{pipes / count * 1000:.0f} ms, rabbitmq+services {down / count * 1000:.0f} ms "
                f"(ingest {cpu.get('ingest', 0) / count * 1000:.0f}, "
                f"tickets {cpu.get('tickets', 0) / count * 1000:.0f}, "
                f"rabbitmq {cpu.get('rabbitmq', 0) / count * 1000:.0f}); other processes on the machine "
                f"{cpu.get('other processes', 0):.1f} CPU-s")

    def verdict(v: dict) -> str:
        return (f"{'OK' if v['ok'] else 'FAILED'}: {v['distinct']} distinct tickets, /tickets total "
                f"{v['final_total']} (expected {v['expected_total']}), {v['dups']} duplicates, "
                f"{v['redelivered']} redelivered, {v['problems']} problems; {v['search_ok']}/{v['sample']} "
                "sampled words found once")

    print("\n" + "=" * 100)
    print("SUMMARY bench/ingest.py")
    print(f"  mails                    {len(mails)} per front end ({total_mb:.2f} MB, seed {args.seed}), "
          f"via {args.via}, {ncpu} cores")
    if gate:
        n, lat = gate["n"], gate["lat"]
        e2e = n / gate["wall"] if gate["delivered"] else float("nan")
        mb = sum(len(m.raw) for m in corpora["mailgate"]) / 1e6
        print(f"  osprey-mailgate, {args.concurrency} parallel pipes:")
        print(f"    hand-off               {(n - gate['failed']) / gate['handoff_wall']:7.1f} mails/s  "
              f"({n - gate['failed']}/{n} pipes exited 0 in {gate['handoff_wall']:.1f}s; {gate['retried']} retried, "
              f"{gate['failed']} failed)")
        print(f"    latency per pipe       p50 {pct(lat, 50) * 1000:.0f} ms  p95 {pct(lat, 95) * 1000:.0f} ms  "
              f"max {max(lat) * 1000:.0f} ms")
        print(f"    mailgate process CPU   {gate['cpu'].get('bench children', 0) / n * 1000:.1f} ms per mail "
              f"(the pipes alone: reaped children; floor: interpreter {gate['floor']['interpreter']:.1f} ms, "
              f"mailgate with no mail {gate['floor']['no mail']:.1f} ms; target <= 45)")
        print(f"    end to end             {e2e:7.1f} mails/s  ({gate['wall']:.1f}s first pipe start → last mail "
              f"delivered and searchable, {gate['lag']:.2f}s after the last pipe exited; "
              f"{mb / gate['wall']:.2f} MB/s)")
        print(f"    CPU per mail           {per_mail(gate['cpu'], n)}")
        print(f"    exactly once           {verdict(gate['verify'])}")
    if lmtp:
        n, lat = lmtp["n"], lmtp["lat"]
        l_e2e = n / lmtp["wall"] if lmtp["delivered"] else float("nan")
        mb = sum(len(m.raw) for m in corpora["lmtp"]) / 1e6
        print(f"  osprey-lmtp, {args.feeders} LMTP connection(s), each reused for every mail it carries:")
        print(f"    hand-off               {(n - lmtp['failed']) / lmtp['handoff_wall']:7.1f} mails/s  "
              f"({n - lmtp['failed']}/{n} got 250 in {lmtp['handoff_wall']:.1f}s; {lmtp['retried']} retried, "
              f"{lmtp['failed']} failed)")
        print(f"    latency per mail       p50 {pct(lat, 50) * 1000:.1f} ms  p95 {pct(lat, 95) * 1000:.1f} ms  "
              f"max {max(lat) * 1000:.0f} ms  (MAIL FROM → 250 after DATA)")
        print(f"    end to end             {l_e2e:7.1f} mails/s  ({lmtp['wall']:.1f}s first mail → last mail "
              f"delivered and searchable, {lmtp['lag']:.2f}s after the last 250; {mb / lmtp['wall']:.2f} MB/s)")
        print(f"    listener CPU           {lmtp['cpu'].get('lmtp', 0) / n * 1000:.2f} ms per mail "
              f"({lmtp['cpu'].get('lmtp', 0):.1f} CPU-s for {n} mails)")
        print(f"    CPU per mail           {per_mail(lmtp['cpu'], n)}")
        print(f"    exactly once           {verdict(lmtp['verify'])}")
    if direct:
        dn = direct["n"]
        d_e2e = dn / direct["wall"] if direct["delivered"] else float("nan")
        print(f"  diagnostic, no process per mail (publisher.publish() in-process, {args.concurrency} threads, "
              f"{dn} other mails):")
        print(f"    publish                {(dn - direct['failed']) / direct['handoff_wall']:7.1f} mails/s  "
              f"(p50 {pct(direct['lat'], 50) * 1000:.0f} ms, p95 {pct(direct['lat'], 95) * 1000:.0f} ms)")
        print(f"    end to end             {d_e2e:7.1f} mails/s  ({direct['wall']:.1f}s to delivered and "
              f"searchable, {direct['lag']:.2f}s after the last publish)")
        print(f"    CPU per mail           {per_mail(direct['cpu'], dn)}")
        print(f"    exactly once           {verdict(direct['verify'])}")
    memory = res.get("memory")
    if memory:
        print(f"  memory, one {memory['size'] / 1e6:.1f} MB mail (peak RSS while it became a ticket, "
              f"{memory['wall']:.1f}s):")
        for name, peak in memory["peak"].items():
            print(f"    {name:<22} {peak / 1024:7.1f} MiB peak  (before: {memory['before'][name] / 1024:.1f} MiB, "
                  f"+{(peak - memory['before'][name]) / 1024:.1f} MiB = {(peak - memory['before'][name]) * 1024 / memory['size']:.1f}x the mail)")
    if ceil:
        (er, emb), (pr, pmb) = ceil["email"], ceil["parse_mail"]
        print(f"  ceiling: email package   {er:7.0f} mails/s  {emb:6.1f} MB/s  (message_from_bytes(policy=default)"
              " + walk/decode every part, one core)")
        print(f"  ceiling: parse_mail      {pr:7.0f} mails/s  {pmb:6.1f} MB/s  (Osprey's ingest parse step, one core)")
        for label, run in (("mailgate", gate), ("lmtp", lmtp)):
            if run:
                rate_ = run["n"] / run["wall"] if run["delivered"] else float("nan")
                print(f"  {label + ' vs ceiling':<24} {rate_ / er * 100:.1f}% of the email-package rate, "
                      f"{rate_ / pr * 100:.1f}% of parse_mail's")
    print("=" * 100)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stack stopped", file=sys.stderr)
        sys.exit(130)
