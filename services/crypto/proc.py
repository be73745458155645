"""Running gpg and openssl with limits, so that no input can hang or swamp the service.

Every run has a deadline (killed when it passes), an output cap (the child's
RLIMIT_FSIZE: a decryption bomb is stopped by the kernel, whatever the tool does)
and no core dump. Input and output go through files in a private scratch folder
(mode 700, in RAM under /dev/shm where there is one, so no decrypted text reaches a
disk), which also lets a command take several inputs (signature + signed data).

Works unchanged under eventlet's monkey-patching (nameko): ``subprocess.run`` with
file descriptors only waits, and the green ``wait`` yields to other workers.
"""
from __future__ import annotations

import os
import resource
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# tunables (module constants; see docs/crypto.md)
TIMEOUT = 30.0                      # seconds one gpg/openssl run may take
MAX_OUTPUT = 64 * 1024 * 1024       # bytes one run may write (decrypted / extracted data)
MAX_STDERR = 4 * 1024 * 1024        # bytes of diagnostics read back


def scratch_root() -> str:
    """RAM-backed when possible: decrypted mail never touches a disk."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    too_large: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.too_large

    @property
    def text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


PRLIMIT = shutil.which("prlimit")


def _limits(max_output: int):
    def apply():  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def limited(cmd: list[str], max_output: int) -> tuple[list[str], object]:
    """The command with its limits: through util-linux ``prlimit`` (an exec, so the
    parent never forks a Python child: nothing of eventlet runs after fork), else a
    ``preexec_fn``."""
    if PRLIMIT:
        return [PRLIMIT, f"--fsize={max_output}", "--core=0", "--", *cmd], None
    return cmd, _limits(max_output)


OWNER_FILE = ".osprey-owner"


def private_dir(prefix: str) -> str:
    """A new mode-700 folder under scratch_root(), marked with this process's pid so
    that ``sweep_stale`` can remove it if the process dies without cleaning up."""
    path = tempfile.mkdtemp(prefix=prefix, dir=scratch_root())
    with open(os.path.join(path, OWNER_FILE), "w") as fh:
        fh.write(str(os.getpid()))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str | None = None) -> list[str]:
    """Remove the private folders (GnuPG homes, key files, scratch) of processes
    that died without cleaning up (SIGKILL, OOM), stopping their gpg-agents."""
    root = root or scratch_root()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(("og", "ok", "oc")):
            continue
        path = os.path.join(root, name)
        try:
            with open(os.path.join(path, OWNER_FILE)) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        if name.startswith("og"):
            try:
                subprocess.run(["gpgconf", "--homedir", path, "--kill", "all"], capture_output=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class Scratch:
    """A private folder for one operation's files; removed on exit."""

    def __init__(self, root: str | None = None):
        self.path = Path(private_dir("oc") if root is None else tempfile.mkdtemp(prefix="oc", dir=root))
        self._n = 0

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def file(self, data: bytes, name: str | None = None) -> str:
        self._n += 1
        path = self.path / (name or f"f{self._n}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return str(path)

    def name(self, name: str | None = None) -> str:
        self._n += 1
        return str(self.path / (name or f"o{self._n}"))

    def run(self, cmd: list[str], stdin: bytes = b"", *, timeout: float = TIMEOUT,
            max_output: int = MAX_OUTPUT, env: dict | None = None, pass_fds=()) -> Result:
        """Run ``cmd`` with ``stdin`` as its input; stdout and stderr are read back
        (stdout up to ``max_output``: beyond it the child is stopped, ``too_large``)."""
        n = self._n = self._n + 1
        in_path = self.file(stdin, f"in{n}")
        out_path, err_path = self.path / f"out{n}", self.path / f"err{n}"
        timed_out = False
        with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            argv, preexec = limited(cmd, max_output + 1)
            try:
                proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env, pass_fds=pass_fds,
                                        cwd=str(self.path), preexec_fn=preexec)
            except OSError as exc:  # the tool is missing or cannot start
                return Result(127, b"", str(exc).encode())
            rc = _wait(proc, timeout)
            if rc is None:
                timed_out, rc = True, -9
        out = _read(out_path, max_output + 1)
        err = _read(err_path, MAX_STDERR)
        os.unlink(in_path)
        too_large = len(out) > max_output or rc == -25   # -25: SIGXFSZ
        return Result(rc, out[:max_output], err, timed_out, too_large)


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """The exit status, or None when the deadline passed (the child is killed).

    Waits on a pidfd (Linux >= 5.3): woken the moment the child exits. The stdlib's
    ``wait(timeout)`` sleeps in growing steps (up to 50 ms) instead, which costs more
    than gpg itself. Under eventlet, ``select`` is green: other workers run meanwhile."""
    fd = None
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pass
    try:
        if fd is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                proc.kill()
                proc.wait()
                return None
            return proc.wait()
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_limited(path: str, limit: int = MAX_OUTPUT) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(limit)
