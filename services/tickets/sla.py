"""SLA clocks in business time.

A calendar is {"tz": "Europe/Berlin", "days": [0, 1, 2, 3, 4] (Monday = 0),
"start": "09:00", "end": "17:00", "holidays": ["2026-12-25", ...]}; an empty one means
around the clock. ``add_business_minutes`` answers "when is N business minutes after
this moment?", which is what each target's due time is."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .exceptions import BadRequest

TARGETS = ("first_response", "next_response", "resolution")


def _hm(text: str) -> time:
    try:
        hour, minute = (int(x) for x in str(text).split(":"))
        return time(hour, minute)
    except ValueError:
        raise BadRequest(f"a business-hours time is HH:MM, not {text!r}") from None


def validate_calendar(cal: dict | None) -> dict:
    cal = dict(cal or {})
    if not cal:
        return {}
    try:
        ZoneInfo(cal.get("tz", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"unknown time zone {cal.get('tz')!r}") from None
    days = cal.get("days", [0, 1, 2, 3, 4])
    if not days or any(not isinstance(d, int) or not 0 <= d <= 6 for d in days):
        raise BadRequest("business days are numbers 0 (Monday) to 6 (Sunday)")
    start, end = _hm(cal.get("start", "09:00")), _hm(cal.get("end", "17:00"))
    if start >= end:
        raise BadRequest("business hours end after they start")
    holidays = []
    for h in cal.get("holidays", []):
        try:
            holidays.append(date.fromisoformat(str(h)).isoformat())
        except ValueError:
            raise BadRequest(f"a holiday is YYYY-MM-DD, not {h!r}") from None
    return {"tz": cal.get("tz", "UTC"), "days": sorted(set(days)), "start": start.strftime("%H:%M"),
            "end": end.strftime("%H:%M"), "holidays": holidays}


def add_business_minutes(start: datetime, minutes: int, cal: dict | None) -> datetime:
    """The moment ``minutes`` business minutes after ``start`` (aware datetimes, UTC out)."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if not cal:
        return (start + timedelta(minutes=minutes)).astimezone(timezone.utc)
    zone = ZoneInfo(cal["tz"])
    open_t, close_t = _hm(cal["start"]), _hm(cal["end"])
    holidays = set(cal.get("holidays", []))
    now = start.astimezone(zone)
    left = timedelta(minutes=minutes)
    for _ in range(3660):   # ten years of days: a calendar with no working day cannot loop for ever
        day = now.date()
        if now.weekday() in cal["days"] and day.isoformat() not in holidays:
            opens = datetime.combine(day, open_t, zone)
            closes = datetime.combine(day, close_t, zone)
            begin = max(now, opens)
            if begin < closes:
                if begin + left <= closes:
                    return (begin + left).astimezone(timezone.utc)
                left -= closes - begin
        now = datetime.combine(day + timedelta(days=1), time(0, 0), zone)
    raise BadRequest("the calendar has no business hours in the next ten years")


def due_times(sla, created: datetime) -> dict:
    """First-response and resolution due times of a ticket created at ``created``."""
    out = {}
    if sla is None:
        return out
    if sla.first_response_minutes:
        out["first_response_due"] = add_business_minutes(created, sla.first_response_minutes, sla.calendar)
    if sla.resolution_minutes:
        out["resolution_due"] = add_business_minutes(created, sla.resolution_minutes, sla.calendar)
    return out
