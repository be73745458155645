"""Each service's Alembic migrations build exactly the schema its models describe,
and can be applied twice (a restart) without change."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from osprey.db import make_engine, migrate
from services.ingest import models as ingest_models
from services.tickets import models as tickets_models


@pytest.mark.parametrize("models", [tickets_models, ingest_models], ids=["tickets", "ingest"])
def test_migrations_match_the_models(tmp_path, models):
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    migrate(engine, models.MIGRATIONS)
    migrate(engine, models.MIGRATIONS)   # idempotent: a second start changes nothing
    # tables made by raw DDL on purpose (the FTS5 index and its shadow tables)
    unmanaged = tuple(models.Base.metadata.info.get("unmanaged_prefixes", ()))
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "include_name": lambda name, type_, _p: not (type_ == "table" and unmanaged and name.startswith(unmanaged)),
        })
        assert compare_metadata(ctx, models.Base.metadata) == []


def test_tickets_upgrade_keeps_existing_rows(tmp_path):
    """A database made by the first release upgrades with its tickets and articles."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    cfg = Config()
    cfg.set_main_option("script_location", str(tickets_models.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "f1a2fd2201e8")   # the initial schema
        conn.execute(text("INSERT INTO queue (id, name, description, created) VALUES (1, 'general', '', '2026-01-01')"))
        conn.execute(text("INSERT INTO ticket (id, queue_id, subject, state, requestor, created, updated) "
                          "VALUES (1, 1, 's', 'new', 'a@example.net', '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO article (id, ticket_id, direction, action, sender, recipients, subject, "
                          "body_text, body_truncated, created) VALUES (1, 1, 'in', 'correspond', 'a', '{}', 's', "
                          "'b', 0, '2026-01-01')"))
    migrate(engine, tickets_models.MIGRATIONS)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, ticket_id, auto, content_hash FROM article")).all() == [(1, 1, "{}", None)]


def test_several_processes_migrating_one_sqlite_file_at_once(tmp_path):
    """Replicas start together on one SQLite file (a crypto replica once died there on
    "database is locked" while the other migrated): all of them come up."""
    import subprocess
    import sys
    script = ("import sys; from osprey.db import make_engine, migrate; from services.tickets.models import MIGRATIONS;"
              f"migrate(make_engine('sqlite:///{tmp_path}/t.db'), MIGRATIONS)")
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE) for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], [err[-500:] for _, err in results]
