"""Storage tests on both databases (a pytest plugin, loaded by tests/conftest.py).

``postgres``: one private PostgreSQL cluster (osprey.pgserver) for the whole test
session, on a free loopback port, removed at the end; started only when a test
needs it. It lives in /dev/shm where there is room (see ``cluster_root``).

``databases``: parametrised over SQLite and PostgreSQL; ``databases.url(name)`` is
a fresh, empty database of that kind (the same one for the same name within a
test), dropped after the test. ``db_url`` is ``databases.url("db")``: a test that
takes it runs once on each. The PostgreSQL runs carry the ``postgresql`` marker
(``-m postgresql`` runs only them, ``-m "not postgresql"`` none of them).

``databases.url(name, migrations)`` is a fresh database already at the newest
schema of that migrations folder: on PostgreSQL a copy (CREATE DATABASE ...
TEMPLATE) of one database migrated from empty once per session, since applying
the migrations costs ~0.5 s of DDL there and a copy ~0.1 s (on SQLite the
folder is ignored: the helpers migrate, in milliseconds). Dropping a PostgreSQL
database forces a checkpoint (~0.5 s), so drops run in a background thread.

Module-scoped fixtures use ``Databases`` directly (see tests/tickets/unit/test_search.py).
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
from pathlib import Path

import pytest

from osprey.pgserver import PostgresNode

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]

_names = itertools.count(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "postgresql: runs on the session's private PostgreSQL (tests/storage.py)")


class Databases:
    """Fresh databases of one kind: files under ``folder`` (SQLite) or databases in
    the session's cluster (PostgreSQL)."""

    def __init__(self, dialect: str, folder: Path, postgres: PostgresNode | None = None):
        self.dialect = dialect
        self.folder = Path(folder)
        self.postgres = postgres
        self._urls: dict[str, str] = {}
        self._made: list[str] = []

    def url(self, name: str = "db", migrations: Path | None = None) -> str:
        if name not in self._urls:
            if self.dialect == "postgresql":
                db = f"t{next(_names)}_{name}".lower()
                template = _template(self.postgres, migrations) if migrations else "template0"
                self._urls[name] = self.postgres.create_database(db, template=template)
                self._made.append(db)
            else:
                self._urls[name] = f"sqlite:///{self.folder / f'{name}.db'}"
        return self._urls[name]

    def drop(self) -> None:
        for db in self._made:
            _dropper(self.postgres).put(db)
        self._made.clear()
        self._urls.clear()


_templates: dict[tuple[int, str], str] = {}


def _template(node: PostgresNode, migrations: Path) -> str:
    """A database of ``node`` migrated from empty with ``migrations`` (made once)."""
    from osprey.db import make_engine, migrate

    key = (id(node), str(Path(migrations).resolve()))
    if key not in _templates:
        name = f"template_{len(_templates)}_{Path(migrations).resolve().parent.name}".lower()
        engine = make_engine(node.create_database(name))
        try:
            migrate(engine, Path(migrations))
        finally:
            engine.dispose()   # a template must have no connections when it is copied
        _templates[key] = name
    return _templates[key]


class _Dropper(threading.Thread):
    """Drops databases one after the other, off the tests' path."""

    def __init__(self, node: PostgresNode):
        super().__init__(name="drop-databases", daemon=True)
        self.node = node
        self.queue: queue.Queue[str | None] = queue.Queue()

    def put(self, name: str) -> None:
        self.queue.put(name)

    def run(self) -> None:
        while (name := self.queue.get()) is not None:
            try:
                self.node.drop_database(name)
            except Exception:   # the cluster is removed at the end in any case
                pass

    def finish(self, timeout: float = 30) -> None:
        """Forget the drops still waiting (the cluster goes next) and end."""
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        self.queue.put(None)
        self.join(timeout)


_droppers: dict[int, _Dropper] = {}


def _dropper(node: PostgresNode) -> _Dropper:
    if id(node) not in _droppers:
        _droppers[id(node)] = _Dropper(node)
        _droppers[id(node)].start()
    return _droppers[id(node)]


def databases_for(request, dialect: str, folder: Path) -> Databases:
    """A ``Databases`` for a fixture of any scope (``request`` gives the cluster)."""
    return Databases(dialect, folder, request.getfixturevalue("postgres") if dialect == "postgresql" else None)


def cluster_root() -> Path | None:
    """Where the session's throwaway cluster lives: OSPREY_TEST_PG_ROOT if set, else
    /dev/shm when it is writable with 2 GiB free, else PostgresNode's default (a temp
    folder on disk). The cluster's fsync settings stay on; in memory an fsync costs
    nothing, and this cluster creates (and drops) a database per test, which on a
    slow disk is most of the time the PostgreSQL runs take."""
    if os.environ.get("OSPREY_TEST_PG_ROOT"):
        return Path(os.environ["OSPREY_TEST_PG_ROOT"])
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= 2 << 30:
        return shm
    return None


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    node = PostgresNode(tmp_path_factory.mktemp("postgres"), data_root=cluster_root())
    try:
        node.start()
    except Exception:
        node.destroy()
        raise
    yield node
    dropper = _droppers.pop(id(node), None)
    if dropper is not None:
        dropper.finish()
    for key in [k for k in _templates if k[0] == id(node)]:
        del _templates[key]
    node.destroy()


@pytest.fixture(params=DIALECTS)
def databases(request, tmp_path):
    dbs = databases_for(request, request.param, tmp_path)
    yield dbs
    dbs.drop()


@pytest.fixture
def db_url(databases) -> str:
    return databases.url("db")
