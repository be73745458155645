"""notify's migrations build exactly its models' schema (twice is harmless), and
every outbound API handler's docstring is a valid OpenAPI operation."""
from __future__ import annotations

import inspect

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway import api_notify
from osprey.db import make_engine, migrate
from services.notify import models


def test_migrations_match_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    migrate(engine, models.MIGRATIONS)
    migrate(engine, models.MIGRATIONS)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []


HANDLERS = [(n, f) for n, f in inspect.getmembers(api_notify, inspect.iscoroutinefunction)
            if f.__module__ == api_notify.__name__ and not n.startswith("_")]


@pytest.mark.parametrize("name, handler", HANDLERS, ids=[h[0] for h in HANDLERS])
def test_docstring_is_an_openapi_operation(name, handler):
    doc = yaml.safe_load(inspect.cleandoc(handler.__doc__))
    assert isinstance(doc, dict) and doc.get("summary") and doc.get("responses"), name


def test_the_gateway_routes_the_outbound_api():
    from gateway.app import api_routes
    paths = {(r.path, m) for r in api_routes for m in (r.methods or [])}
    for route in [("/templates", "GET"), ("/templates/{name}", "PUT"), ("/templates/{name}", "DELETE"),
                  ("/templates/preview", "POST"), ("/tickets/{ticket_id:int}/send", "POST"), ("/outbox", "GET")]:
        assert route in paths
