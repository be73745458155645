"""Shared by the benchmarks in bench/: machine description, a seeded generator of
realistic abuse-report mails, a Stack that is always stopped, per-process CPU
accounting and percentiles. Benchmarks are not tests: they print figures, exit 0."""
from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import platform
import random
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path

import httpx

# --- the machine ---------------------------------------------------------------

def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpus_total": os.cpu_count(),
        "cpu": model,
        "ram_gib": mem_kb / 1024 / 1024,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
    }


def print_machine(title: str) -> None:
    m = machine()
    print(f"=== {title} ===")
    print(f"machine: nproc={m['nproc']} (of {m['cpus_total']})  cpu={m['cpu']!r}  "
          f"ram={m['ram_gib']:.1f} GiB  python={m['python']}  kernel={m['kernel']}")
    print(f"started: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    sys.stdout.flush()


# --- statistics ----------------------------------------------------------------

def pct(values, p: float) -> float:
    """The p-th percentile (nearest-rank on sorted values); nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- a Stack that is always stopped ------------------------------------------------

@contextlib.contextmanager
def running_stack(env: dict | None = None, keep: bool = False):
    """A fresh osprey.testing.Stack in a temp folder; stopped on exit, on error, on
    Ctrl-C and on SIGTERM (turned into KeyboardInterrupt)."""
    from osprey.testing import Stack

    base = Path(tempfile.mkdtemp(prefix="osprey-bench-"))
    stack = Stack(base / "stack", env=env)
    previous = signal.getsignal(signal.SIGTERM)

    def _term(_signum, _frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, _term)
    t0 = time.perf_counter()
    try:
        try:
            stack.start()
        except BaseException:
            print("stack failed to start; last log lines:", file=sys.stderr)
            for name in ("rabbitmq", "ingest", "tickets", "gateway"):
                print(f"--- {name}\n{stack.tail(name, 15)}", file=sys.stderr)
            raise
        print(f"stack: started in {time.perf_counter() - t0:.1f}s under {base} "
              f"(gateway {stack.url}, broker {stack.broker.uri})")
        sys.stdout.flush()
        yield stack
    finally:
        t1 = time.perf_counter()
        with contextlib.suppress(BaseException):
            stack.stop()
        print(f"stack: stopped in {time.perf_counter() - t1:.1f}s"
              + (f" (kept {base})" if keep else ""))
        if not keep:
            import shutil
            shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def token_for(stack) -> str:
    r = httpx.post(f"{stack.url}/api/v1/tokens", json={"username": "admin", "password": stack.admin_password},
                   timeout=60)
    r.raise_for_status()
    return r.json()["token"]


# --- CPU accounting per component ------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")


def _session_cpu(sid: int) -> float:
    """CPU seconds (user+system) of every live process in session ``sid``, plus what
    their already reaped children used."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is state (field 3): session is field 6, utime 14, stime 15, cutime 16, cstime 17
        if int(fields[3]) != sid:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _CLK


def machine_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds from /proc/stat: busy (user+nice+system+irq+softirq),
    iowait and steal (time the hypervisor gave to someone else)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return {"busy": (user + nice + system + irq + softirq) / _CLK, "iowait": iowait / _CLK, "steal": steal / _CLK}


def machine_busy(seconds: float = 1.0) -> float:
    """Cores busy over the next ``seconds`` (to notice other load before measuring)."""
    a = machine_cpu()["busy"]
    time.sleep(seconds)
    return (machine_cpu()["busy"] - a) / seconds


def check_quiet(label: str = "before start") -> None:
    busy = machine_busy(1.0)
    load = os.getloadavg()
    note = "" if busy < 0.2 else "  WARNING: other processes are using the CPU; figures will be lower"
    print(f"machine busy {label}: {busy:.2f} cores (load average {load[0]:.2f} {load[1]:.2f}){note}")
    sys.stdout.flush()


def cpu_snapshot(stack) -> dict[str, float]:
    """CPU seconds so far by component: rabbitmq, each service, gateway, and this
    process (the load generator) plus its reaped children (e.g. mailgate pipes)."""
    out = {}
    if stack.broker is not None and stack.broker.proc is not None:
        out["rabbitmq"] = _session_cpu(stack.broker.proc.pid)
    for name, proc in stack.procs.items():
        out[name] = _session_cpu(proc.pid)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["bench (this process)"] = me.ru_utime + me.ru_stime
    out["bench children"] = kids.ru_utime + kids.ru_stime
    out["_machine"] = machine_cpu()
    return out


def print_cpu(before: dict, after: dict, wall: float, label: str) -> dict[str, float]:
    """Prints CPU seconds per component used between two snapshots, and returns them."""
    used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if not k.startswith("_")}
    mach = {k: after["_machine"][k] - before["_machine"][k] for k in after["_machine"]}
    total = sum(used.values())
    used["other processes"] = max(0.0, mach["busy"] - total)
    ncpu = len(os.sched_getaffinity(0))
    print(f"CPU during {label} ({wall:.1f}s wall; machine: {mach['busy']:.1f} CPU-s busy = "
          f"{mach['busy'] / wall if wall else 0:.2f} of {ncpu} cores, iowait {mach['iowait']:.1f}s, "
          f"steal {mach['steal']:.1f}s):")
    for name, sec in sorted(used.items(), key=lambda kv: -kv[1]):
        if sec < 0.05:
            continue
        print(f"  {name:<22} {sec:7.1f} CPU-s  {sec / wall * 100 if wall else 0:5.0f}% of one core")
    return used


