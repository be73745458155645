"""Ticket lifecycles: the states a queue's tickets move through, which moves are
allowed, which right each move needs, and the outcomes a closed ticket records.

A lifecycle is data (the ``lifecycle`` table); queues without one use ``DEFAULT``:
new → open ↔ stalled → resolved | rejected, reopening allowed."""
from __future__ import annotations

import re

from sqlalchemy import select

from .exceptions import BadRequest, Conflict, NotFound
from .models import Lifecycle, Outcome, Queue

CATEGORIES = ("initial", "active", "inactive", "closed")
MERGED = "merged"   # the state of a ticket merged into another (outside every lifecycle)

DEFAULT = {
    "states": [
        {"name": "new", "category": "initial"},
        {"name": "open", "category": "active"},
        {"name": "stalled", "category": "inactive"},
        {"name": "resolved", "category": "closed"},
        {"name": "rejected", "category": "closed"},
    ],
    "transitions": {
        "new": ["open", "stalled", "resolved", "rejected"],
        "open": ["stalled", "resolved", "rejected"],
        "stalled": ["open", "resolved", "rejected"],
        "resolved": ["open"],
        "rejected": ["open"],
    },
    # the right a move needs ("from->to", "*->to" or "from->*"); default "modify"
    "rights": {},
}

DEFAULT_OUTCOMES = (
    ("solved", "the incident was handled"),
    ("no-solution-needed", "nothing to do (informational, false positive)"),
    ("no-response", "no response from the administrator"),
    ("duplicate", "reported in another ticket"),
    ("out-of-constituency", "not ours; the reporter was told where to go"),
)
_STATE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class Definition:
    def __init__(self, data: dict, name: str = "default"):
        self.name = name
        self.data = data
        self.category = {s["name"]: s["category"] for s in data["states"]}
        self.order = [s["name"] for s in data["states"]]

    @property
    def initial(self) -> str:
        return next(n for n in self.order if self.category[n] == "initial")

    @property
    def reopen_state(self) -> str:
        """Where a closed or stalled ticket goes when its correspondent writes again."""
        return next((n for n in self.order if self.category[n] == "active"), self.initial)

    def is_closed(self, state: str) -> bool:
        return self.category.get(state) == "closed"

    def is_active(self, state: str) -> bool:
        return self.category.get(state) in ("initial", "active")

    def allowed(self, state: str) -> list[str]:
        return list(self.data["transitions"].get(state, []))

    def right_for(self, old: str, new: str) -> str:
        rights = self.data.get("rights") or {}
        return rights.get(f"{old}->{new}") or rights.get(f"*->{new}") or rights.get(f"{old}->*") or "modify"

    def check(self, old: str, new: str) -> None:
        if new not in self.category:
            raise BadRequest(f"unknown state {new!r}; this queue's states are: {', '.join(self.order)}")
        if old == MERGED:
            raise Conflict("a merged ticket has no lifecycle of its own; change the ticket it was merged into")
        if new not in self.allowed(old):
            allowed = ", ".join(self.allowed(old)) or "none"
            raise BadRequest(f"a ticket cannot go from {old!r} to {new!r} (from {old!r}: {allowed})")


def validate(data: dict) -> dict:
    """Check an administrator's lifecycle: one initial state, at least one closed
    state, transitions only between known states, rights that exist."""
    from .rights import check_right

    if not isinstance(data, dict) or not isinstance(data.get("states"), list) or not data["states"]:
        raise BadRequest("a lifecycle has a non-empty list of states")
    names = []
    for state in data["states"]:
        if not isinstance(state, dict) or not _STATE.match(str(state.get("name", ""))):
            raise BadRequest("each state is {name, category} with a lower-case name")
        if state.get("category") not in CATEGORIES:
            raise BadRequest(f"state {state['name']!r}: category is one of {', '.join(CATEGORIES)}")
        if state["name"] in names or state["name"] == MERGED:
            raise BadRequest(f"state {state['name']!r} is given twice or reserved")
        names.append(state["name"])
    cats = [s["category"] for s in data["states"]]
    if cats.count("initial") != 1 or "closed" not in cats:
        raise BadRequest("a lifecycle has exactly one initial state and at least one closed state")
    transitions = data.get("transitions") or {}
    for old, targets in transitions.items():
        if old not in names or not isinstance(targets, list) or any(t not in names for t in targets):
            raise BadRequest(f"transitions from {old!r} name unknown states")
    for key, right in (data.get("rights") or {}).items():
        old, sep, new = key.partition("->")
        if not sep or (old != "*" and old not in names) or (new != "*" and new not in names):
            raise BadRequest(f"a rights key is 'from->to' with known states or '*': {key!r}")
        check_right(right)
    return {"states": data["states"], "transitions": transitions, "rights": data.get("rights") or {}}


def for_queue(queue: Queue) -> Definition:
    if queue.lifecycle is None:
        return Definition(DEFAULT)
    return Definition(queue.lifecycle.definition, queue.lifecycle.name)


def save(session, name: str, data: dict) -> Lifecycle:
    data = validate(data)
    row = session.scalars(select(Lifecycle).where(Lifecycle.name == name)).first()
    if row is None:
        row = Lifecycle(name=name, definition=data)
        session.add(row)
    else:
        row.definition = data
    session.flush()
    return row


def get(session, name: str) -> Lifecycle:
    row = session.scalars(select(Lifecycle).where(Lifecycle.name == name)).first()
    if row is None:
        raise NotFound(f"no lifecycle {name!r}")
    return row


# --- outcomes --------------------------------------------------------------------
def ensure_outcomes(session) -> None:
    for name, description in DEFAULT_OUTCOMES:
        if session.scalars(select(Outcome).where(Outcome.name == name)).first() is None:
            session.add(Outcome(name=name, description=description))


def outcomes(session, active_only: bool = True) -> list[dict]:
    q = select(Outcome).order_by(Outcome.id)
    if active_only:
        q = q.where(Outcome.active.is_(True))
    return [{"name": o.name, "description": o.description, "active": o.active} for o in session.scalars(q)]


def check_outcome(session, name: str | None) -> str:
    valid = [o["name"] for o in outcomes(session)]
    if not name:
        raise BadRequest(f"closing a ticket needs an outcome: one of {', '.join(valid)}")
    if name not in valid:
        raise BadRequest(f"unknown outcome {name!r}; outcomes are: {', '.join(valid)}")
    return name


def save_outcome(session, name: str, description: str = "", active: bool = True) -> Outcome:
    if not _STATE.match(name or ""):
        raise BadRequest("an outcome name is lower-case letters, digits, '-' or '_'")
    row = session.scalars(select(Outcome).where(Outcome.name == name)).first()
    if row is None:
        row = Outcome(name=name)
        session.add(row)
    row.description, row.active = description or row.description or "", bool(active)
    session.flush()
    return row

