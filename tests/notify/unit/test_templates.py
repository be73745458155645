"""Templates: sandboxed, strict, with the line of every error; per-queue introduction
and signature, per-language variants; the variables a template sees."""
from __future__ import annotations

import pytest

from services.notify import templates
from services.notify.exceptions import BadRequest, NotFound, TemplateFailed

TICKET = {"id": 42, "subject": "Scanning from your network", "state": "open", "queue": "abuse", "priority": 50,
          "owner": "alice", "requestor": "soc@reporter.example", "created": "2026-11-25T10:00:00+00:00",
          "fields": {"Affected": ["192.0.2.7", "198.51.100.0/24"], "Constituency": "Example ISP",
                     "Abuse contact": "abuse@isp.example", "Note": "10.1.1.1"},
          "people": {"requestor": ["soc@reporter.example"], "cc": [], "admincc": []}}
ARTICLES = [{"id": 7, "direction": "in", "from": "SOC <soc@reporter.example>", "to": ["abuse@csirt.example"],
             "cc": [], "subject": "Scanning", "date": "Wed, 25 Nov 2026 10:00:00 +0000",
             "message_id": "<r1@reporter.example>", "body_text": "We saw 203.0.113.9 and 192.0.2.7 scanning.\n\nBye"},
            {"id": 8, "direction": "internal", "from": "alice", "body_text": "looked at 203.0.113.200"}]
FIELD_TYPES = {"Affected": "iprange", "Constituency": "text", "Abuse contact": "text", "Note": "text"}


def context(article=ARTICLES[0]):
    return templates.build_context(TICKET, ARTICLES, article, {"username": "alice", "email": "alice@csirt.example"},
                                   FIELD_TYPES, "Osprey", "abuse@csirt.example")


def test_the_variables_a_template_sees():
    ctx = context()
    assert ctx["ips"] == ["192.0.2.7", "203.0.113.9"]          # the field's address, then the mail's (once)
    assert ctx["netblocks"] == ["198.51.100.0/24"]
    assert (ctx["constituency"], ctx["abuse_contact"]) == ("Example ISP", "abuse@isp.example")
    assert ctx["ticket"]["tag"] == "[Osprey #42]"
    assert ctx["article"]["quoted"] == "> We saw 203.0.113.9 and 192.0.2.7 scanning.\n>\n> Bye"
    assert ctx["article"]["sender_address"] == "soc@reporter.example"
    assert ctx["user"] == {"username": "alice", "email": "alice@csirt.example"}
    assert ctx["queue"] == {"name": "abuse", "address": "abuse@csirt.example"}


def test_render_whole():
    text = templates.render("Dear {{ constituency }},\n{% for ip in ips %}- {{ ip }}\n{% endfor %}"
                            "{{ article.quoted }}\n-- {{ user.username }}", context())
    assert text == ("Dear Example ISP,\n- 192.0.2.7\n- 203.0.113.9\n"
                    "> We saw 203.0.113.9 and 192.0.2.7 scanning.\n>\n> Bye\n-- alice")


@pytest.mark.parametrize("source, line, reason", [
    ("Hello\n{{ ticket.subjekt }}\nBye", 2, "undefined: 'dict object' has no attribute 'subjekt'"),
    ("Hello\n\n{{ nobody }}", 3, "undefined: 'nobody' is undefined"),
    ("line 1\n{% for ip in ips %}\n{{ ip }\n{% endfor %}", 3, "syntax error: unexpected '}'"),
    ("{% if ips %}\nopen", 2, "syntax error: Unexpected end of template. Jinja was looking for the following tags: "
                              "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."),
    ("a\nb\n{{ ''.__class__.__mro__[1].__subclasses__() }}", 3, "not allowed: access to attribute '__class__' of "
                                                                 "'str' object is unsafe."),
    ("{{ 1 // 0 }}", 1, "integer division or modulo by zero"),
], ids=["undefined-attribute", "undefined-name", "syntax", "unclosed-block", "sandbox", "runtime"])
def test_a_template_error_gives_the_line_and_the_reason(source, line, reason):
    with pytest.raises(TemplateFailed) as err:
        templates.render(source, context(), "scan-notice")
    assert (err.value.line, str(err.value), err.value.template) == (line, reason, "scan-notice")