# --- realistic abuse-report mail --------------------------------------------------

_DOC_V4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
_DOC_V6 = ipaddress.ip_network("2001:db8::/32")
_PUBLIC_V6 = [ipaddress.ip_network(n) for n in ("2a00::/12", "2600::/12", "2400::/12", "2800::/12")]
_BAD_V4 = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/3")]

ORGS = [
    ("Abuse Desk", "abuse", "hosting-example.net"), ("NOC", "noc", "transit.example.com"),
    ("CERT-Bund Reports", "reports", "cert.example.de"), ("Spamhaus-like Feed", "feed", "dnsbl.example.org"),
    ("Jörg Müller", "joerg.mueller", "uni-example.de"), ("Søren Ødegård", "soren", "isp.example.dk"),
    ("Security Operations", "soc", "bank.example.co.uk"), ("Shadowserver-ish", "autoreports", "scan.example.org"),
    ("Marie-Claire Dupont", "mc.dupont", "fai.example.fr"), ("Abuse Team", "abuse-team", "cloud.example.io"),
    ("山田 太郎", "yamada", "example.jp"), ("", "noreply", "honeypot.example.net"),
    ("Fail2ban on web01", "root", "web01.customer.example"), ("Incident Response", "ir", "csirt.example.eu"),
]

SCENARIOS = [
    ("SSH brute force from {ip}", "ssh", "Failed password for invalid user {user} from {ip} port {port} ssh2"),
    ("Port scan originating from {ip}", "scan", "DROP IN=eth0 SRC={ip} DST={dst} PROTO=TCP SPT={port} DPT={dport} SYN"),
    ("Phishing site hosted on {ip}", "phish", "GET /login/{path} HTTP/1.1 host={ip} ua=\"Mozilla/5.0\" status=200"),
    ("Botnet C2 traffic to {ip}", "c2", "beacon src={dst} dst={ipport} bytes={bytes} interval=60s"),
    ("Spam sent via {ip}", "spam", "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1"),
    ("DDoS participation: {ip}", "ddos", "UDP flood src={ip} dst={dst} dport={dport} pps={bytes}"),
    ("Compromised host {ip} (malware download)", "malware", "GET /bin/{path}.sh from {ip} status=200 size={bytes}"),
    ("Missbrauchsmeldung: Angriffe von {ip}", "ssh", "Failed password for root from {ip} port {port} ssh2"),
    ("Signalement d'abus — {ip}", "scan", "DROP SRC={ip} DST={dst} PROTO=UDP SPT={port} DPT={dport}"),
    ("[Automated] Abuse report for {ip}", "scan", "scanner={ip} target={dst} dport={dport} count={bytes}"),
]

