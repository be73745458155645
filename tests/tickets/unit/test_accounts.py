"""services/tickets/accounts.py: users with argon2 passwords, API tokens stored as
sha256, expiring; on a real tickets database: SQLite and PostgreSQL."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from services.tickets import accounts
from services.tickets.exceptions import BadRequest, Conflict, NotFound
from services.tickets.models import MIGRATIONS, ApiToken, User, utcnow
from tests.unit_fixtures import tickets_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_session(databases):
    engine, make_session = tickets_db(databases.url("tickets", MIGRATIONS))
    yield make_session
    engine.dispose()


@pytest.fixture
def session(make_session):
    with make_session() as session:
        yield session


def test_create_user(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    session.commit()
    assert {k: v for k, v in accounts.user_dict(user).items() if k != "created"} == {
        "id": 1, "username": "alice", "is_admin": False, "role": "agent", "email": "", "disabled": False}


def test_password_is_stored_as_an_argon2_hash(session):
    accounts.create_user(session, "alice", PASSWORD)
    session.commit()
    (stored,) = session.scalars(select(User.password_hash)).all()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)


def test_authenticate(session):
    user = accounts.create_user(session, "alice", PASSWORD, is_admin=True)
    session.commit()
    assert accounts.authenticate(session, "alice", PASSWORD) is user


@pytest.mark.parametrize("username, password", [
    ("alice", "wrong password"),
    ("alice", ""),
    ("alice", None),
    ("Alice", PASSWORD),          # user names are case-sensitive
    ("bob", PASSWORD),            # no such user
    ("", PASSWORD),
    (None, PASSWORD),
])
def test_authenticate_fails(session, username, password):
    accounts.create_user(session, "alice", PASSWORD)
    session.commit()
    assert accounts.authenticate(session, username, password) is None


def test_disabled_user_cannot_authenticate(session):
    accounts.create_user(session, "alice", PASSWORD).disabled = True
    session.commit()
    assert accounts.authenticate(session, "alice", PASSWORD) is None


def test_user_without_password_cannot_authenticate(session):
    accounts.create_user(session, "robot", None)
    session.commit()
    assert (accounts.get_user(session, "robot").password_hash, accounts.authenticate(session, "robot", "")) == (
        None, None)


def test_set_password(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    accounts.set_password(user, "a new password")
    session.commit()
    assert (accounts.authenticate(session, "alice", PASSWORD),
            accounts.authenticate(session, "alice", "a new password")) == (None, user)


def test_short_password_is_refused(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    with pytest.raises(BadRequest, match="at least 8 characters"):
        accounts.set_password(user, "1234567")


@pytest.mark.parametrize("username", ["", "-alice", "al ice", "alice/bob", "a" * 201, None])
def test_invalid_user_name_is_refused(session, username):
    with pytest.raises(BadRequest, match="^a username is 1-200 letters"):
        accounts.create_user(session, username, PASSWORD)


def test_user_names_are_unique(session):
    accounts.create_user(session, "alice", PASSWORD)
    with pytest.raises(Conflict, match="^user 'alice' exists$"):
        accounts.create_user(session, "alice", "another password")


def test_get_user_of_an_unknown_name_is_not_found(session):
    with pytest.raises(NotFound, match="^no user 'nobody'$"):
        accounts.get_user(session, "nobody")


# --- API tokens ----------------------------------------------------------------

def test_token_is_returned_once_and_stored_as_its_sha256(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    token, row = accounts.create_token(session, user, days=30, name="ci")
    session.commit()
    assert token.startswith("osp_") and len(token) > 40
    stored = session.execute(select(ApiToken.user_id, ApiToken.token_hash, ApiToken.name, ApiToken.last_used)).all()
    assert [tuple(r) for r in stored] == [(user.id, hashlib.sha256(token.encode()).hexdigest(), "ci", None)]


def test_token_expires_after_the_given_days(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    before = utcnow()
    _token, row = accounts.create_token(session, user, days=30)
    assert before + timedelta(days=30) <= row.expires <= utcnow() + timedelta(days=30)


def test_tokens_differ(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    assert len({accounts.create_token(session, user, days=1)[0] for _ in range(5)}) == 5


def test_verify_token(make_session):
    with make_session() as session:
        user = accounts.create_user(session, "alice", PASSWORD)
        token, _row = accounts.create_token(session, user, days=1)
        session.commit()
    with make_session() as session:          # a fresh read: SQLite gives the expiry back without a zone
        assert accounts.verify_token(session, token).username == "alice"
        assert session.scalars(select(ApiToken.last_used)).one() is not None


@pytest.mark.parametrize("token", ["", None, "osp_", "osp_not-a-real-token", "not-a-token"])
def test_unknown_token_is_refused(session, token):
    user = accounts.create_user(session, "alice", PASSWORD)
    accounts.create_token(session, user, days=1)
    session.commit()
    assert accounts.verify_token(session, token) is None


def test_token_without_its_prefix_is_refused(session):
    user = accounts.create_user(session, "alice", PASSWORD)
    token, _row = accounts.create_token(session, user, days=1)
    session.commit()
    assert accounts.verify_token(session, token[len("osp_"):]) is None


def test_expired_token_is_refused(make_session):
    with make_session() as session:
        user = accounts.create_user(session, "alice", PASSWORD)
        token, row = accounts.create_token(session, user, days=1)
        row.expires = utcnow() - timedelta(seconds=1)
        session.commit()
    with make_session() as session:
        assert accounts.verify_token(session, token) is None
        assert session.scalars(select(ApiToken.last_used)).one() is None


def test_token_of_a_disabled_user_is_refused(make_session):
    with make_session() as session:
        user = accounts.create_user(session, "alice", PASSWORD)
        token, _row = accounts.create_token(session, user, days=1)
        user.disabled = True
        session.commit()
    with make_session() as session:
        assert accounts.verify_token(session, token) is None


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_token_lifetime_is_bounded(session, days):
    user = accounts.create_user(session, "alice", PASSWORD)
    with pytest.raises(BadRequest, match="^a token lives 1 to 3650 days$"):
        accounts.create_token(session, user, days=days)
