"""The gateway's RPC pattern under concurrency.

Every API request is an RPC to a nameko service, made from a thread pool
(osprey.rpc.AsyncRpc) so the gateway's asyncio loop never waits on the broker.
This starts a real stack, delivers a few dozen mails through osprey-mailgate,
then, with httpx.AsyncClient:

* fires a fixed number of requests at each concurrency level against two
  RPC-backed endpoints (GET /api/v1/tickets?limit=20, GET /api/v1/search?q=WORD):
  req/s, p50/p95/p99 latency, errors, CPU by component;
* /healthz (no RPC) at the highest level: the event loop's own baseline;
* /healthz probed sequentially from a separate process, idle and then WHILE the
  highest level of RPC requests is in flight: if the loop were blocked by RPC
  work, these latencies would rise towards the RPC latencies.

    cd /work/main && .venv/bin/python bench/gateway.py [--levels 1,10,50] [--requests 500]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from osprey import config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (check_quiet, cpu_snapshot, generate_mails, pct, print_machine,  # noqa: E402
                     running_stack, token_for)


# --- load ----------------------------------------------------------------------

async def load(url: str, token: str | None, path: str, requests: int, concurrency: int,
               started: asyncio.Event | None = None, stack=None) -> dict:
    """``requests`` GETs of ``path`` by ``concurrency`` workers, each keeping one
    request in flight at a time over its own keep-alive connection.

    Each worker has its own AsyncClient: one client shared by 50 workers (a pool of
    50 connections) costs ~5 ms of client CPU per request here (httpcore scans its
    pool on every request) against ~1.7 ms, and on 2 cores the load generator would
    then be what is measured."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors: Counter = Counter()
    issued = 0

    async def worker(client: httpx.AsyncClient):
        nonlocal issued
        while issued < requests:
            issued += 1
            t = time.perf_counter()
            try:
                r = await client.get(path)
                if r.status_code != 200:
                    errors[f"HTTP {r.status_code}"] += 1
                else:
                    r.json()
            except Exception as exc:  # a benchmark counts failures, it does not stop
                errors[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - t)

    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=60) for _ in range(concurrency)]
    try:
        # connect first, so that connection set-up is not in the figures
        await asyncio.gather(*(c.get("/healthz") for c in clients))
        if started is not None:
            started.set()
        before = cpu_snapshot(stack) if stack is not None else None
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        wall = time.perf_counter() - t0
        cpu = cpu_share(before, cpu_snapshot(stack), wall) if stack is not None else {}
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {"path": path, "concurrency": concurrency, "n": len(latencies), "wall": wall,
            "rps": len(latencies) / wall, "lat": latencies, "errors": errors, "cpu": cpu}


def run_load(stack, token, path, requests, concurrency) -> dict:
    return asyncio.run(load(stack.url, token, path, requests, concurrency, stack=stack))


def cpu_share(before, after, wall) -> dict[str, float]:
    used = {k: (after[k] - before[k]) / wall for k in after if not k.startswith("_")}
    busy = (after["_machine"]["busy"] - before["_machine"]["busy"]) / wall
    used["other"] = max(0.0, busy - sum(used.values()))
    return used


def cpu_line(cpu: dict) -> str:
    names = {"bench (this process)": "client", "rabbitmq": "rabbit"}
    parts = [f"{names.get(k, k)} {v * 100:.0f}%" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
             if v >= 0.02 and k != "bench children"]
    return "CPU " + ", ".join(parts)


# --- the /healthz prober, in its own process (its timings are not delayed by the
# load generator's event loop) -------------------------------------------------------

def _probe(url: str, start, stop, out, interval: float) -> None:
    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/healthz")  # connect
        start.wait()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = client.get("/healthz")
                ok = r.status_code == 200
            except Exception:
                ok = False
            lat.append((time.perf_counter() - t, ok))
            time.sleep(interval)
    out.put(lat)


class Prober:
    def __init__(self, url: str, interval: float):
        ctx = mp.get_context("spawn")
        self.start_evt, self.stop_evt, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe, args=(url, self.start_evt, self.stop_evt, self.out, interval),
                                daemon=True)
        self.proc.start()

    def __enter__(self):
        self.start_evt.set()
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        if exc[0] is None:
            self.result = self.out.get(timeout=60)
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
        return False


def probe_idle(url: str, seconds: float, interval: float) -> list:
    p = Prober(url, interval)
    time.sleep(1.5)  # let the child import and connect
    with p:
        time.sleep(seconds)
    return p.result


def probe_under_load(stack, token, path, requests, concurrency, interval) -> tuple[list, dict]:
    p = Prober(stack.url, interval)
    time.sleep(1.5)

    async def go():
        started = asyncio.Event()
        task = asyncio.create_task(load(stack.url, token, path, requests, concurrency, started, stack))
        await started.wait()
        await asyncio.sleep(0.2)  # the load ramped up: `concurrency` requests in flight
        with p:
            res = await task
        return res

    res = asyncio.run(go())
    return p.result, res


# --- report ----------------------------------------------------------------------

HEADER = (f"{'endpoint':<34}{'conc':>5}{'reqs':>6}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}  errors")


def row(label: str, res: dict) -> str:
    lat = res["lat"]
    errs = ", ".join(f"{k} x{v}" for k, v in res["errors"].items()) or "0"
    rps = f"{res['rps']:9.1f}" if res.get("rps") is not None else f"{'-':>9}"
    return (f"{label:<34}{res['concurrency']:>5}{res['n']:>6}{rps}{pct(lat, 50) * 1000:9.1f}"
            f"{pct(lat, 95) * 1000:9.1f}{pct(lat, 99) * 1000:9.1f}{max(lat) * 1000:9.1f}  {errs}")


