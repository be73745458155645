"""The embedded search index, kept in the tickets database and written in the same
transaction as the article (so it is never behind the truth).

Text: an SQLite FTS5 table over subject and body. IPs: ``article_ip`` rows holding
16-byte keys (contracts.ip_key), so an address, CIDR or range is one indexed BETWEEN.

The query language here is the first part of the one the search issue specifies:
words (all must match), "exact phrases", and IP expressions (address, CIDR, a-b).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from osprey import contracts

from .exceptions import BadRequest
from .models import ArticleIP

def check_backend(engine: Engine) -> None:
    """The FTS5 table is made by the initial migration, on SQLite only."""
    if engine.dialect.name != "sqlite":
        raise RuntimeError("the embedded search index needs SQLite (FTS5); "
                           "PostgreSQL deployments need the search issue's backends")


def index_article(session, article) -> None:
    session.execute(text("INSERT INTO article_fts(rowid, subject, body) VALUES (:id, :s, :b)"),
                    {"id": article.id, "s": article.subject or "", "b": article.body_text or ""})
    for addr in contracts.find_ips(f"{article.subject}\n{article.body_text}"):
        session.add(ArticleIP(article_id=article.id, ip=contracts.ip_key(addr)))


@dataclass
class Query:
    terms: list[str] = field(default_factory=list)          # words and phrases, FTS-quoted
    ip_ranges: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.terms and not self.ip_ranges


def parse_query(q: str) -> Query:
    query = Query()
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        if q[i] == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise BadRequest(f"unclosed quote at position {i + 1}: {q[i:i + 20]!r}")
            phrase = q[i + 1:end].strip()
            if phrase:
                query.terms.append('"' + phrase.replace('"', '""') + '"')
            i = end + 1
            continue
        j = i
        while j < n and not q[j].isspace() and q[j] != '"':
            j += 1
        word = q[i:j]
        i = j
        rng = contracts.parse_ip_range(word) if any(c in word for c in ".:") else None
        if rng is not None:
            query.ip_ranges.append(rng)
        else:
            query.terms.append('"' + word.replace('"', '""') + '"')
    return query


def search_articles(session, q: str, limit: int = 50) -> list[dict]:
    """The best-matching article of each matching ticket, best ticket first, at most
    ``limit`` tickets: [{article_id, ticket_id, snippet}]. Snippets (the costly part)
    are made only for the articles returned."""
    query = parse_query(q)
    if query.empty:
        return []
    params: dict = {"limit": limit * 5}
    where, joins = [], []
    for k, (low, high) in enumerate(query.ip_ranges):
        where.append(f"EXISTS (SELECT 1 FROM article_ip ip{k} WHERE ip{k}.article_id = a.id "
                     f"AND ip{k}.ip BETWEEN :lo{k} AND :hi{k})")
        params[f"lo{k}"], params[f"hi{k}"] = low, high
    if query.terms:
        joins.append("JOIN article_fts f ON f.rowid = a.id")
        where.append("article_fts MATCH :match")
        params["match"] = " AND ".join(query.terms)
        order = "bm25(article_fts), a.id DESC"
    else:
        order = "a.id DESC"
    sql = (f"SELECT a.id, a.ticket_id FROM article a {' '.join(joins)} "
           f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT :limit")
    try:
        rows = session.execute(text(sql), params).all()
    except OperationalError as exc:  # FTS5 syntax errors surface here
        raise BadRequest(f"cannot search for {q!r}: {exc}") from exc
    best: dict[int, int] = {}   # ticket id -> its best article id, in rank order
    for article_id, ticket_id in rows:
        if ticket_id not in best:
            best[ticket_id] = article_id
            if len(best) >= limit:
                break
    snippets = _snippets(session, list(best.values()), params.get("match"))
    return [{"article_id": a, "ticket_id": t, "snippet": snippets.get(a, "")} for t, a in best.items()]


def _snippets(session, article_ids: list[int], match: str | None) -> dict[int, str]:
    if not article_ids:
        return {}
    ids = ", ".join(str(int(i)) for i in article_ids)
    if match:
        sql = (f"SELECT rowid, snippet(article_fts, 1, char(2), char(3), ' … ', 12) FROM article_fts "
               f"WHERE article_fts MATCH :match AND rowid IN ({ids})")
        return dict(session.execute(text(sql), {"match": match}).all())
    return dict(session.execute(text(f"SELECT id, substr(body_text, 1, 160) FROM article WHERE id IN ({ids})")).all())
