"""A complete Osprey on this machine, for integration tests and benchmarks.

``Stack`` starts a throwaway RabbitMQ node (osprey.broker), every service as its own
process (``python -m osprey.servicerunner NAME``, exactly what `make run` runs) and
the gateway, all with their state under one folder and on free loopback ports.
Nothing here is a fake: it is the real system, started small.

Databases: SQLite files under the folder (the default), or with
``database="postgresql"`` (or OSPREY_TEST_DB=postgresql in the environment) a
private PostgreSQL cluster (osprey.pgserver) with one database per service, given
to the services as OSPREY_TICKETS_DB_URL / OSPREY_INGEST_DB_URL. URLs of databases
elsewhere can be given the same way, in ``env``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import contracts
from .broker import RabbitNode, free_port
from .pgserver import PostgresNode

# the services that own a database, and the setting that names it (osprey.config)
DB_SETTINGS = {"tickets": "OSPREY_TICKETS_DB_URL", "ingest": "OSPREY_INGEST_DB_URL",
               "crypto": "OSPREY_CRYPTO_DB_URL", "enrich": "OSPREY_ENRICH_DB_URL", "notify": "OSPREY_NOTIFY_DB_URL"}
DATABASES = ("sqlite", "postgresql")

BIN = Path(sys.executable).parent


def corpora_dir() -> Path:
    """../shared/corpora beside the checkout (as in CI), else OSPREY_CORPORA, else the
    workplace's /work/shared/corpora."""
    candidates = [os.environ.get("OSPREY_CORPORA"), Path(__file__).resolve().parents[2] / "shared" / "corpora",
                  "/work/shared/corpora"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("no corpora folder: set OSPREY_CORPORA to ../shared/corpora")


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, base: Path, admin_password: str = "admin-test-pw", env: dict | None = None,
                 database: str | None = None):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.admin_password = admin_password
        self.extra_env = env or {}
        self.database = database or os.environ.get("OSPREY_TEST_DB") or "sqlite"
        if self.database not in DATABASES:
            raise StackError(f"unknown database {self.database!r} (OSPREY_TEST_DB): one of {', '.join(DATABASES)}")
        self.postgres: PostgresNode | None = None
        self.db_urls: dict[str, str] = {}      # service -> its database URL (PostgreSQL)
        self.broker: RabbitNode | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.http_port = free_port()

    # --- environment -------------------------------------------------------------
    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSPREY_")}
        env.update({
            "OSPREY_DATA_DIR": str(self.base / "data"),
            "OSPREY_AMQP_URI": self.broker.uri if self.broker else "",
            "OSPREY_START_BROKER": "0",
            "OSPREY_HTTP_HOST": "127.0.0.1",
            "OSPREY_HTTP_PORT": str(self.http_port),
            "OSPREY_ADMIN_PASSWORD": self.admin_password,
            "OSPREY_RPC_TIMEOUT": "20",
            "OSPREY_TOKEN_CACHE_SECONDS": "1",
            "OSPREY_ENRICH_LOOKUPS": "0",     # no outside requests from tests (the replay tests turn it on)
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        env.update({DB_SETTINGS[service]: url for service, url in self.db_urls.items()})
        env.update(self.extra_env)
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_path(self, name: str) -> Path:
        return self.base / f"{name}.log"

    # --- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 90) -> "Stack":
        if self.database == "postgresql":
            self.start_postgres(timeout)
        self.broker = RabbitNode(self.base / "rabbitmq")
        with open(self.log_path("rabbitmq"), "ab") as log:
            self.broker.start(timeout=timeout, log=log)
        for name in contracts.SERVICES:
            self.start_service(name)
        self.start_gateway()
        self.wait_ready(timeout)
        return self

    def start_postgres(self, timeout: float = 90) -> None:
        """The private cluster and an empty database per service (the services migrate)."""
        self.postgres = PostgresNode(self.base / "postgres")
        try:
            self.postgres.start(timeout=timeout)
            for service in DB_SETTINGS:
                self.db_urls[service] = self.postgres.create_database(service, exist_ok=True)
        except Exception as exc:
            raise StackError(f"{exc}\n{self.postgres.tail()}") from exc

    def crash_broker(self) -> None:
        """SIGKILL the broker node (its state stays)."""
        self.broker.kill()

    def start_broker(self, timeout: float = 90) -> None:
        """Start the same node again, on the same ports, with the same state."""
        with open(self.log_path("rabbitmq"), "ab") as log:
            try:
                self.broker.start(timeout=timeout, log=log)
            except Exception as exc:
                raise StackError(f"{exc}\n{self.tail('rabbitmq')}") from exc

    def start_service(self, name: str) -> None:
        self._spawn(name, [sys.executable, "-m", "osprey.servicerunner", name])

    def start_gateway(self) -> None:
        self._spawn("gateway", [str(BIN / "osprey"), "gateway", "run"])

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.log_path(name), "ab")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    def stop(self) -> None:
        # signal every process first, then wait: they stop in parallel
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name in list(self.procs):
            self.stop_process(name)
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.destroy()     # its log stays in base/postgres

    def readyz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError as exc:
            return 0, {"error": str(exc)}

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        status, body = 0, {}
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            status, body = self.readyz()
            if status == 200:
                return
            time.sleep(0.3)
        raise StackError(f"not ready after {timeout}s: {status} {body}")

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # --- what a clean run leaves ---------------------------------------------------------
    def log_errors(self) -> list[str]:
        """ERROR/CRITICAL records the services and the gateway logged, and tracebacks that
        no log record explains (a crash). A refusal nameko logs as an "(expected)"
        WARNING with its traceback is not an error."""
        import re
        record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) ")
        found = []
        for name in (*contracts.SERVICES, "gateway"):
            try:
                text = self.log_path(name).read_text(errors="replace")
            except FileNotFoundError:
                continue
            level = None
            for line in text.splitlines():
                m = record.match(line)
                if m:
                    level = m.group(1)
                    if level in ("ERROR", "CRITICAL"):
                        found.append(f"{name}: {line}")
                elif line.startswith("Traceback") and level not in ("WARNING", "ERROR", "CRITICAL"):
                    found.append(f"{name}: {line}")
        return found

    def intake_backlog(self) -> int:
        """Messages waiting on the intake queue, not yet taken by ingest."""
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(self.broker.uri))
        try:
            ch = conn.channel()
            return ch.queue_declare(contracts.INTAKE_QUEUE, durable=True, passive=True).method.message_count
        finally:
            conn.close()

    # --- using it ------------------------------------------------------------------
    def mailgate(self, raw: bytes, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "osprey-mailgate"), *args], input=raw, env={**self.env, **(env or {})},
                              capture_output=True, timeout=timeout)

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "osprey"), *args], input=input, env=self.env, capture_output=True,
                              timeout=timeout)