def test_no_half_rendered_text_on_error():
    # the first line would render; the mail text is all or nothing
    with pytest.raises(TemplateFailed):
        templates.render("Dear {{ constituency }},\n{{ article.nothing }}", context())


def test_without_an_article_the_template_says_so():
    with pytest.raises(TemplateFailed, match="has no attribute 'quoted'"):
        templates.render("{{ article.quoted }}", context(article=None))


def save(session, name, kind, body, **kw):
    row = templates.save(session, "admin", name, kind, body, **kw)
    session.commit()
    return row


def test_introduction_body_signature_per_queue_and_language(session):
    save(session, "intro", "introduction", "Dear {{ constituency }},")
    save(session, "intro-de", "introduction", "Sehr geehrte Damen und Herren,", lang="de")
    save(session, "intro-abuse", "introduction", "Hello abuse team of {{ constituency }},", queue="abuse")
    save(session, "sig", "signature", "-- \n{{ user.username }}, CSIRT")
    save(session, "scan", "reply", "we saw {{ ips | join(', ') }}.", subject="Scanning: {{ ips | length }} IPs")
    save(session, "scan", "reply", "wir sahen {{ ips | join(', ') }}.", lang="de")
    ctx = context()
    out = templates.compose(session, "abuse", None, templates.find(session, "scan"), ctx)
    assert out == {"subject": "Scanning: 2 IPs",
                   "body": "Hello abuse team of Example ISP,\n\nwe saw 192.0.2.7, 203.0.113.9.\n\n-- \nalice, CSIRT\n"}
    out = templates.compose(session, "abuse", "de-AT", templates.find(session, "scan", "de-AT"), ctx,
                            default_subject="Re: x")
    assert out == {"subject": "Re: x",      # the German variant has no subject of its own
                   "body": "Sehr geehrte Damen und Herren,\n\nwir sahen 192.0.2.7, 203.0.113.9.\n\n-- \nalice, CSIRT\n"}
    out = templates.compose(session, "other", "fr", templates.find(session, "scan", "fr"), ctx)
    assert out["body"].startswith("Dear Example ISP,\n\nwe saw")    # no French: the defaults
    assert templates.compose(session, "abuse", None, templates.find(session, "scan"), ctx, parts=False)["body"] == \
        "we saw 192.0.2.7, 203.0.113.9.\n"


def test_saving_checks_everything(session):
    with pytest.raises(TemplateFailed) as err:
        templates.save(session, "admin", "bad", "reply", "ok\n{% if %}")
    assert err.value.line == 2
    with pytest.raises(BadRequest, match="kind is one of"):
        templates.save(session, "admin", "x", "letter", "")
    with pytest.raises(BadRequest, match="a template name"):
        templates.save(session, "admin", "../etc", "reply", "")
    with pytest.raises(BadRequest, match="a language"):
        templates.save(session, "admin", "x", "reply", "", lang="German!")
    save(session, "auto", "auto-reply", "Thanks", queue="abuse")
    with pytest.raises(BadRequest, match="queue 'abuse' already has the auto-reply 'auto'"):
        templates.save(session, "admin", "auto2", "auto-reply", "Thanks too", queue="abuse")
    save(session, "auto", "auto-reply", "Thanks, changed", queue="abuse")   # replacing it is fine
    assert templates.queue_part(session, "auto-reply", "abuse").body == "Thanks, changed"
    assert templates.queue_part(session, "auto-reply", "general") is None
    with pytest.raises(NotFound):
        templates.find(session, "nothing")