def probe_res(samples: list) -> dict:
    return {"concurrency": 1, "n": len(samples), "rps": None, "lat": [s[0] for s in samples],
            "errors": Counter({"failed": sum(1 for s in samples if not s[1])}) if any(not s[1] for s in samples)
            else Counter()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mails", type=int, default=50, help="mails delivered before measuring (default 50)")
    ap.add_argument("--levels", default="1,10,50", help="concurrency levels (default 1,10,50)")
    ap.add_argument("--requests", type=int, default=500, help="requests per endpoint and level (default 500)")
    ap.add_argument("--word", default="password", help="the search word (default 'password': ssh reports)")
    ap.add_argument("--inflight-requests", type=int, default=1000,
                    help="RPC requests (at the highest level) while /healthz is probed (default 1000)")
    ap.add_argument("--probe-interval", type=float, default=0.01,
                    help="pause between sequential /healthz probes (default 0.01 s)")
    ap.add_argument("--token-cache-seconds", type=float, default=30,
                    help="OSPREY_TOKEN_CACHE_SECONDS for the gateway (default 30, the product default; "
                         "the test Stack uses 1)")
    ap.add_argument("--seed", type=int, default=3, help="RNG seed of the delivered mails (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, databases)")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    top = max(levels)

    print_machine("bench/gateway.py")
    env = {"OSPREY_TOKEN_CACHE_SECONDS": f"{args.token_cache_seconds:g}"}
    print(f"gateway: OSPREY_TOKEN_CACHE_SECONDS={args.token_cache_seconds:g}, "
          f"RPC thread pool OSPREY_GATEWAY_RPC_THREADS={config.get('OSPREY_GATEWAY_RPC_THREADS')}")
    mails = generate_mails(args.mails, args.seed)
    rows: list[tuple[str, dict]] = []
    with running_stack(env=env, keep=args.keep) as stack:
        t = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(lambda m: stack.mailgate(m.raw).returncode, mails))
        token = token_for(stack)
        api = httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                           timeout=60)
        deadline = time.monotonic() + 300
        while api.get("/tickets", params={"limit": 1}).json()["total"] < codes.count(0):
            if time.monotonic() > deadline:
                raise SystemExit("mails were not delivered within 300 s")
            time.sleep(0.2)
        hits = len(api.get("/search", params={"q": args.word}).json()["results"])
        page = api.get("/tickets", params={"limit": 20}).content
        api.close()
        print(f"delivered {codes.count(0)}/{len(mails)} mails in {time.perf_counter() - t:.1f}s; "
              f"search q={args.word!r} finds {hits} tickets; a /tickets?limit=20 page is {len(page)} bytes")
        check_quiet()

        endpoints = [("GET /api/v1/tickets?limit=20", "/api/v1/tickets?limit=20"),
                     (f"GET /api/v1/search?q={args.word}", f"/api/v1/search?q={args.word}")]
        # warm-up: every RPC thread of the gateway makes its own broker connection on first use
        warm = run_load(stack, token, endpoints[0][1], max(100, 2 * top), top)
        print(f"\nwarm-up (first use of each RPC thread's connection):\n{HEADER}")
        print(row("warm-up " + endpoints[0][0][4:], warm))
        print(f"\n{HEADER}")
        for label, path in endpoints:
            for c in levels:
                res = run_load(stack, token, path, args.requests, c)
                rows.append((label, res))
                print(row(label, res) + f"   [{cpu_line(res['cpu'])}]")
                sys.stdout.flush()
        res = run_load(stack, None, "/healthz", args.requests, top)
        rows.append(("GET /healthz (no RPC)", res))
        print(row("GET /healthz (no RPC)", res) + f"   [{cpu_line(res['cpu'])}]")

        print(f"\n/healthz probed sequentially from another process "
              f"(every {args.probe_interval * 1000:.0f} ms):")
        idle = probe_idle(stack.url, 3, args.probe_interval)
        rows.append(("/healthz probe, idle", probe_res(idle)))
        print(row("/healthz probe, idle", probe_res(idle)))
        samples, loaded = probe_under_load(stack, token, endpoints[0][1], args.inflight_requests, top,
                                           args.probe_interval)
        label_l = f"  the load: {endpoints[0][0][4:]}"
        rows.append((f"/healthz probe, {top} RPC in flight", probe_res(samples)))
        rows.append((label_l, loaded))
        print(row(f"/healthz probe, {top} RPC in flight", probe_res(samples)))
        print(row(label_l, loaded) + f"   [{cpu_line(loaded['cpu'])}]")

    print("\n" + "=" * len(HEADER))
    print(f"SUMMARY bench/gateway.py  ({args.mails} mails in the stack; latencies in ms; conc = requests in "
          "flight)")
    print(HEADER)
    for label, res in rows:
        print(row(label, res) + (f"   [{cpu_line(res['cpu'])}]" if "cpu" in res else ""))
    pr_idle = [s[0] for s in idle]
    pr_load = [s[0] for s in samples]
    print(f"event loop: /healthz p50 {pct(pr_idle, 50) * 1000:.1f} ms idle vs {pct(pr_load, 50) * 1000:.1f} ms "
          f"with {top} RPC requests in flight (their own p50 {pct(loaded['lat'], 50) * 1000:.0f} ms); "
          f"p99 {pct(pr_idle, 99) * 1000:.1f} vs {pct(pr_load, 99) * 1000:.1f} ms")
    print("=" * len(HEADER))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stack stopped", file=sys.stderr)
        sys.exit(130)
