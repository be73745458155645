"""Templates: jinja2 in a sandbox, rendered strictly.

OTRS's model: a mail's text is the queue's **introduction**, a **body** chosen when
composing (kinds reply, forward, notification, bulk, auto-reply) and the queue's
**signature**. Every template has per-language variants (``lang``, "" = the default
one, used when the asked language has none). Introductions, signatures and
auto-replies belong to a queue (``queue`` "" = every queue without its own).

Rendering is all or nothing: an undefined variable, a sandbox violation or any
other error raises ``TemplateFailed`` with the template's line and the reason, so a
half-rendered mail is never sent.
"""
from __future__ import annotations

import re
import traceback
from email.utils import parseaddr

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select

from osprey import contracts

from .exceptions import BadRequest, NotFound, TemplateFailed
from .models import Template

BODY_KINDS = ("reply", "forward", "notification", "bulk", "auto-reply")
PART_KINDS = ("introduction", "signature")
KINDS = BODY_KINDS + PART_KINDS
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_LANG = re.compile(r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*)?$")
MAX_OUTPUT = 1024 * 1024     # characters one template may produce


def quote(text: str, prefix: str = "> ") -> str:
    """Each line of ``text`` quoted, as mail clients quote the mail they answer."""
    return "\n".join(prefix + line if line else prefix.rstrip() for line in str(text or "").splitlines())


def _env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                               trim_blocks=True, lstrip_blocks=True)
    env.filters["quote"] = quote
    return env


ENV = _env()


def _line_of(exc: BaseException, filename: str) -> int | None:
    """The template line an exception was raised at (jinja2 rewrites tracebacks so
    that template frames carry the template's own file name and line)."""
    line = getattr(exc, "lineno", None)
    if line:
        return int(line)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename:
            return frame.lineno
    return None


def compile_template(source: str, name: str = "template"):
    try:
        return ENV.from_string(source or "")
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"syntax error: {exc.message}", exc.lineno, name) from None


def render(source: str, context: dict, name: str = "template") -> str:
    """The rendered text, or TemplateFailed(reason, line)."""
    tpl = compile_template(source, name)
    try:
        out = tpl.render(**context)
    except TemplateFailed:
        raise
    except Exception as exc:   # UndefinedError, SecurityError, TypeError, ZeroDivisionError ...
        reason = str(exc) or type(exc).__name__
        if type(exc).__name__ == "UndefinedError":
            reason = f"undefined: {reason}"
        elif type(exc).__name__ == "SecurityError":
            reason = f"not allowed: {reason}"
        raise TemplateFailed(reason, _line_of(exc, "<template>"), name) from None
    if len(out) > MAX_OUTPUT:
        raise TemplateFailed(f"renders to more than {MAX_OUTPUT} characters", None, name)
    return out


# --- storing ---------------------------------------------------------------------------

def template_dict(t: Template) -> dict:
    return {"name": t.name, "lang": t.lang, "kind": t.kind, "queue": t.queue, "subject": t.subject,
            "body": t.body, "description": t.description, "updated_by": t.updated_by,
            "updated_at": t.updated_at.isoformat() if t.updated_at else None}


