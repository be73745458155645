"""Who may do what in which queue. Deny by default: a user has a right on a queue
only through a grant to their role (``role:agent``) or to one of their groups
(``group:tier2``); administrators have every right everywhere."""
from __future__ import annotations

import re

from sqlalchemy import delete, select

from .exceptions import BadRequest, Conflict, Forbidden, NotFound
from .models import Group, GroupMember, Queue, QueueRight, User

RIGHTS = ("see", "create", "comment", "reply", "forward", "own", "take", "steal", "modify", "merge",
          "split", "delete", "admin")
ROLES = ("customer", "agent", "admin")
# what a new queue grants the agent role (an administrator can change it per queue)
AGENT_DEFAULT = ("see", "create", "comment", "reply", "forward", "own", "take", "modify", "merge", "split")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_right(name: str) -> str:
    if name not in RIGHTS:
        raise BadRequest(f"unknown right {name!r}; rights are: {', '.join(RIGHTS)}")
    return name


def grantees(session, user: User) -> list[str]:
    groups = session.scalars(select(Group.name).join(GroupMember, GroupMember.group_id == Group.id)
                             .where(GroupMember.user_id == user.id)).all()
    return [f"role:{user.role}", *(f"group:{g}" for g in groups)]


class Rights:
    """One user's rights, loaded once per request: ``rights.has(queue_id, "take")``."""

    def __init__(self, session, user: User):
        self.user = user
        self.admin = user.role == "admin" or user.is_admin
        self._by_queue: dict[int, set[str]] = {}
        if not self.admin:
            rows = session.execute(select(QueueRight.queue_id, QueueRight.right)
                                   .where(QueueRight.grantee.in_(grantees(session, user))))
            for queue_id, right in rows:
                self._by_queue.setdefault(queue_id, set()).add(right)

    def has(self, queue_id: int, right: str) -> bool:
        if self.admin:
            return True
        have = self._by_queue.get(queue_id, ())
        return right in have or "admin" in have

    def require(self, queue: Queue, right: str, what: str = "") -> None:
        if not self.has(queue.id, right):
            raise Forbidden(f"{self.user.username} lacks the right {right!r} in queue {queue.name!r}"
                            + (f" ({what})" if what else ""))

    def queues_with(self, session, right: str) -> list[int] | None:
        """The queue ids where the user has ``right``; None means all (administrators)."""
        if self.admin:
            return None
        return [qid for qid, have in self._by_queue.items() if right in have or "admin" in have]

    def on(self, queue_id: int) -> list[str]:
        return list(RIGHTS) if self.admin else sorted(self._by_queue.get(queue_id, set()),
                                                      key=RIGHTS.index)


def parse_grantee(session, grantee: str) -> str:
    kind, _, name = (grantee or "").partition(":")
    if kind == "role" and name in ROLES:
        return grantee
    if kind == "group":
        if session.scalars(select(Group).where(Group.name == name)).first() is None:
            raise NotFound(f"no group {name!r}")
        return grantee
    raise BadRequest("a grantee is role:customer, role:agent, role:admin or group:<name>")


def grant(session, queue: Queue, grantee: str, rights: list[str]) -> list[str]:
    grantee = parse_grantee(session, grantee)
    added = []
    for right in rights:
        check_right(right)
        exists = session.scalars(select(QueueRight).where(QueueRight.queue_id == queue.id,
                                                          QueueRight.grantee == grantee,
                                                          QueueRight.right == right)).first()
        if exists is None:
            session.add(QueueRight(queue_id=queue.id, grantee=grantee, right=right))
            added.append(right)
    session.flush()
    return added


def revoke(session, queue: Queue, grantee: str, rights: list[str]) -> list[str]:
    for right in rights:
        check_right(right)
    result = session.execute(delete(QueueRight).where(QueueRight.queue_id == queue.id,
                                                      QueueRight.grantee == grantee,
                                                      QueueRight.right.in_(rights)))
    return list(rights) if result.rowcount else []


def queue_grants(session, queue: Queue) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for grantee, right in session.execute(select(QueueRight.grantee, QueueRight.right)
                                          .where(QueueRight.queue_id == queue.id)):
        out.setdefault(grantee, []).append(right)
    return {g: sorted(r, key=RIGHTS.index) for g, r in sorted(out.items())}


# --- groups ----------------------------------------------------------------------
def create_group(session, name: str, description: str = "") -> Group:
    if not _GROUP_NAME.match(name or ""):
        raise BadRequest("a group name is 1-100 letters, digits, '.', '_' or '-'")
    if session.scalars(select(Group).where(Group.name == name)).first() is not None:
        raise Conflict(f"group {name!r} exists")
    group = Group(name=name, description=description or "")
    session.add(group)
    session.flush()
    return group


def get_group(session, name: str) -> Group:
    group = session.scalars(select(Group).where(Group.name == name)).first()
    if group is None:
        raise NotFound(f"no group {name!r}")
    return group


def set_member(session, group: Group, user: User, member: bool) -> None:
    row = session.scalars(select(GroupMember).where(GroupMember.group_id == group.id,
                                                    GroupMember.user_id == user.id)).first()
    if member and row is None:
        session.add(GroupMember(group_id=group.id, user_id=user.id))
    elif not member and row is not None:
        session.delete(row)
    session.flush()


def list_groups(session) -> list[dict]:
    out = []
    for group in session.scalars(select(Group).order_by(Group.name)):
        members = session.scalars(select(User.username).join(GroupMember, GroupMember.user_id == User.id)
                                  .where(GroupMember.group_id == group.id).order_by(User.username)).all()
        out.append({"name": group.name, "description": group.description, "members": list(members)})
    return out
