"""A real, throwaway dovecot (IMAP + POP3, plain and TLS) for the poller's tests, and
a TCP relay that makes it hang mid-download (``StallingProxy``).

Debian's ``/usr/sbin/dovecot -F -c <temp>/dovecot.conf``: everything (base_dir,
state, logs, Maildirs, passwd-file, TLS certificate) lives in one temp folder, it
listens on free loopback ports only, so a system dovecot on 143/110 is left alone.
A failed login costs ~0.5 s: ``auth_failure_delay = 0`` and no anvil auth penalty (with
it, each further failure from 127.0.0.1 waits seconds longer: 4.5 s for the second).
Its users are fixed at start: dovecot re-reads a changed passwd-file at most once a
second, so a user added while it runs may not log in yet.
As root the login processes run as the package's ``dovenull`` user and the mail
belongs to ``dovecot`` (platform notes); as another user everything runs as that user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from osprey.broker import free_port

DOVECOT = "/usr/sbin/dovecot"

# nothing may follow "{" on a line (dovecot's parser); {placeholders} are str.format'ed
_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3
ssl = yes
ssl_cert = <{base}/tls/cert.pem
ssl_key = <{base}/tls/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
mail_location = maildir:{base}/mail/%n
pop3_uidl_format = %08Xv%08Xu
first_valid_uid = 0
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/passwd
}}
userdb {{
  driver = static
  args = uid={internal_user} gid={internal_group} home={base}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    user = {internal_user}
  }}
  unix_listener stats-writer {{
    user = {internal_user}
  }}
}}
"""


class DovecotError(RuntimeError):
    pass


class Dovecot:
    def __init__(self, users: dict[str, str]):
        self.users = dict(users)
        # not under pytest's tmp_path: that is mode 700 and the dovecot users must read it
        self.base = Path(tempfile.mkdtemp(prefix="osprey-dovecot-"))
        self.base.chmod(0o755)
        self.ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
        self.proc: subprocess.Popen | None = None
        self.ca_file = self.base / "tls" / "cert.pem"   # self-signed: the certificate is its own CA

    @property
    def conf(self) -> Path:
        return self.base / "dovecot.conf"

    def start(self, timeout: float = 15) -> "Dovecot":
        if not os.access(DOVECOT, os.X_OK):
            raise DovecotError(f"{DOVECOT} is missing: apt-get install dovecot-imapd dovecot-pop3d "
                               "(scripts/bootstrap.sh test does)")
        if os.geteuid() == 0:
            login, internal, group = "dovenull", "dovecot", "dovecot"
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            login, internal, group = me, me, me
        (self.base / "mail").mkdir()
        (self.base / "tls").mkdir()
        (self.base / "passwd").write_text("".join(f"{name}:{{PLAIN}}{pw}::::::\n"
                                                  for name, pw in self.users.items()))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(self.base / "tls" / "key.pem"), "-out", str(self.ca_file)],
                       check=True, capture_output=True)
        if os.geteuid() == 0:
            shutil.chown(self.base / "mail", internal, group)
        self.conf.write_text(_CONF.format(base=self.base, login_user=login, internal_user=internal,
                                          internal_group=group, **self.ports))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.base / "dovecot.stderr", "wb"))
        deadline = time.monotonic() + timeout
        while not all(self._accepts(port) for port in self.ports.values()):
            if self.proc.poll() is not None:
                raise DovecotError(f"dovecot exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DovecotError(f"dovecot not listening after {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        text = ""
        for name in ("dovecot.stderr", "dovecot.log"):
            try:
                text += (self.base / name).read_text(errors="replace")
            except FileNotFoundError:
                pass
        return text

    def imap(self, user: str):
        """A logged-in imapclient connection for putting mail in and looking."""
        from imapclient import IMAPClient
        client = IMAPClient("127.0.0.1", port=self.ports["imap"], ssl=False, timeout=10)
        client.login(user, self.users[user])
        return client


class StallingProxy:
    """A TCP relay in front of a real server. While ``stall_after`` is set, each new
    connection passes only that many of the server's bytes on and then goes silent
    (the connection stays open): a server that hangs mid-download. Not a fake: every
    byte that does arrive is the real server's."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.stall_after: int | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            done = threading.Event()
            self._conns.append((client, server, done))
            threading.Thread(target=self._pump, args=(client, server, None, done), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.stall_after, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None, done: threading.Event) -> None:
        passed = 0
        try:
            while not done.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and passed + len(data) > limit:
                    dst.sendall(data[:limit - passed])
                    done.wait()          # silent until the other side gives up
                    break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            done.set()
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for _client, _server, done in self._conns:
            done.set()