def validate(name: str, kind: str, lang: str, queue: str, subject: str, body: str) -> None:
    if not _NAME.match(name or ""):
        raise BadRequest("a template name is 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if kind not in KINDS:
        raise BadRequest(f"a template kind is one of {', '.join(KINDS)}")
    if not _LANG.match(lang or ""):
        raise BadRequest(f"a language is a tag like 'en' or 'de-AT', not {lang!r}")
    if not isinstance(body, str) or not isinstance(subject, str):
        raise BadRequest("subject and body are text")
    if queue and not re.match(r"^[a-z0-9][a-z0-9._-]{0,99}$", queue):
        raise BadRequest(f"not a queue name: {queue!r}")
    compile_template(subject, f"{name} (subject)")
    compile_template(body, name)


def save(session, actor: str, name: str, kind: str, body: str, subject: str = "", lang: str = "",
         queue: str = "", description: str = "") -> Template:
    lang, queue = (lang or "").strip(), (queue or "").strip()
    validate(name, kind, lang, queue, subject or "", body)
    row = session.scalars(select(Template).where(Template.name == name, Template.lang == lang)).first()
    if kind in PART_KINDS or kind == "auto-reply":
        # one introduction / signature / auto-reply per queue and language
        other = session.scalars(select(Template).where(Template.kind == kind, Template.queue == queue,
                                                       Template.lang == lang, Template.name != name)).first()
        if other is not None:
            where = f"queue {queue!r}" if queue else "every queue"
            raise BadRequest(f"{where} already has the {kind} {other.name!r} for language {lang or 'default'}; "
                             "change or delete that one")
    if row is None:
        row = Template(name=name, lang=lang)
        session.add(row)
    row.kind, row.queue, row.subject, row.body = kind, queue, subject or "", body
    row.description, row.updated_by = description or "", actor or ""
    session.flush()
    return row


def find(session, name: str, lang: str | None = None) -> Template:
    """A template by name in ``lang``, else its default-language variant."""
    rows = session.scalars(select(Template).where(Template.name == name,
                                                  Template.lang.in_(_langs(lang)))).all()
    if not rows:
        raise NotFound(f"no template {name!r}" + (f" in language {lang!r} or the default" if lang else ""))
    return _best(rows, lang, None)


def queue_part(session, kind: str, queue: str, lang: str | None = None) -> Template | None:
    """The queue's introduction / signature / auto-reply: the asked language first
    (the recipient must read it), then the queue's own before the one for every queue."""
    rows = session.scalars(select(Template).where(Template.kind == kind, Template.queue.in_((queue, "")),
                                                  Template.lang.in_(_langs(lang)))).all()
    return _best(rows, lang, queue) if rows else None


def _langs(lang: str | None) -> list[str]:
    out = [""]
    lang = (lang or "").strip()
    if lang:
        out.append(lang)
        if "-" in lang:
            out.append(lang.split("-")[0])      # de-AT falls back to de, then the default
    return out


def _best(rows, lang, queue):
    langs = _langs(lang)

    def rank(t):
        return (langs.index(t.lang) if t.lang in langs else -1, 1 if queue is not None and t.queue == queue else 0)
    return max(rows, key=rank)


# --- composing ------------------------------------------------------------------------

def compose(session, queue: str, lang: str | None, body_template: Template | None, context: dict,
            parts: bool = True, default_subject: str = "") -> dict:
    """{"subject", "body"}: introduction + body + signature of the queue, rendered.
    Each piece's failure names that piece."""
    pieces = []
    intro = queue_part(session, "introduction", queue, lang) if parts else None
    sig = queue_part(session, "signature", queue, lang) if parts else None
    for tpl in (intro, body_template, sig):
        if tpl is not None:
            text = render(tpl.body, context, tpl.name).strip("\n")
            if text:
                pieces.append(text)
    subject = default_subject
    if body_template is not None and body_template.subject.strip():
        subject = " ".join(render(body_template.subject, context, f"{body_template.name} (subject)").split())
    return {"subject": subject, "body": "\n\n".join(pieces) + "\n"}


def render_source(source: dict, context: dict) -> dict:
    """An unsaved template (the editor's preview): {"subject", "body"} rendered alone."""
    subject = " ".join(render(source.get("subject") or "", context, "subject").split())
    return {"subject": subject, "body": render(source.get("body") or "", context, "body")}


# --- the variables ----------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


CONSTITUENCY_FIELDS = ("constituency",)
ABUSE_FIELDS = ("abusecontact", "abuse", "abuseemail", "abusemail")
LANG_FIELDS = ("language", "lang")


def field_value(fields: dict, names: tuple[str, ...]):
    for key, value in (fields or {}).items():
        if _norm(key) in names:
            return value
    return None


def addresses_and_networks(ticket: dict, field_types: dict, articles: list[dict]) -> tuple[list[str], list[str]]:
    """The ticket's IPs and netblocks: iprange fields (an address is an IP, anything
    wider a netblock), then the addresses written in the incoming articles."""
    ips, nets = [], []
    for name, value in (ticket.get("fields") or {}).items():
        if field_types.get(name) != "iprange":
            continue
        for item in value if isinstance(value, list) else [value]:
            rng = contracts.parse_ip_range(str(item))
            if rng is None:
                continue
            text = contracts.format_ip_range(*rng)
            (ips if rng[0] == rng[1] else nets).append(text)
    for article in articles:
        if article.get("direction") == "in":
            ips += [str(a) for a in contracts.find_ips(article.get("body_text") or "")]
    return contracts.unique(ips), contracts.unique(nets)


def article_context(article: dict | None) -> dict:
    if not article:
        return {}
    body = article.get("body_text") or ""
    return {"id": article["id"], "from": article.get("from") or "", "to": article.get("to") or [],
            "cc": article.get("cc") or [], "subject": article.get("subject") or "", "date": article.get("date") or "",
            "message_id": article.get("message_id") or "", "body": body, "quoted": quote(body),
            "direction": article.get("direction"),
            "sender_address": parseaddr(article.get("from") or "")[1]}


def build_context(ticket: dict, articles: list[dict], article: dict | None, user: dict | None,
                  field_types: dict, tag: str, queue_address: str, extra: dict | None = None) -> dict:
    fields = ticket.get("fields") or {}
    ips, nets = addresses_and_networks(ticket, field_types, articles)
    tag_text = f"[{tag} #{ticket['id']}]"
    ctx = {
        "ticket": {"id": ticket["id"], "subject": ticket.get("subject") or "", "state": ticket.get("state"),
                   "queue": ticket.get("queue"), "priority": ticket.get("priority"), "owner": ticket.get("owner"),
                   "requestor": ticket.get("requestor") or "", "created": ticket.get("created"),
                   "fields": fields, "people": ticket.get("people") or {}, "tag": tag_text,
                   "due": ticket.get("due"), "outcome": ticket.get("outcome")},
        "ips": ips,
        "netblocks": nets,
        "article": article_context(article),
        "constituency": field_value(fields, CONSTITUENCY_FIELDS),
        "abuse_contact": field_value(fields, ABUSE_FIELDS),
        "user": {"username": (user or {}).get("username") or "", "email": (user or {}).get("email") or ""},
        "queue": {"name": ticket.get("queue"), "address": queue_address},
        "link": None,      # the one-time third-party link (outbound issue, not built yet)
    }
    ctx.update(extra or {})
    return ctx

