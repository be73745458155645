"""A private PostgreSQL cluster: the one the tests (and a stack on PostgreSQL) start.

Debian's postgresql server binaries (``/usr/lib/postgresql/<version>/bin``) are run
directly, like osprey.broker runs RabbitMQ: ``initdb`` makes a cluster in a temp
folder, ``postgres`` serves it on 127.0.0.1 and a free port, its unix socket in
that folder (trust, for the superuser's housekeeping), TCP by password only
(scram-sha-256). Durability settings (fsync, synchronous_commit, full_page_writes)
stay at PostgreSQL's defaults; only the memory asked for is small.

initdb and postgres refuse to run as root: as root both run as the ``postgres``
user that Debian's package creates (subprocess's ``user=``/``group=``, as
``setpriv`` would), and the cluster lives in a folder of its own under /tmp
(pytest's tmp folders are mode 700, closed to that user); its path is in
``base/DATA_DIR``. Without root everything is under ``base``. ``data_root`` puts
the cluster's folder elsewhere (the test suite's throwaway cluster: /dev/shm).
The server's log is ``base/postgres.log``.

Ready (initdb + start + a password login over TCP) in about a second.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .broker import free_port

SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    pass


def bindir() -> Path:
    """The newest installed server's bin folder (OSPREY_PG_BINDIR overrides)."""
    override = os.environ.get("OSPREY_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")])
    if not found:
        raise PostgresError("no PostgreSQL server in /usr/lib/postgresql/*/bin: install Debian's postgresql "
                            "(scripts/bootstrap.sh test)")
    return Path(found[-1]).parent


def _as_root() -> bool:
    return os.geteuid() == 0


def _group_alive(pgid: int) -> bool:
    """Is any process of this process group still running (zombies do not count)?"""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class PostgresNode:
    """One cluster with one application role and database. ``start`` initialises the
    cluster on first use and keeps it across ``stop``/``start`` (and ``kill``)."""

    def __init__(self, base: Path, port: int | None = None, user: str = "osprey",
                 password: str | None = None, database: str = "osprey", data_root: Path | None = None):
        self.base = Path(base).resolve()
        self.data_root = Path(data_root) if data_root else None
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = user
        self.password = password or secrets.token_hex(16)
        self.database = database
        self.bin = bindir()
        self.proc: subprocess.Popen | None = None
        self.home = self._home()
        self.data = self.home / "data"
        self.sockets = self.home / "run"
        if len(str(self.sockets)) > 80:      # a unix socket's path has at most 107 bytes
            self.sockets = Path(tempfile.mkdtemp(prefix="osprey-pg-run-", dir="/tmp"))
        self.log_path = self.base / "postgres.log"

    # --- where things live ------------------------------------------------------------
    def _home(self) -> Path:
        if not _as_root() and self.data_root is None:
            return self.base
        marker = self.base / "DATA_DIR"
        if marker.exists() and Path(marker.read_text().strip()).is_dir():
            return Path(marker.read_text().strip())
        home = Path(tempfile.mkdtemp(prefix="osprey-pg-", dir=str(self.data_root or "/tmp")))
        marker.write_text(f"{home}\n")
        return home

    def _user_kwargs(self) -> dict:
        """subprocess arguments that drop root to the postgres user (none otherwise)."""
        if not _as_root():
            return {}
        try:
            pw = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresError("running as root needs the 'postgres' user Debian's postgresql package "
                                "creates") from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if _as_root():
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC", "PGTZ": "UTC"}
        env.pop("PGDATA", None)
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(self.home), **self._user_kwargs())
        if check and proc.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    # --- URLs ---------------------------------------------------------------------------
    def url_for(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """A SQLAlchemy URL (psycopg 3) over TCP with the application role."""
        user = user or self.user
        password = self.password if password is None else password
        return (f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@127.0.0.1:{self.port}/{quote(database, safe='')}")

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def admin_conninfo(self, database: str = "postgres") -> str:
        """libpq conninfo of the superuser over the private unix socket."""
        return f"host={self.sockets} port={self.port} user={SUPERUSER} dbname={database}"

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised:
            return
        for path in (self.home, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
            self._chown(path)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--no-locale",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions")
        hba = self.data / "pg_hba.conf"
        # only the private socket is trusted; TCP (loopback only) needs a password
        hba.write_text("local all all trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")
        self._chown(hba)

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockets),
            "unix_socket_permissions": "0700",
            "shared_buffers": "16MB",
            "max_connections": "200",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "password_encryption": "scram-sha-256",
        }
        cmd = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def start(self, timeout: float = 60.0) -> "PostgresNode":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.init()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(self.home), start_new_session=True,
                                         env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
                                         **self._user_kwargs())
        finally:
            log.close()
        self._wait_socket(timeout)
        self._ensure_role_and_database()
        self.wait_ready(timeout)
        return self

    def _wait_socket(self, timeout: float) -> None:
        """Until the superuser can connect over the socket (the server accepts queries)."""
        import psycopg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                psycopg.connect(self.admin_conninfo(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                last = exc
            time.sleep(0.05)
        raise PostgresError(f"postgres not ready after {timeout}s ({last}):\n{self.tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the application role logs in over TCP with its password and runs a query."""
        import psycopg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                     dbname=self.database, connect_timeout=2) as conn:
                    conn.execute("SELECT 1").fetchone()
                return
            except psycopg.OperationalError as exc:
                last = exc
            time.sleep(0.05)
        raise PostgresError(f"postgres not reachable over TCP after {timeout}s ({last}):\n{self.tail()}")

    def admin(self, database: str = "postgres"):
        """An autocommit superuser connection (psycopg) over the socket."""
        import psycopg

        return psycopg.connect(self.admin_conninfo(database), autocommit=True)

    def _ensure_role_and_database(self) -> None:
        from psycopg import sql

        with self.admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(self.user), sql.Literal(self.password)))
        self.create_database(self.database, exist_ok=True)

    def create_database(self, name: str, exist_ok: bool = False, template: str = "template0") -> str:
        """A new database owned by the application role; its URL."""
        from psycopg import sql

        with self.admin() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                if not exist_ok:
                    raise PostgresError(f"database {name!r} exists")
            else:
                # owned by the application role: its public schema is the role's (PostgreSQL 15+)
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {} ENCODING 'UTF8'").format(
                    sql.Identifier(name), sql.Identifier(self.user), sql.Identifier(template)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self, timeout: float = 60.0) -> None:
        """A fast shutdown (``pg_ctl stop -m fast``): open transactions roll back, the
        data is consistent on disk. The cluster stays for another ``start``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        proc = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout)),
                         check=False, timeout=timeout + 10)
        try:
            self.proc.wait(timeout=10 if proc.returncode == 0 else 1)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its backends (a crash); the cluster stays for ``start``,
        which recovers it from the WAL."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        # backends outlive a SIGKILLed postmaster until the kill reaches them: wait
        # until none is left, else a restart finds the shared memory still in use
        deadline = time.monotonic() + 10
        while self.proc is not None and _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop and remove the cluster (a folder made outside ``base`` included). The
        data goes, so the server stops at once, without a shutdown checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False, timeout=60)
            self.kill()
        if not self.sockets.is_relative_to(self.home):
            shutil.rmtree(self.sockets, ignore_errors=True)
        if self.home != self.base:
            shutil.rmtree(self.home, ignore_errors=True)
            (self.base / "DATA_DIR").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.data, ignore_errors=True)
            shutil.rmtree(self.sockets, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
