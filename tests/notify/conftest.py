"""Fixtures of notify's unit tests: a real notify database (SQLite, prepared by the
service's own migrations) and settings as the service would read them."""
from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.orm import sessionmaker

from osprey.db import make_engine, prepare
from services.notify.config import notify_settings
from services.notify.models import MIGRATIONS


@pytest.fixture
def make_session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/notify.db")
    prepare(engine, MIGRATIONS)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def session(make_session):
    with make_session() as s:
        yield s


@pytest.fixture
def nsettings(tmp_path, monkeypatch):
    monkeypatch.setenv("OSPREY_DATA_DIR", str(tmp_path / "data"))
    return dataclasses.replace(notify_settings(), mail_domain="csirt.example", ticket_tag="Osprey",
                               retry_seconds=60, retry_max_seconds=3600, give_up_hours=48, lease_seconds=60)
