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
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            # the FTS5 virtual table and its shadow tables are made by raw DDL on purpose
            "include_name": lambda name, type_, _p: not (type_ == "table" and name.startswith("article_fts")),
        })
        assert compare_metadata(ctx, models.Base.metadata) == []