WORDS = ("please investigate the host and take appropriate action; we observed repeated attempts from the "
         "address listed below against our infrastructure. the activity continued after our first notice and "
         "is still ongoing. times are in UTC. this report was generated by our monitoring and reviewed by an "
         "analyst. kindly reply with the ticket reference so we can correlate").split()


def _public_v4(rng: random.Random) -> ipaddress.IPv4Address:
    while True:
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if not any(addr in n for n in _BAD_V4):
            return addr


def random_ip(rng: random.Random):
    r = rng.random()
    if r < 0.35:
        net = rng.choice(_DOC_V4)
        return net[rng.randrange(1, 255)]
    if r < 0.75:
        return _public_v4(rng)
    if r < 0.88:
        return _DOC_V6[rng.getrandbits(64)]
    net = rng.choice(_PUBLIC_V6)
    return net[rng.getrandbits(64) + (rng.getrandbits(40) << 64)]


@dataclass
class Mail:
    raw: bytes
    token: str
    kind: str
    ips: list[str]

    @property
    def sha256(self) -> str:
        import hashlib
        return hashlib.sha256(self.raw).hexdigest()


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def make_mail(rng: random.Random, i: int, token: str) -> Mail:
    """One abuse report of 1-30 KB (log-uniform): plain, multipart/alternative,
    or either with a base64 attachment (a text log/CSV or binary bytes)."""
    target = int(math.exp(rng.uniform(math.log(1024), math.log(30 * 1024))))
    kind = rng.choices(["plain", "alternative", "plain+attachment", "alternative+attachment"],
                       weights=[45, 25, 15, 15])[0]
    ips = [random_ip(rng) for _ in range(rng.randint(1, 3))]
    ip_text = [str(a) for a in ips]
    subj_tpl, _tag, log_tpl = rng.choice(SCENARIOS)
    name, local, domain = rng.choice(ORGS)
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    when = now - timedelta(seconds=rng.randrange(30 * 86400))

    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{name} <{local}@{domain}>" if name else f"{local}@{domain}"
    msg["To"] = rng.choice(["abuse@csirt.example", "CSIRT <cert@csirt.example>", "security@csirt.example"])
    if rng.random() < 0.2:
        msg["Cc"] = f"noc@{domain}"
    msg["Subject"] = subj_tpl.format(ip=ip_text[0])
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(idstring=f"{i}.{rng.getrandbits(32):x}", domain=domain)
    if rng.random() < 0.3:
        msg["X-Report-Feed"] = rng.choice(["ARF", "X-ARF", "fail2ban", "custom"])
    if rng.random() < 0.3:
        msg["Auto-Submitted"] = "auto-generated"

    has_attachment = kind.endswith("+attachment")
    att_share = rng.uniform(0.3, 0.6) if has_attachment else 0.0
    headers = msg
    sub_seed = rng.getrandbits(64)

    def build(scale: float) -> bytes:
        # the same content for the same scale: its own RNG, restarted per attempt
        r = random.Random(sub_seed)
        msg = EmailMessage(policy=SMTP)
        for k, v in headers.items():
            msg[k] = v
        body_budget = max(500, int((target * (1 - att_share) - 900) * scale))  # ~900 B headers/MIME
        att_target = target * att_share * scale

        head = [
            "Hello,",
            "",
            _sentence(r, r.randint(12, 30)),
            "",
            "Offending address(es): " + ", ".join(ip_text),
            f"Our reference: {token}",
            f"First seen: {when.isoformat()}",
            "",
            _sentence(r, r.randint(8, 20)),
            "",
            "Log excerpt:",
        ]
        lines = list(head)
        size = sum(len(x) + 2 for x in lines)
        t = when
        while size < body_budget:
            t += timedelta(seconds=r.randrange(1, 90))
            src, dport = r.choice(ip_text), r.choice([22, 23, 25, 80, 443, 445, 3389, 8080, 53, 123])
            line = t.strftime("%Y-%m-%dT%H:%M:%SZ ") + log_tpl.format(
                ip=src, dst=r.choice(ip_text), port=r.randrange(1024, 65535), dport=dport,
                ipport=f"[{src}]:{dport}" if ":" in src else f"{src}:{dport}",
                user=r.choice(["admin", "root", "test", "oracle", "ubuntu", "pi", "git"]),
                path="".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8)),
                bytes=r.randrange(40, 1_000_000), pid=r.randrange(100, 65000))
            lines.append(line)
            size += len(line) + 2
        lines += ["", "Regards,", name or local, f"{local}@{domain}"]
        text = "\r\n".join(lines) + "\r\n"
        msg.set_content(text)
        if kind.startswith("alternative"):
            paras = "".join(f"<p>{escape(x)}</p>" for x in head if x and not x.startswith("Log"))
            log = escape("\n".join(lines[len(head):]))
            msg.add_alternative(f"<html><head><meta charset=\"utf-8\"></head><body>{paras}"
                                f"<pre style=\"font-size:small\">{log}</pre></body></html>", subtype="html")
        if has_attachment:
            att_bytes = max(200, int(att_target * 3 / 4))  # base64 grows by 4/3
            if r.random() < 0.5:
                rows = ["timestamp,src,dst,dport,proto"]
                while sum(len(row) + 1 for row in rows) < att_bytes:
                    rows.append(f"{int(t.timestamp()) + len(rows)},{r.choice(ip_text)},{r.choice(ip_text)},"
                                f"{r.randrange(1, 65535)},{r.choice(['tcp', 'udp', 'icmp'])}")
                msg.add_attachment("\n".join(rows) + "\n", subtype="csv", filename=f"evidence-{i}.csv", cte="base64")
            else:
                maintype, subtype, ext = r.choice([("application", "gzip", "log.gz"),
                                                     ("application", "vnd.tcpdump.pcap", "pcap"),
                                                     ("application", "octet-stream", "bin"),
                                                     ("image", "png", "png")])
                msg.add_attachment(r.randbytes(att_bytes), maintype=maintype, subtype=subtype,
                                   filename=f"capture-{i}.{ext}")
        return msg.as_bytes()

    scale, raw = 1.0, build(1.0)
    for _ in range(3):  # transfer encodings (QP turns "=" into "=3D") inflate; correct towards target
        ratio = len(raw) / target
        if 0.9 <= ratio <= 1.1 or (ratio < 0.9 and len(raw) >= 1024):
            break
        scale /= ratio
        raw = build(scale)
    return Mail(raw=raw, token=token, kind=kind, ips=ip_text)


def generate_mails(n: int, seed: int) -> list[Mail]:
    rng = random.Random(seed)
    tokens: set[str] = set()
    mails = []
    for i in range(n):
        while True:
            token = "osb" + "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(10))
            if token not in tokens:
                tokens.add(token)
                break
        mails.append(make_mail(rng, i, token))
    return mails


def describe_mails(mails: list[Mail]) -> str:
    from collections import Counter
    sizes = [len(m.raw) for m in mails]
    kinds = Counter(m.kind for m in mails)
    return (f"{len(mails)} mails, {sum(sizes) / 1e6:.2f} MB total, size min {min(sizes) / 1024:.1f} KB / "
            f"median {pct(sizes, 50) / 1024:.1f} KB / mean {sum(sizes) / len(sizes) / 1024:.1f} KB / "
            f"max {max(sizes) / 1024:.1f} KB; " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
