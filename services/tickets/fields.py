"""Custom fields: typed, validated, searchable ticket fields.

Types: text, select, multiselect, date, number, iprange. Every value is stored as
text in its normal form plus a typed copy (``num`` for number/date, two 16-byte keys
for an IP range) so that queries compare values, not strings."""
from __future__ import annotations

import re
from datetime import date

from sqlalchemy import delete, select

from osprey import contracts

from .exceptions import BadRequest, Forbidden, NotFound
from .models import CustomField, FieldValue

TYPES = ("text", "select", "multiselect", "date", "number", "iprange")
MULTI = ("multiselect", "iprange")          # several values per ticket
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _.-]{0,99}$")
MAX_TEXT = 4000
MAX_VALUES = 1000


def create(session, name: str, type_: str, options=None, queue_id: int | None = None,
           read_only_after_set: bool = False, admin_only: bool = False, description: str = "") -> CustomField:
    if not _NAME.match(name or ""):
        raise BadRequest("a field name starts with a letter: letters, digits, space, '.', '_' or '-'")
    if type_ not in TYPES:
        raise BadRequest(f"unknown field type {type_!r}; types are: {', '.join(TYPES)}")
    options = [str(o) for o in (options or [])]
    if type_ in ("select", "multiselect") and not options:
        raise BadRequest(f"a {type_} field needs options")
    if session.scalars(select(CustomField).where(CustomField.name == name)).first() is not None:
        raise BadRequest(f"a field named {name!r} exists")
    field = CustomField(name=name, type=type_, options=options, queue_id=queue_id,
                        read_only_after_set=bool(read_only_after_set), admin_only=bool(admin_only),
                        description=description or "")
    session.add(field)
    session.flush()
    return field


def get(session, name: str) -> CustomField:
    field = session.scalars(select(CustomField).where(CustomField.name == name)).first()
    if field is None:
        raise NotFound(f"no custom field {name!r}")
    return field


def field_dict(field: CustomField) -> dict:
    return {"name": field.name, "type": field.type, "options": field.options, "queue_id": field.queue_id,
            "read_only_after_set": field.read_only_after_set, "admin_only": field.admin_only,
            "description": field.description}


def normalise(field: CustomField, value) -> list[dict]:
    """A person's input → the rows to store ({value, num, ip_lo, ip_hi}); raises
    BadRequest naming the field and the offending value."""
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    if field.type == "iprange" and isinstance(value, str):
        items = [v for v in re.split(r"[\s,;]+", value) if v]
    if field.type not in MULTI and len(items) > 1:
        raise BadRequest(f"field {field.name!r} holds one value")
    if len(items) > MAX_VALUES:
        raise BadRequest(f"field {field.name!r}: at most {MAX_VALUES} values")
    rows = []
    for item in items:
        text = str(item).strip()
        if field.type == "text":
            if len(text) > MAX_TEXT:
                raise BadRequest(f"field {field.name!r}: at most {MAX_TEXT} characters")
            rows.append({"value": text})
        elif field.type in ("select", "multiselect"):
            if text not in field.options:
                raise BadRequest(f"field {field.name!r}: {text!r} is not one of {', '.join(field.options)}")
            rows.append({"value": text})
        elif field.type == "number":
            try:
                num = float(text)
            except ValueError:
                raise BadRequest(f"field {field.name!r}: {text!r} is not a number") from None
            if num != num or num in (float("inf"), float("-inf")):
                raise BadRequest(f"field {field.name!r}: {text!r} is not a finite number")
            rows.append({"value": format(num, "g") if num != int(num) else str(int(num)), "num": num})
        elif field.type == "date":
            try:
                day = date.fromisoformat(text[:10])
            except ValueError:
                raise BadRequest(f"field {field.name!r}: {text!r} is not a date (YYYY-MM-DD)") from None
            rows.append({"value": day.isoformat(), "num": float(day.toordinal())})
        elif field.type == "iprange":
            keys = contracts.parse_ip_range(text)
            if keys is None:
                raise BadRequest(f"field {field.name!r}: {text!r} is not an IP address, CIDR network "
                                 "(also short: 10/8, 192.0.2/24) or a-b range")
            rows.append({"value": contracts.format_ip_range(*keys), "ip_lo": keys[0], "ip_hi": keys[1]})
    seen, unique = set(), []
    for row in rows:
        if row["value"] not in seen:
            seen.add(row["value"])
            unique.append(row)
    return unique


def values(session, ticket_id: int) -> dict[str, list[str] | str]:
    """{field name: value (single types) or [values] (multi types)} of a ticket."""
    out: dict = {}
    rows = session.execute(select(CustomField.name, CustomField.type, FieldValue.value)
                           .join(FieldValue, FieldValue.field_id == CustomField.id)
                           .where(FieldValue.ticket_id == ticket_id).order_by(FieldValue.id))
    for name, type_, value in rows:
        if type_ in MULTI:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def current(session, ticket_id: int, field: CustomField) -> list[str]:
    return list(session.scalars(select(FieldValue.value).where(FieldValue.ticket_id == ticket_id,
                                                               FieldValue.field_id == field.id)
                                .order_by(FieldValue.id)))


def check_rights(field: CustomField, old: list[str], is_admin: bool, queue_id: int) -> None:
    if field.queue_id is not None and field.queue_id != queue_id:
        raise BadRequest(f"field {field.name!r} does not apply to this ticket's queue")
    if field.admin_only and not is_admin:
        raise Forbidden(f"only administrators set the field {field.name!r}")
    if field.read_only_after_set and old and not is_admin:
        raise Forbidden(f"the field {field.name!r} is read-only once set")


def store(session, ticket_id: int, field: CustomField, rows: list[dict], add: bool = False) -> None:
    """Replace (or with ``add``, extend) a field's values on a ticket."""
    have = set(current(session, ticket_id, field)) if add else set()
    if not add:
        session.execute(delete(FieldValue).where(FieldValue.ticket_id == ticket_id,
                                                 FieldValue.field_id == field.id))
    for row in rows:
        if row["value"] in have:
            continue
        session.add(FieldValue(ticket_id=ticket_id, field_id=field.id, value=row["value"], num=row.get("num"),
                               ip_lo=row.get("ip_lo"), ip_hi=row.get("ip_hi")))
    session.flush()
