"""Users, passwords (argon2) and API tokens (random, stored as sha256, expiring)."""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from .exceptions import BadRequest, Conflict, NotFound
from .models import ApiToken, User, iso, utcnow

_hasher = PasswordHasher()
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
TOKEN_PREFIX = "osp_"
# A hash to verify against when the user does not exist, so that a login attempt
# for an unknown name costs as much as one for a known name.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def user_dict(user: User) -> dict:
    return {"id": user.id, "username": user.username, "is_admin": user.is_admin, "role": user.role,
            "email": user.email or "", "disabled": user.disabled, "created": iso(user.created)}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_user(session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def get_user(session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


ROLES = ("customer", "agent", "admin")


def create_user(session, username: str, password: str | None, is_admin: bool = False,
                role: str | None = None, email: str = "") -> User:
    if not _NAME_RE.match(username or ""):
        raise BadRequest("a username is 1-200 letters, digits, '.', '_', '@' or '-'")
    if find_user(session, username) is not None:
        raise Conflict(f"user {username!r} exists")
    role = role or ("admin" if is_admin else "agent")
    if role not in ROLES:
        raise BadRequest(f"a role is one of {', '.join(ROLES)}")
    user = User(username=username, is_admin=role == "admin", role=role, email=(email or "").strip().lower(),
                password_hash=_hasher.hash(password) if password else None)
    session.add(user)
    session.flush()
    return user


def set_role(user: User, role: str) -> None:
    if role not in ROLES:
        raise BadRequest(f"a role is one of {', '.join(ROLES)}")
    user.role, user.is_admin = role, role == "admin"


def set_password(user: User, password: str) -> None:
    if len(password or "") < 8:
        raise BadRequest("a password has at least 8 characters")
    user.password_hash = _hasher.hash(password)


def authenticate(session, username: str, password: str) -> User | None:
    user = find_user(session, username or "")
    if user is None or user.disabled or not user.password_hash:
        try:
            _hasher.verify(_DUMMY_HASH, password or "")
        except VerificationError:
            pass
        return None
    try:
        _hasher.verify(user.password_hash, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def create_token(session, user: User, days: int, name: str = "") -> tuple[str, ApiToken]:
    if days <= 0 or days > 3650:
        raise BadRequest("a token lives 1 to 3650 days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), name=name,
                   expires=utcnow() + timedelta(days=days))
    session.add(row)
    session.flush()
    return token, row


def verify_token(session, token: str) -> User | None:
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None:
        return None
    expires = row.expires if row.expires.tzinfo else row.expires.replace(tzinfo=timezone.utc)
    if expires <= datetime.now(timezone.utc) or row.user.disabled:
        return None
    row.last_used = utcnow()
    return row.user
