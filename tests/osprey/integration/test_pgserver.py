"""osprey.pgserver: a private PostgreSQL cluster; and each service's migrations on
both databases: they apply from empty, a second run changes nothing, and the
schema they build is the one the models describe (what `alembic check` checks)."""
from __future__ import annotations

import threading

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, text

from osprey.db import make_engine, migrate
from osprey.pgserver import PostgresNode
from services.ingest import models as ingest_models
from services.tickets import models as tickets_models

SERVICES = pytest.mark.parametrize("models", [tickets_models, ingest_models], ids=["tickets", "ingest"])


def test_node_serves_its_role_over_loopback_tcp_with_a_password(postgres):
    assert postgres.url == (f"postgresql+psycopg://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/"
                            f"{postgres.database}")
    engine = make_engine(postgres.url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user, current_setting('TimeZone'), "
                                 "current_setting('server_encoding'), current_setting('fsync')")).one() == (
            postgres.user, "UTC", "UTF8", "on")
    engine.dispose()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password="wrong",
                        dbname=postgres.database, connect_timeout=5)


def test_a_node_keeps_its_data_across_stop_start_and_a_crash(tmp_path):
    node = PostgresNode(tmp_path / "pg")
    try:
        node.start()
        engine = make_engine(node.url)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (n integer)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        engine.dispose()
        node.stop()
        assert node.proc.poll() is not None
        node.start()
        engine = make_engine(node.url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))      # committed: survives the crash
        engine.dispose()
        node.kill()
        node.start()                                           # crash recovery from the WAL
        engine = make_engine(node.url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
        engine.dispose()
    finally:
        node.destroy()
    assert not node.data.exists()


def ddl_statements(engine) -> list[str]:
    """Collects the schema-changing statements the engine runs."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn, _cursor, statement, *_args):
        if statement.lstrip().split(" ", 1)[0].upper() in ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE"):
            seen.append(statement)
    return seen


@SERVICES
def test_migrations_apply_from_empty_and_match_the_models(databases, models):
    engine = make_engine(databases.url(models.__name__.split(".")[1]))
    try:
        migrate(engine, models.MIGRATIONS)
        with engine.connect() as conn:
            head = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        statements = ddl_statements(engine)
        migrate(engine, models.MIGRATIONS)        # a restart: nothing to do
        assert statements == []
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == head
        # the models and the migrated schema agree (as `alembic check`); tables the
        # migrations make by raw DDL on purpose (the search index) are left out
        unmanaged = tuple(models.Base.metadata.info.get("unmanaged_prefixes", ()))
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "include_name": lambda name, type_, _p: not (type_ == "table" and unmanaged
                                                             and name.startswith(unmanaged)),
                "compare_type": True,
            })
            assert compare_metadata(ctx, models.Base.metadata) == []
    finally:
        engine.dispose()


def test_the_search_index_exists_on_both(databases):
    engine = make_engine(databases.url("tickets"))
    try:
        migrate(engine, tickets_models.MIGRATIONS)
        assert "article_fts" in inspect(engine).get_table_names()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'article_fts' "
                                         "AND indexname = 'article_fts_doc'")).scalar_one() == (
                    "CREATE INDEX article_fts_doc ON public.article_fts USING gin (doc)")
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_instances_starting_together_migrate_once(postgres):
    """Two instances of a service starting at the same moment: one migrates, the other
    waits for its lock and finds the schema done (PostgreSQL: an advisory lock)."""
    url = postgres.create_database("together")
    errors: list[BaseException] = []

    def start():
        engine = make_engine(url)
        try:
            migrate(engine, tickets_models.MIGRATIONS)
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    engine = make_engine(url)
    with engine.connect() as conn:
        assert len(conn.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
    engine.dispose()
    postgres.drop_database("together")


def test_text_with_nul_is_stored_on_both(databases):
    """Mail text may hold U+0000: SQLite keeps it, PostgreSQL's text cannot and stores
    U+FFFD instead (osprey.db); a lookup by the same value still finds the row."""
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, insert, select

    engine = make_engine(databases.url("nul"))
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("s", Text), Column("j", JSON))
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(table), [{"s": "a\x00b", "j": {"to": ["c\x00d"]}}, {"s": "plain", "j": {}}])
        with engine.connect() as conn:
            rows = conn.execute(select(table.c.s, table.c.j).where(table.c.s == "a\x00b")).all()
        stored = "a\x00b" if engine.dialect.name == "sqlite" else "a\ufffdb"
        assert [tuple(r) for r in rows] == [(stored, {"to": ["c\x00d"]})]
    finally:
        engine.dispose()
