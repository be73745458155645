"""HTML mail is shown only after nh3 (ammonia) has cleaned it, and then only inside a
sandboxed frame without scripts, under a CSP that blocks remote images."""
from __future__ import annotations

import nh3
from markupsafe import Markup, escape

ALLOWED_TAGS = set(nh3.ALLOWED_TAGS) | {"span", "div", "font", "center", "table", "thead", "tbody",
                                         "tfoot", "tr", "td", "th", "img", "hr", "br", "pre", "u", "s"}
ALLOWED_ATTRIBUTES = {
    "*": {"title", "align", "valign", "width", "height", "colspan", "rowspan", "dir", "lang"},
    "a": {"href"},
    "img": {"src", "alt"},
    "font": {"color", "size", "face"},
}


def clean_html(html: str | None) -> str:
    if not html:
        return ""
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto", "cid", "data"},
                     link_rel="noopener noreferrer nofollow", strip_comments=True)


def highlight(snippet: str | None) -> Markup:
    """Search snippets mark hits with \\x02…\\x03; as HTML: escaped text with <mark>."""
    text = str(escape(snippet or ""))
    return Markup(text.replace("\x02", "<mark>").replace("\x03", "</mark>"))


def plain(snippet: str | None) -> str:
    return (snippet or "").replace("\x02", "").replace("\x03", "")
