"""A private RabbitMQ node: the one `make run` starts and the one tests start.

Debian's rabbitmq-server is started directly (``/usr/lib/rabbitmq/bin``), fully
isolated by environment variables: its own HOME and Erlang cookie, node name,
AMQP / distribution / epmd ports on 127.0.0.1, and all state under one folder.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    return free_ports(1)[0]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all bound at once while choosing, so no two are
    the same). They are drawn below the kernel's ephemeral range: a port from bind(0)
    lies inside it, where any outgoing connection (dozens, with a broker and services
    starting) may take it before the listener binds it."""
    import random
    low, _high = _ephemeral_range()
    sockets: list[socket.socket] = []
    try:
        tries = 0
        while len(sockets) < n and tries < 200 and low > 11000:
            tries += 1
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randrange(10000, low)))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        while len(sockets) < n:           # no room below the range: the kernel's choice
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def amqp_reachable(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when a real AMQP handshake succeeds (not just a TCP accept)."""
    import pika

    params = pika.ConnectionParameters(host=host, port=port, socket_timeout=timeout,
                                       connection_attempts=1, blocked_connection_timeout=timeout,
                                       stack_timeout=timeout)
    try:
        pika.BlockingConnection(params).close()
        return True
    except Exception:
        return False


class RabbitNode:
    """One node, its state under ``base``. Ports: given, or free ones picked."""

    def __init__(self, base: Path, port: int | None = None, name: str | None = None,
                 dist_port: int | None = None, epmd_port: int | None = None):
        self.base = Path(base).resolve()
        picked = free_ports(3)
        self.port = port or picked[0]
        self.dist_port = dist_port or picked[1]
        self.epmd_port = epmd_port or picked[2]
        self.name = name or f"osprey-{self.port}@localhost"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict:
        b = self.base
        home = b / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        (b / "log").mkdir(exist_ok=True)
        (b / "mnesia").mkdir(exist_ok=True)
        (b / "enabled_plugins").write_text("[].\n")
        (b / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\n"
            "log.console = true\nlog.console.level = warning\nlog.file = false\n"
        )
        (b / "rabbitmq-env.conf").write_text("")
        env = dict(os.environ)
        env.update({
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_PID_FILE": str(b / "rabbitmq.pid"),
        })
        return env

    def command(self) -> list[str]:
        if not Path(SERVER).exists():
            raise BrokerError(f"{SERVER} is missing: install Debian's rabbitmq-server (make bootstrap)")
        return [SERVER]

    # --- background node (tests) ---------------------------------------------------
    def start(self, timeout: float = 60.0, log=None) -> "RabbitNode":
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log or subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(f"rabbitmq-server exited with {self.proc.returncode}; logs in {self.base}")
            if amqp_reachable(self.port, timeout=0.5):
                return
            time.sleep(0.2)
        raise BrokerError(f"rabbitmq node {self.name} not ready after {timeout}s")

    def stop(self) -> None:
        env = self.env()
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([CTL, "-n", self.name, "shutdown"], env=env, capture_output=True, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.kill_epmd()

    def kill_epmd(self, timeout: float = 10.0) -> None:
        """Stop the node's private epmd (it daemonises, so it outlives the node).
        epmd refuses ``-kill`` while it still lists a node, and a killed node is
        unlisted only once epmd has noticed: retry until epmd is gone, else a
        restarted node finds its name "in use" and exits."""
        env = self.env()
        deadline = time.monotonic() + timeout
        while True:
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=env,
                           capture_output=True, timeout=10)
            alive = subprocess.run(["epmd", "-port", str(self.epmd_port), "-names"], env=env,
                                   capture_output=True, timeout=10).returncode == 0
            if not alive or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the node (a broker crash); its state folder stays for ``start``."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.kill_epmd()

    def stop_app(self) -> None:
        """Stop the broker application but keep the Erlang node (simulates an outage)."""
        subprocess.run([CTL, "-n", self.name, "stop_app"], env=self.env(), check=True,
                       capture_output=True, timeout=60)

    def start_app(self) -> None:
        subprocess.run([CTL, "-n", self.name, "start_app"], env=self.env(), check=True,
                       capture_output=True, timeout=60)
        self.wait_ready(60)
